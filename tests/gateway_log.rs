//! The gateway log lookup end to end: hopwatch's own `FilterLogEvents` client (JSON 1.1, SigV4,
//! the SDK runtime) against a real LocalStack on 127.0.0.1, whose log groups hold lines in
//! AWS's documented formats, put there with boto3 from LocalStack's own venv.
//!
//! What LocalStack does and does not do (localstack-core 2026.3.0, read in its code):
//! `FilterLogEvents` **ignores `filterPattern`**: `localstack/services/logs/provider.py` patches
//! moto's `LogStream.filter_log_events` to call it with `filter_pattern=None` and then filter
//! with `get_pattern_matcher`, which in the community edition matches every event. So every
//! event of the time window comes back, and the lookup must (and does) keep only a record whose
//! parsed id is one it looked for. Paging is moto's (`nextToken` = `group@stream@eventId`, pages
//! of `limit` events); it never answers the empty pages with a token that AWS may (the unit
//! tests script those). IAM is not enforced, so `AccessDeniedException` is not reachable here
//! (unit tests again); `ResourceNotFoundException` for a missing group is.
//!
//! Nothing here contacts AWS: every client has an explicit loopback endpoint and static test
//! credentials.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use common::localstack::{self, LocalStack};
use common::{refused_port, wait_for};
use hopwatch::config::{GatewayLogLookup, GatewayLogs};
use hopwatch::facts::LogSource;
use hopwatch::gatewaylog::{
    find, Backoff, Filter, Logs, LookupError, LookupResult, Lookups, Requested,
};
use tokio::net::TcpListener;

/// AWS's JSON example access-log format (set-up-logging.html), with the variables that say why
/// a request failed (http-api-troubleshooting-lambda.html adds `$context.integrationErrorMessage`;
/// repost.aws/knowledge-center/api-gateway-errors-cloudwatch-logs `$context.error.message`).
const FORMAT: &str = r#"{ "requestId":"$context.requestId", "extendedRequestId":"$context.extendedRequestId","ip": "$context.identity.sourceIp", "caller":"$context.identity.caller", "user":"$context.identity.user", "requestTime":"$context.requestTime", "httpMethod":"$context.httpMethod", "resourcePath":"$context.resourcePath", "status":"$context.status", "protocol":"$context.protocol", "responseLength":"$context.responseLength", "responseType":"$context.error.responseType", "errorMessage":"$context.error.message", "integrationError":"$context.integrationErrorMessage" }"#;

/// One access-log line in [`FORMAT`], as API Gateway writes it (`-` for an empty variable).
fn access_line(id: &str, extended: &str, status: u16, response_type: &str, why: &str) -> String {
    format!(
        r#"{{ "requestId":"{id}", "extendedRequestId":"{extended}","ip": "10.0.3.7", "caller":"-", "user":"-", "requestTime":"28/Nov/2026:15:10:34 +0000", "httpMethod":"GET", "resourcePath":"/orders", "status":"{status}", "protocol":"HTTP/1.1", "responseLength":"36", "responseType":"{response_type}", "errorMessage":"Internal server error", "integrationError":"{why}" }}"#
    )
}

const ACCESS: &str = "/hopwatch/test/access";
const EXECUTION: &str = "API-Gateway-Execution-Logs_a1b2c3d4e5/prod";

/// Creates `group` (if new) and a stream in it, and puts `lines` into it now, with boto3 from
/// LocalStack's venv (at most 60 s).
async fn put(python: &Path, endpoint: &str, group: &str, lines: &[String]) {
    const SCRIPT: &str = r#"
import json, sys, time, uuid
import boto3
from botocore.config import Config
endpoint, group = sys.argv[1], sys.argv[2]
lines = json.load(sys.stdin)
logs = boto3.client("logs", endpoint_url=endpoint, region_name="us-east-1",
                    aws_access_key_id="test", aws_secret_access_key="test",
                    config=Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 1}))
try:
    logs.create_log_group(logGroupName=group)
except logs.exceptions.ResourceAlreadyExistsException:
    pass
stream = uuid.uuid4().hex
logs.create_log_stream(logGroupName=group, logStreamName=stream)
now = int(time.time() * 1000)
logs.put_log_events(logGroupName=group, logStreamName=stream,
                    logEvents=[{"timestamp": now, "message": line} for line in lines])
"#;
    let python = python.to_path_buf();
    let args = [endpoint.to_string(), group.to_string()];
    let input = serde_json::to_vec(lines).expect("json");
    let run = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(SCRIPT)
            .args(&args)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write");
        child.wait_with_output().expect("wait")
    });
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("boto3 within 60 s")
        .expect("join");
    assert!(
        out.status.success(),
        "putting log events failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lookup's settings: a loopback endpoint, a short timeout.
fn lookup(endpoint: &str, timeout: Duration) -> GatewayLogLookup {
    GatewayLogLookup {
        region: Some("us-east-1".to_string()),
        endpoint_url: Some(endpoint.to_string()),
        min_interval: Duration::from_secs(60),
        retry_for: Duration::from_secs(45),
        timeout,
    }
}

/// hopwatch's client with static test credentials (nothing read from the environment's
/// credential chain), unpaced.
async fn client(config: &GatewayLogLookup) -> Logs {
    let sdk = Logs::loader(config)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    Logs::new(&sdk, config.timeout).with_gap(Duration::ZERO)
}

async fn started() -> Option<(LocalStack, PathBuf)> {
    let Some(python) = localstack::python() else {
        localstack::skip("gateway_log");
        return None;
    };
    let mut ls =
        LocalStack::new(python.clone(), refused_port(), "gatewaylog").with_services(&["logs"]);
    ls.start().await;
    Some((ls, python))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_found_by_either_id_late_ones_by_retrying_and_an_outage_is_an_error() {
    let Some((mut ls, python)) = started().await else {
        return;
    };
    let endpoint = ls.endpoint();
    let config = lookup(&endpoint, Duration::from_secs(5));
    let logs = Arc::new(client(&config).await);

    // 150 other requests first: LocalStack answers them all (it ignores the pattern), 100 to a
    // page, so ours is on the second page, behind a nextToken.
    let mut lines: Vec<String> = (0..150)
        .map(|i| {
            access_line(
                &format!("0000{i:04}-aaaa-bbbb-cccc-000000000000"),
                &format!("Other{i:04}A="),
                200,
                "-",
                "-",
            )
        })
        .collect();
    let rid = "17cb49b2-c061-11e9-bc30-f118c8b08d5f";
    let xid = "eZmXuH7yoAMFR3g=";
    lines.push(access_line(
        rid,
        xid,
        504,
        "INTEGRATION_TIMEOUT",
        "The connection timed out.",
    ));
    put(&python, &endpoint, ACCESS, &lines).await;
    // A REST stage's execution log: another request's lines around ours (texts of
    // repost.aws/knowledge-center/api-gateway-500-error-vpc).
    let execution: Vec<String> = [
        "(e1e2e3e4-0000-4000-8000-000000000001) Starting execution for request: e1e2e3e4-0000-4000-8000-000000000001",
        "(9f8e7d6c-1111-4222-8333-444455556666) Extended Request Id: Kz6VoG2BIAMFrKw=",
        "(9f8e7d6c-1111-4222-8333-444455556666) Starting execution for request: 9f8e7d6c-1111-4222-8333-444455556666",
        "(9f8e7d6c-1111-4222-8333-444455556666) HTTP Method: GET, Resource Path: /orders",
        "(9f8e7d6c-1111-4222-8333-444455556666) Endpoint request body after transformations: ",
        "(9f8e7d6c-1111-4222-8333-444455556666) Sending request to http://nlb-1.elb.us-east-1.amazonaws.com/orders",
        "(9f8e7d6c-1111-4222-8333-444455556666) Execution failed due to configuration error: Unable to establish connection to the VPC link",
        "(9f8e7d6c-1111-4222-8333-444455556666) Method completed with status: 500",
        "(e1e2e3e4-0000-4000-8000-000000000001) Method completed with status: 200",
    ]
    .map(str::to_string)
    .to_vec();
    put(&python, &endpoint, EXECUTION, &execution).await;
    let around = SystemTime::now();

    // LocalStack ignores the pattern: the other requests come back too, so only the parsed id
    // tells ours apart (what this test relies on being exercised).
    let page = logs
        .filter_page(&Filter {
            log_group_name: ACCESS.to_string(),
            filter_pattern: Some(format!("\"{rid}\"")),
            start_time: 0,
            end_time: i64::MAX / 2,
            next_token: None,
            limit: Some(100),
        })
        .await
        .expect("a page");
    assert_eq!(page.events.len(), 100, "LocalStack filtered by the pattern");
    assert!(page.next_token.is_some());

    let access = GatewayLogs {
        access_log_group: Some(ACCESS.to_string()),
        access_log_format: Some(FORMAT.to_string()),
        execution_log_group: None,
    };
    for ids in [&[rid][..], &[xid][..], &["not-this-one", rid, xid][..]] {
        let words = find(&*logs, &access, ids, around)
            .await
            .expect("no error")
            .unwrap_or_else(|| panic!("found by {ids:?}"));
        assert_eq!(words.request_id, rid);
        assert_eq!(words.source, Some(LogSource::AccessLog));
        assert_eq!(words.status, Some(504));
        assert_eq!(words.response_type.as_deref(), Some("INTEGRATION_TIMEOUT"));
        assert_eq!(
            words.integration_error.as_deref(),
            Some("The connection timed out.")
        );
        assert_eq!(words.message.as_deref(), Some("Internal server error"));
    }
    assert_eq!(
        find(
            &*logs,
            &access,
            &["aaaaaaaa-0000-4000-8000-000000000000"],
            around
        )
        .await,
        Ok(None)
    );

    let execution_only = GatewayLogs {
        access_log_group: None,
        access_log_format: None,
        execution_log_group: Some(EXECUTION.to_string()),
    };
    for id in ["9f8e7d6c-1111-4222-8333-444455556666", "Kz6VoG2BIAMFrKw="] {
        let words = find(&*logs, &execution_only, &[id], around)
            .await
            .expect("no error")
            .unwrap_or_else(|| panic!("found by {id}"));
        assert_eq!(words.request_id, "9f8e7d6c-1111-4222-8333-444455556666");
        assert_eq!(words.source, Some(LogSource::ExecutionLog));
        assert_eq!(words.status, Some(500));
        assert_eq!(
            words.integration_error.as_deref(),
            Some("Execution failed due to configuration error: Unable to establish connection to the VPC link")
        );
    }

    let missing = GatewayLogs {
        access_log_group: Some("/hopwatch/test/no-such-group".to_string()),
        access_log_format: None,
        execution_log_group: None,
    };
    let err = find(&*logs, &missing, &[rid], around)
        .await
        .expect_err("no such group");
    assert!(matches!(err, LookupError::GroupNotFound { .. }), "{err:?}");

    // A late record: the lookup starts, searches once without finding it, and finds it when
    // it arrives.
    let lookups = Lookups::with_backoff(
        logs.clone(),
        &config,
        Backoff {
            first: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
    );
    let late = "5b6c7d8e-2222-4333-8444-555566667777";
    let calls = logs.calls();
    assert_eq!(
        lookups.request("t1", &access, &[late, "LateXid0000A="], SystemTime::now()),
        Requested::Started
    );
    wait_for(
        "a first search without the record",
        Duration::from_secs(30),
        || logs.calls() >= calls + 2,
    )
    .await;
    assert_eq!(lookups.words("t1"), None);
    put(
        &python,
        &endpoint,
        ACCESS,
        &[access_line(
            late,
            "LateXid0000A=",
            500,
            "INTEGRATION_FAILURE",
            "Unable to establish connection to the VPC link",
        )],
    )
    .await;
    wait_for("the late record", Duration::from_secs(40), || {
        lookups.words("t1").is_some()
    })
    .await;
    let (words, _) = lookups.words("t1").expect("words");
    assert_eq!(words.request_id, late);
    assert_eq!(words.status, Some(500));
    assert_eq!(lookups.counts().get(LookupResult::Found), 1);
    assert_eq!(
        lookups.request("t1", &access, &[late], SystemTime::now()),
        Requested::Skipped
    );
    assert_eq!(lookups.counts().get(LookupResult::Skipped), 1);

    // An outage: LocalStack gone, the lookup fails at once (connection refused), and the
    // scheduled one counts an error.
    ls.kill();
    let started = Instant::now();
    let err = find(&*logs, &access, &[rid], around)
        .await
        .expect_err("LocalStack is gone");
    assert!(matches!(err, LookupError::Unreachable { .. }), "{err:?}");
    assert!(
        started.elapsed() < config.timeout + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    lookups.request("t2", &access, &[rid], SystemTime::now());
    wait_for("the error", Duration::from_secs(20), || {
        lookups.counts().get(LookupResult::Error) == 1
    })
    .await;
}

/// A server that accepts and never answers.
async fn silent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

#[tokio::test]
async fn a_refused_or_silent_endpoint_fails_within_the_timeout() {
    let access = GatewayLogs {
        access_log_group: Some(ACCESS.to_string()),
        access_log_format: None,
        execution_log_group: None,
    };
    let timeout = Duration::from_millis(1500);

    let refused = lookup(&format!("http://{}", refused_port()), timeout);
    let logs = client(&refused).await;
    let started = Instant::now();
    let err = find(&logs, &access, &["r-1"], SystemTime::now())
        .await
        .expect_err("refused");
    assert!(matches!(err, LookupError::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() < timeout + Duration::from_secs(1));

    let silent = lookup(&format!("http://{}", silent().await), timeout);
    let logs = client(&silent).await;
    let started = Instant::now();
    let err = find(&logs, &access, &["r-1"], SystemTime::now())
        .await
        .expect_err("no answer");
    assert!(matches!(err, LookupError::Timeout { .. }), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= timeout - Duration::from_millis(100) && took < timeout + Duration::from_secs(1),
        "took {took:?}"
    );
    assert!(err.to_string().contains(ACCESS), "{err}");
}

/// A gateway stand-in on 127.0.0.1 that answers every request as an integration failure of a
/// REST API (500, no x-amzn-ErrorType, an application's body: the headers alone would read it
/// as the backend's answer) and, `delay` later, writes the access-log line API Gateway would:
/// `responseType` INTEGRATION_FAILURE. Returns its address and the ids it handed out.
async fn failing_gateway(
    python: PathBuf,
    endpoint: String,
    delay: Duration,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let handed = ids.clone();
    let addr = common::raw_server(move |stream| {
        let tx = tx.clone();
        let handed = handed.clone();
        async move {
            let n = {
                let mut ids = handed.lock().unwrap_or_else(|e| e.into_inner());
                ids.push(String::new());
                ids.len()
            };
            let rid = format!("{n:08}-e2e0-4000-8000-{:012}", std::process::id());
            let xid = format!("Ext{n:05}Q=");
            if let Some(slot) = handed.lock().unwrap_or_else(|e| e.into_inner()).get_mut(n - 1) {
                *slot = rid.clone();
            }
            let body = r#"{"error":"upstream said no"}"#;
            let response = format!(
                "HTTP/1.1 500 Internal Server Error\r\nx-amzn-RequestId: {rid}\r\nx-amz-apigw-id: {xid}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            common::respond(stream, response.into_bytes()).await;
            let _ = tx.send((rid, xid));
        }
    })
    .await;
    tokio::spawn(async move {
        while let Some((rid, xid)) = rx.recv().await {
            tokio::time::sleep(delay).await;
            let line = access_line(
                &rid,
                &xid,
                500,
                "INTEGRATION_FAILURE",
                "Unable to establish connection to the VPC link",
            );
            put(&python, &endpoint, ACCESS, &[line]).await;
        }
    });
    (addr, ids)
}

/// The agent's config for a custom chain through the stand-in, its stage's access log in
/// LocalStack at `logs` (or nowhere).
fn gateway_config(gateway: SocketAddr, target: SocketAddr, logs: &str) -> String {
    format!(
        r#"[agent]
listen = "127.0.0.1:0"
interval = "1s"
timeout = "900ms"
down_after = 1
up_after = 1

[gateway_logs]
region = "us-east-1"
endpoint_url = "{logs}"
min_interval = "10s"
retry_for = "20s"
timeout = "2s"

[[chain]]
name = "orders"
kind = "custom"

  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{gateway}/prod/orders"
  access_log_group = "{ACCESS}"
  access_log_format = '{FORMAT}'

  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{target}/"
"#
    )
}

fn hopwatch(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopwatch"));
    cmd.args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE");
    cmd
}

/// `check` waits for the gateway's record (written late, as API Gateway delivers it), quotes
/// it, and lets its responseType decide against what the headers alone say; a running agent
/// does the same from its background lookups; with CloudWatch Logs gone, the verdict comes
/// from the probe alone, in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_words_decide_in_check_and_in_the_agent() {
    let Some((mut ls, python)) = started().await else {
        return;
    };
    let endpoint = ls.endpoint();
    // The stage's log group exists, with another request's line in it.
    let other = access_line(
        "0f0f0f0f-0000-4000-8000-000000000000",
        "Other0000A=",
        200,
        "-",
        "-",
    );
    put(&python, &endpoint, ACCESS, &[other]).await;
    let (gateway, _ids) =
        failing_gateway(python.clone(), endpoint.clone(), Duration::from_secs(3)).await;
    let target = refused_port();
    let _echo = common::echo_process(target);
    common::wait_for("the echo to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(target).is_ok()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("hopwatch-gwlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("hopwatch.toml");
    std::fs::write(&config, gateway_config(gateway, target, &endpoint)).expect("config");
    let path = config.display().to_string();

    // check: the record arrives 3 s after the answer; the lookup retries until it is there.
    let out = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            hopwatch(&["check", "--json", "--log-wait", "30s", "--config", &path])
                .output()
                .expect("check")
        }
    })
    .await
    .expect("join");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let chain = &doc["chains"][0];
    assert_eq!(
        chain["reason_code"],
        "integration_failure",
        "{chain:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = &chain["gateway_log"];
    assert_eq!(log["source"], "access_log", "{chain:#}");
    assert_eq!(log["response_type"], "INTEGRATION_FAILURE", "{chain:#}");
    assert_eq!(
        log["integration_error"], "Unable to establish connection to the VPC link",
        "{chain:#}"
    );
    assert!(log["request_id"]
        .as_str()
        .is_some_and(|id| id.contains("-e2e0-")));
    let reason = chain["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("API Gateway's access log of request")
            && reason.contains("responseType INTEGRATION_FAILURE"),
        "{reason}"
    );

    // The agent: its lookups run beside the rounds; the verdict follows once they find it.
    let mut agent = common::Kill(
        hopwatch(&[
            "run",
            "--log-format",
            "json",
            "--config",
            &path,
            "--listen",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run"),
    );
    let listen = {
        use std::io::BufRead;
        let stderr = agent.0.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let found = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l).ok()?;
                v["listen"].as_str()?.parse::<SocketAddr>().ok()
            })
            .expect("the agent says where it listens");
        std::thread::spawn(move || for _ in lines {});
        found
    };
    let metrics = || {
        common::http_get(listen, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    common::wait_for(
        "the agent to quote the gateway's log",
        Duration::from_secs(40),
        || {
            let m = metrics();
            m.contains("code=\"integration_failure\"")
                && m.contains("hopwatch_gateway_log_lookups_total{result=\"found\"} 1")
        },
    )
    .await;
    drop(agent);

    // CloudWatch Logs gone: the probe's verdict, without words, within the wait.
    ls.kill();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            hopwatch(&["check", "--json", "--log-wait", "8s", "--config", &path])
                .output()
                .expect("check")
        }
    })
    .await
    .expect("join");
    let took = started.elapsed();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let chain = &doc["chains"][0];
    assert_eq!(chain["reason_code"], "backend_status", "{chain:#}");
    assert!(chain.get("gateway_log").is_none(), "{chain:#}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("API Gateway's logs could not be read"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(15),
        "check took {took:?} with Logs down"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

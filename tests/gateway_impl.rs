//! hopwatch against an API Gateway implementation nobody on this project wrote: LocalStack's
//! REST APIs (`localstack-core` 2026.3.0, its `next_gen/execute_api` provider), bound to
//! 127.0.0.1, with a real `hopwatch echo` as the backend of an `HTTP_PROXY` integration and
//! real `hopwatch check` processes judging each round. The API is made with boto3 from
//! LocalStack's own venv; nothing contacts AWS (explicit loopback endpoint, static test
//! credentials, `AWS_EC2_METADATA_DISABLED`).
//!
//! What LocalStack does, read in its code (`localstack/services/apigateway/next_gen/execute_api/`)
//! and seen on the wire by this test:
//! - **URL without DNS**: `router.py` (`ApiGatewayRouter.register_routes`) serves every deployed
//!   stage at the path-style `/_aws/execute-api/{api_id}/{stage}/{path}` (the older
//!   `/restapis/{api_id}/{stage}/_user_request_/{path}` is deprecated since 3.8.0, and the
//!   `{api_id}.execute-api.…` host style needs DNS). The integration is sent the integration
//!   URI's path (`/orders`), no stage.
//! - **Passed-through answers** (`integrations/http.py`, `RestApiHttpProxyIntegration.invoke`
//!   returns the backend's status, headers and body; `handlers/method_response.py`,
//!   `MethodResponseHandler._transform_headers`): the backend's status and body unchanged, no
//!   `x-amzn-ErrorType`, and the backend's `Connection`, `Content-Length`, `Date` and `Server`
//!   headers renamed `x-amzn-Remapped-*` (`REMAPPED_FROM_INTEGRATION_RESPONSE_COMMON`); hyper's
//!   `content-length` and `date` arrive as `x-amzn-Remapped-Content-Length` and
//!   `x-amzn-Remapped-Date`. `handlers/response_enricher.py` adds `x-amzn-RequestId` and
//!   `x-amz-apigw-id` to every answer of a deployed stage, its own or passed through.
//! - **Its own answers** (`handlers/gateway_exception.py`, `GatewayExceptionHandler`): the
//!   exception's status, `x-amzn-ErrorType: <code>`, `Content-Type: application/json`, body
//!   `{"message": "<message>"}`. A path or method that does not exist is
//!   `MissingAuthTokenError` (`handlers/resource_router.py`: 403,
//!   `MissingAuthenticationTokenException`, "Missing Authentication Token"), a missing API key
//!   `InvalidAPIKeyError` (`handlers/api_key_validation.py`: 403 `ForbiddenException`
//!   "Forbidden"), an integration it cannot connect to `ApiConfigurationError`
//!   (`integrations/http.py` on `requests.exceptions.ConnectionError`: 500
//!   `ApiConfigurationException` "Internal server error").
//! - **Deviation from AWS**: a stage that is not deployed is answered by
//!   `ApiGatewayEndpoint.create_not_found_response` (`router.py`) *before* the handler chain:
//!   404 `{"message": "The API id '…' does not correspond to a deployed API Gateway API"}`
//!   with no `x-amzn-ErrorType` and no `x-amzn-RequestId`. AWS answers a missing stage with its
//!   403 Missing Authentication Token (shared/BRIEF.md §3). Nothing in LocalStack's answer marks
//!   it as the gateway's, so hopwatch reads it as the backend's (asserted below, labelled).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::localstack::{self, LocalStack};
use common::{refused_port, wait_for, Kill};

/// Codes that would say the gateway answered on its own or its link or integration failed.
const NOT_THE_APPLICATIONS: &[&str] = &[
    "gateway_unreachable",
    "gateway_refused",
    "gateway_no_route",
    "gateway_throttled",
    "gateway_authorizer_failed",
    "link_failed",
    "integration_failure",
    "integration_timeout",
];

/// The statuses an application answers that API Gateway also answers on its own.
const APP_STATUSES: [u16; 5] = [401, 403, 404, 429, 500];

/// Makes the REST API with boto3 (at most 60 s) and prints its id: `/orders` GET `HTTP_PROXY`
/// to the echo, `/keyed` the same with an API key required (and no usage plan, so no key is
/// ever valid), `/broken` GET `HTTP_PROXY` to a loopback port nothing listens on; deployed to
/// `prod`.
fn create_api(python: &Path, endpoint: &str, backend: SocketAddr, dead: SocketAddr) -> String {
    const SCRIPT: &str = r#"
import sys
import boto3
from botocore.config import Config
endpoint, backend, dead = sys.argv[1], sys.argv[2], sys.argv[3]
api = boto3.client("apigateway", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test",
                   config=Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 1}))
rest = api.create_rest_api(name="hopwatch-gateway-impl")["id"]
root = next(r["id"] for r in api.get_resources(restApiId=rest)["items"] if r["path"] == "/")
for part, uri, key in [
    ("orders", f"http://{backend}/orders", False),
    ("keyed", f"http://{backend}/orders", True),
    ("broken", f"http://{dead}/orders", False),
]:
    res = api.create_resource(restApiId=rest, parentId=root, pathPart=part)["id"]
    api.put_method(restApiId=rest, resourceId=res, httpMethod="GET",
                   authorizationType="NONE", apiKeyRequired=key)
    api.put_integration(restApiId=rest, resourceId=res, httpMethod="GET", type="HTTP_PROXY",
                        integrationHttpMethod="GET", uri=uri)
api.create_deployment(restApiId=rest, stageName="prod")
print(rest)
"#;
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(SCRIPT)
        .args([endpoint, &backend.to_string(), &dead.to_string()])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE");
    let out = run(cmd, Duration::from_secs(60), "boto3 making the REST API");
    assert!(
        out.status.success(),
        "making the REST API failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()),
        "api id {id:?}"
    );
    id
}

/// Runs `cmd` to its end, killing it (and failing) after `deadline`.
fn run(mut cmd: Command, deadline: Duration, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut child = Kill(child);
    let mut stdout = child.0.stdout.take().expect("stdout");
    let mut stderr = child.0.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < end, "{what}: not done after {deadline:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().expect("stdout thread"),
        stderr: err.join().expect("stderr thread"),
    }
}

/// A `hopwatch echo` process on `addr` answering `status` (on paths under `path`, or all);
/// killed on drop. Returns once it accepts connections (at most 10 s).
async fn echo(addr: SocketAddr, status: Option<u16>, path: Option<&str>) -> Kill {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopwatch"));
    cmd.args(["echo", "--listen", &addr.to_string()]);
    if let Some(status) = status {
        cmd.args(["--status", &status.to_string()]);
    }
    if let Some(path) = path {
        cmd.args(["--status-path", path]);
    }
    let child = Kill(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hopwatch echo"),
    );
    wait_for("the echo to listen", Duration::from_secs(10), || {
        TcpStream::connect(addr).is_ok()
    })
    .await;
    child
}

/// An answer as it came over the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Names lowercased, in order.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn remapped(&self) -> BTreeSet<&str> {
        self.headers
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("x-amzn-remapped-"))
            .collect()
    }
}

/// A plain HTTP/1.1 request (`Connection: close`), independent of hopwatch's prober: the head
/// and a `Content-Length` body, within 10 s.
fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).expect("read head");
        assert!(n > 0, "closed before the head: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("content-length");
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        let n = s.read(&mut buf).expect("read body");
        assert!(n > 0, "closed inside the body");
        body.extend_from_slice(&buf[..n]);
    }
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body[..length]).to_string(),
    }
}

/// A custom chain: the gateway hop at `gateway` (a path on LocalStack, `method`), the target
/// hop at the echo directly, on `target_path`.
fn chain_config(gateway: &str, method: &str, target: SocketAddr, target_path: &str) -> String {
    format!(
        r#"[agent]
interval = "10s"
timeout = "5s"

[[chain]]
name = "orders"
kind = "custom"

  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "{gateway}"
  method = "{method}"

  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{target}{target_path}"
"#
    )
}

/// One `hopwatch check --json --log-wait 0s` process over `config`: the chain's report.
async fn check(dir: &Path, config: String) -> serde_json::Value {
    let path = dir.join("hopwatch.toml");
    std::fs::write(&path, &config).expect("config");
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopwatch"));
        cmd.args(["check", "--json", "--log-wait", "0s", "--config"])
            .arg(&path)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE");
        run(cmd, Duration::from_secs(30), "hopwatch check")
    })
    .await
    .expect("join");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}\n{config}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // 1: a chain is down; never 2 (a usage or config error).
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    doc["chains"][0].clone()
}

fn hop_status(chain: &serde_json::Value, i: usize) -> Option<u64> {
    chain["hops"][i]["status"].as_u64()
}

/// A temporary directory for the configs, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localstack_rest_api_passes_the_applications_answers_through_and_marks_its_own() {
    let Some(python) = localstack::python() else {
        localstack::skip("gateway_impl");
        return;
    };
    let started = Instant::now();
    let mut ls =
        LocalStack::new(python.clone(), refused_port(), "gwimpl").with_services(&["apigateway"]);
    ls.start().await;
    let backend = refused_port();
    let dead = refused_port();
    let id = {
        let (python, endpoint) = (python.clone(), ls.endpoint());
        tokio::task::spawn_blocking(move || create_api(&python, &endpoint, backend, dead))
            .await
            .expect("join")
    };
    let stage = format!("/_aws/execute-api/{id}/prod");
    let url = |path: &str| format!("http://{}{stage}{path}", ls.addr);
    let dir = TempDir(std::env::temp_dir().join(format!(
        "hopwatch-gwimpl-{}-{}",
        std::process::id(),
        backend.port()
    )));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let lsa = ls.addr;
    let get = move |method: &'static str, path: String| {
        tokio::task::spawn_blocking(move || request(lsa, method, &path))
    };

    // 1. The application answers 401, 403, 404, 429 and 500 to everyone. LocalStack passes
    //    each through (4. what it sends), and hopwatch blames the target, probed directly and
    //    failing too, never the gateway's own answer nor its link.
    for status in APP_STATUSES {
        let _echo = echo(backend, Some(status), None).await;
        let seen = get("GET", format!("{stage}/orders")).await.expect("join");
        assert_eq!(seen.status, status, "{seen:#?}");
        assert_eq!(seen.header("x-amzn-errortype"), None, "{seen:#?}");
        // The echo's own JSON, for the path LocalStack sends: the integration URI's, no stage.
        assert!(
            seen.body.contains("\"service\":\"hopwatch-echo\"")
                && seen.body.contains("\"path\":\"/orders\""),
            "{seen:#?}"
        );
        // method_response.py's _transform_headers: hyper's content-length and date renamed.
        assert_eq!(
            seen.remapped(),
            BTreeSet::from(["content-length", "date"]),
            "{seen:#?}"
        );
        assert_eq!(
            seen.header("x-amzn-remapped-content-length"),
            Some(seen.body.len().to_string().as_str()),
            "{seen:#?}"
        );
        // response_enricher.py: the request ids on a passed-through answer too.
        assert!(seen.header("x-amzn-requestid").is_some(), "{seen:#?}");
        assert!(seen.header("x-amz-apigw-id").is_some(), "{seen:#?}");
        assert_eq!(seen.header("content-type"), Some("application/json"));

        let chain = check(&dir.0, chain_config(&url("/orders"), "GET", backend, "/")).await;
        let code = chain["reason_code"].as_str().unwrap_or("");
        assert!(
            !NOT_THE_APPLICATIONS.contains(&code),
            "the application's {status} read as the gateway's or the link's: {chain:#}"
        );
        assert_eq!(code, "target_error", "{status}: {chain:#}");
        assert_eq!(chain["broken_hop"], "target", "{chain:#}");
        assert_eq!(hop_status(&chain, 0), Some(status.into()), "{chain:#}");
        assert_eq!(hop_status(&chain, 1), Some(status.into()), "{chain:#}");
    }

    // 2. The application fails only on the path the gateway sends (/orders) while the target
    //    hop, probed at /, answers 200: the gateway hop is blamed with backend_status, for
    //    every status the gateway could also have answered on its own.
    for status in APP_STATUSES {
        let _echo = echo(backend, Some(status), Some("/orders")).await;
        let chain = check(&dir.0, chain_config(&url("/orders"), "GET", backend, "/")).await;
        assert_eq!(
            chain["reason_code"], "backend_status",
            "{status}: {chain:#}"
        );
        assert_eq!(chain["broken_hop"], "gateway", "{chain:#}");
        assert_eq!(hop_status(&chain, 0), Some(status.into()), "{chain:#}");
        assert_eq!(chain["hops"][1]["result"], "ok", "{chain:#}");
        let reason = chain["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains(&format!("the integration answered {status}"))
                && reason.contains("the application fails only on the path the gateway sends"),
            "{reason}"
        );
    }

    // 3. LocalStack's own answers, with the application healthy (200 everywhere): read as the
    //    gateway's, each with its code.
    let healthy = echo(backend, None, None).await;
    let own: [(&str, &str, u16, &str, &str, &str); 4] = [
        // A path that does not exist (resource_router.py: MissingAuthTokenError).
        (
            "GET",
            "/nope",
            403,
            "MissingAuthenticationTokenException",
            r#"{"message": "Missing Authentication Token"}"#,
            "gateway_no_route",
        ),
        // A method not defined on /orders (werkzeug's MethodNotAllowed, the same error).
        (
            "POST",
            "/orders",
            403,
            "MissingAuthenticationTokenException",
            r#"{"message": "Missing Authentication Token"}"#,
            "gateway_no_route",
        ),
        // An API key required, none sent (api_key_validation.py: InvalidAPIKeyError).
        (
            "GET",
            "/keyed",
            403,
            "ForbiddenException",
            r#"{"message": "Forbidden"}"#,
            "gateway_refused",
        ),
        // The integration's port refuses (http.py: ApiConfigurationError on ConnectionError)
        // while the application answers the agent: the link, not the application.
        (
            "GET",
            "/broken",
            500,
            "ApiConfigurationException",
            r#"{"message": "Internal server error"}"#,
            "link_failed",
        ),
    ];
    for (method, path, status, error_type, body, code) in own {
        let seen = get(method, format!("{stage}{path}")).await.expect("join");
        assert_eq!(seen.status, status, "{method} {path}: {seen:#?}");
        assert_eq!(
            seen.header("x-amzn-errortype"),
            Some(error_type),
            "{seen:#?}"
        );
        assert_eq!(seen.body, body, "{seen:#?}");
        assert!(seen.remapped().is_empty(), "{seen:#?}");
        assert!(seen.header("x-amzn-requestid").is_some(), "{seen:#?}");
        assert_eq!(seen.header("content-type"), Some("application/json"));

        let chain = check(&dir.0, chain_config(&url(path), method, backend, "/")).await;
        assert_eq!(chain["reason_code"], code, "{method} {path}: {chain:#}");
        assert_eq!(chain["broken_hop"], "gateway", "{chain:#}");
        assert_eq!(hop_status(&chain, 0), Some(status.into()), "{chain:#}");
        assert_eq!(chain["hops"][1]["result"], "ok", "{chain:#}");
    }
    drop(healthy);

    // Its own refusals outrank what the hops behind do: with the application failing
    // everywhere, a missing path is still the gateway's (nothing behind it was asked).
    {
        let _echo = echo(backend, Some(500), None).await;
        let chain = check(&dir.0, chain_config(&url("/nope"), "GET", backend, "/")).await;
        assert_eq!(chain["reason_code"], "gateway_no_route", "{chain:#}");
        assert_eq!(chain["broken_hop"], "gateway", "{chain:#}");
        assert_eq!(hop_status(&chain, 1), Some(500), "{chain:#}");
    }

    // LOCALSTACK DEVIATION, recorded: a stage that is not deployed is answered by router.py's
    // create_not_found_response before the handler chain, 404 with none of a gateway's marks
    // (no x-amzn-ErrorType, no x-amzn-RequestId). AWS answers 403
    // MissingAuthenticationTokenException. An answer without any request id never went
    // through an integration (API Gateway marks every answer it passes through with one), so
    // hopwatch reads it as the gateway's, by its status: gateway_no_route.
    {
        let _echo = echo(backend, None, None).await;
        let missing = format!("/_aws/execute-api/{id}/nostage/orders");
        let seen = get("GET", missing.clone()).await.expect("join");
        assert_eq!(seen.status, 404, "{seen:#?}");
        assert_eq!(
            seen.body,
            format!(
                r#"{{"message": "The API id '{id}' does not correspond to a deployed API Gateway API"}}"#
            )
        );
        assert_eq!(seen.header("x-amzn-errortype"), None, "{seen:#?}");
        assert_eq!(seen.header("x-amzn-requestid"), None, "{seen:#?}");
        assert!(seen.remapped().is_empty(), "{seen:#?}");
        let gateway = format!("http://{}{missing}", ls.addr);
        let chain = check(&dir.0, chain_config(&gateway, "GET", backend, "/")).await;
        assert_eq!(
            chain["reason_code"], "gateway_no_route",
            "LocalStack's unmarked 404 is the gateway's: {chain:#}"
        );
    }

    ls.kill();
    eprintln!("gateway_impl: done in {:?}", started.elapsed());
}

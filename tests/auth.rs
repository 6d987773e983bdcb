//! Hops that authenticate as the API's callers do (issue 24), against real servers: a gateway
//! stand-in that verifies SigV4 from AWS's published algorithm (`tests/auth/gateway.py`,
//! Python's hmac and hashlib, not the signing crate checking itself), an OAuth 2.0 token
//! endpoint whose tokens live seconds, an ECS-style credentials endpoint the SDK's default
//! chain reads, and moto's STS for AssumeRole. `hopwatch` runs as its own process, so each
//! test hands it exactly the AWS environment it means.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::authgw::{self, Gateway};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hopwatch-auth-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `hopwatch ARGS` with only `env` (no inherited AWS settings, no IMDS: off EC2 it would cost
/// seconds per resolution).
fn hopwatch(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run hopwatch")
}

/// `check --json` of `config`: the report, by chain name.
fn check(dir: &Path, config: &str, env: &[(&str, String)]) -> BTreeMap<String, serde_json::Value> {
    let path = dir.join("hopwatch.toml");
    std::fs::write(&path, config).expect("config");
    let out = hopwatch(
        &[
            "check",
            "--json",
            "--config",
            path.to_str().unwrap_or_default(),
        ],
        env,
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    doc["chains"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c["name"].as_str().unwrap_or("").to_string(), c))
        .collect()
}

fn static_creds() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "AKIDHOPWATCHTEST".to_string()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string(),
        ),
        ("AWS_SESSION_TOKEN", "session-token-of-the-test".to_string()),
    ]
}

/// A request sent as raw bytes: (status, `x-amzn-ErrorType`).
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let error_type = text
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-amzn-errortype"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, error_type)
}

/// The request `/_last` recorded, with `edit` applied to its (lower-case) headers and target.
fn replay(gw: &Gateway, edit: impl Fn(&mut String, &mut Vec<(String, String)>)) -> (u16, String) {
    let last = gw.last_signed();
    let mut target = last["target"].as_str().unwrap_or("/").to_string();
    let mut headers: Vec<(String, String)> = last["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h[0].as_str().unwrap_or("").to_ascii_lowercase(),
                h[1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    edit(&mut target, &mut headers);
    let body: Vec<u8> = (0..last["body_hex"].as_str().unwrap_or("").len() / 2)
        .map(|i| {
            u8::from_str_radix(
                &last["body_hex"].as_str().unwrap_or("")[2 * i..2 * i + 2],
                16,
            )
            .unwrap_or(0)
        })
        .collect();
    let mut text = format!(
        "{} {target} HTTP/1.1\r\n",
        last["method"].as_str().unwrap_or("GET")
    );
    for (n, v) in &headers {
        if n != "connection" {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    text.push_str("connection: close\r\n\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(&body);
    raw(gw.addr, &bytes)
}

/// Every probe of a SigV4 hop passes a verifier written from AWS's algorithm: a path that is
/// URI-encoded twice, a query to sort and encode, a body (its hash in the canonical request), a
/// configured secret header sent beside the signature, a `headers.host` on a `per_address`
/// hop (the Host sent is the Host signed), and a session token. Unsigned, the same route gets
/// API Gateway's `Missing Authentication Token` (gateway_no_route); signed for another region,
/// `InvalidSignatureException` (gateway_refused). The verifier is not vacuous: the agent's own
/// request replayed passes, and with its signature, path, Host or session token changed it
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_probes_pass_a_verifier_written_from_the_published_algorithm() {
    let Some(python) = authgw::python() else {
        return authgw::skip("sigv4_probes_pass_a_verifier_written_from_the_published_algorithm");
    };
    let creds = static_creds();
    let key = format!("{}:{}:{}", creds[0].1, creds[1].1, creds[2].1);
    let gw = Gateway::start(&python, &["--key", &key, "--max-skew", "5"], None);
    let a = gw.addr;
    let sigv4 = "auth = { sigv4 = { region = \"eu-west-1\" } }";
    let config = format!(
        r#"
[agent]
interval = "10s"
timeout = "3s"

[[chain]]
name = "signed"
kind = "custom"
  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{a}/signed/items/a%20b/%C3%A9?b=2&a=1&a=0&c=x%20y%2Fz"
  headers = {{ "x-api-key" = "${{API_KEY}}", "x-team" = "platform" }}
  {sigv4}
  [[chain.hop]]
  name = "post"
  role = "alb"
  url = "http://{a}/signed/orders"
  method = "POST"
  body = '{{"id": 1, "note": "hash me"}}'
  {sigv4}
  [[chain.hop]]
  name = "by-address"
  role = "target"
  url = "http://{a}/signed/host"
  per_address = true
  headers = {{ host = "abc123.execute-api.eu-west-1.amazonaws.com" }}
  {sigv4}

[[chain]]
name = "unsigned"
kind = "custom"
  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{a}/signed/items"
  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{a}/plain"

[[chain]]
name = "other-region"
kind = "custom"
  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{a}/signed/items"
  auth = {{ sigv4 = {{ region = "us-east-1" }} }}
  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{a}/plain"
"#
    );
    let dir = temp_dir("sigv4");
    let mut env = creds.clone();
    env.push(("API_KEY", "an-api-key-beside-the-signature".to_string()));
    let started = Instant::now();
    let chains = check(&dir, &config, &env);
    println!("check of three SigV4 chains: {:?}", started.elapsed());
    let signed = &chains["signed"];
    assert_eq!(signed["up"], true, "{signed:#}");
    for hop in signed["hops"].as_array().into_iter().flatten() {
        assert_eq!(hop["result"], "ok", "{hop:#}");
    }
    assert_eq!(
        signed["hops"][2]["addresses"][0]["result"], "ok",
        "{signed:#}"
    );
    assert_eq!(
        chains["unsigned"]["reason_code"], "gateway_no_route",
        "{:#}",
        chains["unsigned"]
    );
    assert_eq!(
        chains["other-region"]["reason_code"], "gateway_refused",
        "{:#}",
        chains["other-region"]
    );
    let reason = chains["other-region"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("InvalidSignatureException"), "{reason}");

    let stats = gw.stats();
    assert_eq!(stats["sigv4_ok"], 4, "3 hops and one address: {stats:#}");
    let hosts = stats["signed_hosts"].to_string();
    assert!(
        hosts.contains("abc123.execute-api.eu-west-1.amazonaws.com"),
        "{hosts}"
    );
    let paths = stats["signed_paths"].to_string();
    assert!(paths.contains("/signed/items/a%20b/%C3%A9"), "{paths}");
    assert!(
        stats["max_date_skew_s"].as_f64().unwrap_or(99.0) < 5.0,
        "{stats:#}"
    );

    // The last request that passed, replayed as it was: passes (the verifier accepts what the
    // agent sent, not anything); each part changed: refused.
    assert_eq!(replay(&gw, |_, _| {}).0, 200, "replayed as sent");
    let tampered = replay(&gw, |_, h| {
        for (n, v) in h.iter_mut() {
            if n == "authorization" {
                let last = v.pop().unwrap_or('0');
                v.push(if last == '0' { '1' } else { '0' });
            }
        }
    });
    assert_eq!(tampered, (403, "InvalidSignatureException".to_string()));
    let moved = replay(&gw, |t, _| *t = t.replace("/signed/", "/signed/x/"));
    assert_eq!(moved, (403, "InvalidSignatureException".to_string()));
    let rehosted = replay(&gw, |_, h| {
        for (n, v) in h.iter_mut() {
            if n == "host" {
                *v = "evil.example.com".to_string();
            }
        }
    });
    assert_eq!(rehosted, (403, "InvalidSignatureException".to_string()));
    let tokenless = replay(&gw, |_, h| h.retain(|(n, _)| n != "x-amz-security-token"));
    assert_eq!(tokenless, (403, "UnrecognizedClientException".to_string()));
    let unsigned = replay(&gw, |_, h| h.retain(|(n, _)| n != "authorization"));
    assert_eq!(
        unsigned,
        (403, "MissingAuthenticationTokenException".to_string())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A token endpoint that refuses the client, hangs, answers no token or cannot be reached:
/// every chain is down with `agent_credentials` (never gateway_refused, never the link), the
/// reason says which, and the protected hop never receives a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_fails_is_agent_credentials_and_the_hop_gets_nothing() {
    let Some(python) = authgw::python() else {
        return authgw::skip("a_token_endpoint_that_fails_is_agent_credentials");
    };
    let gw = Gateway::start(&python, &["--refuse"], None);
    let silent = raw_server(|stream| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    })
    .await;
    let html = raw_server(|stream| {
        respond(
            stream,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\n\r\n<html>"
                .to_vec(),
        )
    })
    .await;
    let cases = [
        (
            "refused",
            format!("http://{}/oauth2/token", gw.addr),
            "refused the client: 401 invalid_client",
        ),
        (
            "silent",
            format!("http://{silent}/oauth2/token"),
            "still fetching the OAuth 2.0 token after the probe's 3s timeout",
        ),
        (
            "no-token",
            format!("http://{html}/oauth2/token"),
            "answered no usable token: not a JSON object (text/html)",
        ),
        (
            "unreachable",
            format!("http://{}/oauth2/token", refused_port()),
            "failed: connect",
        ),
    ];
    // The hops behind answer a loaded machine in time (4 s); the gateway's probe waits 3 s for
    // its token.
    let mut config = "[agent]\ninterval = \"10s\"\ntimeout = \"4s\"\n".to_string();
    for (name, token_url, _) in &cases {
        config.push_str(&format!(
            r#"
[[chain]]
name = "{name}"
kind = "http-alb"
  [[chain.hop]]
  name = "gateway"
  url = "http://{a}/bearer/orders"
  timeout = "3s"
  auth = {{ oauth2 = {{ token_url = "{token_url}", client_id = "client", client_secret = "${{SECRET}}", scopes = ["orders/read"] }} }}
  [[chain.hop]]
  name = "alb"
  url = "http://{a}/plain"
  [[chain.hop]]
  name = "target"
  url = "http://{a}/plain"
"#,
            a = gw.addr
        ));
    }
    let dir = temp_dir("refused");
    let started = Instant::now();
    let chains = check(&dir, &config, &[("SECRET", "the-wrong-secret".to_string())]);
    println!(
        "check of four failing token endpoints: {:?}",
        started.elapsed()
    );
    for (name, _, why) in &cases {
        let chain = &chains[*name];
        assert_eq!(chain["up"], false, "{chain:#}");
        assert_eq!(
            chain["reason_code"], "agent_credentials",
            "{name}: {chain:#}"
        );
        assert_eq!(chain["broken_hop"], "gateway", "{chain:#}");
        assert_eq!(chain["hops"][0]["result"], "agent_credentials", "{chain:#}");
        let reason = chain["reason"].as_str().unwrap_or("");
        assert!(reason.contains(why), "{name}: {reason}");
        assert!(reason.contains("agent's own failure"), "{reason}");
    }
    let stats = gw.stats();
    assert_eq!(
        stats["token_refused"], 1,
        "one fetch, however many probes: {stats:#}"
    );
    assert_eq!(
        (
            stats["bearer_ok"].as_u64(),
            stats["bearer_refused"].as_u64()
        ),
        (Some(0), Some(0)),
        "the protected hop received nothing: {stats:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// AssumeRole through moto's STS (the real SDK's AssumeRoleProvider, `AWS_ENDPOINT_URL_STS`
/// pointing at moto), with the external id, then every probe signed with the session's
/// credentials and token: moto records the external id and the session name; the verifier
/// reads the session's secret from moto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_through_moto_sts_with_an_external_id() {
    let (Some(moto_python), Some(python)) = (common::moto::python(), authgw::python()) else {
        return common::moto::skip("assume_role_through_moto_sts_with_an_external_id");
    };
    let moto = common::moto::Moto::start(moto_python, None);
    let gw = Gateway::start(&python, &["--moto", &moto.endpoint], None);
    let role = "arn:aws:iam::123456789012:role/hopwatch-probe";
    let config = format!(
        r#"
[agent]
timeout = "5s"
[[chain]]
name = "assumed"
kind = "custom"
  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{a}/signed/orders"
  auth = {{ sigv4 = {{ region = "eu-west-1", role_arn = "{role}", external_id = "hopwatch-ext-42" }} }}
  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{a}/signed/orders/1"
  auth = {{ sigv4 = {{ region = "eu-west-1", role_arn = "{role}", external_id = "hopwatch-ext-42" }} }}
"#,
        a = gw.addr
    );
    let dir = temp_dir("assume");
    let env = vec![
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_ENDPOINT_URL_STS", moto.endpoint.clone()),
    ];
    let chains = check(&dir, &config, &env);
    let chain = &chains["assumed"];
    assert_eq!(chain["up"], true, "{chain:#}");
    assert_eq!(chain["hops"][1]["result"], "ok", "{chain:#}");
    let data = moto
        .python(&format!(
            "import json, urllib.request; print(json.dumps(json.load(urllib.request.urlopen('{}/moto-api/data.json'))['sts']['AssumedRole']))",
            moto.endpoint
        ))
        .expect("moto state");
    let roles: serde_json::Value = serde_json::from_str(&data).expect("JSON");
    let roles = roles.as_array().cloned().unwrap_or_default();
    assert_eq!(roles.len(), 1, "one AssumeRole for both hops: {roles:#?}");
    assert_eq!(roles[0]["role_arn"], role);
    assert_eq!(roles[0]["external_id"], "hopwatch-ext-42");
    assert_eq!(roles[0]["session_name"], "hopwatch");
    assert_eq!(gw.count("sigv4_ok"), 2, "{:#}", gw.stats());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Samples of one family in a scrape, by their label text.
fn samples(metrics: &str, family: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Done when (issue 24): a chain through a SigV4-verifying gateway and chains through an
/// OAuth2-protected gateway stay up across many short lives of their credentials: tokens that
/// live 3 s, ECS-style role credentials (a session token each) that live about 4 s, probed
/// every 500 ms by the agent for `HOPWATCH_AUTH_SOAK_SECONDS` (24 by default, to keep CI
/// short; 180 for minutes of them). No probe fails; three hops in two chains share one token;
/// tokens and credentials are fetched about once per lifetime (a quarter of it ahead), never
/// per probe. Lifetimes of seconds leave a loaded machine a few hundred milliseconds of margin
/// (a tenth of a life is kept back for the request's flight), and the probe timeout is 450 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_stay_up_across_short_lived_tokens_and_credentials() {
    let Some(python) = authgw::python() else {
        return authgw::skip("chains_stay_up_across_short_lived_tokens_and_credentials");
    };
    let soak = std::env::var("HOPWATCH_AUTH_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(24);
    let (token_life, creds_life) = (3u64, 4u64);
    let gw = Gateway::start(
        &python,
        &[
            "--token-lifetime",
            &token_life.to_string(),
            "--creds-lifetime",
            &creds_life.to_string(),
            "--max-skew",
            "5",
        ],
        None,
    );
    let a = gw.addr;
    let oauth2 = format!(
        r#"auth = {{ oauth2 = {{ token_url = "http://{a}/oauth2/token", client_id = "client", client_secret = "${{CLIENT_SECRET}}", scopes = ["orders/read"] }} }}"#
    );
    let config = format!(
        r#"
[agent]
interval = "500ms"
timeout = "450ms"

[[chain]]
name = "iam"
kind = "custom"
  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{a}/signed/orders?page=1"
  auth = {{ sigv4 = {{ region = "eu-west-1" }} }}
  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{a}/plain"

[[chain]]
name = "jwt"
kind = "custom"
  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{a}/bearer/orders"
  {oauth2}
  [[chain.hop]]
  name = "alb"
  role = "alb"
  url = "http://{a}/bearer/alb"
  {oauth2}
  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{a}/plain"

[[chain]]
name = "jwt-too"
kind = "custom"
  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{a}/bearer/other"
  {oauth2}
  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{a}/plain"
"#
    );
    let dir = temp_dir("soak");
    let path = dir.join("hopwatch.toml");
    std::fs::write(&path, &config).expect("config");
    let listen = refused_port();
    let _agent = Kill(
        Command::new(BIN)
            .args(["run", "--listen", &listen.to_string(), "--config"])
            .arg(&path)
            .env_clear()
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://{a}/ecs-credentials"),
            )
            .env("CLIENT_SECRET", "secret")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the agent"),
    );
    wait_for("the agent's /metrics", Duration::from_secs(10), || {
        http_get(listen, "/metrics").is_ok_and(|(s, _)| s == 200)
    })
    .await;
    // Counted from the first fetch, so the figures are per lifetime of the run.
    authgw::wait_count(&gw, "token_fetches", 1, Duration::from_secs(10)).await;
    authgw::wait_count(&gw, "creds_issued", 1, Duration::from_secs(10)).await;
    let started = Instant::now();
    let rounds = soak * 2;
    wait_for("the soak's rounds", Duration::from_secs(soak + 30), || {
        let Ok((_, m)) = http_get(listen, "/metrics") else {
            return false;
        };
        let ok = samples(&m, "hopwatch_probes_total")
            .into_iter()
            .filter(|(s, _)| s.contains("chain=\"jwt-too\"") && s.contains("result=\"ok\""))
            .map(|(_, v)| v)
            .fold(f64::INFINITY, f64::min);
        ok.is_finite() && ok >= rounds as f64 && started.elapsed() >= Duration::from_secs(soak)
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let (_, metrics) = http_get(listen, "/metrics").expect("scrape");
    let stats = gw.stats();

    let failed: Vec<_> = samples(&metrics, "hopwatch_probes_total")
        .into_iter()
        .filter(|(s, _)| !s.contains("result=\"ok\""))
        .collect();
    assert!(
        failed.is_empty(),
        "no probe may fail: {failed:?}\n{stats:#}"
    );
    for (series, up) in samples(&metrics, "hopwatch_chain_up") {
        assert_eq!(up, 1.0, "{series}");
    }
    assert_eq!(stats["bearer_refused"], 0, "{stats:#}");
    assert_eq!(stats["sigv4_refused"], 0, "{stats:#}");
    let probes_with_tokens = stats["bearer_ok"].as_u64().unwrap_or(0);
    let signed = stats["sigv4_ok"].as_u64().unwrap_or(0);
    let tokens = stats["token_fetches"].as_u64().unwrap_or(0);
    let creds = stats["creds_issued"].as_u64().unwrap_or(0);
    let lifetimes = |life: u64| elapsed / life as f64;
    println!(
        "soak {elapsed:.1} s: {probes_with_tokens} probes with a token ({:.1} token lifetimes), {tokens} token fetches ({:.2} per lifetime); {signed} signed probes ({:.1} credential lifetimes), {creds} credentials fetched ({:.2} per lifetime)",
        lifetimes(token_life),
        tokens as f64 / lifetimes(token_life),
        lifetimes(creds_life),
        creds as f64 / lifetimes(creds_life),
    );
    // Refreshed a quarter of a life ahead, on the first probe after that: between one fetch
    // per lifetime and one per three quarters of one (plus the ones in flight at either end).
    let within = |n: u64, life: u64, what: &str| {
        let low = (lifetimes(life) - 2.0).max(1.0);
        let high = lifetimes(life) / 0.75 + 3.0;
        assert!(
            (low..=high).contains(&(n as f64)),
            "{what}: {n} fetches in {elapsed:.1} s of {life} s lifetimes, expected {low:.0} to {high:.0}"
        );
    };
    within(
        tokens,
        token_life,
        "tokens (three hops of two chains share them)",
    );
    // ECS credentials' Expiration has whole seconds: a 4 s life is 3 to 4 s.
    let creds_low = (lifetimes(creds_life) - 2.0).max(1.0) as u64;
    assert!(
        creds >= creds_low && (creds as f64) <= elapsed / (0.75 * (creds_life - 1) as f64) + 3.0,
        "{creds} credentials in {elapsed:.1} s"
    );
    assert!(probes_with_tokens >= 10 * tokens, "never a fetch per probe");
    let fetched: f64 = samples(&metrics, "hopwatch_auth_fetches_total")
        .into_iter()
        .filter(|(s, _)| s.contains("method=\"oauth2\"") && s.contains("result=\"ok\""))
        .map(|(_, v)| v)
        .sum();
    assert!(
        (fetched - tokens as f64).abs() <= 1.0,
        "hopwatch_auth_fetches_total says {fetched}, the token endpoint {tokens}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload keeps the cache of every setting that stays: a chain added with the same `oauth2`
/// block (its scopes in another order) uses the token already fetched; a chain whose scopes
/// change gets its own, once; the unchanged chain goes on with the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_token_of_settings_that_stay() {
    let Some(python) = authgw::python() else {
        return authgw::skip("a_reload_keeps_the_token_of_settings_that_stay");
    };
    let gw = Gateway::start(&python, &["--token-lifetime", "3600"], None);
    let a = gw.addr;
    let chain = |name: &str, scopes: &str| {
        format!(
            r#"
[[chain]]
name = "{name}"
kind = "custom"
  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{a}/bearer/{name}"
  auth = {{ oauth2 = {{ token_url = "http://{a}/oauth2/token", client_id = "client", client_secret = "${{CLIENT_SECRET}}", scopes = [{scopes}] }} }}
  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{a}/plain"
"#
        )
    };
    let head = "[agent]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n";
    let dir = temp_dir("reload");
    let path = dir.join("hopwatch.toml");
    std::fs::write(
        &path,
        format!("{head}{}", chain("first", r#""a/r", "b/w""#)),
    )
    .expect("config");
    let listen = refused_port();
    let agent = Kill(
        Command::new(BIN)
            .args(["run", "--listen", &listen.to_string(), "--config"])
            .arg(&path)
            .env_clear()
            .env("CLIENT_SECRET", "secret")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the agent"),
    );
    let ok_probes = |chain: &str| -> f64 {
        let Ok((_, m)) = http_get(listen, "/metrics") else {
            return 0.0;
        };
        samples(&m, "hopwatch_probes_total")
            .into_iter()
            .filter(|(s, _)| {
                s.contains(&format!("chain=\"{chain}\",hop=\"gateway\""))
                    && s.contains("result=\"ok\"")
            })
            .map(|(_, v)| v)
            .sum()
    };
    let reload = |text: String| {
        std::fs::write(&path, text).expect("config");
        let status = Command::new("kill")
            .args(["-HUP", &agent.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    wait_for("the first chain passing", Duration::from_secs(15), || {
        ok_probes("first") >= 3.0
    })
    .await;
    assert_eq!(gw.count("token_fetches"), 1);

    reload(format!(
        "{head}{}{}",
        chain("first", r#""a/r", "b/w""#),
        chain("second", r#""b/w", "a/r""#)
    ));
    wait_for("the added chain passing", Duration::from_secs(15), || {
        ok_probes("second") >= 3.0
    })
    .await;
    assert_eq!(
        gw.count("token_fetches"),
        1,
        "the added chain shares the token"
    );

    reload(format!(
        "{head}{}{}",
        chain("first", r#""a/r""#),
        chain("second", r#""b/w", "a/r""#)
    ));
    authgw::wait_count(&gw, "token_fetches", 2, Duration::from_secs(15)).await;
    let before = (ok_probes("first"), ok_probes("second"));
    wait_for(
        "both chains passing after the reload",
        Duration::from_secs(15),
        || ok_probes("first") >= before.0 + 3.0 && ok_probes("second") >= before.1 + 3.0,
    )
    .await;
    let stats = gw.stats();
    assert_eq!(stats["token_fetches"], 2, "{stats:#}");
    assert_eq!(
        stats["token_scopes"],
        serde_json::json!(["a/r b/w", "a/r"]),
        "one token per distinct scope set: {stats:#}"
    );
    assert_eq!(stats["bearer_refused"], 0, "{stats:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

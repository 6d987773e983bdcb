//! The real binary: `check --json` against the demo chain, `validate` exit codes, `demo` serving
//! a `/metrics` that promtool accepts, and `run` stopping cleanly on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hopwatch-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn check_json(config: &PathBuf) -> (i32, serde_json::Value) {
    let out = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(config)
        .output()
        .expect("run check");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_json_on_the_demo_chain() {
    let demo = hopwatch::demo::start().await.expect("demo");
    let config = temp_file("demo.toml", &demo.config_toml);

    let (code, doc) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || check_json(&config)
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "every chain is up: {doc:#}");
    let chain = &doc["chains"][0];
    assert_eq!(chain["name"], "demo-orders");
    assert_eq!(chain["kind"], "rest-nlb-alb");
    assert_eq!(chain["up"], true);
    assert!(chain["broken_hop"].is_null() && chain["reason"].is_null());
    let hops = chain["hops"].as_array().expect("hops");
    let names: Vec<_> = hops
        .iter()
        .map(|h| h["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["gateway", "nlb", "alb", "target"]);
    let roles: Vec<_> = hops
        .iter()
        .map(|h| h["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["gateway", "nlb", "alb", "target"]);
    for (hop, addr) in hops.iter().zip(&demo.addrs) {
        assert_eq!(hop["url"], format!("http://{addr}/orders"));
        assert_eq!(hop["result"], "ok");
        assert_eq!(hop["status"], 200);
        let total = hop["duration_ms"].as_f64().expect("duration_ms");
        assert!(total > 0.0);
        let phases = &hop["phases"];
        for key in ["connect", "ttfb", "transfer"] {
            assert!(phases[key].as_f64().is_some(), "{key} missing in {phases}");
        }
        assert!(
            phases["dns"].is_null() && phases["tls"].is_null(),
            "{phases}"
        );
        let sum: f64 = ["connect", "ttfb", "transfer"]
            .iter()
            .filter_map(|k| phases[k].as_f64())
            .sum();
        assert!((sum - total).abs() < 0.01, "phases {sum} vs total {total}");
    }

    // What the target saw through each hop: through the ALB the peer is the ALB's address and
    // X-Forwarded-For ends with whoever reached the ALB; directly, the peer is the agent.
    if !demo.single_address {
        let source = |i: usize| &hops[i]["source"];
        assert_eq!(source(0)["peer"], "127.0.0.4", "gateway path: the ALB");
        assert_eq!(
            source(0)["forwarded_for"],
            serde_json::json!(["127.0.0.3"]),
            "reached from the NLB"
        );
        assert_eq!(source(1)["forwarded_for"], serde_json::json!(["127.0.0.3"]));
        assert_eq!(source(2)["peer"], "127.0.0.4");
        assert_eq!(
            source(2)["forwarded_for"],
            serde_json::json!(["127.0.0.1"]),
            "the agent reached the ALB"
        );
        assert_eq!(
            source(3)["peer"],
            "127.0.0.1",
            "probed directly by the agent"
        );
        assert_eq!(source(3)["forwarded_for"], serde_json::json!([]));
        // The kind's defaults: through gateway, nlb and alb the target sees the ALB, and
        // through the gateway X-Forwarded-For ends with the NLB. The target has no expectation.
        let expected: Vec<_> = hops.iter().map(|h| h["source_expected"].clone()).collect();
        assert_eq!(
            expected,
            [
                true.into(),
                true.into(),
                true.into(),
                serde_json::Value::Null
            ]
        );
    }

    // Break the ALB: the NLB relays a reset, the gateway answers 500 like API Gateway.
    demo.faults.set("alb", true);
    let (code, doc) = tokio::task::spawn_blocking(move || check_json(&config))
        .await
        .expect("join");
    assert_eq!(code, 1, "a chain is down: {doc:#}");
    let hops = &doc["chains"][0]["hops"];
    assert_eq!(doc["chains"][0]["up"], false);
    // The target is the outermost hop that passes: the ALB, just outside it, is blamed.
    assert_eq!(doc["chains"][0]["broken_hop"], "alb");
    let reason = doc["chains"][0]["reason"].as_str().expect("reason");
    assert!(
        reason
            .starts_with("alb: reset while target answers directly; nothing accepts on alb's port"),
        "{reason}"
    );
    assert_eq!(hops[0]["result"], "http_status");
    assert_eq!(hops[0]["status"], 500);
    assert_eq!(hops[2]["result"], "reset");
    assert_eq!(hops[3]["result"], "ok", "the target still answers directly");
    demo.shutdown().await;
}

#[test]
fn validate_and_check_exit_codes() {
    let good = temp_file(
        "good.toml",
        "[[chain]]\nname = \"a\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"x\"\nrole = \"target\"\nurl = \"http://127.0.0.1:1/\"\n",
    );
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = temp_file(
        "bad.toml",
        "[agent]\ninterval = \"5s\"\n\n[[chain]]\nname = \"a\"\nkind = \"rest-nlb\"\n[[chain.hop]]\nname = \"x\"\nurl = \"ftp://h/\"\ntimeout = \"9s\"\n",
    );
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    for expected in [
        format!("{file}:6:8: chain \"a\": kind (rest-nlb) expects 3 hops with roles gateway, nlb, target (outermost first), found 1"),
        format!("{file}:9:7: chain \"a\" hop \"x\": url (\"ftp://h/\") must start with http:// or https://"),
        format!("{file}:10:11: chain \"a\" hop \"x\": timeout (9s) must be less than the chain interval (5s)"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }

    // check refuses a bad config with 2 as well, and an unknown chain name.
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["check", "--chain", "nope", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    // A chain whose only hop refuses is down: exit 1, and the table says why.
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("connect_refused"), "{table}");
}

/// Reads the demo's stdout until it prints its metrics URL.
fn metrics_addr(child: &mut std::process::Child) -> std::net::SocketAddr {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("metrics: http://") {
            let addr = rest.trim_end_matches("/metrics").parse().expect("addr");
            // Keep draining stdout so the demo never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return addr;
        }
    }
    panic!("the demo never printed its metrics address");
}

fn terminate(child: &mut std::process::Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_metrics_that_promtool_accepts() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn demo");
    let addr = metrics_addr(&mut child);
    let hops = ["gateway", "nlb", "alb", "target"];
    let mut names = vec![
        "hopwatch_build_info{version=".to_string(),
        "hopwatch_chain_up{chain=\"demo-orders\"} 1".to_string(),
        "hopwatch_schedule_lag_seconds_bucket".to_string(),
    ];
    for hop in hops {
        let labels = format!("chain=\"demo-orders\",hop=\"{hop}\"");
        names.push(format!("hopwatch_probes_total{{{labels},result=\"ok\"}}"));
        for quantile in ["0.5", "0.99"] {
            names.push(format!(
                "hopwatch_probe_latency_seconds{{{labels},quantile=\"{quantile}\"}}"
            ));
        }
        names.push(format!("hopwatch_probe_latency_seconds_count{{{labels}}}"));
        names.push(format!("hopwatch_hop_up{{{labels}}} 1"));
        // Every path into the demo's target runs through the ALB on 127.0.0.4, except the
        // target's own probe, which the agent makes directly.
        let peer = if hop == "target" {
            "127.0.0.1"
        } else {
            "127.0.0.4"
        };
        names.push(format!(
            "hopwatch_target_source_info{{{labels},source_ip=\"{peer}\"}} 1"
        ));
        names.push(format!("hopwatch_last_probe_timestamp_seconds{{{labels}}}"));
        names.push(format!("hopwatch_hop_info{{{labels},role=\"{hop}\"}} 1"));
    }
    let mut body = String::new();
    wait_for(
        "every demo metric in /metrics",
        Duration::from_secs(20),
        || {
            body = http_get(addr, "/metrics")
                .map(|(_, b)| b)
                .unwrap_or_default();
            names.iter().all(|n| body.contains(n.as_str()))
        },
    )
    .await;
    // The default detail (standard) leaves out what nothing shipped reads, and the 0 of the
    // 0/1 gauges read as `== 1`.
    for absent in [
        "hopwatch_probe_duration_seconds",
        "hopwatch_probe_phase_duration_seconds",
        "quantile=\"0.9\"",
        "quantile=\"0.999\"",
        "hopwatch_probe_http_status",
    ] {
        assert!(
            !body.contains(absent),
            "{absent} at detail standard:\n{body}"
        );
    }
    let zeros = body.lines().filter(|l| {
        (l.starts_with("hopwatch_chain_broken_hop{") || l.starts_with("hopwatch_hop_blind_spot{"))
            && l.ends_with(" 0")
    });
    assert_eq!(zeros.count(), 0, "{body}");
    assert_eq!(http_get(addr, "/-/healthy").expect("healthy").0, 200);
    assert_eq!(http_get(addr, "/-/ready").expect("ready").0, 200);

    let file = temp_file("demo-metrics.txt", &body);
    let promtool = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("run promtool");
    assert!(
        promtool.status.success() && promtool.stdout.is_empty() && promtool.stderr.is_empty(),
        "promtool check metrics (is promtool installed? .ci/run installs it):\n{}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    assert_eq!(terminate(&mut child), Some(0), "demo exits 0 on SIGTERM");
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    let config = temp_file(
        "run.toml",
        &format!(
            "[agent]\nlisten = \"127.0.0.1:0\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n[[chain]]\nname = \"a\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"x\"\nrole = \"target\"\nurl = \"http://{}/\"\n",
            refused_port()
        ),
    );
    let mut child = Command::new(BIN)
        .args(["run", "--log-format", "json", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // Wait for the first failing probe to be logged, as JSON.
    let mut saw = None;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if event["message"] == "hop state changed" {
            saw = Some(event);
            break;
        }
    }
    let event = saw.expect("a 'hop state changed' event");
    assert_eq!(event["chain"], "a");
    assert_eq!(event["hop"], "x");
    assert_eq!(event["from"], "unknown");
    assert_eq!(event["to"], "down");
    let reason = event["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("x: connect refused and no hop answers; nothing listening on port"),
        "{reason}"
    );
    std::thread::spawn(move || for _ in lines {});
    assert_eq!(terminate(&mut child), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_port_is_probed_and_reported_on_its_own() {
    let traffic = raw_server(|stream| {
        respond(
            stream,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        )
    })
    .await;
    let health_port = refused_port();
    let config = temp_file(
        "health.toml",
        &format!(
            "[[chain]]\nname = \"hc\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"alb\"\nrole = \"alb\"\nurl = \"http://{traffic}/\"\nhealth_url = \"http://{health_port}/health\"\n"
        ),
    );
    let (code, doc) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || check_json(&config)
    })
    .await
    .expect("join");
    assert_eq!(
        code, 0,
        "a failing health check does not take the chain down: {doc:#}"
    );
    let hop = &doc["chains"][0]["hops"][0];
    assert_eq!(hop["result"], "ok");
    assert_eq!(hop["health"]["url"], format!("http://{health_port}/health"));
    assert_eq!(hop["health"]["result"], "connect_refused");

    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("connect_refused while the traffic port answers; targets will be marked unhealthy, the load balancer then fails open"),
        "{table}"
    );

    // A hop without health_url has no "health" key at all.
    let plain = temp_file(
        "plain.toml",
        &format!("[[chain]]\nname = \"p\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"t\"\nrole = \"target\"\nurl = \"http://{traffic}/\"\n"),
    );
    let (_, doc) = tokio::task::spawn_blocking(move || check_json(&plain))
        .await
        .expect("join");
    assert!(
        doc["chains"][0]["hops"][0].get("health").is_none(),
        "{doc:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_outside_the_expectation_is_a_finding() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let echo = listener.local_addr().expect("addr");
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(hopwatch::echo::serve(
        listener,
        hopwatch::echo::EchoOptions::default(),
        rx,
    ));
    let config = temp_file(
        "expect.toml",
        &format!(
            "[[chain]]\nname = \"sg\"\nkind = \"custom\"\n\
             [[chain.hop]]\nname = \"narrow\"\nrole = \"target\"\nurl = \"http://{echo}/\"\nexpect_source = [\"10.0.0.0/16\"]\n\
             [[chain.hop]]\nname = \"loopback\"\nrole = \"target\"\nurl = \"http://{echo}/\"\nexpect_source = [\"127.0.0.0/8\"]\n\
             [[chain.hop]]\nname = \"itself\"\nrole = \"target\"\nurl = \"http://127.0.0.1:{}/\"\nexpect_source = [\"itself\"]\n",
            echo.port()
        ),
    );
    let (_, doc) = tokio::task::spawn_blocking(move || check_json(&config))
        .await
        .expect("join");
    let hops = &doc["chains"][0]["hops"];
    assert_eq!(hops[0]["source"]["peer"], "127.0.0.1");
    assert_eq!(
        hops[0]["source_expected"], false,
        "127.0.0.1 is not in 10.0.0.0/16: {doc:#}"
    );
    assert_eq!(hops[1]["source_expected"], true);
    assert_eq!(
        hops[2]["source_expected"], true,
        "a hop name means the addresses its host resolves to"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hop_the_agent_cannot_reach_behind_a_working_one_is_a_blind_spot() {
    let front = raw_server(|stream| {
        respond(
            stream,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        )
    })
    .await;
    let config = temp_file(
        "blind.toml",
        &format!(
            "[[chain]]\nname = \"b\"\nkind = \"custom\"\n\
             [[chain.hop]]\nname = \"gateway\"\nrole = \"gateway\"\nurl = \"http://{front}/\"\n\
             [[chain.hop]]\nname = \"alb\"\nrole = \"alb\"\nurl = \"http://{}/\"\n",
            refused_port()
        ),
    );
    let (code, doc) = tokio::task::spawn_blocking(move || check_json(&config))
        .await
        .expect("join");
    assert_eq!(code, 0, "users are served: not an outage: {doc:#}");
    let chain = &doc["chains"][0];
    assert_eq!(chain["up"], true);
    assert!(chain["broken_hop"].is_null());
    assert_eq!(chain["hops"][1]["blind_spot"], true);
    assert_eq!(chain["hops"][0]["blind_spot"], false);
}

#[test]
fn config_can_come_from_an_environment_variable() {
    let valid = "[[chain]]\nname = \"orders\"\nkind = \"custom\"\n  [[chain.hop]]\n  name = \"t\"\n  role = \"target\"\n  url = \"http://10.0.3.10/\"\n";
    let run = |value: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(["validate", "--config", "env:HOPWATCH_TEST_CONFIG"]);
        match value {
            Some(v) => c.env("HOPWATCH_TEST_CONFIG", v),
            None => c.env_remove("HOPWATCH_TEST_CONFIG"),
        };
        let out = c.output().expect("validate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert_eq!(run(Some(valid)).0, Some(0));
    let (code, err) = run(Some(&valid.replace("http://", "ftp://")));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("env:HOPWATCH_TEST_CONFIG:7:9: chain \"orders\" hop \"t\": url"),
        "{err}"
    );
    let (code, err) = run(None);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("environment variable HOPWATCH_TEST_CONFIG is not set"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_command_answers_for_a_running_agent() {
    let config = config(
        "[[chain]]\nname = \"h\"\nkind = \"custom\"\n  [[chain.hop]]\n  name = \"t\"\n  role = \"target\"\n  url = \"http://127.0.0.1:9/\"\n",
    );
    let agent = hopwatch::agent::start(config, "127.0.0.1:0".parse().expect("addr"), Vec::new())
        .await
        .expect("agent");
    let url = format!("http://{}/-/healthy", agent.metrics_addr);
    let health = |url: String| {
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["health", "--url", &url])
                .output()
                .expect("health")
                .status
                .code()
        })
    };
    assert_eq!(health(url).await.expect("join"), Some(0));
    let dead = format!("http://{}/-/healthy", refused_port());
    assert_eq!(health(dead).await.expect("join"), Some(1));
    agent.shutdown().await;
}

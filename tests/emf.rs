//! EMF mode end to end: `hopwatch run` probing a real `hopwatch echo`, writing Embedded Metric
//! Format lines to a file, each validated against `tests/emf/schema.json` (the published
//! document structure) and the specification's references by `tests/emf/validate.py`. An
//! extra dimension comes from ECS task metadata v4, served here as the ECS agent serves it.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::localstack;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emf_lines_follow_the_published_structure_and_carry_the_source() {
    // The validator runs on the test Python (jsonschema), the one LocalStack runs on.
    let Some(python) = localstack::python() else {
        return localstack::skip("emf_lines_follow_the_published_structure_and_carry_the_source");
    };
    let dir = std::env::temp_dir().join(format!("hopwatch-emf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let echo_addr = refused_port();
    let _echo = echo_process(echo_addr);
    // ECS task metadata v4, as the ECS agent serves it to a task.
    let metadata = raw_server(|stream| async move {
        let body = r#"{"Cluster":"prod","TaskARN":"arn:aws:ecs:eu-west-1:123456789012:task/prod/abc","AvailabilityZone":"eu-west-1b","Containers":[]}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        respond(stream, [head.as_bytes(), body.as_bytes()].concat()).await;
    })
    .await;
    let emf = dir.join("emf.log");
    let config = dir.join("hopwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interval = "200ms"
timeout = "150ms"

[[chain]]
name = "orders"
kind = "custom"
  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{echo_addr}/"
  expect_source = ["127.0.0.0/8"]

[cloudwatch]
mode = "emf"
namespace = "Hopwatch"
flush_interval = "1s"
emf_output = "{}"
dimensions = {{ Service = "orders-api", AvailabilityZone = "ecs:availability_zone" }}
vantage_dimension = true
"#,
            emf.display()
        ),
    )
    .expect("config");
    let mut agent = Kill(
        Command::new(BIN)
            .args(["run", "--listen", &refused_port().to_string(), "--config"])
            .arg(&config)
            .env(
                "ECS_CONTAINER_METADATA_URI_V4",
                format!("http://{metadata}/v4/abc"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run"),
    );
    let probes_written = |text: &str| -> f64 {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|d| d["Probes"].as_f64())
            .sum()
    };
    wait_for("EMF lines with 10 probes", Duration::from_secs(30), || {
        std::fs::read_to_string(&emf).is_ok_and(|t| probes_written(&t) >= 10.0)
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.0.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "no exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let out = Command::new(&python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/emf/validate.py"))
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/emf/schema.json"))
        .arg(&emf)
        .output()
        .expect("validator");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "EMF lines invalid:\n{report}");

    let text = std::fs::read_to_string(&emf).expect("emf");
    let docs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let number = |v: &serde_json::Value| match v {
        serde_json::Value::Array(a) => a.len() as f64,
        serde_json::Value::Number(_) => 1.0,
        _ => 0.0,
    };
    let (hop_lines, chain_lines): (Vec<_>, Vec<_>) =
        docs.iter().partition(|d| d.get("Hop").is_some());
    let rounds: f64 = chain_lines.iter().map(|d| number(&d["ChainUp"])).sum();
    let mut probes = 0.0;
    let mut samples = 0.0;
    for d in hop_lines {
        assert_eq!(d["Chain"], "orders");
        assert_eq!(d["Hop"], "target");
        assert_eq!(d["Service"], "orders-api");
        assert_eq!(
            d["AvailabilityZone"], "eu-west-1b",
            "from ECS task metadata"
        );
        // No [agent] vantage: the task's zone is the vantage.
        assert_eq!(d["Vantage"], "eu-west-1b", "the default vantage on ECS");
        // A healthy hop at the default detail (chain): its figures are properties of a plain
        // JSON log event, no metric of its own.
        assert!(
            d.get("_aws").is_none(),
            "a healthy hop publishes nothing: {d}"
        );
        assert_eq!(d["SourceIp"], "127.0.0.1", "the peer the echo saw: {d}");
        assert!(d["TraceId"]
            .as_str()
            .is_some_and(|t| t.starts_with("Root=1-")));
        let unexpected = match &d["UnexpectedSource"] {
            serde_json::Value::Array(a) => a.clone(),
            one => vec![one.clone()],
        };
        assert!(
            unexpected.iter().all(|v| v == 0.0),
            "127.0.0.1 is expected: {d}"
        );
        probes += d["Probes"].as_f64().unwrap_or(0.0);
        samples += number(&d["Latency"]);
    }
    // The chain's lines publish its three metrics, the vantage a dimension of each.
    let mut chain_samples = 0.0;
    let mut failures = 0.0;
    for d in &chain_lines {
        for set in d["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
            .as_array()
            .expect("dimension sets")
        {
            assert_eq!(
                set,
                &serde_json::json!(["Chain", "AvailabilityZone", "Service", "Vantage"]),
                "{d}"
            );
        }
        chain_samples += number(&d["Latency"]);
        failures += d["ProbeFailures"].as_f64().unwrap_or(0.0);
    }
    assert!(probes >= 10.0, "{probes} probes");
    assert_eq!(samples, probes, "one latency sample per successful probe");
    assert_eq!(
        rounds, probes,
        "one ChainUp sample per round, on the chain's own lines"
    );
    assert_eq!(
        chain_samples, probes,
        "the chain's Latency is its outermost hop's, every sample"
    );
    assert_eq!(failures, 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

//! CloudWatch API mode end to end: the real `hopwatch run` publishing through the real
//! `aws-sdk-cloudwatch` to a real LocalStack on 127.0.0.1, read back with
//! `GetMetricStatistics`.
//!
//! The truth is counted by the targets themselves: every probe carries an `X-Amzn-Trace-Id`
//! whose epoch second is the probe's start, which is also the period (1 s here) its sample
//! belongs to. So each second's `SampleCount` in CloudWatch must equal the probes the target
//! received that second: not roughly, exactly.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use common::localstack::{self, LocalStack};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

/// An HTTP target that answers 200 after `delay` and counts probes per trace-id second.
struct Target {
    addr: SocketAddr,
    seconds: Arc<Mutex<BTreeMap<i64, u64>>>,
}

impl Target {
    async fn start(delay: Duration) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seconds: Arc<Mutex<BTreeMap<i64, u64>>> = Arc::default();
        let counts = seconds.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counts = counts.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if let Some(second) = trace_second(&String::from_utf8_lossy(&head)) {
                        *counts
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(second)
                            .or_default() += 1;
                    }
                    tokio::time::sleep(delay).await;
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Target { addr, seconds }
    }

    fn counts(&self) -> BTreeMap<i64, u64> {
        self.seconds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn total(&self) -> u64 {
        self.counts().values().sum()
    }
}

/// The epoch second of `X-Amzn-Trace-Id: Root=1-<8 hex>-...`.
fn trace_second(head: &str) -> Option<i64> {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-amzn-trace-id:"))?;
    let hex = line.split("Root=1-").nth(1)?.get(..8)?;
    i64::from_str_radix(hex, 16).ok()
}

/// `hopwatch run` as a child process; killed if the test ends without stopping it.
struct Agent {
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Agent {
    fn start(tag: &str, config: &str) -> Agent {
        let dir = std::env::temp_dir().join(format!("hopwatch-cw-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("hopwatch.toml");
        std::fs::write(&path, config).expect("config");
        let log = dir.join("agent.log");
        // Empty AWS config files: nothing from this machine's own AWS setup leaks in.
        std::fs::write(dir.join("aws-config"), "").expect("aws config");
        let metrics = refused_port();
        let child = Command::new(BIN)
            .args(["run", "--log-format", "json", "--listen"])
            .arg(metrics.to_string())
            .arg("--config")
            .arg(&path)
            .env_remove("AWS_PROFILE")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", dir.join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("aws-config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start hopwatch run");
        Agent {
            child,
            metrics,
            log,
        }
    }

    /// The value of one sample of `/metrics` (exact name with labels), 0 when absent.
    async fn sample(&self, series: &str) -> f64 {
        let addr = self.metrics;
        let text = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
            .await
            .expect("join")
            .map(|(_, body)| body)
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    async fn sent(&self) -> f64 {
        self.sample("hopwatch_cloudwatch_datums_total{result=\"sent\"}")
            .await
    }
    async fn retried(&self) -> f64 {
        self.sample("hopwatch_cloudwatch_datums_total{result=\"retried\"}")
            .await
    }
    async fn dropped(&self) -> f64 {
        self.sample("hopwatch_cloudwatch_datums_total{result=\"dropped\"}")
            .await
    }
    async fn buffered(&self) -> f64 {
        self.sample("hopwatch_cloudwatch_buffered_datums").await
    }

    /// SIGTERM, then waits (at most 30 s) for a clean exit; returns the log.
    async fn terminate(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        let code = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status.code();
            }
            assert!(
                Instant::now() < deadline,
                "hopwatch did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert_eq!(code, Some(0), "hopwatch run exit code; log:\n{log}");
        log
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// At the default `[cloudwatch] detail = "chain"`: the chain's `Latency` is `fast`'s, its
/// outermost hop.
fn config(namespace: &str, endpoint: &str, fast: SocketAddr, slow: SocketAddr) -> String {
    config_with(namespace, endpoint, fast, slow, "", "")
}

/// `slow_extra`: more keys (TOML lines) for the `slow` hop; `cloudwatch_extra`: for
/// `[cloudwatch]`.
fn config_with(
    namespace: &str,
    endpoint: &str,
    fast: SocketAddr,
    slow: SocketAddr,
    slow_extra: &str,
    cloudwatch_extra: &str,
) -> String {
    format!(
        r#"
[agent]
interval = "400ms"
timeout = "300ms"

[[chain]]
name = "orders"
kind = "custom"

  [[chain.hop]]
  name = "fast"
  role = "alb"
  url = "http://{fast}/"

  [[chain.hop]]
  name = "slow"
  role = "target"
  url = "http://{slow}/"
{slow_extra}

[cloudwatch]
mode = "api"
namespace = "{namespace}"
region = "us-east-1"
endpoint_url = "{endpoint}"
storage_resolution = 1
flush_interval = "1s"
dimensions = {{ Team = "payments" }}
{cloudwatch_extra}
"#
    )
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn dims(pairs: &[(&str, &str)]) -> Vec<Dimension> {
    pairs
        .iter()
        .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
        .collect()
}

/// Per second: (SampleCount, Minimum, Maximum, Sum) of one metric.
async fn per_second(
    client: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metric: &str,
    dimensions: &[(&str, &str)],
    from: i64,
    to: i64,
) -> BTreeMap<i64, (f64, f64, f64, f64)> {
    let out = client
        .get_metric_statistics()
        .namespace(namespace)
        .metric_name(metric)
        .set_dimensions(Some(dims(dimensions)))
        .start_time(DateTime::from_secs(from))
        .end_time(DateTime::from_secs(to))
        .period(1)
        .statistics(Statistic::SampleCount)
        .statistics(Statistic::Minimum)
        .statistics(Statistic::Maximum)
        .statistics(Statistic::Sum)
        .send()
        .await
        .expect("GetMetricStatistics");
    out.datapoints()
        .iter()
        .map(|d| {
            (
                d.timestamp().map(|t| t.secs()).unwrap_or(0),
                (
                    d.sample_count().unwrap_or(0.0),
                    d.minimum().unwrap_or(f64::NAN),
                    d.maximum().unwrap_or(f64::NAN),
                    d.sum().unwrap_or(f64::NAN),
                ),
            )
        })
        .collect()
}

fn counts_only(points: &BTreeMap<i64, (f64, f64, f64, f64)>) -> BTreeMap<i64, u64> {
    points.iter().map(|(t, p)| (*t, p.0 as u64)).collect()
}

/// Waits for a condition that needs `.await`ing, polling every 100 ms.
macro_rules! wait_until {
    ($what:expr, $secs:expr, $cond:expr) => {{
        let end = Instant::now() + Duration::from_secs($secs);
        loop {
            if $cond {
                break;
            }
            assert!(
                Instant::now() < end,
                "timed out after {} s waiting for {}",
                $secs,
                $what
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

/// Waits until the agent's backlog is sent, checks nothing was dropped, stops it (SIGTERM);
/// returns its log.
async fn drain_and_stop(agent: Agent) -> String {
    wait_until!("the backlog to drain", 60, {
        agent.buffered().await == 0.0 && agent.sent().await > 0.0
    });
    assert_eq!(
        agent.dropped().await,
        0.0,
        "nothing dropped:\n{}",
        agent.log()
    );
    agent.terminate().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_arrives_as_a_distribution_with_its_dimensions() {
    let Some(python) = localstack::python() else {
        return localstack::skip("every_probe_arrives_as_a_distribution_with_its_dimensions");
    };
    let mut ls = LocalStack::new(python, refused_port(), "dist");
    ls.start().await;
    let fast = Target::start(Duration::from_millis(10)).await;
    let slow = Target::start(Duration::from_millis(40)).await;
    // The load balancer's health-check port of `slow`: its own server, so the targets count
    // only traffic probes.
    let health = Target::start(Duration::ZERO).await;
    let ns = "HopwatchDist";
    // Every hop's metrics, as before `detail` existed...
    let agent = Agent::start(
        "dist",
        &config_with(
            ns,
            &ls.endpoint(),
            fast.addr,
            slow.addr,
            &format!("  health_url = \"http://{}/health\"", health.addr),
            "detail = \"hop\"",
        ),
    );
    // ...and, beside it, the same healthy chain at the default detail, on targets of its own.
    let chain_ns = "HopwatchDistChain";
    let (chain_fast, chain_slow) = (
        Target::start(Duration::from_millis(10)).await,
        Target::start(Duration::from_millis(40)).await,
    );
    let chain_health = Target::start(Duration::ZERO).await;
    let chain_agent = Agent::start(
        "dist-chain",
        &config_with(
            chain_ns,
            &ls.endpoint(),
            chain_fast.addr,
            chain_slow.addr,
            &format!("  health_url = \"http://{}/health\"", chain_health.addr),
            "",
        ),
    );

    wait_until!("20 probes per hop and a successful PutMetricData", 60, {
        fast.total() >= 20
            && slow.total() >= 20
            && chain_fast.total() >= 20
            && agent.sent().await > 0.0
            && chain_agent.sent().await > 0.0
    });
    let log = agent.terminate().await;
    let chain_log = chain_agent.terminate().await;
    let client = ls.client();

    for (hop, target, delay_ms) in [("fast", &fast, 10.0), ("slow", &slow, 40.0)] {
        let truth = target.counts();
        let (from, to) = (truth.keys().min().copied().unwrap_or(0) - 5, now_secs() + 5);
        let got = per_second(
            &client,
            ns,
            "Latency",
            &[("Chain", "orders"), ("Hop", hop), ("Team", "payments")],
            from,
            to,
        )
        .await;
        assert_eq!(
            counts_only(&got),
            truth,
            "{hop}: samples per second in CloudWatch vs probes the target received\nagent log:\n{log}"
        );
        for (t, (_, min, max, _)) in &got {
            assert!(
                *min >= delay_ms && *max < delay_ms + 250.0,
                "{hop} at {t}: min {min} max {max} vs a {delay_ms} ms delay"
            );
        }
        let probes = per_second(
            &client,
            ns,
            "Probes",
            &[
                ("Chain", "orders"),
                ("Hop", hop),
                ("Result", "ok"),
                ("Team", "payments"),
            ],
            from,
            to,
        )
        .await;
        let sums: BTreeMap<i64, u64> = probes.iter().map(|(t, p)| (*t, p.3 as u64)).collect();
        assert_eq!(sums, truth, "{hop}: Probes{{Result=ok}} per second");
    }

    // HealthCheckUp: one sample per round, all 1; the health server counted the checks.
    let truth = health.counts();
    let checks = per_second(
        &client,
        ns,
        "HealthCheckUp",
        &[("Chain", "orders"), ("Hop", "slow"), ("Team", "payments")],
        truth.keys().min().copied().unwrap_or(0) - 5,
        now_secs() + 5,
    )
    .await;
    assert_eq!(
        counts_only(&checks),
        truth,
        "HealthCheckUp samples per second"
    );
    assert!(
        checks.values().all(|p| p.1 == 1.0),
        "every check passed: {checks:?}"
    );

    // ChainUp: one sample per round; each round probed `fast` once.
    let truth = fast.counts();
    let (from, to) = (truth.keys().min().copied().unwrap_or(0) - 5, now_secs() + 5);
    let chain_up = per_second(
        &client,
        ns,
        "ChainUp",
        &[("Chain", "orders"), ("Team", "payments")],
        from,
        to,
    )
    .await;
    let rounds: f64 = chain_up.values().map(|p| p.0).sum();
    assert_eq!(rounds as u64, fast.total(), "ChainUp samples = rounds");

    // Every metric carries exactly the dimensions it should.
    let listed = client
        .list_metrics()
        .namespace(ns)
        .send()
        .await
        .expect("ListMetrics");
    let mut shapes: BTreeMap<String, std::collections::BTreeSet<Vec<String>>> = BTreeMap::new();
    for m in listed.metrics() {
        let mut names: Vec<String> = m
            .dimensions()
            .iter()
            .filter_map(|d| d.name().map(str::to_string))
            .collect();
        names.sort();
        shapes
            .entry(m.metric_name().unwrap_or("").to_string())
            .or_default()
            .insert(names);
    }
    let set = |names: &[&str]| -> std::collections::BTreeSet<Vec<String>> {
        [names.iter().map(|n| n.to_string()).collect()].into()
    };
    let expected: BTreeMap<String, std::collections::BTreeSet<Vec<String>>> = [
        ("Latency", set(&["Chain", "Hop", "Team"])),
        ("ProbeFailures", set(&["Chain", "Hop", "Team"])),
        ("HopUp", set(&["Chain", "Hop", "Team"])),
        ("BrokenHop", set(&["Chain", "Hop", "Team"])),
        ("HealthCheckUp", set(&["Chain", "Hop", "Team"])),
        ("Probes", set(&["Chain", "Hop", "Result", "Team"])),
        ("ChainUp", set(&["Chain", "Team"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(
        shapes, expected,
        "every metric, with exactly its dimensions"
    );

    // At `detail = "chain"` a healthy chain is three metrics, as CloudWatch lists them; its
    // Latency is its outermost hop's, every probe of it, second by second.
    let listed = client
        .list_metrics()
        .namespace(chain_ns)
        .send()
        .await
        .expect("ListMetrics");
    let mut metrics: Vec<(String, Vec<String>)> = listed
        .metrics()
        .iter()
        .map(|m| {
            let mut dims: Vec<String> = m
                .dimensions()
                .iter()
                .map(|d| format!("{}={}", d.name().unwrap_or(""), d.value().unwrap_or("")))
                .collect();
            dims.sort();
            (m.metric_name().unwrap_or("").to_string(), dims)
        })
        .collect();
    metrics.sort();
    let chain_dims = vec!["Chain=orders".to_string(), "Team=payments".to_string()];
    assert_eq!(
        metrics,
        [
            ("ChainUp".to_string(), chain_dims.clone()),
            ("Latency".to_string(), chain_dims.clone()),
            ("ProbeFailures".to_string(), chain_dims),
        ],
        "a healthy chain at detail chain\nagent log:\n{chain_log}"
    );
    let truth = chain_fast.counts();
    let got = per_second(
        &client,
        chain_ns,
        "Latency",
        &[("Chain", "orders"), ("Team", "payments")],
        truth.keys().min().copied().unwrap_or(0) - 5,
        now_secs() + 5,
    )
    .await;
    assert_eq!(
        counts_only(&got),
        truth,
        "the chain's Latency: its outermost hop's probes, per second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_from_the_start_loses_nothing_and_keeps_timestamps() {
    let Some(python) = localstack::python() else {
        return localstack::skip("an_outage_from_the_start_loses_nothing_and_keeps_timestamps");
    };
    let mut ls = LocalStack::new(python, refused_port(), "late");
    let fast = Target::start(Duration::from_millis(5)).await;
    let slow = Target::start(Duration::from_millis(5)).await;
    let ns = "HopwatchLate";
    // Nothing listens on the endpoint yet: every call fails until LocalStack starts.
    let agent = Agent::start("late", &config(ns, &ls.endpoint(), fast.addr, slow.addr));
    wait_until!("three failed flushes and probes in four seconds", 60, {
        agent.retried().await > 0.0 && agent.buffered().await > 0.0 && fast.counts().len() >= 4
    });
    let started = now_secs();
    ls.start().await;
    let log = drain_and_stop(agent).await;

    let client = ls.client();
    let truth = fast.counts();
    let first = truth.keys().min().copied().unwrap_or(0);
    // The chain's own Latency, its outermost hop's (`fast`): the default detail.
    let got = per_second(
        &client,
        ns,
        "Latency",
        &[("Chain", "orders"), ("Team", "payments")],
        first - 5,
        now_secs() + 5,
    )
    .await;
    assert_eq!(counts_only(&got), truth, "agent log:\n{log}");
    assert!(
        got.keys().next().is_some_and(|t| *t < started),
        "data from before LocalStack existed keeps its original timestamps: {got:?}, started {started}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cloudwatch_receives_the_whole_gap() {
    let Some(python) = localstack::python() else {
        return localstack::skip("a_restarted_cloudwatch_receives_the_whole_gap");
    };
    let mut ls = LocalStack::new(python, refused_port(), "gap");
    ls.start().await;
    let fast = Target::start(Duration::from_millis(5)).await;
    let slow = Target::start(Duration::from_millis(5)).await;
    let ns = "HopwatchGap";
    let agent = Agent::start("gap", &config(ns, &ls.endpoint(), fast.addr, slow.addr));
    wait_until!("a successful PutMetricData", 60, agent.sent().await > 0.0);

    // Each LocalStack start gets a fresh state directory: everything the restarted one holds
    // was sent after it came back, so whatever has a timestamp from the gap was buffered.
    ls.kill();
    let killed = now_secs();
    wait_until!("failed calls and four more seconds of probes", 60, {
        agent.retried().await > 0.0 && fast.counts().range(killed + 1..).count() >= 4
    });
    let restarted = now_secs();
    ls.start().await;
    let log = drain_and_stop(agent).await;

    let client = ls.client();
    let got = per_second(
        &client,
        ns,
        "Latency",
        &[("Chain", "orders"), ("Team", "payments")],
        killed - 60,
        now_secs() + 5,
    )
    .await;
    let first = got.keys().next().copied().expect("data after the restart");
    assert!(
        first <= killed,
        "the period running when CloudWatch went away was resent: first {first}, killed {killed}"
    );
    let truth: BTreeMap<i64, u64> = fast
        .counts()
        .range(first..)
        .map(|(k, v)| (*k, *v))
        .collect();
    assert_eq!(
        counts_only(&got),
        truth,
        "every second from the outage on, with its own timestamp (killed {killed}, restarted {restarted})\nagent log:\n{log}"
    );
    assert!(
        got.keys().any(|t| *t > killed && *t < restarted),
        "seconds inside the gap are present"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_what_cannot_be_sent_is_counted_and_said() {
    // A CloudWatch that accepts connections and never answers: calls hang, the worst case for
    // a deadline. No LocalStack needed.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", black_hole.local_addr().expect("addr"));
    let held = std::thread::spawn(move || {
        let mut streams = Vec::new();
        for stream in black_hole.incoming().take(64) {
            streams.push(stream);
        }
    });
    let fast = Target::start(Duration::from_millis(1)).await;
    let slow = Target::start(Duration::from_millis(1)).await;
    let agent = Agent::start(
        "lost",
        &config("HopwatchLost", &endpoint, fast.addr, slow.addr),
    );
    // Two flushed periods: a call is hanging and datums are held.
    wait_until!("datums held", 60, {
        fast.counts().len() >= 3 && agent.buffered().await > 0.0
    });
    let started = Instant::now();
    let log = agent.terminate().await;
    // The deadline is 10 s, hanging call included; the process must not wait out the SDK's.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");
    let line = log
        .lines()
        .find(|l| l.contains("shutdown deadline reached"))
        .unwrap_or_else(|| panic!("no word of the lost datums:\n{log}"));
    let doc: serde_json::Value = serde_json::from_str(line).expect("json log");
    assert_eq!(doc["level"], "ERROR");
    assert!(doc["lost"].as_u64().is_some_and(|n| n > 0), "{line}");
    drop(held);
}

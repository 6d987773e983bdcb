//! The CloudWatch buffer under an outage longer than it can hold: the oldest datums are
//! dropped, exactly as many as it says, and the newest arrive once CloudWatch is back.
//!
//! In-process, so the test knows every datum made: 400 one-second periods of a two-hop chain
//! are fed through the publisher while nothing listens on its endpoint, then LocalStack starts
//! there. Its own binary, because the SDK reads credentials from the environment.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use common::localstack::{self, LocalStack};
use common::*;
use hopwatch::diagnose::Verdict;
use hopwatch::export::cloudwatch::publish::Publisher;
use hopwatch::export::cloudwatch::stats::Stats;
use hopwatch::export::prometheus::Metrics;
use hopwatch::probe::{Outcome, ProbeResult};
use hopwatch::record::Observation;
use hopwatch::schedule::{Probed, Round};

const PERIODS: u64 = 400;
/// Per period at `[cloudwatch] detail = "hop"`: five per hop (Latency, Probes, ProbeFailures,
/// HopUp, BrokenHop) and ChainUp. The default, `chain`, publishes a healthy hop's figures only
/// while it fails: `hop` keeps the count of datums what this test is about.
const PER_PERIOD: u64 = 11;
const CAPACITY: u64 = 1000;

fn sample(metrics: &Metrics, series: &str) -> f64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn result(at: SystemTime) -> ProbeResult {
    ProbeResult {
        outcome: Outcome::Ok,
        status: Some(200),
        total: Duration::from_millis(12),
        phases: Default::default(),
        started_at: at,
        remote: None,
        evidence: Default::default(),
        body: Default::default(),
        detail: None,
        trace_id: String::new(),
        cert_not_after: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_drops_exactly_the_oldest_and_counts_them() {
    let Some(python) = localstack::python() else {
        return localstack::skip("overflow_drops_exactly_the_oldest_and_counts_them");
    };
    // The only test in this binary: nothing else reads the environment meanwhile.
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::remove_var("AWS_PROFILE");

    let mut ls = LocalStack::new(python, refused_port(), "overflow");
    let config = config(&format!(
        r#"
[[chain]]
name = "orders"
kind = "custom"
  [[chain.hop]]
  name = "a"
  role = "alb"
  url = "http://127.0.0.1:9/"
  [[chain.hop]]
  name = "b"
  role = "target"
  url = "http://127.0.0.1:9/"

[cloudwatch]
namespace = "HopwatchOverflow"
region = "us-east-1"
endpoint_url = "{}"
storage_resolution = 1
flush_interval = "1s"
max_buffered_datums = {CAPACITY}
detail = "hop"
"#,
        ls.endpoint()
    ));
    let chain = config.chains[0].clone();
    let metrics = Metrics::new(Default::default());
    let stats = std::sync::Arc::new(Stats::default());
    metrics.watch_cloudwatch(stats.clone());
    let publisher = Publisher::start(config.cloudwatch.clone().expect("[cloudwatch]"), stats).await;
    let feed = publisher.feed();

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let base = now - 600;
    for i in 0..PERIODS {
        let at = UNIX_EPOCH + Duration::from_secs(base + i) + Duration::from_millis(300);
        let round = Round {
            chain: chain.clone(),
            planned: std::time::Instant::now(),
            started: std::time::Instant::now(),
            started_wall: at,
            probed: Probed {
                results: vec![result(at), result(at)],
                health: vec![None, None],
                resolved: vec![None, None],
                addresses: vec![Vec::new(), Vec::new()],
            },
        };
        let verdict = Verdict {
            up: true,
            broken: None,
            blind_spots: Vec::new(),
            code: None,
            reason: None,
            contradictions: Vec::new(),
        };
        feed.observe(&Observation::new(
            round,
            vec![true, true],
            verdict,
            Vec::new(),
        ));
    }

    let made = PERIODS * PER_PERIOD;
    let dropped = "hopwatch_cloudwatch_datums_total{result=\"dropped\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    while sample(&metrics, dropped) < (made - CAPACITY) as f64
        || sample(
            &metrics,
            "hopwatch_cloudwatch_datums_total{result=\"retried\"}",
        ) == 0.0
    {
        assert!(
            Instant::now() < deadline,
            "the buffer never overflowed:\n{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sample(&metrics, "hopwatch_cloudwatch_buffered_datums") as u64
            + sample(&metrics, dropped) as u64,
        made,
        "every datum is either held or counted as dropped"
    );

    ls.start().await;
    let sent = "hopwatch_cloudwatch_datums_total{result=\"sent\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    while sample(&metrics, sent) < CAPACITY as f64 {
        assert!(
            Instant::now() < deadline,
            "the backlog never drained:\n{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.finish(Duration::from_secs(10)).await;
    assert_eq!(sample(&metrics, sent) as u64, CAPACITY);
    assert_eq!(
        sample(&metrics, dropped) as u64,
        made - CAPACITY,
        "drops counted exactly"
    );
    assert_eq!(sample(&metrics, "hopwatch_cloudwatch_buffered_datums"), 0.0);

    // What arrived is exactly the newest 1,000 datums: every datum here holds one sample.
    let client = ls.client();
    let mut total = 0;
    let mut first = std::collections::BTreeMap::new();
    let series: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("Latency", vec![("Chain", "orders"), ("Hop", "a")]),
        (
            "Probes",
            vec![("Chain", "orders"), ("Hop", "a"), ("Result", "ok")],
        ),
        ("ProbeFailures", vec![("Chain", "orders"), ("Hop", "a")]),
        ("HopUp", vec![("Chain", "orders"), ("Hop", "a")]),
        ("BrokenHop", vec![("Chain", "orders"), ("Hop", "a")]),
        ("Latency", vec![("Chain", "orders"), ("Hop", "b")]),
        (
            "Probes",
            vec![("Chain", "orders"), ("Hop", "b"), ("Result", "ok")],
        ),
        ("ProbeFailures", vec![("Chain", "orders"), ("Hop", "b")]),
        ("HopUp", vec![("Chain", "orders"), ("Hop", "b")]),
        ("BrokenHop", vec![("Chain", "orders"), ("Hop", "b")]),
        ("ChainUp", vec![("Chain", "orders")]),
    ];
    for (i, (metric, dims)) in series.iter().enumerate() {
        let out = client
            .get_metric_statistics()
            .namespace("HopwatchOverflow")
            .metric_name(*metric)
            .set_dimensions(Some(
                dims.iter()
                    .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
                    .collect(),
            ))
            .start_time(DateTime::from_secs(base as i64 - 5))
            .end_time(DateTime::from_secs((base + PERIODS) as i64 + 5))
            .period(1)
            .statistics(Statistic::SampleCount)
            .send()
            .await
            .expect("GetMetricStatistics");
        let points = out.datapoints();
        total += points
            .iter()
            .map(|d| d.sample_count().unwrap_or(0.0) as u64)
            .sum::<u64>();
        let earliest = points
            .iter()
            .filter_map(|d| d.timestamp().map(|t| t.secs() as u64 - base))
            .min();
        first.insert(i, earliest);
    }
    assert_eq!(
        total, CAPACITY,
        "CloudWatch holds exactly what was not dropped"
    );
    // Datum 3,400 (0-based) is the second of period 309: Latency{a} of 309 went, the rest stayed.
    let cut = (made - CAPACITY) / PER_PERIOD;
    assert_eq!(
        first[&0],
        Some(cut + 1),
        "Latency{{a}} starts a period later"
    );
    for i in 1..series.len() {
        assert_eq!(
            first[&i],
            Some(cut),
            "{:?} starts at period {cut}",
            series[i]
        );
    }
}

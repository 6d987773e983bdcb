//! Micro-benchmarks of the work hopwatch does per probe and per scrape, besides the network:
//! recording a round, rendering `/metrics`, turning a flush period into CloudWatch datums.
//!
//! `cargo bench -p hopwatch-bench` (or `bench/run`, which runs these after the comparison).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use hopwatch::config::{load_str, Chain, CloudWatchDetail, Detail};
use hopwatch::diagnose::Verdict;
use hopwatch::export::cloudwatch::encode;
use hopwatch::export::cloudwatch::period::Periods;
use hopwatch::export::prometheus::Metrics;
use hopwatch::probe::{Outcome, Phases, ProbeResult};
use hopwatch::record::window::Window;
use hopwatch::record::{Observation, Recorder};
use hopwatch::schedule::{Probed, Round};

/// What `hopwatch echo` answers through an NLB with PROXY v2: the body parsed per round.
const ECHO: &str = r#"{"service":"hopwatch-echo","peer":"10.0.1.7:41000","local":"10.0.3.10:80","method":"GET","path":"/","host":"x","x_forwarded_for":"203.0.113.9, 10.0.0.5","x_forwarded_proto":null,"x_forwarded_port":null,"x_amzn_trace_id":null,"proxy_protocol":[{"version":2,"command":"proxy","src":"10.0.0.5:50000","dst":"10.0.1.7:80","vpce_id":"vpce-0abc"}],"delay_us":0,"identity":{"hostname":"t","task_arn":null,"cluster":null,"availability_zone":null}}"#;

/// `chains` chains of kind rest-nlb-alb (4 hops each).
fn chains(chains: usize) -> Vec<Arc<Chain>> {
    let mut text = String::new();
    for c in 0..chains {
        text.push_str(&format!(
            "[[chain]]\nname = \"chain-{c}\"\nkind = \"rest-nlb-alb\"\n"
        ));
        for hop in ["gateway", "nlb", "alb", "target"] {
            text.push_str(&format!(
                "[[chain.hop]]\nname = \"{hop}\"\nurl = \"http://127.0.0.1:8080/{c}/{hop}\"\n"
            ));
        }
    }
    match load_str("bench.toml", &text, &|_| None) {
        Ok(config) => config.chains,
        Err(err) => panic!("{err}"),
    }
}

fn phases(us: u64) -> Phases {
    let d = |v: u64| Some(Duration::from_micros(v));
    Phases {
        dns: None,
        connect: d(us / 4),
        tls: None,
        ttfb: d(us / 2),
        transfer: d(us / 4),
    }
}

fn result(us: u64, at: SystemTime) -> ProbeResult {
    ProbeResult {
        outcome: Outcome::Ok,
        status: Some(200),
        total: Duration::from_micros(us),
        phases: phases(us),
        started_at: at,
        remote: None,
        evidence: Default::default(),
        body: bytes::Bytes::from_static(ECHO.as_bytes()),
        detail: None,
        trace_id: "Root=1-6565f000-000000000000000000000001".into(),
        cert_not_after: None,
    }
}

fn round(chain: &Arc<Chain>, us: u64, at: SystemTime) -> Round {
    let results: Vec<ProbeResult> = chain.hops.iter().map(|_| result(us, at)).collect();
    let n = results.len();
    let now = Instant::now();
    Round {
        chain: chain.clone(),
        planned: now,
        started: now,
        started_wall: at,
        probed: Probed {
            results,
            health: vec![None; n],
            resolved: vec![None; n],
            addresses: vec![Vec::new(); n],
        },
    }
}

fn up() -> Verdict {
    Verdict {
        up: true,
        broken: None,
        blind_spots: Vec::new(),
        code: None,
        reason: None,
        contradictions: Vec::new(),
    }
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    g.bench_function("window_quantiles_300_samples", |b| {
        let mut w = Window::new(Duration::from_secs(300));
        let start = Instant::now();
        for i in 0..300u64 {
            w.record(
                start + Duration::from_secs(i),
                Duration::from_micros(200 + i * 7),
            );
        }
        let mut h = hopwatch::record::window::scratch();
        let now = start + Duration::from_secs(299);
        b.iter(|| black_box(w.quantiles(now, &[0.5, 0.9, 0.99, 0.999], &mut h)));
    });
    g.bench_function("window_record_one_probe", |b| {
        let mut w = Window::new(Duration::from_secs(300));
        let start = Instant::now();
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            // One sample a second for a 5-minute window: samples leave as fast as they come.
            let at = start + Duration::from_secs(i);
            w.record(at, Duration::from_micros(200 + i % 300));
        });
    });
    let chain = chains(1).remove(0);
    let metrics = Metrics::new(Default::default());
    metrics.set_chains(std::slice::from_ref(&chain));
    let at = SystemTime::now();
    let r = round(&chain, 250, at);
    let observed = Observation::new(r.clone(), vec![true; 4], up(), Vec::new());
    g.bench_function("metrics_observe_round_of_4_hops", |b| {
        b.iter(|| metrics.observe(black_box(&observed)));
    });
    // The record stage itself: debouncing, the verdict, parsing the echo answers.
    let mut recorder = Recorder::new(std::slice::from_ref(&chain));
    g.bench_function("recorder_observe_round_of_4_hops", |b| {
        b.iter_batched(
            || r.clone(),
            |r| black_box(recorder.observe(r)),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn render(c: &mut Criterion) {
    let mut g = c.benchmark_group("render");
    g.sample_size(10);
    for hops in [1_000usize, 10_000] {
        let all = chains(hops / 4);
        let metrics = Metrics::new(Default::default());
        metrics.set_chains(&all);
        let at = SystemTime::now();
        for chain in &all {
            for k in 0..3 {
                let r = round(chain, 200 + k * 50, at);
                metrics.observe(&Observation::new(r, vec![true; 4], up(), Vec::new()));
            }
        }
        // `[agent] detail`: the default, then every series.
        for detail in [Detail::Standard, Detail::Full] {
            metrics.set_detail(detail);
            g.bench_function(format!("metrics_render_{hops}_hops_{detail}"), |b| {
                b.iter(|| black_box(metrics.render().len()));
            });
        }
    }
    g.finish();
}

fn cloudwatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("cloudwatch");
    let chain = chains(1).remove(0);
    let at = SystemTime::now();
    for detail in [CloudWatchDetail::Chain, CloudWatchDetail::Hop] {
        g.bench_function(format!("datums_of_a_60s_period_4_hops_{detail}"), |b| {
            b.iter_batched(
                || {
                    let mut periods = Periods::new(Duration::from_secs(60));
                    for s in 0..60u64 {
                        let when = at + Duration::from_secs(s);
                        let r = round(&chain, 200 + s * 7, when);
                        periods.observe(&Observation::new(r, vec![true; 4], up(), Vec::new()));
                    }
                    periods.take_all()
                },
                |periods| {
                    let extra = vec![("Team".to_string(), "payments".to_string())];
                    periods
                        .iter()
                        .map(|p| encode::datums(p, &extra, 60, detail).len())
                        .sum::<usize>()
                },
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, record, render, cloudwatch);
criterion_main!(benches);

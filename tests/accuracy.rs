//! A target of known latency is measured to within a millisecond. In a test binary of its own so
//! that other tests don't compete for the CPU while it measures.

mod common;

use std::time::Duration;

use hopwatch::echo::{EchoOptions, Identity};
use hopwatch::probe::{tls::TlsConfigs, Outcome, Prober};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_target_is_measured_within_a_millisecond() {
    let delay = Duration::from_millis(20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let options = EchoOptions {
        delay,
        identity: Identity::default(),
        ..EchoOptions::default()
    };
    tokio::spawn(hopwatch::echo::serve(listener, options, rx));

    let hop = common::hop(&format!("http://{addr}/"), "");
    let prober = Prober::new(TlsConfigs::new([]).expect("tls"));
    let mut ttfb_errors = Vec::new();
    let mut total_errors = Vec::new();
    for _ in 0..11 {
        let r = prober.probe(&hop, None).await;
        assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.detail);
        let ttfb = r.phases.ttfb.expect("ttfb");
        ttfb_errors.push((ttfb.as_secs_f64() - delay.as_secs_f64()) * 1e3);
        total_errors.push((r.total.as_secs_f64() - delay.as_secs_f64()) * 1e3);
    }
    ttfb_errors.sort_by(f64::total_cmp);
    total_errors.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    println!("ttfb - delay (ms), sorted: {ttfb_errors:.3?}");
    println!("total - delay (ms), sorted: {total_errors:.3?}");
    assert!(
        (0.0..1.0).contains(&median(&ttfb_errors)),
        "median time to first byte is {:.3} ms off the 20 ms delay",
        median(&ttfb_errors)
    );
    assert!(
        (0.0..1.0).contains(&median(&total_errors)),
        "median total is {:.3} ms off the 20 ms delay",
        median(&total_errors)
    );
}

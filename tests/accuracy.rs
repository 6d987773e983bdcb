//! A target of known latency is measured to within a millisecond. In a test binary of its own so
//! that other tests don't compete for the CPU while it measures.

mod common;

use std::time::Duration;

use hopwatch::echo::EchoOptions;
use hopwatch::probe::{tls::TlsConfigs, Outcome, Prober};
use hopwatch::wire::{EchoReply, Identity};

/// An echo target answering after `delay`, and its address.
async fn target(delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = tokio::sync::watch::channel(false);
    let options = EchoOptions {
        delay,
        identity: Identity::default(),
        ..EchoOptions::default()
    };
    tokio::spawn(async move {
        hopwatch::echo::serve(listener, options, rx).await;
        drop(stop);
    });
    addr
}

fn median(v: &[f64]) -> f64 {
    v[v.len() / 2]
}

/// Probes per target. The two targets are probed in turn, so a noisy moment of the host
/// falls on both alike.
const PROBES: usize = 41;

/// One probe of `hop`: time to first byte and total, each less the delay the target reports it
/// really slept (`delay_us`), in ms. What remains is the probe's own path: the network, the
/// target's work, and whatever error the prober adds.
async fn beyond_delay(prober: &Prober, hop: &hopwatch::config::Hop) -> (f64, f64) {
    let r = prober.probe(hop, None).await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.detail);
    let reply: EchoReply = serde_json::from_slice(&r.body).expect("an echo reply");
    let slept = reply.delay_us as f64 / 1e3;
    let ttfb = r.phases.ttfb.expect("ttfb").as_secs_f64() * 1e3;
    (ttfb - slept, r.total.as_secs_f64() * 1e3 - slept)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// What a delayed target adds is measured to within a millisecond: the delay the target really
/// slept (it reports it) against what the prober saw, less the probe's own path on this machine
/// (a target without delay, probed the same way). A slow host then can't fail the claim, and a
/// fast one can't hide an error of the prober.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_target_is_measured_within_a_millisecond() {
    let prober = Prober::new(TlsConfigs::new([]).expect("tls"));
    let plain = common::hop(&format!("http://{}/", target(Duration::ZERO).await), "");
    let slow = common::hop(
        &format!("http://{}/", target(Duration::from_millis(20)).await),
        "",
    );
    let (mut base_ttfb, mut base_total, mut ttfb, mut total) = (vec![], vec![], vec![], vec![]);
    for _ in 0..PROBES {
        let (t, all) = beyond_delay(&prober, &plain).await;
        base_ttfb.push(t);
        base_total.push(all);
        let (t, all) = beyond_delay(&prober, &slow).await;
        ttfb.push(t);
        total.push(all);
    }
    let (base_ttfb, base_total) = (sorted(base_ttfb), sorted(base_total));
    let ttfb_errors = sorted(ttfb.iter().map(|t| t - median(&base_ttfb)).collect());
    let total_errors = sorted(total.iter().map(|t| t - median(&base_total)).collect());
    println!("undelayed target: ttfb {base_ttfb:.3?}, total {base_total:.3?} (ms, sorted)");
    println!("ttfb - delay (ms), sorted: {ttfb_errors:.3?}");
    println!("total - delay (ms), sorted: {total_errors:.3?}");
    assert!(
        (-1.0..1.0).contains(&median(&ttfb_errors)),
        "median time to first byte is {:.3} ms off the 20 ms delay",
        median(&ttfb_errors)
    );
    assert!(
        (-1.0..1.0).contains(&median(&total_errors)),
        "median total, less the undelayed probe's, is {:.3} ms off the 20 ms delay",
        median(&total_errors)
    );
}

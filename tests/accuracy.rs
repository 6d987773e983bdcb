//! A target of known latency is measured as it really is. In a test binary of its own so that
//! other tests don't compete for the CPU while it measures.
//!
//! The truth is a plain blocking client (connect, one HTTP/1.1 GET, read to close) timing the
//! same target, probe for probe in turn with the prober: whatever the host's noise, the target's
//! own timer slack or the cost of a loopback connection, both see the same, and what the prober
//! adds on top is what is left.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hopwatch::echo::EchoOptions;
use hopwatch::probe::{tls::TlsConfigs, Outcome, Prober};
use hopwatch::wire::Identity;

/// Probes per client, alternating.
const PROBES: usize = 41;

/// An echo target answering after `delay`.
async fn target(delay: Duration) -> SocketAddr {
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

/// The reference client: milliseconds from connect to the end of the answer.
fn plain_get(addr: SocketAddr) -> f64 {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    let _ = stream.set_nodelay(true);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: target\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "the target answered");
    start.elapsed().as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_target_is_measured_as_a_plain_client_sees_it() {
    let delay = Duration::from_millis(20);
    let addr = target(delay).await;
    let hop = common::hop(&format!("http://{addr}/"), "");
    let prober = Prober::new(TlsConfigs::new([]).expect("tls"));
    let (mut ours, mut ttfb, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PROBES {
        let r = prober.probe(&hop, None).await;
        assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.detail);
        ours.push(r.total.as_secs_f64() * 1e3);
        ttfb.push(r.phases.ttfb.expect("ttfb").as_secs_f64() * 1e3);
        plain.push(
            tokio::task::spawn_blocking(move || plain_get(addr))
                .await
                .expect("plain client"),
        );
    }
    let (ours, ttfb, plain) = (median(ours), median(ttfb), median(plain));
    println!("median of {PROBES}: prober total {ours:.3} ms (ttfb {ttfb:.3}), plain client {plain:.3} ms");
    let ms = delay.as_secs_f64() * 1e3;
    assert!(
        plain >= ms,
        "the plain client saw {plain:.3} ms, less than the target's delay"
    );
    assert!(
        (ttfb - ms) > -0.1,
        "time to first byte {ttfb:.3} ms is shorter than the target's delay"
    );
    assert!(
        (ours - plain).abs() < 1.0,
        "the prober's median total ({ours:.3} ms) is not within 1 ms of a plain client's ({plain:.3} ms)"
    );
}

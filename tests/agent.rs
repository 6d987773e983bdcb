//! The running agent: the global cap on probes in flight, rounds that never overlap, chains
//! spread across the interval, and the scheduling lag it reports about itself.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;

/// A server that holds each request `hold`, tracking how many are in flight at once and when
/// each arrived (by request path).
struct Tracker {
    addr: SocketAddr,
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<(String, Instant)>>>,
}

async fn tracker(hold: Duration) -> Tracker {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let (n, m, a) = (now.clone(), max.clone(), arrivals.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (n, m, a) = (n.clone(), m.clone(), a.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let len = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
                    .await
                    .unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..len]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                a.lock().expect("lock").push((path, Instant::now()));
                let inflight = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(inflight, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
                n.fetch_sub(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    Tracker {
        addr,
        now,
        max,
        arrivals,
    }
}

fn chain_toml(name: &str, addr: SocketAddr, hops: usize, interval: &str, timeout: &str) -> String {
    let mut text = format!("[[chain]]\nname = \"{name}\"\nkind = \"custom\"\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\n");
    for i in 0..hops {
        text.push_str(&format!(
            "[[chain.hop]]\nname = \"h{i}\"\nrole = \"target\"\nurl = \"http://{addr}/{name}/h{i}\"\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_cap_bounds_probes_in_flight() {
    let server = tracker(Duration::from_millis(100)).await;
    let text = format!(
        "[agent]\nmax_in_flight = 2\n\n{}",
        chain_toml("capped", server.addr, 6, "1s", "900ms")
    );
    let rounds = Arc::new(AtomicUsize::new(0));
    let seen = rounds.clone();
    let running = hopwatch::agent::start(
        config(&text),
        "127.0.0.1:0".parse().expect("addr"),
        vec![Arc::new(hopwatch::export::FnSink(
            move |_: &hopwatch::record::Observation| {
                seen.fetch_add(1, Ordering::SeqCst);
            },
        ))],
    )
    .await
    .expect("start");
    wait_for("one round", Duration::from_secs(10), || {
        rounds.load(Ordering::SeqCst) >= 1
    })
    .await;
    running.shutdown().await;
    assert!(
        server.arrivals.lock().expect("lock").len() >= 6,
        "all six hops probed"
    );
    assert_eq!(
        server.max.load(Ordering::SeqCst),
        2,
        "never more than max_in_flight, and the cap was reached"
    );
    assert_eq!(server.now.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_never_overlap_and_chains_are_spread() {
    // Each probe takes 150 ms; rounds every 200 ms; four chains of one hop each.
    let server = tracker(Duration::from_millis(150)).await;
    let mut text = String::from("[agent]\ninterval = \"200ms\"\ntimeout = \"190ms\"\n\n");
    for name in ["orders", "payments", "inventory", "search"] {
        text.push_str(&chain_toml(name, server.addr, 1, "200ms", "190ms"));
    }
    let running = hopwatch::agent::start(
        config(&text),
        "127.0.0.1:0".parse().expect("addr"),
        Vec::new(),
    )
    .await
    .expect("start");
    let arrivals = server.arrivals.clone();
    wait_for(
        "five rounds of every chain",
        Duration::from_secs(10),
        || {
            let a = arrivals.lock().expect("lock");
            ["orders", "payments", "inventory", "search"]
                .iter()
                .all(|c| {
                    a.iter()
                        .filter(|(p, _)| p.starts_with(&format!("/{c}/")))
                        .count()
                        >= 5
                })
        },
    )
    .await;
    let metrics = running.metrics.render();
    running.shutdown().await;

    let a = arrivals.lock().expect("lock").clone();
    let mut firsts = Vec::new();
    for chain in ["orders", "payments", "inventory", "search"] {
        let times: Vec<Instant> = a
            .iter()
            .filter(|(p, _)| p.starts_with(&format!("/{chain}/")))
            .map(|(_, t)| *t)
            .collect();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            // A round holds the hop 150 ms; the next may start only after it ended.
            assert!(
                gap >= Duration::from_millis(150),
                "{chain}: rounds {gap:?} apart overlap"
            );
            assert!(
                gap < Duration::from_millis(300),
                "{chain}: rounds {gap:?} apart, interval is 200 ms"
            );
        }
        firsts.push(times[0]);
    }
    firsts.sort();
    let spread = *firsts.last().expect("four") - firsts[0];
    println!("first rounds spread over {spread:?}; arrivals {}", a.len());
    assert!(
        spread >= Duration::from_millis(40),
        "four chains started within {spread:?}: not spread"
    );

    // The agent's own lag: every round was measured, and the mean is small.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
    };
    let count = value("hopwatch_schedule_lag_seconds_count");
    let sum = value("hopwatch_schedule_lag_seconds_sum");
    // Rounds are recorded when they end: at least four of the five per chain seen so far.
    assert!(count >= 16.0, "lag observed for {count} rounds");
    assert!(
        sum / count < 0.01,
        "mean scheduling lag {:.4}s",
        sum / count
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_up_is_exported_beside_the_traffic_state() {
    let traffic = raw_server(|stream| {
        respond(
            stream,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        )
    })
    .await;
    let text = format!(
        "[agent]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\n[[chain]]\nname = \"hc\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"alb\"\nrole = \"alb\"\nurl = \"http://{traffic}/\"\nhealth_url = \"http://{}/health\"\n",
        refused_port()
    );
    let running = hopwatch::agent::start(
        config(&text),
        "127.0.0.1:0".parse().expect("addr"),
        Vec::new(),
    )
    .await
    .expect("start");
    let metrics = running.metrics.clone();
    wait_for("health and hop gauges", Duration::from_secs(10), || {
        let text = metrics.render();
        text.contains("hopwatch_health_check_up{chain=\"hc\",hop=\"alb\"} 0")
            && text.contains("hopwatch_hop_up{chain=\"hc\",hop=\"alb\"} 1")
            && text.contains("hopwatch_chain_up{chain=\"hc\"} 1")
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_that_cannot_start_on_time_are_counted_as_skipped() {
    // Two hops of 150 ms each, one probe at a time: a round takes 300 ms, its interval is 200 ms.
    let server = tracker(Duration::from_millis(150)).await;
    let text = format!(
        "[agent]\nmax_in_flight = 1\n\n{}",
        chain_toml("slow", server.addr, 2, "200ms", "190ms")
    );
    let running = hopwatch::agent::start(
        config(&text),
        "127.0.0.1:0".parse().expect("addr"),
        Vec::new(),
    )
    .await
    .expect("start");
    let skipped = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("hopwatch_rounds_skipped_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let metrics = running.metrics.clone();
    wait_for("a skipped round counted", Duration::from_secs(10), || {
        skipped(&metrics.render()) >= 1.0
    })
    .await;
    running.shutdown().await;
}

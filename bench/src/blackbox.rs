//! Driving Debian's `prometheus-blackbox-exporter` through its `/probe` endpoint at a fixed
//! rate, as Prometheus would with one scrape job per target.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{sample, Conn};

/// The blackbox configuration: a plain HTTP 2xx probe over IPv4, as hopwatch's.
pub const CONFIG: &str = "modules:
  http_2xx:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
";

/// What one paced run gave.
pub struct Paced {
    /// Probes completed inside the measured window.
    pub done: u64,
    /// Of those, probes blackbox reported as failed (`probe_success 0`) or not answered.
    pub failed: u64,
}

/// Issues `/probe` requests for `targets` round-robin at `rate` per second from `threads`
/// keep-alive connections, from `start` to `end`; counts those completed in `[from, end]`.
pub fn paced(
    exporter: SocketAddr,
    targets: &[String],
    rate: f64,
    start: Instant,
    from: Instant,
    end: Instant,
) -> Paced {
    const THREADS: usize = 16;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (done, failed) = (done.clone(), failed.clone());
            scope.spawn(move || {
                let Ok(mut conn) = Conn::open(exporter) else {
                    return;
                };
                let mut k = t;
                loop {
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    if due >= end {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let target = &targets[k % targets.len()];
                    let answer = conn.get(&format!("/probe?module=http_2xx&target={target}"));
                    let at = Instant::now();
                    if at >= from && at <= end {
                        done.fetch_add(1, Ordering::Relaxed);
                        let ok = answer.as_ref().is_ok_and(|(status, body)| {
                            *status == 200
                                && sample(&String::from_utf8_lossy(body), "probe_success", "")
                                    == Some(1.0)
                        });
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if answer.is_err() {
                        match Conn::open(exporter) {
                            Ok(c) => conn = c,
                            Err(_) => return,
                        }
                    }
                    k += THREADS;
                }
            });
        }
    });
    Paced {
        done: done.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    }
}

/// `probe_duration_seconds` of `count` probes of `target`, one every `every`.
pub fn durations(
    exporter: SocketAddr,
    target: &str,
    count: usize,
    every: Duration,
) -> std::io::Result<Vec<f64>> {
    let mut conn = Conn::open(exporter)?;
    let mut out = Vec::with_capacity(count);
    let start = Instant::now();
    for k in 0..count {
        let due = start + every * k as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let (_, body) = conn.get(&format!("/probe?module=http_2xx&target={target}"))?;
        let text = String::from_utf8_lossy(&body);
        if sample(&text, "probe_success", "") == Some(1.0) {
            if let Some(d) = sample(&text, "probe_duration_seconds", "") {
                out.push(d);
            }
        }
    }
    Ok(out)
}

//! The CloudWatch publisher's own health, kept as plain counters: the publisher counts, and the
//! Prometheus exporter reads them on each scrape (`hopwatch_cloudwatch_*`). The publisher knows
//! nothing of Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// What became of the datums, since start.
#[derive(Debug, Default)]
pub struct Stats {
    sent: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    buffered: AtomicU64,
    /// Unix time of the last accepted call, as `f64` bits; 0 before the first.
    last_success: AtomicU64,
}

/// One reading of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub sent: u64,
    pub retried: u64,
    pub dropped: u64,
    pub buffered: u64,
    /// Unix seconds; 0 before the first success.
    pub last_success: f64,
}

impl Stats {
    /// Datums CloudWatch accepted (or EMF lines written for).
    pub fn sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Datums in a failed call that went back to the buffer to be sent again.
    pub fn retried(&self, n: usize) {
        self.retried.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Datums lost: buffer full, refused by CloudWatch, or still held at the shutdown deadline.
    pub fn dropped(&self, n: usize) {
        self.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Datums waiting in the buffer now.
    pub fn buffered(&self, n: usize) {
        self.buffered.store(n as u64, Ordering::Relaxed);
    }
    /// A call succeeded now.
    pub fn succeeded(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_success.store(now.to_bits(), Ordering::Relaxed);
    }

    /// The counters as they are now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sent: self.sent.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            buffered: self.buffered.load(Ordering::Relaxed),
            last_success: f64::from_bits(self.last_success.load(Ordering::Relaxed)),
        }
    }
}

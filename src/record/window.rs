//! The latency window: an exact sliding window of the total latency of successful probes per
//! (chain, hop), read as hdrhistogram quantiles.
//!
//! Why raw samples rather than a live histogram per hop: an hdrhistogram at 3 significant
//! digits is at least 8 KB (2,048 sub-buckets), 80 MB at 10,000 hops, while the samples of a
//! 5-minute window are 24 bytes each and their total only depends on the probe rate. A scrape
//! fills one scratch histogram per hop in turn, so the quantiles keep hdrhistogram's stated
//! precision and the window is exact rather than slot-aligned.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Default length of the quantile window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Values are recorded in microseconds, with 3 significant digits (0.1 % relative error).
const SIGFIG: u8 = 3;

/// The successful probes of one (chain, hop) over the last `window`.
#[derive(Debug)]
pub struct Window {
    window: Duration,
    /// (start of the round, total latency in µs), oldest first.
    samples: VecDeque<(Instant, u32)>,
    /// Successful probes ever recorded, and the sum of their totals: the `_count` and `_sum` of
    /// a Prometheus summary are cumulative, unlike its quantiles.
    count: u64,
    sum_us: u64,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().clamp(1, u128::from(u32::MAX - 1)) as u32
}

/// A histogram to read windows with ([`Window::quantiles`]): small at first, growing to the
/// largest value it is given.
pub fn scratch() -> Histogram<u32> {
    // 1..2 µs are bounds hdrhistogram accepts; a failure here is a programming error.
    let mut h = Histogram::new_with_bounds(1, 2, SIGFIG).expect("histogram bounds are valid");
    h.auto(true);
    h
}

impl Window {
    /// An empty window of the given length.
    pub fn new(window: Duration) -> Self {
        Window {
            window,
            samples: VecDeque::new(),
            count: 0,
            sum_us: 0,
        }
    }

    /// Records one successful probe that started at `at`.
    pub fn record(&mut self, at: Instant, total: Duration) {
        self.expire(at);
        let us = micros(total);
        self.samples.push_back((at, us));
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(u64::from(us));
    }

    /// Successful probes recorded since start, and the sum of their total latency in seconds.
    pub fn cumulative(&self) -> (u64, f64) {
        (self.count, self.sum_us as f64 / 1e6)
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.samples.front() {
            if now.saturating_duration_since(*at) <= self.window {
                break;
            }
            self.samples.pop_front();
        }
        // A hop probed less often after a reload would otherwise keep its peak capacity.
        if self.samples.capacity() > 64 && self.samples.len() < self.samples.capacity() / 4 {
            self.samples.shrink_to(self.samples.len() * 2);
        }
    }

    /// Quantiles of the total latency over the window ending `now`, in seconds, with the sample
    /// count, computed in `scratch` (see [`scratch`]). Quantiles are NaN when the window is
    /// empty, as Prometheus summaries expect.
    pub fn quantiles(
        &mut self,
        now: Instant,
        qs: &[f64],
        scratch: &mut Histogram<u32>,
    ) -> (u64, Vec<f64>) {
        self.expire(now);
        scratch.reset();
        for (_, us) in &self.samples {
            // `record` grows the auto-resizing histogram; it only fails past u64 bounds.
            if scratch.record(u64::from(*us)).is_err() {
                scratch.saturating_record(u64::from(*us));
            }
        }
        let count = scratch.len();
        let values = qs
            .iter()
            .map(|q| {
                if count == 0 {
                    f64::NAN
                } else {
                    scratch.value_at_quantile(*q) as f64 / 1e6
                }
            })
            .collect();
        (count, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_the_samples() {
        let mut w = Window::new(Duration::from_secs(60));
        let mut h = scratch();
        let t0 = Instant::now();
        for i in 1..=100u64 {
            w.record(t0, Duration::from_millis(i));
        }
        let (count, q) = w.quantiles(t0, &[0.5, 0.99], &mut h);
        assert_eq!(count, 100);
        assert!((q[0] - 0.050).abs() < 0.0001, "p50 {}", q[0]);
        assert!((q[1] - 0.099).abs() < 0.0001, "p99 {}", q[1]);
        assert_eq!(w.cumulative(), (100, 5.05));
    }

    #[test]
    fn samples_leave_the_window() {
        let mut w = Window::new(Duration::from_secs(60));
        let mut h = scratch();
        let t0 = Instant::now();
        w.record(t0, Duration::from_millis(500));
        let later = t0 + Duration::from_secs(30);
        w.record(later, Duration::from_millis(10));
        assert_eq!(w.quantiles(later, &[1.0], &mut h).0, 2);
        let (count, q) = w.quantiles(t0 + Duration::from_secs(61), &[1.0], &mut h);
        assert_eq!(count, 1);
        assert!((q[0] - 0.010).abs() < 0.00002, "max {}", q[0]);
        let (count, q) = w.quantiles(t0 + Duration::from_secs(200), &[0.5], &mut h);
        assert_eq!(count, 0);
        assert!(q[0].is_nan());
        // Cumulative figures are not windowed.
        assert_eq!(w.cumulative().0, 2);
    }

    #[test]
    fn one_scratch_serves_windows_of_any_range() {
        let mut h = scratch();
        let t0 = Instant::now();
        let mut slow = Window::new(Duration::from_secs(60));
        slow.record(t0, Duration::from_secs(20));
        let mut fast = Window::new(Duration::from_secs(60));
        fast.record(t0, Duration::from_micros(150));
        let (_, q) = slow.quantiles(t0, &[1.0], &mut h);
        assert!((q[0] - 20.0).abs() < 0.02, "{}", q[0]);
        // The scratch grew for 20 s; a reset keeps nothing of it in the next window's figures.
        let (count, q) = fast.quantiles(t0, &[0.5], &mut h);
        assert_eq!(count, 1);
        assert!((q[0] - 0.000150).abs() < 0.000001, "{}", q[0]);
    }
}

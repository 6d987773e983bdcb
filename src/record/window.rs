//! The latency window: an exact sliding window of the total latency of successful probes per
//! (chain, hop), read as hdrhistogram quantiles.
//!
//! Why raw samples rather than a live histogram per hop: an hdrhistogram at 3 significant
//! digits is at least 8 KB (2,048 sub-buckets), 80 MB at 10,000 hops, while the samples of a
//! 5-minute window are 24 bytes each and their total only depends on the probe rate. The window
//! is exact rather than slot-aligned.
//!
//! A quantile is what an hdrhistogram of the window's samples would answer, to the bit: the
//! sample at hdrhistogram's rank (`ceil(q × n)`, at least 1) is selected from a copy of the
//! samples, and reported as the highest value equivalent to it at 3 significant digits, as
//! `value_at_quantile` does. Selecting is O(n); filling and scanning a histogram cost ~3.5 µs a
//! hop whatever n, most of a 10,000-hop scrape.

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
    /// Samples room was made for at creation: what the window holds at the expected probe
    /// rate. The buffer is never shrunk below it.
    reserve: usize,
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

/// What [`Window::quantiles`] works in, reused from hop to hop: a copy of the samples to select
/// from, and a histogram whose only use is its notion of equivalent values.
#[derive(Debug)]
pub struct Scratch {
    values: Vec<u32>,
    /// Empty: [`Histogram::highest_equivalent`] depends on the precision alone.
    equivalence: Histogram<u32>,
}

/// A [`Scratch`] for reading windows with.
pub fn scratch() -> Scratch {
    // 1..2 µs are bounds hdrhistogram accepts; a failure here is a programming error.
    let mut h = Histogram::new_with_bounds(1, 2, SIGFIG).expect("histogram bounds are valid");
    h.auto(true);
    Scratch {
        values: Vec::new(),
        equivalence: h,
    }
}

/// Room made at most in advance, in samples: 96 KB.
const MAX_RESERVE: usize = 4096;

impl Window {
    /// An empty window of the given length.
    pub fn new(window: Duration) -> Self {
        Window {
            window,
            reserve: 0,
            samples: VecDeque::new(),
            count: 0,
            sum_us: 0,
        }
    }

    /// An empty window with room for the samples of probes every `interval`, made now.
    ///
    /// Why in advance: a buffer that grows while the agent probes is reallocated among the
    /// probes' short-lived allocations, and the heap cannot give back what lies around it. At
    /// 10,000 hops the heap held twice what was in use (glibc's malloc_stats, 2026-12-04).
    pub fn for_interval(window: Duration, interval: Duration) -> Self {
        let expected = window.as_nanos() / interval.as_nanos().max(1) + 2;
        let reserve = (expected as usize).min(MAX_RESERVE);
        Window {
            window,
            reserve,
            samples: VecDeque::with_capacity(reserve),
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
        // A hop probed less often after a reload would otherwise keep its peak capacity; the
        // room made for its own rate stays.
        let capacity = self.samples.capacity();
        if capacity > 64 && capacity > 2 * self.reserve && self.samples.len() < capacity / 4 {
            self.samples
                .shrink_to((self.samples.len() * 2).max(self.reserve));
        }
    }

    /// Quantiles of the total latency over the window ending `now`, in seconds, with the sample
    /// count, as an hdrhistogram of the samples at 3 significant digits answers them (see the
    /// module's doc). Quantiles are NaN when the window is empty, as Prometheus summaries
    /// expect.
    pub fn quantiles(
        &mut self,
        now: Instant,
        qs: &[f64],
        scratch: &mut Scratch,
    ) -> (u64, Vec<f64>) {
        self.expire(now);
        let values = &mut scratch.values;
        values.clear();
        values.extend(self.samples.iter().map(|(_, us)| *us));
        let n = values.len();
        let quantiles = qs
            .iter()
            .map(|q| {
                if n == 0 {
                    return f64::NAN;
                }
                // hdrhistogram's rank: the count a quantile must reach, at least the first.
                let rank = ((q.min(1.0) * n as f64).ceil() as usize).clamp(1, n);
                let (_, at, _) = values.select_nth_unstable(rank - 1);
                let at = u64::from(*at);
                // As `value_at_quantile`: the bucket's top, its bottom for the minimum.
                let value = if *q == 0.0 {
                    scratch.equivalence.lowest_equivalent(at)
                } else {
                    scratch.equivalence.highest_equivalent(at)
                };
                value as f64 / 1e6
            })
            .collect();
        (n as u64, quantiles)
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

    /// The quantiles are those an hdrhistogram of the same samples gives, bit for bit.
    #[test]
    fn quantiles_are_hdrhistograms() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut h = scratch();
        let t0 = Instant::now();
        for n in [1usize, 2, 3, 7, 30, 100, 301, 1000] {
            let mut w = Window::new(Duration::from_secs(60));
            let mut hdr = Histogram::<u32>::new_with_bounds(1, 2, SIGFIG).expect("bounds");
            hdr.auto(true);
            for _ in 0..n {
                // 50 µs to 30 s, log-uniform-ish: every magnitude a hop sees.
                let us = 50 + (next() % 1_000) * 10u64.pow((next() % 5) as u32 + 1) / 10;
                w.record(t0, Duration::from_micros(us));
                hdr.record(us).expect("record");
            }
            let qs = [0.0, 0.001, 0.5, 0.9, 0.99, 0.999, 1.0];
            let (count, got) = w.quantiles(t0, &qs, &mut h);
            assert_eq!(count, n as u64);
            for (q, v) in qs.iter().zip(got) {
                assert_eq!(v, hdr.value_at_quantile(*q) as f64 / 1e6, "n {n} q {q}");
            }
        }
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

//! Latency recording: an exact sliding window of samples per (chain, hop), with hdrhistograms
//! for the total and for each phase built from it.
//!
//! Why not one histogram per time slot: a dense hdrhistogram at microsecond precision is tens
//! of kilobytes, and at a 15 s interval a one-minute slot holds four samples. Keeping the raw
//! samples of the window (a few bytes each) and one live histogram per series costs far less
//! and makes the window exact rather than slot-aligned.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::probe::Phases;

/// Default length of the quantile window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Values are recorded in microseconds.
const LOWEST_US: u64 = 1;
/// Total latency: 3 significant digits (0.1 % relative error), what quantiles are read from.
const TOTAL_SIGFIG: u8 = 3;
/// Phases: 2 significant digits (under 1 % error) is plenty for a breakdown and 5x smaller.
const PHASE_SIGFIG: u8 = 2;
/// Marks a phase that did not happen in a sample.
const ABSENT: u32 = u32::MAX;

/// Which series of a window: the total or one phase (indices of [`crate::probe::PHASE_NAMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    Total,
    Phase(usize),
}

impl Series {
    fn index(self) -> usize {
        match self {
            Series::Total => 0,
            Series::Phase(i) => 1 + i.min(4),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// Microseconds: total, then the five phases ([`ABSENT`] when a phase did not happen).
    values: [u32; 6],
}

/// The successful probes of one (chain, hop) over the last `window`.
#[derive(Debug)]
pub struct Window {
    window: Duration,
    samples: VecDeque<Sample>,
    /// Live histograms, kept equal to the samples in the window. Built on first use; a phase
    /// nobody asks about costs nothing.
    hists: [Option<Histogram<u32>>; 6],
    /// A sample left the window since the histograms were last built: rebuild before reading.
    stale: bool,
    /// Successful probes ever recorded, and the sum of their totals: the `_count` and `_sum` of
    /// a Prometheus summary are cumulative, unlike its quantiles.
    count: u64,
    sum_us: u64,
}

fn micros(d: Duration) -> u32 {
    d.as_micros()
        .clamp(u128::from(LOWEST_US), u128::from(u32::MAX - 1)) as u32
}

fn new_histogram(series: usize) -> Histogram<u32> {
    let sigfig = if series == 0 {
        TOTAL_SIGFIG
    } else {
        PHASE_SIGFIG
    };
    // Sized for the smallest range and auto-resizing: a histogram allocated for the whole
    // 1 µs–1 h range up front is ~90 KB at 3 digits, 90 MB at 1,000 hops, where the values
    // a probe actually sees (well under its timeout) need a few KB.
    let mut h = Histogram::new_with_bounds(LOWEST_US, 2 * LOWEST_US, sigfig)
        .expect("histogram bounds are valid");
    h.auto(true);
    h
}

/// Records `us`, growing the histogram to fit. `saturating_record` would clamp to the current
/// (small) range instead of growing; `record` only fails past u64 bounds, never for a u32.
fn add(h: &mut Histogram<u32>, us: u32) {
    if h.record(u64::from(us)).is_err() {
        h.saturating_record(u64::from(us));
    }
}

impl Window {
    /// An empty window of the given length.
    pub fn new(window: Duration) -> Self {
        Window {
            window,
            samples: VecDeque::new(),
            hists: Default::default(),
            stale: false,
            count: 0,
            sum_us: 0,
        }
    }

    /// Records one successful probe.
    pub fn record(&mut self, at: Instant, total: Duration, phases: &Phases) {
        let mut values = [ABSENT; 6];
        values[0] = micros(total);
        for (slot, phase) in values[1..].iter_mut().zip(phases.as_array()) {
            if let Some(d) = phase {
                *slot = micros(d);
            }
        }
        self.expire(at);
        for (i, hist) in self.hists.iter_mut().enumerate() {
            if let Some(h) = hist {
                if values[i] != ABSENT {
                    add(h, values[i]);
                }
            }
        }
        if self.hists[0].is_none() {
            self.hists[0] = Some(new_histogram(0));
            self.stale = true;
        }
        self.samples.push_back(Sample { at, values });
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(u64::from(values[0]));
    }

    /// Successful probes recorded since start, and the sum of their total latency in seconds.
    pub fn cumulative(&self) -> (u64, f64) {
        (self.count, self.sum_us as f64 / 1e6)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(first) = self.samples.front() {
            if now.saturating_duration_since(first.at) <= self.window {
                break;
            }
            self.samples.pop_front();
            self.stale = true;
        }
    }

    fn rebuild(&mut self) {
        for (i, hist) in self.hists.iter_mut().enumerate() {
            if let Some(h) = hist {
                h.reset();
                for s in &self.samples {
                    if s.values[i] != ABSENT {
                        add(h, s.values[i]);
                    }
                }
            }
        }
        self.stale = false;
    }

    /// The histogram of a series over the window ending `now`, in microseconds.
    pub fn histogram(&mut self, now: Instant, series: Series) -> &Histogram<u32> {
        self.expire(now);
        let i = series.index();
        if self.hists[i].is_none() {
            self.hists[i] = Some(new_histogram(i));
            self.stale = true;
        }
        if self.stale {
            self.rebuild();
        }
        self.hists[i].get_or_insert_with(|| new_histogram(i))
    }

    /// Quantiles of the total latency over the window, in seconds, with the sample count.
    /// Quantiles are NaN when the window is empty, as Prometheus summaries expect.
    pub fn quantiles(&mut self, now: Instant, qs: &[f64]) -> (u64, Vec<f64>) {
        let h = self.histogram(now, Series::Total);
        let count = h.len();
        let values = qs
            .iter()
            .map(|q| {
                if count == 0 {
                    f64::NAN
                } else {
                    h.value_at_quantile(*q) as f64 / 1e6
                }
            })
            .collect();
        (count, values)
    }

    /// A histogram of the samples recorded at or after `since` (for a flush period).
    pub fn histogram_since(&self, since: Instant, series: Series) -> Histogram<u32> {
        let i = series.index();
        let mut h = new_histogram(i);
        for s in self.samples.iter().filter(|s| s.at >= since) {
            if s.values[i] != ABSENT {
                add(&mut h, s.values[i]);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(ms: [u64; 5]) -> Phases {
        let d = |v: u64| Some(Duration::from_millis(v));
        Phases {
            dns: d(ms[0]),
            connect: d(ms[1]),
            tls: None,
            ttfb: d(ms[3]),
            transfer: d(ms[4]),
        }
    }

    #[test]
    fn quantiles_follow_the_samples() {
        let mut w = Window::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 1..=100u64 {
            w.record(t0, Duration::from_millis(i), &phases([1, 1, 0, 1, 1]));
        }
        let (count, q) = w.quantiles(t0, &[0.5, 0.99]);
        assert_eq!(count, 100);
        assert!((q[0] - 0.050).abs() < 0.0001, "p50 {}", q[0]);
        assert!((q[1] - 0.099).abs() < 0.0001, "p99 {}", q[1]);
    }

    #[test]
    fn samples_leave_the_window() {
        let mut w = Window::new(Duration::from_secs(60));
        let t0 = Instant::now();
        w.record(t0, Duration::from_millis(500), &Phases::default());
        let later = t0 + Duration::from_secs(30);
        w.record(later, Duration::from_millis(10), &Phases::default());
        assert_eq!(w.quantiles(later, &[1.0]).0, 2);
        let (count, q) = w.quantiles(t0 + Duration::from_secs(61), &[1.0]);
        assert_eq!(count, 1);
        assert!((q[0] - 0.010).abs() < 0.00002, "max {}", q[0]);
        let (count, q) = w.quantiles(t0 + Duration::from_secs(200), &[0.5]);
        assert_eq!(count, 0);
        assert!(q[0].is_nan());
    }

    #[test]
    fn phase_histograms_skip_absent_phases() {
        let mut w = Window::new(Duration::from_secs(60));
        let t0 = Instant::now();
        w.record(t0, Duration::from_millis(5), &phases([1, 2, 0, 1, 1]));
        w.record(t0, Duration::from_millis(5), &Phases::default());
        assert_eq!(w.histogram(t0, Series::Phase(1)).len(), 1);
        assert_eq!(
            w.histogram(t0, Series::Phase(2)).len(),
            0,
            "tls never happened"
        );
        // A phase histogram created after samples exist is built from them.
        let connect = w.histogram(t0, Series::Phase(1));
        assert!(connect.value_at_quantile(1.0) >= 1990);
        assert_eq!(w.histogram_since(t0, Series::Total).len(), 2);
        assert_eq!(
            w.histogram_since(t0 + Duration::from_secs(1), Series::Total)
                .len(),
            0
        );
    }
}

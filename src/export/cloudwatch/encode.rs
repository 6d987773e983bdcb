//! Latency distributions for CloudWatch `PutMetricData`.
//!
//! A datum carries at most [`MAX_PAIRS`] `Values`/`Counts` pairs; CloudWatch computes
//! percentiles from them, which it cannot do from one datum per histogram bucket. An
//! hdrhistogram of a flush period usually holds fewer distinct values than that; when it
//! holds more, the closest neighbours (by ratio) are merged first, each merged pair replaced
//! by its count-weighted mean so that the sum (and so the average) stays exact. The largest
//! relative distance between a sample and the value that now represents it is returned, so
//! the error is stated, not guessed.

use hdrhistogram::Histogram;

/// `PutMetricData`: at most 150 values per datum.
pub const MAX_PAIRS: usize = 150;

/// A latency distribution in milliseconds, ready for a datum.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    /// Ascending, finite, positive.
    pub values: Vec<f64>,
    /// Same length as `values`; each at least 1.
    pub counts: Vec<f64>,
    /// The largest `|sample - representative| / sample` the merging introduced (on top of the
    /// histogram's own precision); 0 when nothing had to be merged.
    pub max_relative_error: f64,
}

impl Distribution {
    /// Total number of samples.
    pub fn sample_count(&self) -> f64 {
        self.counts.iter().sum()
    }
}

/// One group of samples being merged: its value range and its weighted sum.
#[derive(Debug, Clone, Copy)]
struct Group {
    lo: f64,
    hi: f64,
    count: f64,
    sum: f64,
}

impl Group {
    fn mean(&self) -> f64 {
        self.sum / self.count
    }
    /// Worst relative error if every sample in the group is represented by its mean.
    fn error(&self) -> f64 {
        let m = self.mean();
        ((m - self.lo) / self.lo).max((self.hi - m) / self.hi)
    }
}

/// Turns a histogram of microseconds into at most `max_pairs` millisecond value/count pairs.
/// `None` when the histogram is empty.
pub fn distribution(hist: &Histogram<u32>, max_pairs: usize) -> Option<Distribution> {
    let max_pairs = max_pairs.clamp(1, MAX_PAIRS);
    let mut groups: Vec<Group> = hist
        .iter_recorded()
        .map(|v| {
            // The histogram's own representative of its bucket: its midpoint.
            let ms = hist.median_equivalent(v.value_iterated_to()) as f64 / 1000.0;
            let count = v.count_at_value() as f64;
            Group {
                lo: ms,
                hi: ms,
                count,
                sum: ms * count,
            }
        })
        .filter(|g| g.lo.is_finite() && g.lo > 0.0 && g.count > 0.0)
        .collect();
    if groups.is_empty() {
        return None;
    }
    // Merge the adjacent pair whose union spans the smallest ratio until few enough remain.
    // n is at most the distinct values of one flush period, so quadratic is fine.
    while groups.len() > max_pairs {
        let mut best = 0;
        let mut best_ratio = f64::INFINITY;
        for i in 0..groups.len() - 1 {
            let ratio = groups[i + 1].hi / groups[i].lo;
            if ratio < best_ratio {
                best_ratio = ratio;
                best = i;
            }
        }
        let next = groups.remove(best + 1);
        let g = &mut groups[best];
        g.hi = next.hi;
        g.count += next.count;
        g.sum += next.sum;
    }
    let max_relative_error = groups
        .iter()
        .filter(|g| g.hi > g.lo)
        .map(Group::error)
        .fold(0.0, f64::max);
    Some(Distribution {
        values: groups.iter().map(Group::mean).collect(),
        counts: groups.iter().map(|g| g.count).collect(),
        max_relative_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_us: impl IntoIterator<Item = u64>) -> Histogram<u32> {
        let mut h = Histogram::<u32>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        h.auto(true);
        for v in values_us {
            h.saturating_record(v);
        }
        h
    }

    #[test]
    fn few_values_pass_through_unmerged() {
        let h = hist([20_000, 20_000, 21_000, 45_000]);
        let d = distribution(&h, MAX_PAIRS).expect("some");
        assert_eq!(d.counts, [2.0, 1.0, 1.0]);
        assert_eq!(d.max_relative_error, 0.0);
        for (v, want) in d.values.iter().zip([20.0, 21.0, 45.0]) {
            assert!((v - want).abs() / want < 0.001, "{v} vs {want}");
        }
        assert!(distribution(&hist([]), MAX_PAIRS).is_none());
    }

    #[test]
    fn many_values_fit_150_pairs_with_exact_count_and_sum() {
        // 10,000 samples spread from 1 ms to 10 s: far more distinct values than 150.
        let samples: Vec<u64> = (0..10_000u64).map(|i| 1_000 + i * i / 10).collect();
        let h = hist(samples.iter().copied());
        let d = distribution(&h, MAX_PAIRS).expect("some");
        assert!(d.values.len() <= MAX_PAIRS);
        assert_eq!(d.sample_count(), 10_000.0);
        assert!(d.values.windows(2).all(|w| w[0] < w[1]), "ascending");
        assert!(d.values.iter().all(|v| v.is_finite() && *v > 0.0));
        let sum: f64 = d.values.iter().zip(&d.counts).map(|(v, c)| v * c).sum();
        let exact: f64 = samples.iter().map(|v| *v as f64 / 1000.0).sum();
        assert!((sum - exact).abs() / exact < 0.001, "sum {sum} vs {exact}");
        // 150 log-spaced groups over four decades: each spans about 6 %.
        assert!(
            d.max_relative_error < 0.05,
            "error {}",
            d.max_relative_error
        );
        println!(
            "10k samples over 1 ms..10 s in {} pairs, max relative error {:.4}",
            d.values.len(),
            d.max_relative_error
        );
    }

    #[test]
    fn the_bound_is_respected_for_any_size() {
        let h = hist((1..=2_000u64).map(|i| i * 997));
        for max in [1, 2, 10, 149, 150, 500] {
            let d = distribution(&h, max).expect("some");
            assert!(
                d.values.len() <= max.min(MAX_PAIRS),
                "{max}: {}",
                d.values.len()
            );
            assert_eq!(d.sample_count(), 2_000.0);
        }
    }
}

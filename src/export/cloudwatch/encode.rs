//! Latency distributions for CloudWatch `PutMetricData`.
//!
//! A datum carries at most [`MAX_PAIRS`] `Values`/`Counts` pairs; CloudWatch computes
//! percentiles from them, which it cannot do from one datum per histogram bucket. An
//! hdrhistogram of a flush period usually holds fewer distinct values than that; when it
//! holds more, neighbours are merged into groups spanning the smallest ratio that fits, each
//! group represented by its count-weighted mean, so that the sum (and the average) stays exact. The largest
//! relative distance between a sample and the value that now represents it is returned, so
//! the error is stated, not guessed.

use std::time::SystemTime;

use hdrhistogram::Histogram;

use super::datum::{Datum, Distribution, Unit, Value, MAX_PAIRS};
use super::period::{Period, Tally};
use crate::config::published::{dims, names};
use crate::config::CloudWatchDetail;

/// A 0/1 tally as a distribution: values 0 and 1 with how many rounds had each.
pub fn tally(t: &Tally) -> Option<Value> {
    let pairs: Vec<(f64, f64)> = [(0.0, t.zeros), (1.0, t.ones)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(v, n)| (v, n as f64))
        .collect();
    (!pairs.is_empty()).then(|| {
        Value::Distribution(Distribution {
            values: pairs.iter().map(|p| p.0).collect(),
            counts: pairs.iter().map(|p| p.1).collect(),
            max_relative_error: 0.0,
        })
    })
}

/// Every datum of one period: per hop `Latency`, `Probes` (one per class seen),
/// `ProbeFailures`, `HopUp`, `BrokenHop`, and `HealthCheckUp` / `UnexpectedSource` where they
/// apply; per chain `ChainUp`; per down chain and reason code `ChainDownReason`. `extra`
/// dimensions go on every datum after hopwatch's own.
///
/// With [`CloudWatchDetail::Chain`] a hop's datums go only in the periods it was
/// [troubled](super::period::HopPeriod::troubled), and each chain also gets `Latency` (its
/// outermost hop's) and `ProbeFailures` (its hops') under `Chain` alone: three metrics for a
/// healthy chain, where every hop's metrics are billed every hour.
pub fn datums(
    period: &Period,
    extra: &[(String, String)],
    storage_resolution: u8,
    detail: CloudWatchDetail,
) -> Vec<Datum> {
    let mut out = Vec::new();
    let datum = |metric: &str, dimensions: Vec<(String, String)>, unit, value| Datum {
        metric: metric.to_string(),
        dimensions,
        timestamp: period.start,
        unit,
        value,
        storage_resolution,
    };
    let with_extra = |mut d: Vec<(String, String)>| {
        d.extend(extra.iter().cloned());
        d
    };
    for ((chain, hop), p) in &period.hops {
        if detail == CloudWatchDetail::Chain && !p.troubled() {
            continue;
        }
        let base = || {
            with_extra(vec![
                (dims::CHAIN.to_string(), chain.clone()),
                (dims::HOP.to_string(), hop.clone()),
            ])
        };
        if let Some(d) = distribution(&p.latency, MAX_PAIRS) {
            out.push(datum(
                names::LATENCY,
                base(),
                Unit::Milliseconds,
                Value::Distribution(d),
            ));
        }
        for (class, n) in p.classes() {
            let dimensions = with_extra(vec![
                (dims::CHAIN.to_string(), chain.clone()),
                (dims::HOP.to_string(), hop.clone()),
                (dims::RESULT.to_string(), class.to_string()),
            ]);
            out.push(datum(
                names::PROBES,
                dimensions,
                Unit::Count,
                Value::Single(n as f64),
            ));
        }
        if p.probed() {
            // Sent as 0 too: an alarm on failures must see data while all is well.
            out.push(datum(
                names::PROBE_FAILURES,
                base(),
                Unit::Count,
                Value::Single(p.failures() as f64),
            ));
        }
        for (metric, t) in [
            (names::HOP_UP, &p.up),
            (names::BROKEN_HOP, &p.broken),
            (names::HEALTH_CHECK_UP, &p.health_up),
            (names::UNEXPECTED_SOURCE, &p.unexpected_source),
        ] {
            if let Some(value) = tally(t) {
                out.push(datum(metric, base(), Unit::None, value));
            }
        }
    }
    for (chain, t) in &period.chains {
        if let Some(value) = tally(t) {
            let dimensions = with_extra(vec![(dims::CHAIN.to_string(), chain.clone())]);
            out.push(datum(names::CHAIN_UP, dimensions, Unit::None, value));
        }
    }
    if detail == CloudWatchDetail::Chain {
        for (chain, figures) in period.chain_figures() {
            let base = || with_extra(vec![(dims::CHAIN.to_string(), chain.to_string())]);
            let latency = figures
                .outermost
                .and_then(|p| distribution(&p.latency, MAX_PAIRS));
            if let Some(d) = latency {
                out.push(datum(
                    names::LATENCY,
                    base(),
                    Unit::Milliseconds,
                    Value::Distribution(d),
                ));
            }
            if figures.probed {
                // 0 too, as per hop: an alarm on failures sees data while all is well.
                out.push(datum(
                    names::PROBE_FAILURES,
                    base(),
                    Unit::Count,
                    Value::Single(figures.failures as f64),
                ));
            }
        }
    }
    for ((chain, code), rounds) in &period.reasons {
        let dimensions = with_extra(vec![
            (dims::CHAIN.to_string(), chain.clone()),
            (dims::REASON_CODE.to_string(), code.as_str().to_string()),
        ]);
        out.push(datum(
            names::CHAIN_DOWN_REASON,
            dimensions,
            Unit::Count,
            Value::Single(*rounds as f64),
        ));
    }
    out
}

/// Splits datums into those CloudWatch accepts as of `now` and those it would reject (with
/// why), so one bad datum never fails a whole request.
pub fn admissible(
    datums: Vec<Datum>,
    now: SystemTime,
) -> (Vec<Datum>, Vec<(Datum, super::datum::Rejected)>) {
    let mut ok = Vec::with_capacity(datums.len());
    let mut bad = Vec::new();
    for d in datums {
        match d.check(now) {
            Ok(()) => ok.push(d),
            Err(why) => bad.push((d, why)),
        }
    }
    (ok, bad)
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

/// Greedy grouping: a group takes values while they stay within `ratio` of its lowest.
fn group(values: &[Group], ratio: f64) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for v in values {
        match out.last_mut() {
            Some(g) if v.hi <= g.lo * ratio => {
                g.hi = v.hi;
                g.count += v.count;
                g.sum += v.sum;
            }
            _ => out.push(*v),
        }
    }
    out
}

/// Merges ascending groups into at most `max` with the smallest span ratio that allows it.
/// For a given ratio the greedy pass makes the fewest groups, so a binary search on the ratio
/// finds the best one in O(n log n) instead of merging pair by pair in O(n²).
fn merge(values: &[Group], max: usize) -> Vec<Group> {
    let first = values.first().map_or(1.0, |g| g.lo);
    let last = values.last().map_or(1.0, |g| g.hi);
    let (mut lo, mut hi) = (1.0_f64, (last / first).max(1.0) * (1.0 + 1e-9));
    for _ in 0..64 {
        let mid = (lo * hi).sqrt();
        if group(values, mid).len() <= max {
            hi = mid;
        } else {
            lo = mid;
        }
        if hi / lo < 1.0 + 1e-6 {
            break;
        }
    }
    group(values, hi)
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
    if groups.len() > max_pairs {
        groups = merge(&groups, max_pairs);
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

    mod snapshot {
        use super::super::*;
        use crate::export::cloudwatch::datum::{batches, Rejected, MAX_DATUMS, MAX_DIMENSIONS};
        use crate::export::cloudwatch::period::Periods;
        use crate::probe::Outcome;
        use crate::record::testing::*;
        use std::time::Duration;

        fn period() -> Period {
            let chain = chain();
            let mut periods = Periods::new(Duration::from_secs(60));
            for (i, t) in [1.0, 2.0, 3.0].into_iter().enumerate() {
                let mut results = vec![
                    result(Outcome::Ok, 10, at(t), ""),
                    result(Outcome::Ok, 20, at(t), ""),
                    result(Outcome::Ok, 30, at(t), ECHO),
                ];
                if i == 2 {
                    results[1] = result(Outcome::ConnectTimeout, 5000, at(t), "");
                    results[2] = result(Outcome::ConnectTimeout, 5000, at(t), "");
                }
                let up = [true, i < 2, i < 2];
                let v = verdict(i < 2, (i == 2).then_some(1));
                periods.observe(&observed(round(&chain, at(t), results, i != 1), &up, v));
            }
            periods.take_all().remove(0)
        }

        fn find<'a>(all: &'a [Datum], metric: &str, hop: Option<&str>) -> Vec<&'a Datum> {
            all.iter()
                .filter(|d| d.metric == metric)
                .filter(|d| {
                    hop.is_none_or(|h| d.dimensions.iter().any(|(k, v)| k == "Hop" && v == h))
                })
                .collect()
        }

        #[test]
        fn a_period_becomes_named_datums_with_dimensions() {
            let extra = vec![("AvailabilityZone".to_string(), "eu-west-1a".to_string())];
            let all = datums(&period(), &extra, 60, CloudWatchDetail::Hop);
            for d in &all {
                assert_eq!(d.timestamp, at(0.0), "the period's start");
                assert_eq!(d.storage_resolution, 60);
                assert_eq!(d.dimensions.last(), extra.last(), "extras last: {d:?}");
                assert_eq!(d.check(at(10.0)), Ok(()));
            }
            // Latency: successes only, in milliseconds, one pair per distinct value.
            let nlb = find(&all, names::LATENCY, Some("nlb"));
            assert_eq!(nlb.len(), 1);
            assert_eq!(nlb[0].unit, Unit::Milliseconds);
            let Value::Distribution(d) = &nlb[0].value else {
                panic!("distribution")
            };
            assert_eq!(d.counts, [2.0]);
            assert!((d.values[0] - 20.0).abs() < 0.05, "{:?}", d.values);
            // Probes per class, with Result; ProbeFailures also when 0.
            let probes = find(&all, names::PROBES, Some("nlb"));
            let classes: Vec<(&str, f64)> = probes
                .iter()
                .map(|d| {
                    let class = d
                        .dimensions
                        .iter()
                        .find(|(k, _)| k == "Result")
                        .map(|(_, v)| v.as_str());
                    let Value::Single(n) = d.value else {
                        panic!("single")
                    };
                    (class.unwrap_or(""), n)
                })
                .collect();
            assert_eq!(classes, [("connect_timeout", 1.0), ("ok", 2.0)]);
            assert_eq!(
                probes[0]
                    .dimensions
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
                ["Chain", "Hop", "Result", "AvailabilityZone"]
            );
            let failures = |hop| match find(&all, names::PROBE_FAILURES, Some(hop))[0].value {
                Value::Single(n) => n,
                Value::Distribution(_) => f64::NAN,
            };
            assert_eq!((failures("gateway"), failures("nlb")), (0.0, 1.0));
            // 0/1 states: values 0 and 1, counted per round.
            let tally_of = |metric, hop| match &find(&all, metric, hop)[0].value {
                Value::Distribution(d) => (d.values.clone(), d.counts.clone()),
                Value::Single(_) => panic!("distribution"),
            };
            assert_eq!(
                tally_of(names::HOP_UP, Some("nlb")),
                (vec![0.0, 1.0], vec![1.0, 2.0])
            );
            assert_eq!(
                tally_of(names::HOP_UP, Some("gateway")),
                (vec![1.0], vec![3.0])
            );
            assert_eq!(
                tally_of(names::BROKEN_HOP, Some("nlb")),
                (vec![0.0, 1.0], vec![2.0, 1.0])
            );
            assert_eq!(
                tally_of(names::HEALTH_CHECK_UP, Some("nlb")),
                (vec![0.0, 1.0], vec![1.0, 2.0])
            );
            assert!(
                find(&all, names::HEALTH_CHECK_UP, Some("gateway")).is_empty(),
                "no health_url"
            );
            assert_eq!(
                tally_of(names::UNEXPECTED_SOURCE, Some("target")),
                (vec![0.0], vec![2.0])
            );
            let chain_up = find(&all, names::CHAIN_UP, None);
            assert_eq!(chain_up.len(), 1);
            assert_eq!(
                chain_up[0]
                    .dimensions
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
                ["Chain", "AvailabilityZone"]
            );
            assert_eq!(
                tally_of(names::CHAIN_UP, None),
                (vec![0.0, 1.0], vec![1.0, 2.0])
            );
        }

        /// `detail = "chain"`: the chain's three metrics, and the hops' own only where
        /// something was wrong (here the nlb, down and blamed, and the target, which failed).
        #[test]
        fn at_chain_detail_a_healthy_hop_publishes_nothing_of_its_own() {
            let all = datums(&period(), &[], 60, CloudWatchDetail::Chain);
            let hops: std::collections::BTreeSet<&str> = all
                .iter()
                .flat_map(|d| d.dimensions.iter())
                .filter(|(k, _)| k == "Hop")
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(
                hops,
                ["nlb", "target"].into(),
                "the gateway passed every round"
            );
            let chain_level: Vec<(&str, Vec<&str>)> = all
                .iter()
                .filter(|d| !d.dimensions.iter().any(|(k, _)| k == "Hop"))
                .map(|d| {
                    (
                        d.metric.as_str(),
                        d.dimensions.iter().map(|(k, _)| k.as_str()).collect(),
                    )
                })
                .collect();
            assert_eq!(
                chain_level,
                [
                    ("ChainUp", vec!["Chain"]),
                    ("Latency", vec!["Chain"]),
                    ("ProbeFailures", vec!["Chain"]),
                ]
            );
            // The chain's latency is its outermost hop's: the gateway's three 10 ms probes.
            let latency = find(&all, names::LATENCY, None)
                .into_iter()
                .find(|d| d.dimensions.len() == 1)
                .expect("chain latency");
            let Value::Distribution(d) = &latency.value else {
                panic!("distribution")
            };
            assert_eq!(d.counts, [3.0]);
            assert!((d.values[0] - 10.0).abs() < 0.05, "{:?}", d.values);
            // Its failures are every hop's: the nlb's and the target's timeouts.
            let failures = find(&all, names::PROBE_FAILURES, None)
                .into_iter()
                .find(|d| d.dimensions.len() == 1)
                .map(|d| d.value.clone());
            assert_eq!(failures, Some(Value::Single(2.0)));
            // A troubled hop publishes its whole set, as at `hop` detail.
            let hop_level = datums(&period(), &[], 60, CloudWatchDetail::Hop);
            let of = |all: &[Datum], hop: &str| -> Vec<Datum> {
                all.iter()
                    .filter(|d| d.dimensions.iter().any(|(k, v)| k == "Hop" && v == hop))
                    .cloned()
                    .collect()
            };
            assert_eq!(of(&all, "nlb"), of(&hop_level, "nlb"));
            assert_eq!(of(&all, "target"), of(&hop_level, "target"));
        }

        #[test]
        fn limits_hold_for_large_periods() {
            // 400 hops x 5,000 distinct latencies: 150 pairs each, 30 dimensions with the
            // most extras the config allows, requests of 1,000 datums and 1 MB at most.
            let chain = chain();
            let mut periods = Periods::new(Duration::from_secs(3600));
            for i in 0..5_000u64 {
                let t = at(1.0 + i as f64 * 0.5);
                let results = (0..3).map(|_| result(Outcome::Ok, 0, t, "")).map(|mut r| {
                    r.total = Duration::from_micros(1_000 + i * 997);
                    r
                });
                periods.observe(&observed(
                    round(&chain, t, results.collect(), true),
                    &[true; 3],
                    verdict(true, None),
                ));
            }
            let mut p = periods.take_all().remove(0);
            let one = p.hops.values().next().cloned().expect("hop");
            for h in 0..400 {
                p.hops
                    .insert(("big".to_string(), format!("hop-{h}")), one.clone());
            }
            let extra: Vec<_> = (0..crate::config::MAX_EXTRA_DIMENSIONS)
                .map(|i| (format!("D{i}"), "v".to_string()))
                .collect();
            let all = datums(&p, &extra, 1, CloudWatchDetail::Hop);
            let now = at(10.0);
            for d in &all {
                assert_eq!(d.check(now), Ok(()), "{}", d.metric);
                assert!(d.dimensions.len() <= MAX_DIMENSIONS);
                if let Value::Distribution(dist) = &d.value {
                    assert!(dist.values.len() <= MAX_PAIRS);
                    if d.metric == names::LATENCY {
                        assert_eq!(dist.sample_count(), 5_000.0);
                    }
                }
            }
            let n = all.len();
            let packed = batches(all);
            assert_eq!(packed.iter().map(Vec::len).sum::<usize>(), n);
            for b in &packed {
                assert!(b.len() <= MAX_DATUMS);
                assert!(
                    b.iter().map(Datum::encoded_size).sum::<usize>()
                        <= crate::export::cloudwatch::datum::MAX_REQUEST_BYTES
                );
            }
            assert!(packed.len() >= 2, "{n} datums need several requests");
        }

        #[test]
        fn nan_and_infinity_are_never_sent() {
            let mut all = datums(&period(), &[], 60, CloudWatchDetail::Hop);
            let n = all.len();
            all[0].value = Value::Single(f64::NAN);
            if let Value::Distribution(d) = &mut all[1].value {
                d.values[0] = f64::INFINITY;
            } else {
                all[1].value = Value::Single(f64::NEG_INFINITY);
            }
            let (ok, bad) = admissible(all, at(10.0));
            assert_eq!(ok.len(), n - 2);
            assert!(bad.iter().all(|(_, why)| *why == Rejected::NotFinite));
            assert!(ok.iter().all(|d| d.check(at(10.0)).is_ok()));
        }
    }
}

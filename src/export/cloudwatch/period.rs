//! What one flush period saw, per (chain, hop): the raw material of datums and EMF lines.
//!
//! A probe belongs to the period its own start falls in (wall clock, aligned to the flush
//! interval), not to the period in which it was recorded. A round that ends after its period
//! was flushed therefore opens that period again; it is sent as a second datum with the same
//! timestamp, which CloudWatch merges. So every datum's timestamp is when its probes ran.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::diagnose::ReasonCode;
use crate::probe::{Outcome, ProbeResult};
use crate::record::Observation;
use crate::source::Seen;

/// Counts of a 0/1 state over the rounds of a period. Sent as a two-value distribution, so
/// `SampleCount` is the rounds, `Average` the share of rounds at 1, `Minimum` 0 if it ever was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub zeros: u64,
    pub ones: u64,
}

impl Tally {
    fn add(&mut self, one: bool) {
        if one {
            self.ones += 1;
        } else {
            self.zeros += 1;
        }
    }

    /// Rounds counted.
    pub fn total(&self) -> u64 {
        self.zeros + self.ones
    }
}

/// The last probe of a hop in a period: what EMF lines carry as searchable properties.
#[derive(Debug, Clone, PartialEq)]
pub struct LastProbe {
    pub at: SystemTime,
    pub result: Outcome,
    pub status: Option<u16>,
    pub trace_id: String,
    /// What the target saw, when it answered as `hopwatch echo`.
    pub seen: Option<Seen>,
    /// The earliest `notAfter` of the certificates presented (TLS hops).
    pub cert_not_after: Option<SystemTime>,
}

/// One hop over one period.
#[derive(Debug, Clone)]
pub struct HopPeriod {
    /// Total time of successful probes, microseconds.
    pub latency: Histogram<u32>,
    /// Probes by outcome class (`ok` included), indexed by [`Outcome::index`].
    pub results: [u64; Outcome::ALL.len()],
    /// The debounced hop state, per round.
    pub up: Tally,
    /// Whether this hop was the one blamed, per round.
    pub broken: Tally,
    /// Health-check URL answers, per round (hops with `health_url`).
    pub health_up: Tally,
    /// Rounds whose source broke `expect_source`/`expect_forwarded` (hops with expectations
    /// whose target answered as `hopwatch echo`).
    pub unexpected_source: Tally,
    pub last: Option<LastProbe>,
    /// The reason code of the last round that blamed this hop, and when that round started.
    pub code: Option<(SystemTime, ReasonCode)>,
    /// The chain's outermost hop (the path users take): its latency is the chain's.
    pub outermost: bool,
}

impl HopPeriod {
    fn new() -> Self {
        // Auto-resizing from a small array: memory follows the largest value seen.
        let mut latency = Histogram::new(3).expect("3 significant digits is valid");
        latency.auto(true);
        HopPeriod {
            latency,
            results: [0; Outcome::ALL.len()],
            up: Tally::default(),
            broken: Tally::default(),
            health_up: Tally::default(),
            unexpected_source: Tally::default(),
            last: None,
            code: None,
            outermost: false,
        }
    }

    /// Whether anything was wrong with this hop in the period: a probe failed, a round had it
    /// down or blamed it, its health check failed or its target saw an unexpected source. With
    /// `[cloudwatch] detail = "chain"` only such a hop publishes metrics of its own, so the
    /// per-hop alarms see data exactly when they have something to say.
    pub fn troubled(&self) -> bool {
        self.failures() > 0
            || self.up.zeros > 0
            || self.broken.ones > 0
            || self.health_up.zeros > 0
            || self.unexpected_source.ones > 0
    }

    /// Probes that failed, whatever the class.
    pub fn failures(&self) -> u64 {
        Outcome::ALL
            .iter()
            .filter(|o| !o.is_ok())
            .map(|o| self.results[o.index()])
            .sum()
    }

    /// Probes of one class.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.results[outcome.index()]
    }

    /// The classes seen in the period with their counts, in the order of their names (the
    /// order datums and EMF's `Results` list them in).
    pub fn classes(&self) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        Outcome::BY_NAME
            .iter()
            .map(|o| (*o, self.results[o.index()]))
            .filter(|(_, n)| *n > 0)
    }

    /// Whether any probe was recorded.
    pub fn probed(&self) -> bool {
        self.results.iter().any(|n| *n > 0)
    }
}

/// Everything seen in one flush period.
#[derive(Debug, Clone)]
pub struct Period {
    /// Start of the period: the timestamp of everything in it.
    pub start: SystemTime,
    /// Keyed by (chain, hop) names.
    pub hops: BTreeMap<(String, String), HopPeriod>,
    /// `ChainUp` per chain, per round.
    pub chains: BTreeMap<String, Tally>,
    /// Rounds each chain was down, by reason code.
    pub reasons: BTreeMap<(String, ReasonCode), u64>,
}

/// A chain's own figures in a period, read from its hops'.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChainFigures<'a> {
    /// The outermost hop, when it was probed in the period: `Latency` under `Chain`.
    pub outermost: Option<&'a HopPeriod>,
    /// Failed probes of every hop of the chain: `ProbeFailures` under `Chain`.
    pub failures: u64,
    /// Whether any hop of the chain was probed in the period.
    pub probed: bool,
}

impl Period {
    /// Every chain with a hop or a round in the period, with the figures
    /// `[cloudwatch] detail = "chain"` publishes for it.
    pub fn chain_figures(&self) -> BTreeMap<&str, ChainFigures<'_>> {
        let mut out: BTreeMap<&str, ChainFigures<'_>> = self
            .chains
            .keys()
            .map(|c| (c.as_str(), ChainFigures::default()))
            .collect();
        for ((chain, _), p) in &self.hops {
            let figures = out.entry(chain.as_str()).or_default();
            if p.outermost {
                figures.outermost = Some(p);
            }
            figures.failures += p.failures();
            figures.probed |= p.probed();
        }
        out
    }
}

/// The open periods, keyed by start (milliseconds since the epoch).
#[derive(Debug)]
pub struct Periods {
    flush_ms: u64,
    open: BTreeMap<u64, Period>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Periods {
    /// Periods of `flush` length, aligned to the epoch (a 60 s period starts on the minute).
    pub fn new(flush: Duration) -> Self {
        Periods {
            flush_ms: (flush.as_millis() as u64).max(1),
            open: BTreeMap::new(),
        }
    }

    fn period(&mut self, at: SystemTime) -> &mut Period {
        let start = millis(at) / self.flush_ms * self.flush_ms;
        self.open.entry(start).or_insert_with(|| Period {
            start: UNIX_EPOCH + Duration::from_millis(start),
            hops: BTreeMap::new(),
            chains: BTreeMap::new(),
            reasons: BTreeMap::new(),
        })
    }

    fn hop(&mut self, at: SystemTime, chain: &str, hop: &str) -> &mut HopPeriod {
        self.period(at)
            .hops
            .entry((chain.to_string(), hop.to_string()))
            .or_insert_with(HopPeriod::new)
    }

    /// Adds one recorded round.
    pub fn observe(&mut self, observation: &Observation) {
        let round = &observation.round;
        let chain = &round.chain;
        let verdict = &observation.verdict;
        let period = self.period(round.started_wall);
        period
            .chains
            .entry(chain.name.clone())
            .or_default()
            .add(verdict.up);
        if let (false, Some(code)) = (verdict.up, verdict.code) {
            *period
                .reasons
                .entry((chain.name.clone(), code))
                .or_default() += 1;
        }
        for (i, (hop, result)) in chain.hops.iter().zip(&round.probed.results).enumerate() {
            let p = self.hop(result.started_at, &chain.name, &hop.name);
            p.outermost = i == 0;
            record(p, result);
            p.up.add(observation.up.get(i).copied().unwrap_or(false));
            let blamed = verdict.broken == Some(i) && !verdict.up;
            p.broken.add(verdict.broken == Some(i));
            if let (true, Some(code)) = (blamed, verdict.code) {
                if p.code.is_none_or(|(at, _)| at <= result.started_at) {
                    p.code = Some((result.started_at, code));
                }
            }
            if let Some(Some(expected)) = observation.source_expected.get(i) {
                p.unexpected_source.add(!expected);
            }
            if p.last.as_ref().is_none_or(|l| l.at <= result.started_at) {
                p.last = Some(LastProbe {
                    at: result.started_at,
                    result: result.outcome,
                    status: result.status,
                    trace_id: result.trace_id.clone(),
                    seen: observation.seen.get(i).cloned().flatten(),
                    cert_not_after: result.cert_not_after,
                });
            }
        }
        // A health check is a probe of its own: its period is the one its own start falls in
        // (a round starting at x.999 s may send its health check in the next second).
        for (i, hop) in chain.hops.iter().enumerate() {
            let (Some(Some(ok)), Some(Some(check))) =
                (observation.health_up.get(i), round.probed.health.get(i))
            else {
                continue;
            };
            self.hop(check.started_at, &chain.name, &hop.name)
                .health_up
                .add(*ok);
        }
    }

    /// Takes the periods that ended by `now`, oldest first.
    pub fn take_ended(&mut self, now: SystemTime) -> Vec<Period> {
        let current = millis(now) / self.flush_ms * self.flush_ms;
        let still_open = self.open.split_off(&current);
        std::mem::replace(&mut self.open, still_open)
            .into_values()
            .collect()
    }

    /// Takes every period, the current one included (at shutdown).
    pub fn take_all(&mut self) -> Vec<Period> {
        std::mem::take(&mut self.open).into_values().collect()
    }
}

fn record(p: &mut HopPeriod, result: &ProbeResult) {
    p.results[result.outcome.index()] += 1;
    if result.outcome.is_ok() {
        let us = result.total.as_micros().clamp(1, u128::from(u32::MAX)) as u64;
        // `record` grows the auto-resizing histogram; `saturating_record` would clamp to its
        // current (tiny) top instead.
        if p.latency.record(us).is_err() {
            p.latency.saturating_record(us);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Outcome;
    use crate::record::testing::*;

    #[test]
    fn probes_land_in_the_period_they_started_in() {
        let chain = chain();
        let mut periods = Periods::new(Duration::from_secs(60));
        // 12:00:59.9 and 12:01:00.1: two periods, whenever they are recorded.
        for (t, ms) in [(59.9, 20), (60.1, 30)] {
            let results = vec![
                result(Outcome::Ok, ms, at(t), ""),
                result(Outcome::Ok, ms, at(t), ""),
                result(Outcome::Ok, ms, at(t), ECHO),
            ];
            periods.observe(&observed(
                round(&chain, at(t), results, true),
                &[true; 3],
                verdict(true, None),
            ));
        }
        let ended = periods.take_ended(at(61.0));
        assert_eq!(ended.len(), 1, "only the period that ended");
        assert_eq!(ended[0].start, at(0.0));
        let target = &ended[0].hops[&("orders".to_string(), "target".to_string())];
        // Recorded in microseconds, at the histogram's precision: 20 ms, not clamped.
        assert_eq!(target.latency.len(), 1);
        let v = target.latency.value_at_quantile(0.5);
        assert!((19_980..=20_020).contains(&v), "{v} µs");
        // A round of the first period recorded late reopens it: sent again, same timestamp.
        let late = vec![result(Outcome::Timeout, 5000, at(30.0), ""); 3];
        periods.observe(&observed(
            round(&chain, at(30.0), late, true),
            &[true, true, false],
            verdict(false, Some(2)),
        ));
        let ended = periods.take_ended(at(121.0));
        assert_eq!(
            ended.iter().map(|p| p.start).collect::<Vec<_>>(),
            [at(0.0), at(60.0)]
        );
        assert!(periods.take_all().is_empty());
    }

    #[test]
    fn tallies_and_the_last_probe() {
        let chain = chain();
        let mut periods = Periods::new(Duration::from_secs(60));
        let ok = |t| {
            vec![
                result(Outcome::Ok, 10, at(t), ""),
                result(Outcome::Ok, 10, at(t), ""),
                result(Outcome::Ok, 10, at(t), ECHO),
            ]
        };
        periods.observe(&observed(
            round(&chain, at(1.0), ok(1.0), true),
            &[true; 3],
            verdict(true, None),
        ));
        periods.observe(&observed(
            round(&chain, at(2.0), ok(2.0), false),
            &[true; 3],
            verdict(true, None),
        ));
        let bad = vec![
            result(Outcome::HttpStatus, 10, at(3.0), ""),
            result(Outcome::ConnectTimeout, 10, at(3.0), ""),
            result(Outcome::ConnectTimeout, 10, at(3.0), ""),
        ];
        periods.observe(&observed(
            round(&chain, at(3.0), bad, false),
            &[false, false, true],
            verdict(false, Some(1)),
        ));
        let all = periods.take_all();
        let p = &all[0];
        let hop = |name: &str| &p.hops[&("orders".to_string(), name.to_string())];
        assert_eq!(p.chains["orders"], Tally { zeros: 1, ones: 2 });
        assert_eq!(hop("nlb").up, Tally { zeros: 1, ones: 2 });
        assert_eq!(hop("nlb").broken, Tally { zeros: 2, ones: 1 });
        assert_eq!(hop("gateway").broken, Tally { zeros: 3, ones: 0 });
        assert_eq!(hop("nlb").health_up, Tally { zeros: 2, ones: 1 });
        assert_eq!(hop("gateway").health_up.total(), 0, "no health_url");
        assert_eq!(hop("nlb").failures(), 1);
        assert_eq!(hop("nlb").latency.len(), 2, "only successes are latency");
        // 10.0.1.7 is inside 10.0.1.0/24; the failed third round saw nothing.
        assert_eq!(hop("target").unexpected_source, Tally { zeros: 2, ones: 0 });
        let last = hop("target").last.as_ref().expect("last");
        assert_eq!(last.result, Outcome::ConnectTimeout);
        assert!(last.seen.is_none());
    }
}

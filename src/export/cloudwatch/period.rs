//! What one flush period saw, per (chain, hop): the raw material of datums and EMF lines.
//!
//! A probe belongs to the period its own start falls in (wall clock, aligned to the flush
//! interval), not to the period in which it was recorded. A round that ends after its period
//! was flushed therefore opens that period again; it is sent as a second datum with the same
//! timestamp, which CloudWatch merges. So every datum's timestamp is when its probes ran.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::diagnose::Verdict;
use crate::probe::ProbeResult;
use crate::schedule::Round;
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
    pub result: &'static str,
    pub status: Option<u16>,
    pub trace_id: String,
    /// What the target saw, when it answered as `hopwatch echo`.
    pub seen: Option<Seen>,
}

/// One hop over one period.
#[derive(Debug, Clone)]
pub struct HopPeriod {
    /// Total time of successful probes, microseconds.
    pub latency: Histogram<u32>,
    /// Probes by outcome class (`ok` included).
    pub results: BTreeMap<&'static str, u64>,
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
}

impl HopPeriod {
    fn new() -> Self {
        // Auto-resizing from a small array: memory follows the largest value seen.
        let mut latency = Histogram::new(3).expect("3 significant digits is valid");
        latency.auto(true);
        HopPeriod {
            latency,
            results: BTreeMap::new(),
            up: Tally::default(),
            broken: Tally::default(),
            health_up: Tally::default(),
            unexpected_source: Tally::default(),
            last: None,
        }
    }

    /// Probes that failed, whatever the class.
    pub fn failures(&self) -> u64 {
        self.results
            .iter()
            .filter(|(class, _)| **class != "ok")
            .map(|(_, n)| n)
            .sum()
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
        })
    }

    fn hop(&mut self, at: SystemTime, chain: &str, hop: &str) -> &mut HopPeriod {
        self.period(at)
            .hops
            .entry((chain.to_string(), hop.to_string()))
            .or_insert_with(HopPeriod::new)
    }

    /// Adds one recorded round: `up` is the debounced state of each hop, `verdict` the
    /// diagnosis made on it.
    pub fn observe(&mut self, round: &Round, up: &[bool], verdict: &Verdict) {
        let chain = &round.chain;
        self.period(round.started_wall)
            .chains
            .entry(chain.name.clone())
            .or_default()
            .add(verdict.up);
        for (i, (hop, result)) in chain.hops.iter().zip(&round.probed.results).enumerate() {
            let seen = crate::source::seen(&result.body);
            let unexpected = crate::source::expected(
                seen.as_ref(),
                &hop.expect_source,
                &hop.expect_forwarded,
                &round.probed.resolved,
            )
            .map(|ok| !ok);
            let health = round.probed.health.get(i).and_then(Option::as_ref);
            let p = self.hop(result.started_at, &chain.name, &hop.name);
            record(p, result);
            p.up.add(up.get(i).copied().unwrap_or(false));
            p.broken.add(verdict.broken == Some(i));
            if let Some(health) = health {
                p.health_up.add(health.outcome.is_ok());
            }
            if let Some(unexpected) = unexpected {
                p.unexpected_source.add(unexpected);
            }
            if p.last.as_ref().is_none_or(|l| l.at <= result.started_at) {
                p.last = Some(LastProbe {
                    at: result.started_at,
                    result: result.outcome.as_str(),
                    status: result.status,
                    trace_id: result.trace_id.clone(),
                    seen,
                });
            }
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
    *p.results.entry(result.outcome.as_str()).or_default() += 1;
    if result.outcome.is_ok() {
        let us = result.total.as_micros().clamp(1, u128::from(u32::MAX)) as u64;
        // `record` grows the auto-resizing histogram; `saturating_record` would clamp to its
        // current (tiny) top instead.
        if p.latency.record(us).is_err() {
            p.latency.saturating_record(us);
        }
    }
}

//! The per-hop series, and the per-chain ones beside them: most of the exposition, stored by
//! index and written straight to text.
//!
//! Why not the `prometheus` crate's vectors for these: every observation there hashes the label
//! values to find its child, and every scrape clones every series into protobuf-shaped structs
//! before encoding. At 10,000 hops that is ~500,000 series: a scrape took seconds and megabytes.
//! Here a round finds its chain once by name, its hops by position, and a scrape writes each
//! line from a pre-escaped label prefix and integers, under one lock.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::config::{Chain, Detail};
use crate::probe::{Outcome, PHASE_NAMES};
use crate::record::window::{scratch, Window, DEFAULT_WINDOW};
use crate::record::Observation;

use super::{LATENCY_BUCKETS, QUANTILES, STANDARD_QUANTILES};

/// A cumulative histogram in the shape Prometheus exposes.
#[derive(Debug, Clone)]
struct Buckets {
    /// Non-cumulative counts per bound, then one for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Buckets {
    fn new(bounds: &[f64]) -> Self {
        Buckets {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// Everything exported for one (chain, hop).
#[derive(Debug)]
struct HopSeries {
    /// `chain="…",hop="…"`, escaped once.
    labels: String,
    role: &'static str,
    probes: [u64; Outcome::ALL.len()],
    duration: Buckets,
    /// Per phase: (sum in seconds, count). Exported as a summary without quantiles: the
    /// breakdown is read as `_sum / _count`, and buckets for five phases would be most of the
    /// exposition at thousands of hops.
    phases: [(f64, u64); 5],
    window: Window,
    /// Gauges, `None` until first set (a series appears when it first means something).
    up: Option<bool>,
    http_status: Option<u16>,
    last_probe: Option<f64>,
    broken: Option<bool>,
    blind_spot: Option<bool>,
    health_up: Option<bool>,
    source_unexpected: Option<bool>,
    /// The last few distinct TCP peers the target saw through this hop, most recent last.
    /// Addresses, not text: nothing is allocated for them while the agent probes.
    sources: VecDeque<IpAddr>,
}

/// Distinct source IPs kept per hop: one per AZ of a load balancer fits, and a target behind
/// many addresses can't grow the series without bound.
pub const SOURCES_PER_HOP: usize = 4;

impl HopSeries {
    /// A peer that is not an IP address is not a source (the reader passes addresses only).
    fn saw_source(&mut self, peer: &str) {
        let Ok(peer) = peer.parse::<IpAddr>() else {
            return;
        };
        if let Some(at) = self.sources.iter().position(|ip| *ip == peer) {
            if let Some(ip) = self.sources.remove(at) {
                self.sources.push_back(ip);
            }
            return;
        }
        if self.sources.len() == SOURCES_PER_HOP {
            self.sources.pop_front();
        }
        self.sources.push_back(peer);
    }

    /// Everything a hop needs is allocated here, before it is first probed (see
    /// [`Window::for_interval`]).
    fn new(chain: &str, hop: &str, role: &'static str, interval: Duration) -> Self {
        let mut labels = String::with_capacity(chain.len() + hop.len() + 16);
        labels.push_str("chain=\"");
        escape_into(&mut labels, chain);
        labels.push_str("\",hop=\"");
        escape_into(&mut labels, hop);
        labels.push('"');
        HopSeries {
            labels,
            role,
            probes: [0; Outcome::ALL.len()],
            duration: Buckets::new(LATENCY_BUCKETS),
            phases: [(0.0, 0); 5],
            window: Window::for_interval(DEFAULT_WINDOW, interval),
            up: None,
            http_status: None,
            last_probe: None,
            broken: None,
            blind_spot: None,
            health_up: None,
            source_unexpected: None,
            sources: VecDeque::with_capacity(SOURCES_PER_HOP),
        }
    }
}

/// Everything exported for one chain: its own series and its hops'.
#[derive(Debug)]
struct ChainSeries {
    chain: Arc<Chain>,
    /// `chain="…"`, escaped once.
    labels: String,
    /// `hopwatch_chain_up`, `None` until the first round: the series appears then.
    up: Option<bool>,
    hops: Vec<HopSeries>,
}

impl ChainSeries {
    /// Everything a chain needs is allocated here, before it is first probed: what the rounds
    /// allocate and keep would land among their short-lived allocations and pin the heap (see
    /// [`Window::for_interval`]).
    fn new(chain: &Arc<Chain>) -> Self {
        let mut labels = String::with_capacity(chain.name.len() + 8);
        labels.push_str("chain=\"");
        escape_into(&mut labels, &chain.name);
        labels.push('"');
        ChainSeries {
            chain: chain.clone(),
            labels,
            up: None,
            hops: series_of(chain),
        }
    }
}

/// The configured chains' series, in config order.
#[derive(Debug, Default)]
pub struct HopTable {
    index: HashMap<String, usize>,
    chains: Vec<ChainSeries>,
    /// What a scrape writes. Every hop keeps everything `full` needs whatever the level (a few
    /// hundred bytes a hop), so a reload that changes the level applies at the next scrape and
    /// the counters it adds carry every probe since the start.
    detail: Detail,
}

fn same_hops(a: &Chain, b: &Chain) -> bool {
    a.hops.len() == b.hops.len()
        && a.hops
            .iter()
            .zip(&b.hops)
            .all(|(x, y)| x.name == y.name && x.role == y.role)
}

fn series_of(chain: &Chain) -> Vec<HopSeries> {
    chain
        .hops
        .iter()
        .map(|h| HopSeries::new(&chain.name, &h.name, h.role.as_str(), chain.interval))
        .collect()
}

impl HopTable {
    /// Makes the table hold exactly `chains`. A chain already present with the same hops keeps
    /// its series (counters, histograms, window); the others start empty; chains no longer
    /// configured lose theirs.
    pub fn set_chains(&mut self, chains: &[Arc<Chain>]) {
        let mut old: HashMap<String, ChainSeries> = self
            .chains
            .drain(..)
            .map(|c| (c.chain.name.clone(), c))
            .collect();
        self.index.clear();
        for chain in chains {
            let series = match old.remove(&chain.name) {
                Some(mut kept) if same_hops(&kept.chain, chain) => {
                    // Its interval may have changed: the series say the configured one.
                    kept.chain = chain.clone();
                    kept
                }
                _ => ChainSeries::new(chain),
            };
            self.index.insert(chain.name.clone(), self.chains.len());
            self.chains.push(series);
        }
    }

    /// Sets what scrapes write from now on.
    pub fn set_detail(&mut self, detail: Detail) {
        self.detail = detail;
    }

    /// Names of the chains held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.chains.iter().map(|c| c.chain.name.as_str())
    }

    fn series(&mut self, chain: &Arc<Chain>) -> &mut ChainSeries {
        let i = match self.index.get(&chain.name) {
            Some(&i) if same_hops(&self.chains[i].chain, chain) => i,
            Some(&i) => {
                // The same name with other hops: a round of a chain that was just reloaded.
                self.chains[i] = ChainSeries::new(chain);
                i
            }
            None => {
                self.index.insert(chain.name.clone(), self.chains.len());
                self.chains.push(ChainSeries::new(chain));
                self.chains.len() - 1
            }
        };
        &mut self.chains[i]
    }

    /// Records one observed round.
    pub fn observe(&mut self, observation: &Observation) {
        let round = &observation.round;
        let probed = &round.probed;
        let verdict = &observation.verdict;
        let chain = self.series(&round.chain);
        chain.up = Some(verdict.up);
        for (i, s) in chain.hops.iter_mut().enumerate() {
            s.up = Some(observation.up.get(i).copied().unwrap_or(false));
            s.broken = Some(verdict.broken == Some(i));
            s.blind_spot = Some(verdict.blind_spots.contains(&i));
            if let Some(Some(ok)) = observation.health_up.get(i) {
                s.health_up = Some(*ok);
            }
            let Some(result) = probed.results.get(i) else {
                continue;
            };
            if let Some(Some(seen)) = observation.seen.get(i) {
                s.saw_source(&seen.peer);
            }
            if let Some(Some(expected)) = observation.source_expected.get(i) {
                s.source_unexpected = Some(!expected);
            }
            s.probes[result.outcome.index()] += 1;
            s.http_status = Some(result.status.unwrap_or(0));
            s.last_probe = Some(
                result
                    .started_at
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
            );
            if !result.outcome.is_ok() {
                continue;
            }
            s.duration
                .observe(LATENCY_BUCKETS, result.total.as_secs_f64());
            for ((sum, count), value) in s.phases.iter_mut().zip(result.phases.as_array()) {
                if let Some(d) = value {
                    *sum += d.as_secs_f64();
                    *count += 1;
                }
            }
            s.window.record(round.started, result.total);
        }
    }

    fn all(&mut self) -> impl Iterator<Item = &mut HopSeries> {
        self.chains.iter_mut().flat_map(|c| c.hops.iter_mut())
    }

    /// The chains whose first hop is among hops `from..from + take` of the whole table: a
    /// per-chain family is written in the parts of the per-hop ones.
    fn chains_starting_in(&self, from: usize, take: usize) -> impl Iterator<Item = &ChainSeries> {
        let mut first = 0;
        self.chains.iter().filter(move |c| {
            let at = first;
            first += c.hops.len();
            at >= from && at < from + take
        })
    }

    /// Appends the next part of the exposition: one family for at most `hops` hops from
    /// `cursor`, which it advances. False once every family is written. Scrapes are written in
    /// parts so the lock is held for one part at a time and no scrape holds the whole text
    /// (tens of megabytes at 10,000 hops) in memory.
    pub fn render_chunk(&mut self, cursor: &mut Cursor, hops: usize, out: &mut String) -> bool {
        if cursor.family >= FAMILIES {
            return false;
        }
        let total: usize = self.chains.iter().map(|c| c.hops.len()).sum();
        let from = cursor.hop;
        let take = hops.min(total.saturating_sub(from));
        self.render_family(cursor.family, from, take, out);
        if from + take >= total {
            cursor.family += 1;
            cursor.hop = 0;
        } else {
            cursor.hop = from + take;
        }
        cursor.family < FAMILIES
    }

    fn render_family(&mut self, family: usize, from: usize, take: usize, out: &mut String) {
        let now = Instant::now();
        let first = from == 0;
        let full = self.detail == Detail::Full;
        // The buckets and the phases are most of a full exposition (28 of its ~38 series a
        // hop) and no shipped alert, rule or default dashboard panel reads them.
        if !full && (family == DURATION || family == PHASES) {
            return;
        }
        if family == CHAIN_UP || family == CHAIN_INTERVAL {
            self.render_chains(family, from, take, out);
            return;
        }
        let any_source = first
            && family == SOURCES
            && self
                .chains
                .iter()
                .any(|c| c.hops.iter().any(|s| !s.sources.is_empty()));
        let mut w = Writer { out };
        let hops = self.all().skip(from).take(take);
        match family {
            PROBES => {
                if first {
                    w.family(
                        "hopwatch_probes_total",
                        "Probes made, by outcome class.",
                        "counter",
                    );
                }
                for s in hops {
                    for (k, n) in s.probes.iter().enumerate() {
                        if *n > 0 {
                            w.sample(
                                "hopwatch_probes_total",
                                &s.labels,
                                &[("result", Outcome::ALL[k].as_str())],
                                Value::Int(*n as i64),
                            );
                        }
                    }
                }
            }
            DURATION => {
                if first {
                    w.family(
                        "hopwatch_probe_duration_seconds",
                        "Total time of successful probes.",
                        "histogram",
                    );
                }
                let family = HistFamily::new("hopwatch_probe_duration_seconds", LATENCY_BUCKETS);
                for s in hops.filter(|s| s.duration.count > 0) {
                    w.histogram(&family, &s.labels, &s.duration);
                }
            }
            PHASES => {
                if first {
                    w.family(
                        "hopwatch_probe_phase_duration_seconds",
                        "Time of each phase (dns, connect, tls, ttfb, transfer) of successful probes; _sum / _count is the mean.",
                        "summary",
                    );
                }
                for s in hops {
                    for (phase, (sum, count)) in PHASE_NAMES.iter().zip(s.phases) {
                        if count > 0 {
                            let phase = [("phase", *phase)];
                            w.sample(
                                "hopwatch_probe_phase_duration_seconds_sum",
                                &s.labels,
                                &phase,
                                Value::Float(sum),
                            );
                            w.sample(
                                "hopwatch_probe_phase_duration_seconds_count",
                                &s.labels,
                                &phase,
                                Value::Int(count as i64),
                            );
                        }
                    }
                }
            }
            LATENCY => {
                if first {
                    w.family(
                        "hopwatch_probe_latency_seconds",
                        "Latency quantiles of successful probes over the last 5 minutes (hdrhistogram).",
                        "summary",
                    );
                }
                let wanted = if full { QUANTILES } else { STANDARD_QUANTILES };
                let quantiles: Vec<String> = wanted.iter().map(|q| fmt_f64(*q)).collect();
                let mut scratch = scratch();
                for s in hops {
                    let (_, values) = s.window.quantiles(now, wanted, &mut scratch);
                    for (q, v) in quantiles.iter().zip(values) {
                        w.sample(
                            "hopwatch_probe_latency_seconds",
                            &s.labels,
                            &[("quantile", q)],
                            Value::Float(v),
                        );
                    }
                    let (count, sum) = s.window.cumulative();
                    w.sample(
                        "hopwatch_probe_latency_seconds_sum",
                        &s.labels,
                        &[],
                        Value::Float(sum),
                    );
                    w.sample(
                        "hopwatch_probe_latency_seconds_count",
                        &s.labels,
                        &[],
                        Value::Int(count as i64),
                    );
                }
            }
            SOURCES => {
                if any_source {
                    w.family(
                        "hopwatch_target_source_info",
                        "The TCP peer the target saw when entered through this hop (value 1; the last few distinct addresses).",
                        "gauge",
                    );
                }
                for s in hops {
                    for ip in &s.sources {
                        w.sample(
                            "hopwatch_target_source_info",
                            &s.labels,
                            &[("source_ip", &ip.to_string())],
                            Value::Int(1),
                        );
                    }
                }
            }
            _ => {
                drop(hops);
                let Some((name, help, get, standard)) = GAUGES.get(family - FIRST_GAUGE) else {
                    return;
                };
                let shown = |s: &HopSeries| -> Option<Value> {
                    let v = get(s)?;
                    match (full, standard) {
                        (true, _) | (false, AtStandard::Kept) => Some(v),
                        (false, AtStandard::Dropped) => None,
                        (false, AtStandard::WhileOne) => v.is_one().then_some(v),
                    }
                };
                // A gauge family no hop has a value for is left out, header and all.
                if first && self.all().any(|s| shown(s).is_some()) {
                    w.family(name, help, "gauge");
                }
                let hop_info = *name == "hopwatch_hop_info";
                for s in self.all().skip(from).take(take) {
                    let Some(v) = shown(s) else { continue };
                    let role = [("role", s.role)];
                    let extra: &[(&str, &str)] = if hop_info { &role } else { &[] };
                    w.sample(name, &s.labels, extra, v);
                }
            }
        }
    }
}

impl HopTable {
    /// `hopwatch_chain_up` (chains with a round) or `hopwatch_chain_interval_seconds` (every
    /// chain) for the chains that start in this part.
    fn render_chains(&self, family: usize, from: usize, take: usize, out: &mut String) {
        let up = family == CHAIN_UP;
        let (name, help) = if up {
            (
                "hopwatch_chain_up",
                "1 when the chain's outermost hop (the path users take) is up.",
            )
        } else {
            (
                "hopwatch_chain_interval_seconds",
                "Configured round interval of the chain.",
            )
        };
        let value = |c: &ChainSeries| -> Option<Value> {
            if up {
                c.up.map(Value::from)
            } else {
                Some(Value::Float(c.chain.interval.as_secs_f64()))
            }
        };
        let mut w = Writer { out };
        // A family no chain has a value for is left out, header and all.
        if from == 0 && self.chains.iter().any(|c| value(c).is_some()) {
            w.family(name, help, "gauge");
        }
        for c in self.chains_starting_in(from, take) {
            if let Some(v) = value(c) {
                w.sample(name, &c.labels, &[], v);
            }
        }
    }
}

/// Where a scrape written in parts has got to ([`HopTable::render_chunk`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Cursor {
    family: usize,
    hop: usize,
}

/// What `[agent] detail = "standard"` keeps of a per-hop gauge (`full` keeps all of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtStandard {
    /// Every series: an alert or a default dashboard panel reads it.
    Kept,
    /// None: nothing shipped reads it.
    Dropped,
    /// Only the series at 1: what is read is `== 1`, and 0 is what almost every hop says almost
    /// always, so it is a series per hop that says nothing.
    WhileOne,
}

type Gauge = (
    &'static str,
    &'static str,
    fn(&HopSeries) -> Option<Value>,
    AtStandard,
);

/// The per-hop gauges, in exposition order.
const GAUGES: [Gauge; 8] = [
    (
        "hopwatch_hop_up",
        "1 when the hop's last probe passed, else 0.",
        |s| s.up.map(Value::from),
        AtStandard::Kept,
    ),
    (
        "hopwatch_probe_http_status",
        "HTTP status of the hop's last probe; 0 when no response arrived.",
        |s| s.http_status.map(|v| Value::Int(i64::from(v))),
        AtStandard::Dropped,
    ),
    (
        "hopwatch_last_probe_timestamp_seconds",
        "Unix time at which the hop's last probe started.",
        |s| s.last_probe.map(Value::Float),
        AtStandard::Kept,
    ),
    (
        "hopwatch_chain_broken_hop",
        "1 on the hop blamed for the chain being down, 0 on the others.",
        |s| s.broken.map(Value::from),
        AtStandard::WhileOne,
    ),
    (
        "hopwatch_hop_blind_spot",
        "1 when the hop fails from the agent while a hop outside it passes: users are served, the agent can't see it.",
        |s| s.blind_spot.map(Value::from),
        AtStandard::WhileOne,
    ),
    (
        "hopwatch_health_check_up",
        "1 when the hop's health-check URL (the load balancer's health-check port) answers 2xx.",
        |s| s.health_up.map(Value::from),
        AtStandard::Kept,
    ),
    (
        "hopwatch_source_unexpected",
        "1 when the source the target last saw through this hop broke expect_source or expect_forwarded.",
        |s| s.source_unexpected.map(Value::from),
        AtStandard::Kept,
    ),
    (
        "hopwatch_hop_info",
        "Each configured hop and its role (gateway, nlb, alb, cloudmap, target); always 1.",
        |_| Some(Value::Int(1)),
        AtStandard::Kept,
    ),
];

/// The families in exposition order: the chains' own, probes, duration, phases, latency, the
/// gauges, then the sources.
const CHAIN_UP: usize = 0;
const CHAIN_INTERVAL: usize = 1;
const PROBES: usize = 2;
const DURATION: usize = 3;
const PHASES: usize = 4;
const LATENCY: usize = 5;
const FIRST_GAUGE: usize = 6;
const SOURCES: usize = FIRST_GAUGE + GAUGES.len();
const FAMILIES: usize = SOURCES + 1;

#[derive(Debug, Clone, Copy)]
enum Value {
    Int(i64),
    Float(f64),
}

impl Value {
    fn is_one(self) -> bool {
        match self {
            Value::Int(i) => i == 1,
            Value::Float(f) => f == 1.0,
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Int(i64::from(b))
    }
}

/// A float as Prometheus reads it: shortest round-trip digits, `+Inf`, `-Inf`, `NaN`.
fn fmt_f64(v: f64) -> String {
    let mut s = String::new();
    push_f64(&mut s, v);
    s
}

fn push_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v == v.trunc() && v.abs() < 1e15 {
        // Whole numbers without a trailing ".0", as the `prometheus` crate writes them.
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        out.push_str(ryu::Buffer::new().format_finite(v));
    }
}

/// Label values escaped as the text format requires: backslash, double quote, newline.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        for part in [
            "# HELP ",
            name,
            " ",
            help,
            "\n# TYPE ",
            name,
            " ",
            kind,
            "\n",
        ] {
            self.out.push_str(part);
        }
    }

    fn sample(&mut self, name: &str, labels: &str, extra: &[(&str, &str)], v: Value) {
        let out = &mut *self.out;
        out.push_str(name);
        out.push('{');
        out.push_str(labels);
        for (k, val) in extra {
            out.push(',');
            out.push_str(k);
            out.push_str("=\"");
            escape_into(out, val);
            out.push('"');
        }
        out.push_str("} ");
        match v {
            Value::Int(i) => out.push_str(itoa::Buffer::new().format(i)),
            Value::Float(f) => push_f64(out, f),
        }
        out.push('\n');
    }

    fn histogram(&mut self, f: &HistFamily, labels: &str, b: &Buckets) {
        let mut cumulative = 0u64;
        for (le, n) in f.les.iter().zip(&b.counts) {
            cumulative += n;
            let out = &mut *self.out;
            out.push_str(&f.bucket);
            out.push('{');
            out.push_str(labels);
            out.push_str(",le=\"");
            out.push_str(le);
            out.push_str("\"} ");
            out.push_str(itoa::Buffer::new().format(cumulative));
            out.push('\n');
        }
        self.sample(&f.sum, labels, &[], Value::Float(b.sum));
        self.sample(&f.count, labels, &[], Value::Int(b.count as i64));
    }
}

/// A histogram family's line names and bucket bounds, formatted once per scrape.
struct HistFamily {
    bucket: String,
    sum: String,
    count: String,
    les: Vec<String>,
}

impl HistFamily {
    fn new(name: &str, bounds: &[f64]) -> Self {
        HistFamily {
            bucket: format!("{name}_bucket"),
            sum: format!("{name}_sum"),
            count: format!("{name}_count"),
            les: bounds
                .iter()
                .map(|b| fmt_f64(*b))
                .chain(std::iter::once("+Inf".to_string()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::Verdict;

    #[test]
    fn floats_are_written_as_prometheus_reads_them() {
        assert_eq!(fmt_f64(f64::NAN), "NaN");
        assert_eq!(fmt_f64(f64::INFINITY), "+Inf");
        assert_eq!(fmt_f64(f64::NEG_INFINITY), "-Inf");
        assert_eq!(fmt_f64(30.0), "30");
        assert_eq!(fmt_f64(0.0005), "0.0005");
        assert_eq!(fmt_f64(0.999), "0.999");
        assert_eq!(fmt_f64(1.5e-7), "1.5e-7");
    }

    fn rendered(table: &mut HopTable, hops: usize) -> String {
        let mut out = String::new();
        let mut cursor = Cursor::default();
        while table.render_chunk(&mut cursor, hops, &mut out) {}
        out
    }

    #[test]
    fn a_scrape_in_parts_is_the_same_text_as_in_one() {
        use crate::record::testing::{at, chain, observed, result, round, ECHO};
        let chain = chain();
        let mut table = HopTable::default();
        table.set_chains(std::slice::from_ref(&chain));
        let r = round(
            &chain,
            at(1.0),
            vec![result(Outcome::Ok, 3, at(1.0), ECHO); 3],
            true,
        );
        let verdict = Verdict {
            up: true,
            broken: None,
            blind_spots: Vec::new(),
            code: None,
            reason: None,
            contradictions: Vec::new(),
        };
        table.observe(&observed(r, &[true; 3], verdict));
        let whole = rendered(&mut table, usize::MAX);
        assert_eq!(rendered(&mut table, 1), whole);
        assert_eq!(rendered(&mut table, 2), whole);
        assert_eq!(whole.matches("# TYPE hopwatch_hop_up gauge").count(), 1);
        assert!(whole.contains("hopwatch_hop_up{chain=\"orders\",hop=\"target\"} 1\n"));
        assert!(
            whole.contains("hopwatch_probes_total{chain=\"orders\",hop=\"nlb\",result=\"ok\"} 1\n")
        );
        // Nothing sets a health check on the gateway: no series, and the family still has one.
        assert!(!whole.contains("hopwatch_health_check_up{chain=\"orders\",hop=\"gateway\"}"));
        assert!(whole.contains("hopwatch_health_check_up{chain=\"orders\",hop=\"nlb\"} 1"));
    }

    #[test]
    fn standard_detail_writes_what_is_read_and_full_everything() {
        use crate::record::testing::{at, chain, observed, result, round, ECHO};
        let chain = chain();
        let mut table = HopTable::default();
        table.set_chains(std::slice::from_ref(&chain));
        let mut results = vec![result(Outcome::Ok, 3, at(1.0), ECHO); 3];
        results[0].phases.connect = Some(std::time::Duration::from_millis(1));
        let blamed = Verdict {
            up: false,
            broken: Some(2),
            blind_spots: vec![1],
            code: None,
            reason: None,
            contradictions: Vec::new(),
        };
        table.observe(&observed(
            round(&chain, at(1.0), results, true),
            &[true; 3],
            blamed,
        ));
        let standard = rendered(&mut table, usize::MAX);
        table.set_detail(Detail::Full);
        let full = rendered(&mut table, usize::MAX);
        let of = |text: &str, hop: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.contains(&format!("hop=\"{hop}\"")))
                .map(str::to_string)
                .collect()
        };
        for hop in ["gateway", "nlb", "target"] {
            let lines = of(&standard, hop);
            assert!(lines.len() <= 12, "{hop}: {lines:#?}");
            assert!(of(&full, hop).len() > lines.len() + 20, "{hop}");
            // Every standard line is a full line (values aside: the window moved on).
            for line in &lines {
                let series = line.rsplit_once(' ').map_or("", |(s, _)| s);
                assert!(
                    full.contains(series),
                    "{series} is not in the full exposition"
                );
            }
        }
        for left_out in [
            "hopwatch_probe_duration_seconds",
            "hopwatch_probe_phase_duration_seconds",
            "quantile=\"0.9\"",
            "quantile=\"0.999\"",
            "hopwatch_probe_http_status",
        ] {
            assert!(!standard.contains(left_out), "{left_out}");
            assert!(full.contains(left_out), "{left_out}");
        }
        // The 0/1 gauges read as `== 1`: only their 1 at standard, every hop's at full.
        for (family, one) in [
            ("hopwatch_chain_broken_hop", "target"),
            ("hopwatch_hop_blind_spot", "nlb"),
        ] {
            let lines: Vec<&str> = standard
                .lines()
                .filter(|l| l.starts_with(&format!("{family}{{")))
                .collect();
            assert_eq!(
                lines,
                [format!("{family}{{chain=\"orders\",hop=\"{one}\"}} 1").as_str()]
            );
            assert_eq!(
                standard.matches(&format!("# TYPE {family} gauge")).count(),
                1
            );
            assert_eq!(full.matches(&format!("{family}{{")).count(), 3);
        }
        // Nobody blamed, no blind spot: no series at all, and no header without one.
        let up = Verdict {
            up: true,
            broken: None,
            blind_spots: Vec::new(),
            code: None,
            reason: None,
            contradictions: Vec::new(),
        };
        table.set_detail(Detail::Standard);
        let r = round(
            &chain,
            at(2.0),
            vec![result(Outcome::Ok, 3, at(2.0), ""); 3],
            true,
        );
        table.observe(&observed(r, &[true; 3], up));
        let healthy = rendered(&mut table, usize::MAX);
        assert!(!healthy.contains("hopwatch_chain_broken_hop"), "{healthy}");
        assert!(!healthy.contains("hopwatch_hop_blind_spot"), "{healthy}");
        assert!(healthy.contains("hopwatch_hop_up{chain=\"orders\",hop=\"nlb\"} 1"));
        assert!(healthy.contains("hopwatch_health_check_up{chain=\"orders\",hop=\"nlb\"} 1"));
    }

    #[test]
    fn reloading_keeps_unchanged_chains_and_drops_removed_ones() {
        use crate::record::testing::{at, chain, observed, result, round};
        let orders = chain();
        let mut other = (*orders).clone();
        other.name = "billing".into();
        let other = Arc::new(other);
        let mut table = HopTable::default();
        table.set_chains(&[orders.clone(), other.clone()]);
        let up = Verdict {
            up: true,
            broken: None,
            blind_spots: Vec::new(),
            code: None,
            reason: None,
            contradictions: Vec::new(),
        };
        for c in [&orders, &other] {
            let r = round(
                c,
                at(1.0),
                vec![result(Outcome::Ok, 3, at(1.0), ""); 3],
                true,
            );
            table.observe(&observed(r, &[true; 3], up.clone()));
        }
        table.set_chains(std::slice::from_ref(&orders));
        let text = rendered(&mut table, usize::MAX);
        assert!(!text.contains("billing"), "{text}");
        assert!(text
            .contains("hopwatch_probes_total{chain=\"orders\",hop=\"gateway\",result=\"ok\"} 1\n"));
    }

    #[test]
    fn source_series_stay_bounded_and_keep_the_latest() {
        let mut s = HopSeries::new("orders", "gateway", "gateway", Duration::from_secs(30));
        for i in 1..=6 {
            s.saw_source(&format!("10.0.1.{i}"));
        }
        s.saw_source("10.0.1.3");
        s.saw_source("not an address");
        let shown =
            |s: &HopSeries| -> Vec<String> { s.sources.iter().map(|ip| ip.to_string()).collect() };
        assert_eq!(shown(&s), ["10.0.1.4", "10.0.1.5", "10.0.1.6", "10.0.1.3"]);
        // Seeing 10.0.1.3 again made it the newest: 10.0.1.4 goes first now.
        s.saw_source("10.0.1.7");
        assert_eq!(shown(&s), ["10.0.1.5", "10.0.1.6", "10.0.1.3", "10.0.1.7"]);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_into(&mut s, "a\"b\\c\nd");
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn buckets_are_cumulative_with_the_bound_inclusive() {
        const BOUNDS: &[f64] = &[0.001, 0.01, 0.1, 1.0, 10.0];
        let mut b = Buckets::new(BOUNDS);
        for v in [0.001, 0.0011, 5.0, 100.0] {
            b.observe(BOUNDS, v);
        }
        let mut out = String::new();
        let family = HistFamily::new("x", BOUNDS);
        Writer { out: &mut out }.histogram(&family, "chain=\"c\"", &b);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "x_bucket{chain=\"c\",le=\"0.001\"} 1");
        assert_eq!(lines[1], "x_bucket{chain=\"c\",le=\"0.01\"} 2");
        assert_eq!(lines[4], "x_bucket{chain=\"c\",le=\"10\"} 3");
        assert_eq!(lines[5], "x_bucket{chain=\"c\",le=\"+Inf\"} 4");
        assert_eq!(lines[6], "x_sum{chain=\"c\"} 105.0021");
        assert_eq!(lines[7], "x_count{chain=\"c\"} 4");
    }
}

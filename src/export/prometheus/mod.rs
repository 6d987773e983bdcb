//! The Prometheus exposition. Metric names and labels here are a contract with dashboards and
//! alert rules: change them only with a migration note.

mod hops;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::config::Chain;
use crate::diagnose::ReasonCode;
use crate::export::cloudwatch::stats::Stats;
use crate::export::Sink;
use crate::facts::{DiscoveryStats, LinkStatus};
use crate::record::Observation;
use crate::schedule::Counters;

use hops::HopTable;

/// Buckets for probe latency, seconds: sub-millisecond (same-AZ hops) to 30 s (the HTTP API
/// integration limit).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets for the agent's own scheduling lag, seconds.
/// Fine below 5 ms, where a healthy agent is and where the 2 ms p99 target sits.
const LAG_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0,
];
/// Quantiles of `hopwatch_probe_latency_seconds` (`[agent] detail = "full"`).
pub const QUANTILES: &[f64] = &[0.5, 0.9, 0.99, 0.999];
/// The quantiles `detail = "standard"` keeps: the dashboard's p50 and p99, and p99 is
/// `HopLatencyHigh`'s.
pub const STANDARD_QUANTILES: &[f64] = &[0.5, 0.99];

/// Every metric the agent exports: the per-hop series and each chain's `hopwatch_chain_up` and
/// `hopwatch_chain_interval_seconds` in a [`HopTable`], the rest (reasons, facts, per address,
/// the agent's own) in a `prometheus` registry.
pub struct Metrics {
    registry: Registry,
    hops: Mutex<HopTable>,
    lag: Histogram,
    /// The scheduler's own counts, read on every scrape.
    schedule: Arc<Counters>,
    rounds_dropped: IntCounter,
    rounds_skipped: IntCounter,
    /// The CloudWatch publisher's health, when it runs.
    cloudwatch: Mutex<Option<CloudWatchFamilies>>,
    /// Discovery's health, when `[discovery]` runs.
    discovery: Mutex<Option<DiscoveryFamilies>>,
    link_status: IntGaugeVec,
    target_health: IntGaugeVec,
    rule_missing: IntGaugeVec,
    rule_unknown: IntGaugeVec,
    /// The gateway log lookups' counts, when the agent runs them.
    gateway_logs: Mutex<Option<(Arc<crate::facts::LookupCounts>, IntCounterVec)>>,
    /// The fetches of credentials for hops with `auth`, when the agent runs.
    auth: Mutex<Option<(Arc<crate::auth::FetchCounts>, IntCounterVec)>>,
    /// The fact series exported per chain (label values), to remove those that went away.
    fact_series: Mutex<BTreeMap<String, FactSeries>>,
    address_up: IntGaugeVec,
    reload_ok: IntGauge,
    reload_time: prometheus::Gauge,
    agent_info: IntGaugeVec,
    chains_assigned: IntGauge,
    config_hash: prometheus::Gauge,
    broken_reason: IntGaugeVec,
    /// The reason series exported per chain (labels), to remove it when it changes.
    reasons: Mutex<BTreeMap<String, [String; 4]>>,
    /// Addresses exported per (chain, hop) last round, to remove those that went away.
    addresses: Mutex<BTreeMap<(String, String), Vec<String>>>,
    cert_expiry: GaugeVec,
    /// The certificate series exported per chain: (hop, address; "" for the hop's own).
    certs: Mutex<BTreeMap<String, BTreeSet<(String, String)>>>,
}

/// Hops per part of a scrape: at most ~0.7 MB of text, the lock held well under a millisecond.
pub const HOPS_PER_PART: usize = 500;

/// Registering a metric only fails on a duplicate name or invalid label, both programming
/// errors caught by the first test that builds a `Metrics`.
fn reg<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

impl Metrics {
    /// A fresh registry with every metric registered; the scheduler's drop and skip counts are
    /// read from `schedule` on each scrape.
    pub fn new(schedule: Arc<Counters>) -> Self {
        let registry = Registry::new();
        let lag = reg(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "hopwatch_schedule_lag_seconds",
                    "Actual start of a round minus its planned start.",
                )
                .buckets(LAG_BUCKETS.to_vec()),
            )
            .expect("valid"),
        );
        let rounds_dropped = reg(
            &registry,
            IntCounter::new(
                "hopwatch_rounds_dropped_total",
                "Rounds whose results were dropped because recording fell behind.",
            )
            .expect("valid"),
        );
        let rounds_skipped = reg(
            &registry,
            IntCounter::new(
                "hopwatch_rounds_skipped_total",
                "Rounds never started because their chain fell a whole interval behind (paused process, or probes waiting on max_in_flight).",
            )
            .expect("valid"),
        );
        let cert_expiry = reg(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "hopwatch_tls_certificate_expiry_timestamp_seconds",
                    "Unix time of the earliest notAfter in the certificate chain the hop presented (TLS hops): address \"\" for the hop, one series per address with per_address. Kept at the last handshake's reading while handshakes fail.",
                ),
                &["chain", "hop", "address"],
            )
            .expect("valid"),
        );
        let address_up = reg(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "hopwatch_hop_address_up",
                    "1 when the probe of this address of the hop's host (one load balancer node or instance) passed (hops with per_address).",
                ),
                &["chain", "hop", "address"],
            )
            .expect("valid"),
        );
        let broken_reason = reg(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "hopwatch_chain_broken_reason_info",
                    "While a chain is down: 1 on its blamed hop, with that hop's role, the reason and its code; no series while it is up.",
                ),
                &["chain", "hop", "role", "reason", "code"],
            )
            .expect("valid"),
        );
        let reload_ok = reg(
            &registry,
            IntGauge::new(
                "hopwatch_config_last_reload_successful",
                "1 when the last config (re)load succeeded; 0 when a reload was rejected and the previous config is still running.",
            )
            .expect("valid"),
        );
        let reload_time = reg(
            &registry,
            prometheus::Gauge::new(
                "hopwatch_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config (re)load.",
            )
            .expect("valid"),
        );
        let build = reg(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "hopwatch_build_info",
                    "Build of the running agent; always 1.",
                ),
                &["version"],
            )
            .expect("valid"),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let agent_info = reg(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "hopwatch_agent_info",
                    "Where this agent probes from and which shard of its group it is; always 1. Join on instance.",
                ),
                &["vantage", "az", "shard"],
            )
            .expect("valid"),
        );
        let chains_assigned = reg(
            &registry,
            IntGauge::new(
                "hopwatch_chains_assigned",
                "Chains this agent runs (its shard's share of the config).",
            )
            .expect("valid"),
        );
        let config_hash = reg(
            &registry,
            prometheus::Gauge::new(
                "hopwatch_config_hash",
                "A hash of every chain of the config before sharding and of the shard count: equal on every agent of a group that runs one config.",
            )
            .expect("valid"),
        );
        let link_status = reg(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "hopwatch_vpc_link_status",
                    "The VPC link of a discovered chain: 1 on its current status (AVAILABLE, PENDING, FAILED, INACTIVE, DELETING), 0 on the others.",
                ),
                &["chain", "link", "status"],
            )
            .expect("valid"),
        );
        let target_health = reg(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "hopwatch_lb_target_health",
                    "The load balancer's own view of each target of a discovered chain (DescribeTargetHealth): 1 with its state and reason code.",
                ),
                &["chain", "hop", "target", "state", "reason"],
            )
            .expect("valid"),
        );
        let rule_missing = reg(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "hopwatch_path_rule_missing",
                    "1 for each check of a discovered chain's path that its security groups or network ACLs fail (hopwatch explain): the edge, port and purpose.",
                ),
                &["chain", "from", "to", "port", "purpose"],
            )
            .expect("valid"),
        );
        let rule_unknown = reg(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "hopwatch_path_rule_unknown",
                    "1 for each check of a discovered chain's path that could not be judged: a security group, prefix list, subnet or NACL it needs could not be read (throttled, denied, an outage). Never a fault.",
                ),
                &["chain", "from", "to", "port", "purpose"],
            )
            .expect("valid"),
        );
        Metrics {
            registry,
            hops: Mutex::default(),
            rule_missing,
            rule_unknown,
            gateway_logs: Mutex::default(),
            auth: Mutex::default(),
            lag,
            schedule,
            cloudwatch: Mutex::default(),
            discovery: Mutex::default(),
            link_status,
            target_health,
            fact_series: Mutex::default(),
            rounds_dropped,
            rounds_skipped,
            address_up,
            reload_ok,
            reload_time,
            agent_info,
            chains_assigned,
            config_hash,
            broken_reason,
            reasons: Mutex::default(),
            addresses: Mutex::default(),
            cert_expiry,
            certs: Mutex::default(),
        }
    }

    /// Exports the CloudWatch publisher's own health (`hopwatch_cloudwatch_*`), read from its
    /// counters on every scrape. Called once, and only when `[cloudwatch]` is configured, so an
    /// agent without it exports no series an alert could misread.
    pub fn watch_cloudwatch(&self, stats: Arc<Stats>) {
        let datums = reg(
            &self.registry,
            IntCounterVec::new(
                Opts::new(
                    "hopwatch_cloudwatch_datums_total",
                    "CloudWatch datums by what became of them: sent, retried (a failed call, kept for the next), dropped (lost, counted).",
                ),
                &["result"],
            )
            .expect("valid"),
        );
        for result in ["sent", "retried", "dropped"] {
            datums.with_label_values(&[result]);
        }
        let buffered = reg(
            &self.registry,
            IntGauge::new(
                "hopwatch_cloudwatch_buffered_datums",
                "Datums waiting to be sent to CloudWatch.",
            )
            .expect("valid"),
        );
        let last_success = reg(
            &self.registry,
            prometheus::Gauge::new(
                "hopwatch_cloudwatch_last_success_timestamp_seconds",
                "Unix time of the last PutMetricData call CloudWatch accepted (EMF: the last write); 0 before the first.",
            )
            .expect("valid"),
        );
        let mut watched = self.cloudwatch.lock().unwrap_or_else(|e| e.into_inner());
        *watched = Some(CloudWatchFamilies {
            stats,
            datums,
            buffered,
            last_success,
        });
    }

    /// Exports discovery's health (`hopwatch_discovery_*`), read on every scrape. Called once,
    /// and only when `[discovery]` is configured.
    pub fn watch_discovery(&self, stats: Arc<DiscoveryStats>) {
        let last_success = reg(
            &self.registry,
            prometheus::Gauge::new(
                "hopwatch_discovery_last_success_timestamp_seconds",
                "Unix time of the last discovery walk in which no call failed; 0 before the first.",
            )
            .expect("valid"),
        );
        let errors = reg(
            &self.registry,
            IntCounterVec::new(
                Opts::new(
                    "hopwatch_discovery_errors_total",
                    "Discovery calls that failed (after discovery's own retries, with backoff), by AWS service; the last good facts stay.",
                ),
                &["service"],
            )
            .expect("valid"),
        );
        let duration = reg(
            &self.registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "hopwatch_discovery_duration_seconds",
                    "How long each discovery walk took, one observation per walk (_count: the walks), those cut off by their deadline included.",
                )
                .buckets(vec![0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
            )
            .expect("valid"),
        );
        let calls = reg(
            &self.registry,
            IntCounterVec::new(
                Opts::new(
                    "hopwatch_discovery_calls_total",
                    "Control-plane calls discovery made, every attempt, by AWS service, operation and result (ok, throttled, denied, not_found, error): what the account's quotas are spent on.",
                ),
                &["service", "operation", "result"],
            )
            .expect("valid"),
        );
        let rejected = reg(
            &self.registry,
            IntCounter::new(
                "hopwatch_discovery_chains_rejected_total",
                "Chains discovery found that failed validation and were left out (each is logged); the user's own chains are never affected.",
            )
            .expect("valid"),
        );
        let mut watched = self.discovery.lock().unwrap_or_else(|e| e.into_inner());
        *watched = Some(DiscoveryFamilies {
            stats,
            last_success,
            errors,
            duration,
            calls,
            rejected,
        });
    }

    /// Exports the gateway log lookups (`hopwatch_gateway_log_lookups_total{result}`), read on
    /// every scrape. Called once, when the agent runs them.
    pub fn watch_gateway_logs(&self, counts: Arc<crate::facts::LookupCounts>) {
        let lookups = reg(
            &self.registry,
            IntCounterVec::new(
                Opts::new(
                    "hopwatch_gateway_log_lookups_total",
                    "Lookups of a failed gateway request in API Gateway's own logs (FilterLogEvents), by result: found, not_found (still absent after retry_for), error, skipped (the chain had one less than min_interval ago).",
                ),
                &["result"],
            )
            .expect("valid"),
        );
        for result in crate::facts::LookupResult::ALL {
            lookups.with_label_values(&[result.as_str()]);
        }
        *self.gateway_logs.lock().unwrap_or_else(|e| e.into_inner()) = Some((counts, lookups));
    }

    /// Exports the fetches of the agent's own credentials (`hopwatch_auth_fetches_total{method,
    /// result}`: 8 series per agent), read on every scrape. Called once, when the agent starts.
    pub fn watch_auth(&self, counts: Arc<crate::auth::FetchCounts>) {
        let fetches = reg(
            &self.registry,
            IntCounterVec::new(
                Opts::new(
                    "hopwatch_auth_fetches_total",
                    "Fetches of the agent's own credentials for hops with auth (AWS credentials for sigv4, access tokens for oauth2), by result: ok, refused (the token endpoint or STS said no), error, timeout. A failing refresh ahead of expiry shows here before any probe goes without credentials.",
                ),
                &["method", "result"],
            )
            .expect("valid"),
        );
        for method in crate::auth::Method::ALL {
            for result in crate::auth::FetchResult::ALL {
                fetches.with_label_values(&[method.as_str(), result.as_str()]);
            }
        }
        *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some((counts, fetches));
    }

    /// Exports what discovery says of a chain: its link's status, its targets' health.
    fn facts(&self, observation: &Observation) {
        let round = &observation.round;
        let chain = round.chain.name.as_str();
        {
            // Most rounds bring no news: the same facts (the same Arc) as the last round, or none.
            let known = self.fact_series.lock().unwrap_or_else(|e| e.into_inner());
            let last = known.get(chain).and_then(|s| s.from.as_ref());
            let same = match (last, &observation.facts) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => !known.contains_key(chain),
                _ => false,
            };
            if same {
                return;
            }
        }
        let mut now = FactSeries {
            from: observation.facts.clone(),
            ..FactSeries::default()
        };
        if let Some(facts) = &observation.facts {
            if let Some(link) = &facts.link {
                now.link = Some(link.id.clone());
                for status in LinkStatus::ALL {
                    self.link_status
                        .with_label_values(&[chain, &link.id, status.as_str()])
                        .set(i64::from(status == link.status));
                }
            }
            for (hop, targets) in &facts.targets {
                let Some(hop) = round.chain.hops.get(*hop) else {
                    continue;
                };
                for t in targets {
                    let labels = [
                        hop.name.clone(),
                        t.target.clone(),
                        t.state.clone(),
                        t.reason.clone().unwrap_or_default(),
                    ];
                    self.target_health
                        .with_label_values(&[chain, &labels[0], &labels[1], &labels[2], &labels[3]])
                        .set(1);
                    now.targets.push(labels);
                }
            }
            for e in facts.path.iter().filter(|e| e.state.blocks()) {
                let labels = [
                    e.from.clone(),
                    e.to.clone(),
                    e.port.to_string(),
                    e.purpose.as_str().to_string(),
                ];
                if !now.missing.contains(&labels) {
                    self.rule_missing
                        .with_label_values(&[chain, &labels[0], &labels[1], &labels[2], &labels[3]])
                        .set(1);
                    now.missing.push(labels);
                }
            }
            for e in facts
                .path
                .iter()
                .filter(|e| e.state == crate::facts::EdgeState::Unknown)
            {
                let labels = [
                    e.from.clone(),
                    e.to.clone(),
                    e.port.to_string(),
                    e.purpose.as_str().to_string(),
                ];
                if !now.unknown.contains(&labels) {
                    self.rule_unknown
                        .with_label_values(&[chain, &labels[0], &labels[1], &labels[2], &labels[3]])
                        .set(1);
                    now.unknown.push(labels);
                }
            }
        }
        let mut known = self.fact_series.lock().unwrap_or_else(|e| e.into_inner());
        let before = if observation.facts.is_some() {
            known.insert(chain.to_string(), now.clone())
        } else {
            known.remove(chain)
        };
        self.remove_facts(chain, &before.unwrap_or_default(), Some(&now));
    }

    /// Removes the fact series of `chain` in `before` that `now` no longer has.
    fn remove_facts(&self, chain: &str, before: &FactSeries, now: Option<&FactSeries>) {
        if let Some(link) = &before.link {
            if now.and_then(|n| n.link.as_ref()) != Some(link) {
                for status in LinkStatus::ALL {
                    let _ = self
                        .link_status
                        .remove_label_values(&[chain, link, status.as_str()]);
                }
            }
        }
        for t in &before.targets {
            if !now.is_some_and(|n| n.targets.contains(t)) {
                let _ = self
                    .target_health
                    .remove_label_values(&[chain, &t[0], &t[1], &t[2], &t[3]]);
            }
        }
        for m in &before.missing {
            if !now.is_some_and(|n| n.missing.contains(m)) {
                let _ = self
                    .rule_missing
                    .remove_label_values(&[chain, &m[0], &m[1], &m[2], &m[3]]);
            }
        }
        for m in &before.unknown {
            if !now.is_some_and(|n| n.unknown.contains(m)) {
                let _ = self
                    .rule_unknown
                    .remove_label_values(&[chain, &m[0], &m[1], &m[2], &m[3]]);
            }
        }
    }

    /// Records one observed round.
    pub fn observe(&self, observation: &Observation) {
        let round = &observation.round;
        let chain = round.chain.name.as_str();
        self.facts(observation);
        self.reason(observation);
        self.lag.observe(round.lag().as_secs_f64());
        for (i, hop) in round.chain.hops.iter().enumerate() {
            let probes = round
                .probed
                .addresses
                .get(i)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if hop.per_address {
                self.saw_addresses(chain, &hop.name, probes);
            }
            if hop.url.tls {
                self.saw_certificates(chain, &hop.name, round.probed.results.get(i), probes);
            }
        }
        self.hops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(observation);
    }

    /// Makes the exposition hold exactly `chains`: describes each (`hopwatch_hop_info`,
    /// `hopwatch_chain_interval_seconds`, once, not every round) and removes every series of
    /// chains no longer configured. A chain kept with the same hops keeps its series.
    pub fn set_chains(&self, chains: &[Arc<Chain>]) {
        let gone: Vec<String> = {
            let table = self.hops.lock().unwrap_or_else(|e| e.into_inner());
            table
                .names()
                .filter(|name| !chains.iter().any(|c| c.name == *name))
                .map(str::to_string)
                .collect()
        };
        self.describe(chains);
        for name in &gone {
            self.forget_chain(name);
        }
        // A hop a reload removed, or that no longer speaks TLS, leaves no certificate behind.
        let mut certs = self.certs.lock().unwrap_or_else(|e| e.into_inner());
        for c in chains {
            if let Some(known) = certs.get_mut(&c.name) {
                known.retain(|(hop, address)| {
                    let kept = c.hops.iter().any(|h| h.name == *hop && h.url.tls);
                    if !kept {
                        let _ = self
                            .cert_expiry
                            .remove_label_values(&[&c.name, hop, address]);
                    }
                    kept
                });
            }
        }
    }

    fn describe(&self, chains: &[Arc<Chain>]) {
        self.hops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_chains(chains);
    }

    /// Keeps exactly one `hopwatch_chain_broken_reason_info` series per down chain.
    fn reason(&self, observation: &Observation) {
        let (round, verdict) = (&observation.round, &observation.verdict);
        let chain = round.chain.name.as_str();
        let now = match (verdict.broken, &verdict.reason) {
            (Some(i), Some(reason)) if !verdict.up => round.chain.hops.get(i).map(|hop| {
                [
                    hop.name.clone(),
                    hop.role.as_str().to_string(),
                    reason.clone(),
                    verdict
                        .code
                        .map_or("unknown", ReasonCode::as_str)
                        .to_string(),
                ]
            }),
            _ => None,
        };
        let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        let before = reasons.get(chain).cloned();
        if before == now {
            return;
        }
        if let Some([hop, role, reason, code]) = before {
            let _ = self
                .broken_reason
                .remove_label_values(&[chain, &hop, &role, &reason, &code]);
            reasons.remove(chain);
        }
        if let Some(labels) = now {
            let [hop, role, reason, code] = &labels;
            self.broken_reason
                .with_label_values(&[chain, hop, role, reason, code])
                .set(1);
            reasons.insert(chain.to_string(), labels);
        }
    }

    /// Exports this round's per-address results and removes addresses the host no longer
    /// resolves to (load balancer nodes come and go).
    fn saw_addresses(
        &self,
        chain: &str,
        hop: &str,
        probes: &[(std::net::IpAddr, crate::probe::ProbeResult)],
    ) {
        let now: Vec<String> = probes.iter().map(|(ip, _)| ip.to_string()).collect();
        let mut known = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let before = known.insert((chain.to_string(), hop.to_string()), now.clone());
        for gone in before.iter().flatten().filter(|a| !now.contains(a)) {
            let _ = self.address_up.remove_label_values(&[chain, hop, gone]);
        }
        for ((_, result), address) in probes.iter().zip(&now) {
            self.address_up
                .with_label_values(&[chain, hop, address])
                .set(i64::from(result.outcome.is_ok()));
        }
    }

    /// The certificates a TLS hop presented this round: the earliest expiry of its probe and
    /// its addresses' on the hop's series, each address's on its own. A round whose handshakes
    /// failed leaves the last reading (an expired certificate fails the handshake: the series
    /// then says when it expired).
    fn saw_certificates(
        &self,
        chain: &str,
        hop: &str,
        main: Option<&crate::probe::ProbeResult>,
        probes: &[(std::net::IpAddr, crate::probe::ProbeResult)],
    ) {
        let secs = |t: std::time::SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        };
        let mut certs = self.certs.lock().unwrap_or_else(|e| e.into_inner());
        let known = certs.entry(chain.to_string()).or_default();
        let earliest = main
            .and_then(|r| r.cert_not_after)
            .into_iter()
            .chain(probes.iter().filter_map(|(_, r)| r.cert_not_after))
            .min();
        if let Some(at) = earliest {
            self.cert_expiry
                .with_label_values(&[chain, hop, ""])
                .set(secs(at));
            known.insert((hop.to_string(), String::new()));
        }
        let now: BTreeSet<String> = probes.iter().map(|(ip, _)| ip.to_string()).collect();
        known.retain(|(h, address)| {
            let gone = h == hop && !address.is_empty() && !now.contains(address);
            if gone {
                let _ = self.cert_expiry.remove_label_values(&[chain, hop, address]);
            }
            !gone
        });
        for (ip, r) in probes {
            if let Some(at) = r.cert_not_after {
                let address = ip.to_string();
                self.cert_expiry
                    .with_label_values(&[chain, hop, &address])
                    .set(secs(at));
                known.insert((hop.to_string(), address));
            }
        }
    }

    /// Which per-hop series scrapes write (`[agent] detail`), from the next scrape on. Set at
    /// start and on each reload.
    pub fn set_detail(&self, detail: crate::config::Detail) {
        self.hops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_detail(detail);
    }

    /// Records the outcome of loading the config (at start, or a reload).
    /// Who this agent is among many: its vantage, zone and shard (`hopwatch_agent_info`), how
    /// many chains it runs and the hash of the group's config. Set at start and on each reload.
    pub fn set_agent(&self, vantage: &str, az: &str, config: &crate::config::Config) {
        let shard = config.agent.shard.to_string();
        self.agent_info.reset();
        self.agent_info
            .with_label_values(&[vantage, az, shard.as_str()])
            .set(1);
        self.chains_assigned.set(config.chains.len() as i64);
        // 52 bits (Config::config_hash): exact in an f64.
        self.config_hash.set(config.config_hash() as f64);
    }

    /// Records the outcome of loading the config (at start, or a reload).
    pub fn config_loaded(&self, ok: bool) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.reload_time.set(now);
        }
    }

    /// Removes every series of a chain that is no longer configured. Its own and its hops' went
    /// with [`Metrics::describe`]; these are its reason, facts and per-address ones.
    fn forget_chain(&self, chain: &str) {
        let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        if let Some([hop, role, reason, code]) = reasons.remove(chain) {
            let _ = self
                .broken_reason
                .remove_label_values(&[chain, &hop, &role, &reason, &code]);
        }
        let facts = self
            .fact_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(chain);
        if let Some(before) = facts {
            self.remove_facts(chain, &before, None);
        }
        let certs = self
            .certs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(chain);
        for (hop, address) in certs.iter().flatten() {
            let _ = self.cert_expiry.remove_label_values(&[chain, hop, address]);
        }
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        addresses.retain(|(c, hop), known| {
            if c != chain {
                return true;
            }
            for address in known.iter() {
                let _ = self.address_up.remove_label_values(&[chain, hop, address]);
            }
            false
        });
    }

    /// Reads the counts other stages keep (the scheduler's, the CloudWatch publisher's) into
    /// their families, just before a scrape.
    fn pull(&self) {
        let (dropped, skipped) = self.schedule.read();
        catch_up(&self.rounds_dropped, dropped);
        catch_up(&self.rounds_skipped, skipped);
        let discovery = self.discovery.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = discovery.as_ref() {
            d.last_success.set(d.stats.last_success());
            for (service, n) in d.stats.errors() {
                catch_up(&d.errors.with_label_values(&[&service]), n);
            }
            for took in d.stats.take_durations() {
                d.duration.observe(took);
            }
            for ((service, operation, result), n) in d.stats.calls() {
                catch_up(&d.calls.with_label_values(&[service, operation, result]), n);
            }
            catch_up(&d.rejected, d.stats.rejected_total());
        }
        drop(discovery);
        if let Some((counts, family)) = self
            .gateway_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            for (result, n) in counts.snapshot() {
                catch_up(&family.with_label_values(&[result]), n);
            }
        }
        if let Some((counts, family)) = self.auth.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        {
            for (method, result, n) in counts.snapshot() {
                catch_up(
                    &family.with_label_values(&[method.as_str(), result.as_str()]),
                    n,
                );
            }
        }
        let watched = self.cloudwatch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cw) = watched.as_ref() {
            let now = cw.stats.snapshot();
            for (result, n) in [
                ("sent", now.sent),
                ("retried", now.retried),
                ("dropped", now.dropped),
            ] {
                catch_up(&cw.datums.with_label_values(&[result]), n);
            }
            cw.buffered.set(now.buffered as i64);
            cw.last_success.set(now.last_success);
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        self.render_parts(|part| {
            text.push_str(&part);
            true
        });
        text
    }

    /// Writes the exposition in parts of at most [`HOPS_PER_PART`] hops, handing each to `emit`
    /// (which returns false when the reader went away). The per-hop lock is held for one part
    /// at a time, so recording never waits on a slow scraper, and memory stays bounded.
    pub fn render_parts(&self, mut emit: impl FnMut(String) -> bool) {
        self.pull();
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail except on invalid metric data, which we never build.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "could not encode metrics");
        }
        if !emit(String::from_utf8(out).unwrap_or_default()) {
            return;
        }
        let mut cursor = hops::Cursor::default();
        loop {
            let mut part = String::with_capacity(64 * 1024);
            let more = self
                .hops
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .render_chunk(&mut cursor, HOPS_PER_PART, &mut part);
            if !part.is_empty() && !emit(part) {
                return;
            }
            if !more {
                return;
            }
        }
    }
}

impl Sink for Metrics {
    fn observe(&self, observation: &Observation) {
        Metrics::observe(self, observation);
    }

    fn set_chains(&self, chains: &[Arc<Chain>]) {
        Metrics::set_chains(self, chains);
    }
}

/// Discovery's families and the counters they are read from.
struct DiscoveryFamilies {
    stats: Arc<DiscoveryStats>,
    last_success: prometheus::Gauge,
    errors: IntCounterVec,
    duration: Histogram,
    calls: IntCounterVec,
    rejected: IntCounter,
}

/// The fact series one chain has: its link, and (hop, target, state, reason) per target.
#[derive(Debug, Clone, Default)]
struct FactSeries {
    /// The facts they were made from.
    from: Option<Arc<crate::facts::ChainFacts>>,
    link: Option<String>,
    targets: Vec<[String; 4]>,
    /// (from, to, port, purpose) of each missing rule.
    missing: Vec<[String; 4]>,
    /// (from, to, port, purpose) of each check that could not be judged.
    unknown: Vec<[String; 4]>,
}

/// The CloudWatch publisher's families and the counters they are read from.
struct CloudWatchFamilies {
    stats: Arc<Stats>,
    datums: IntCounterVec,
    buffered: IntGauge,
    last_success: prometheus::Gauge,
}

/// Brings a counter exported from someone else's count up to it (counts only grow).
fn catch_up(counter: &IntCounter, now: u64) {
    counter.inc_by(now.saturating_sub(counter.get()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_go_away_lose_their_series() {
        use crate::probe::{Outcome, ProbeResult};
        let result = |outcome| ProbeResult {
            outcome,
            status: None,
            total: std::time::Duration::ZERO,
            phases: Default::default(),
            started_at: std::time::SystemTime::now(),
            remote: None,
            evidence: Default::default(),
            body: Default::default(),
            detail: None,
            trace_id: String::new(),
            cert_not_after: None,
        };
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let m = Metrics::new(Default::default());
        m.saw_addresses(
            "orders",
            "alb",
            &[
                (ip("10.0.1.5"), result(Outcome::Ok)),
                (ip("10.0.2.5"), result(Outcome::ConnectTimeout)),
            ],
        );
        let text = m.render();
        assert!(
            text.contains(
                "hopwatch_hop_address_up{address=\"10.0.1.5\",chain=\"orders\",hop=\"alb\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "hopwatch_hop_address_up{address=\"10.0.2.5\",chain=\"orders\",hop=\"alb\"} 0"
        ));
        // The node in the second AZ was replaced.
        m.saw_addresses(
            "orders",
            "alb",
            &[
                (ip("10.0.1.5"), result(Outcome::Ok)),
                (ip("10.0.2.9"), result(Outcome::Ok)),
            ],
        );
        let text = m.render();
        assert!(!text.contains("10.0.2.5"), "{text}");
        assert!(text.contains("address=\"10.0.2.9\""));
    }

    #[test]
    fn one_reason_series_per_down_chain() {
        use crate::diagnose::Verdict;
        use crate::probe::Outcome;
        use crate::record::testing::{at, chain, observed, result, round};
        let chain = chain();
        let m = Metrics::new(Default::default());
        m.set_chains(std::slice::from_ref(&chain));
        let r = round(
            &chain,
            at(1.0),
            vec![result(Outcome::Ok, 1, at(1.0), ""); 3],
            true,
        );
        let down = |hop: usize, why: &str| Verdict {
            up: false,
            broken: Some(hop),
            blind_spots: Vec::new(),
            code: Some(crate::diagnose::ReasonCode::SgDrop),
            reason: Some(why.to_string()),
            contradictions: Vec::new(),
        };
        let reasons = |m: &Metrics| -> Vec<String> {
            m.render()
                .lines()
                .filter(|l| l.starts_with("hopwatch_chain_broken_reason_info{"))
                .map(str::to_string)
                .collect()
        };
        m.observe(&observed(
            r.clone(),
            &[true, false, true],
            down(1, "nlb -> target: timeout"),
        ));
        assert_eq!(
            reasons(&m),
            ["hopwatch_chain_broken_reason_info{chain=\"orders\",code=\"sg_drop\",hop=\"nlb\",reason=\"nlb -> target: timeout\",role=\"nlb\"} 1"]
        );
        m.observe(&observed(
            r.clone(),
            &[false, true, true],
            down(0, "gateway: 500"),
        ));
        let now = reasons(&m);
        assert_eq!(now.len(), 1, "{now:?}");
        assert!(now[0].contains("role=\"gateway\"") && now[0].contains("reason=\"gateway: 500\""));
        let up = Verdict {
            up: true,
            broken: None,
            blind_spots: Vec::new(),
            code: None,
            reason: None,
            contradictions: Vec::new(),
        };
        m.observe(&observed(r, &[true; 3], up));
        assert!(reasons(&m).is_empty());
        let text = m.render();
        assert!(text.contains("hopwatch_hop_info{chain=\"orders\",hop=\"nlb\",role=\"nlb\"} 1"));
        assert!(text.contains("hopwatch_chain_interval_seconds{chain=\"orders\"} 30"));
    }
}

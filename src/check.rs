//! `hopwatch check`: one round of every chain, printed as a per-hop table or as JSON.
//! Like traceroute for a private integration.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::{Chain, Config, Kind, Role};
use crate::diagnose::ReasonCode;
use crate::facts::{ChainFacts, EdgeVerdict};
use crate::gatewaylog::{look_up, Backoff, LazyLogs, Search};
use crate::probe::{HopConn, Outcome, Prober};
use crate::record::Observation;
use crate::schedule::{run_round, Round};

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The shard checked (`"1/3"`) and how many chains the whole config has; absent when
    /// the agent is not sharded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardReport>,
    pub chains: Vec<ChainReport>,
    /// Chains that could not be judged (their round failed to complete); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Unjudged>,
}

/// Which part of a sharded config `check` judged.
#[derive(Debug, Serialize)]
pub struct ShardReport {
    /// `"N/M"`.
    pub shard: String,
    /// Chains in the whole config, every shard's.
    pub chains_total: usize,
}

/// A chain `check` could not judge.
#[derive(Debug, Serialize)]
pub struct Unjudged {
    pub chain: String,
    pub error: String,
}

/// One chain's round.
#[derive(Debug, Serialize)]
pub struct ChainReport {
    pub name: String,
    pub kind: Kind,
    /// The outermost hop, the path users take, passed.
    pub up: bool,
    /// The hop blamed when the chain is down; null when up.
    pub broken_hop: Option<String>,
    /// Why it is blamed, from the evidence (status, error headers, what answers directly).
    pub reason: Option<String>,
    /// The reason as a stable code (`gateway_throttled`, `sg_drop`, ...); null when up.
    pub reason_code: Option<ReasonCode>,
    pub hops: Vec<HopReport>,
    /// With `[discovery]`: every edge and port of the gateway's path, judged from the
    /// security groups and NACLs (as `explain` prints them); absent otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<EdgeVerdict>,
    /// Where those rules and the probes disagree; absent when they agree.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contradictions: Vec<String>,
    /// What API Gateway logged of the failed gateway request (`request_id`, `source`,
    /// `response_type`, `integration_error`, `integration_status`, `message`, `status`);
    /// absent when no lookup found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_log: Option<crate::facts::GatewayWords>,
}

/// One hop's probe.
#[derive(Debug, Serialize)]
pub struct HopReport {
    pub name: String,
    pub role: Role,
    pub url: String,
    /// Outcome class (`ok`, `connect_timeout`, ...).
    pub result: Outcome,
    /// HTTP status, null when no response arrived.
    pub status: Option<u16>,
    pub duration_ms: f64,
    pub phases: PhaseReport,
    /// The address connected to.
    pub remote: Option<String>,
    /// Why it failed, for humans; null on success.
    pub detail: Option<String>,
    /// Fails from the agent while a hop outside it passes: users are served through it.
    pub blind_spot: bool,
    /// What the target saw when entered through this hop (when it runs `hopwatch echo`).
    pub source: Option<crate::source::Seen>,
    /// Whether `source` met the hop's `expect_source`/`expect_forwarded`; null when nothing
    /// was expected or seen.
    pub source_expected: Option<bool>,
    /// One probe per address of the hop's host; only with `per_address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<AddressReport>>,
    /// TLS hops whose handshake completed: the certificate chain's earliest `notAfter`.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub certificate: Option<CertificateReport>,
    /// The hop's health-check port, probed in the same round; only when `health_url` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
}

/// The probe of one address of a hop's host.
#[derive(Debug, Serialize)]
pub struct AddressReport {
    pub address: String,
    pub result: Outcome,
    pub status: Option<u16>,
    pub duration_ms: f64,
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub certificate: Option<CertificateReport>,
}

/// When the certificates a hop presented stop being valid.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CertificateReport {
    /// Unix time of the earliest `notAfter` in the chain presented.
    pub tls_certificate_expiry: u64,
    /// Days from the probe to it, to a tenth; negative once expired.
    pub tls_certificate_days_left: f64,
}

impl CertificateReport {
    fn new(not_after: Option<std::time::SystemTime>, at: std::time::SystemTime) -> Option<Self> {
        let not_after = not_after?;
        let epoch = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let left = (epoch(not_after) - epoch(at)) / 86_400.0;
        Some(CertificateReport {
            tls_certificate_expiry: epoch(not_after) as u64,
            tls_certificate_days_left: (left * 10.0).round() / 10.0,
        })
    }
}

/// A health-check probe.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub url: String,
    pub result: Outcome,
    pub status: Option<u16>,
    pub duration_ms: f64,
    pub detail: Option<String>,
}

/// Phase timings in milliseconds; null when the phase did not happen or did not complete.
#[derive(Debug, Serialize)]
pub struct PhaseReport {
    pub dns: Option<f64>,
    pub connect: Option<f64>,
    pub tls: Option<f64>,
    pub ttfb: Option<f64>,
    pub transfer: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    // Microsecond resolution is what the probe measures meaningfully.
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl ChainReport {
    /// Builds the report of one observed round (judged on raw or debounced states).
    pub fn new(observation: &Observation) -> Self {
        let round = &observation.round;
        let (chain, probed, verdict) = (&round.chain, &round.probed, &observation.verdict);
        let hops = chain
            .hops
            .iter()
            .zip(&probed.results)
            .enumerate()
            .map(|(i, (hop, r))| HopReport {
                name: hop.name.clone(),
                role: hop.role,
                url: hop.url.text.clone(),
                result: r.outcome,
                status: r.status,
                duration_ms: ms(r.total),
                phases: PhaseReport {
                    dns: r.phases.dns.map(ms),
                    connect: r.phases.connect.map(ms),
                    tls: r.phases.tls.map(ms),
                    ttfb: r.phases.ttfb.map(ms),
                    transfer: r.phases.transfer.map(ms),
                },
                remote: r.remote.map(|a| a.to_string()),
                detail: r.detail.clone(),
                blind_spot: verdict.blind_spots.contains(&i),
                source_expected: observation.source_expected.get(i).copied().flatten(),
                source: observation.seen.get(i).cloned().flatten(),
                certificate: CertificateReport::new(r.cert_not_after, r.started_at),
                addresses: hop.per_address.then(|| {
                    probed
                        .addresses
                        .get(i)
                        .map(Vec::as_slice)
                        .unwrap_or(&[])
                        .iter()
                        .map(|(ip, a)| AddressReport {
                            address: ip.to_string(),
                            result: a.outcome,
                            status: a.status,
                            duration_ms: ms(a.total),
                            detail: a.detail.clone(),
                            certificate: CertificateReport::new(a.cert_not_after, a.started_at),
                        })
                        .collect()
                }),
                health: probed
                    .health
                    .get(i)
                    .and_then(Option::as_ref)
                    .map(|h| HealthReport {
                        url: hop
                            .health
                            .as_ref()
                            .map(|c| c.url.text.clone())
                            .unwrap_or_default(),
                        result: h.outcome,
                        status: h.status,
                        duration_ms: ms(h.total),
                        detail: h.detail.clone(),
                    }),
            })
            .collect();
        ChainReport {
            name: chain.name.clone(),
            kind: chain.kind,
            up: verdict.up,
            broken_hop: verdict.broken.map(|b| chain.hops[b].name.clone()),
            reason: verdict.reason.clone(),
            reason_code: verdict.code,
            hops,
            path: observation
                .facts
                .as_ref()
                .map(|f| f.path.clone())
                .unwrap_or_default(),
            contradictions: verdict.contradictions.clone(),
            gateway_log: observation.words.clone(),
        }
    }
}

/// Runs one round of each selected chain, all chains at once. A gateway probe that fails on a
/// chain naming the stage's log groups is looked up in API Gateway's own logs, waiting at most
/// `log_wait` for the record (zero: not looked up).
pub async fn check(
    config: &Config,
    prober: &Prober,
    only: Option<&str>,
    facts: &HashMap<String, Arc<ChainFacts>>,
    log_wait: Duration,
) -> Report {
    let limit = Arc::new(Semaphore::new(config.agent.max_in_flight));
    let prober = prober.clone();
    let search: Arc<dyn Search> = Arc::new(LazyLogs::new(config.gateway_logs.clone()));
    check_with(config, only, facts, move |chain| {
        let (prober, limit, search) = (prober.clone(), limit.clone(), search.clone());
        async move {
            let conns = Arc::new(chain.hops.iter().map(|_| HopConn::default()).collect());
            let started = Instant::now();
            let started_wall = SystemTime::now();
            let probed = run_round(&chain, &prober, &limit, &conns).await;
            let round = Round {
                chain,
                planned: started,
                started,
                started_wall,
                probed,
            };
            let words = gateway_words(&*search, &round, log_wait).await;
            (round, words)
        }
    })
    .await
}

/// What API Gateway logged of the round's failed gateway request, when the chain names where
/// the stage logs and the record arrives within `wait`. A lookup that fails is said on stderr
/// and leaves the verdict to the probe.
async fn gateway_words(
    search: &dyn Search,
    round: &Round,
    wait: Duration,
) -> Option<crate::facts::GatewayWords> {
    let gateway = round.chain.hops.first()?;
    let logs = gateway
        .logs
        .as_ref()
        .filter(|_| gateway.role == Role::Gateway)?;
    let r = round.probed.results.first()?;
    if r.outcome != Outcome::HttpStatus || wait.is_zero() {
        return None;
    }
    let ids: Vec<&str> = [
        r.evidence.request_id.as_deref(),
        r.evidence.extended_request_id.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    if ids.is_empty() {
        return None;
    }
    let deadline = Instant::now() + wait;
    match look_up(
        search,
        logs,
        &ids,
        r.started_at,
        deadline,
        Backoff::default(),
    )
    .await
    {
        Ok(words) => words,
        Err(e) => {
            eprintln!(
                "hopwatch check: chain {}: API Gateway's logs could not be read: {e}",
                round.chain.name
            );
            None
        }
    }
}

/// Judges one round of each selected chain, each made by `round` in a task of its own.
async fn check_with<F, Fut>(
    config: &Config,
    only: Option<&str>,
    facts: &HashMap<String, Arc<ChainFacts>>,
    round: F,
) -> Report
where
    F: Fn(Arc<Chain>) -> Fut,
    Fut: std::future::Future<Output = (Round, Option<crate::facts::GatewayWords>)> + Send + 'static,
{
    let mut handles = Vec::new();
    for chain in config
        .chains
        .iter()
        .filter(|c| only.is_none_or(|name| c.name == name))
    {
        let made = round(chain.clone());
        let facts = facts.get(&chain.name).cloned();
        let task = tokio::spawn(async move {
            let (round, words) = made.await;
            ChainReport::new(&Observation::raw_with(round, facts, words))
        });
        handles.push((chain.name.clone(), task));
    }
    let mut report = Report {
        shard: (config.agent.shard != crate::config::Shard::WHOLE).then(|| ShardReport {
            shard: config.agent.shard.to_string(),
            chains_total: config.chains_total,
        }),
        chains: Vec::new(),
        errors: Vec::new(),
    };
    for (chain, handle) in handles {
        match handle.await {
            Ok(judged) => report.chains.push(judged),
            // A chain that could not be judged is no passing chain: it is said, never skipped.
            Err(err) => report.errors.push(Unjudged {
                chain,
                error: panic_text(err),
            }),
        }
    }
    report
}

/// What a failed task says: its panic message when it has one.
fn panic_text(err: tokio::task::JoinError) -> String {
    if !err.is_panic() {
        return format!("its round did not complete: {err}");
    }
    let payload = err.into_panic();
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    format!("its round panicked: {message}")
}

fn cell(d: Option<f64>) -> String {
    match d {
        Some(v) if v >= 1000.0 => format!("{:.2}s", v / 1000.0),
        Some(v) => format!("{v:.1}ms"),
        None => "-".to_string(),
    }
}

/// What the target saw, compactly: `10.0.2.17 < 10.0.1.9` (peer, then the last
/// X-Forwarded-For hop), the VPC endpoint when a PROXY header named one, and `!` when the hop's
/// source expectation failed.
fn seen_cell(hop: &HopReport) -> String {
    let Some(seen) = &hop.source else {
        return "-".to_string();
    };
    let mut text = seen.peer.clone();
    if let Some(last) = seen.forwarded_for.last() {
        text.push_str(&format!(" < {last}"));
    }
    if let Some(vpce) = seen
        .proxy_protocol
        .as_ref()
        .and_then(|p| p.vpce_id.as_ref())
    {
        text.push_str(&format!(" via {vpce}"));
    }
    if hop.source_expected == Some(false) {
        text.push_str(" !unexpected");
    }
    text
}

/// The human table.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    if let Some(shard) = &report.shard {
        let _ = writeln!(
            out,
            "shard {}: {} of {} chains",
            shard.shard,
            report.chains.len() + report.errors.len(),
            shard.chains_total
        );
    }
    for chain in &report.chains {
        let state = match (&chain.broken_hop, chain.up) {
            (_, true) => "UP".to_string(),
            (Some(hop), false) => format!("DOWN at {hop}"),
            (None, false) => "DOWN".to_string(),
        };
        let _ = writeln!(out, "chain {} ({})  {state}", chain.name, chain.kind);
        if let Some(reason) = &chain.reason {
            match chain.reason_code {
                Some(code) => {
                    let _ = writeln!(out, "  why: [{code}] {reason}");
                }
                None => {
                    let _ = writeln!(out, "  why: {reason}");
                }
            }
        }
        for c in &chain.contradictions {
            let _ = writeln!(out, "  contradiction: {c}");
        }
        for e in chain.path.iter().filter(|e| e.state.blocks()) {
            let _ = writeln!(
                out,
                "  rule {}: {} -> {} port {} ({}, {}) for {}{}",
                e.verdict(),
                e.from,
                e.to,
                e.port,
                e.purpose.as_str(),
                e.direction.as_str(),
                e.source,
                e.fix
                    .as_deref()
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default()
            );
        }
        let name_w = chain
            .hops
            .iter()
            .map(|h| h.name.len())
            .max()
            .unwrap_or(3)
            .max(3);
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<8}  {:<15}  {:>6}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:<24}  DETAIL",
            "HOP", "ROLE", "RESULT", "STATUS", "TOTAL", "DNS", "CONNECT", "TLS", "TTFB", "TRANSFER", "TARGET SAW"
        );
        for hop in &chain.hops {
            let status = hop.status.map_or("-".to_string(), |s| s.to_string());
            let line = format!(
                "  {:<name_w$}  {:<8}  {:<15}  {:>6}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:<24}  {}",
                hop.name,
                hop.role,
                hop.result,
                status,
                cell(Some(hop.duration_ms)),
                cell(hop.phases.dns),
                cell(hop.phases.connect),
                cell(hop.phases.tls),
                cell(hop.phases.ttfb),
                cell(hop.phases.transfer),
                seen_cell(hop),
                match (hop.blind_spot, hop.detail.as_deref()) {
                    (true, Some(d)) =>
                        format!("blind spot (users are served; the agent can't reach it): {d}"),
                    (_, d) => d.unwrap_or("").to_string(),
                },
            );
            let _ = writeln!(out, "{}", line.trim_end());
            if let Some(c) = hop.certificate {
                let _ = writeln!(
                    out,
                    "  {:<name_w$}  {}",
                    "",
                    if c.tls_certificate_days_left < 0.0 {
                        format!(
                            "certificate expired {:.1} days ago",
                            -c.tls_certificate_days_left
                        )
                    } else {
                        format!(
                            "certificate expires in {:.1} days",
                            c.tls_certificate_days_left
                        )
                    }
                );
            }
            for a in hop.addresses.iter().flatten().filter(|a| !a.result.is_ok()) {
                let _ = writeln!(
                    out,
                    "  {:<name_w$}  address {} fails: {} {}",
                    "",
                    a.address,
                    a.result,
                    a.detail.as_deref().unwrap_or("")
                );
            }
            if let Some(h) = &hop.health {
                if !h.result.is_ok() {
                    let _ = writeln!(
                        out,
                        "  {:<name_w$}  health check {} failed: {}{}",
                        "",
                        h.url,
                        h.result,
                        if hop.result.is_ok() {
                            " while the traffic port answers; targets will be marked unhealthy, the load balancer then fails open"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::testing::{at, chain, result};

    #[tokio::test]
    async fn a_chain_whose_round_panicked_is_an_error_not_a_gap() {
        let orders = chain();
        let mut billing = (*orders).clone();
        billing.name = "billing".into();
        let config = Config {
            chains: vec![orders.clone(), Arc::new(billing)],
            ..crate::config::load_str("c.toml", "[[chain]]\nname = \"x\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"t\"\nrole = \"target\"\nurl = \"http://127.0.0.1:1/\"\n", &|_| None).expect("config")
        };
        let report = check_with(
            &config,
            None,
            &HashMap::new(),
            |chain: Arc<Chain>| async move {
                assert_ne!(chain.name, "billing", "a bug in a chain's round");
                let ok = vec![result(crate::probe::Outcome::Ok, 1, at(1.0), ""); 3];
                (
                    crate::record::testing::round(&chain, at(1.0), ok, true),
                    None,
                )
            },
        )
        .await;
        assert_eq!(report.chains.len(), 1);
        assert_eq!(report.chains[0].name, "orders");
        assert_eq!(
            report.errors.len(),
            1,
            "the chain that panicked is reported"
        );
        assert_eq!(report.errors[0].chain, "billing");
        assert!(
            report.errors[0].error.contains("a bug in a chain's round"),
            "{:?}",
            report.errors
        );
        let json = serde_json::to_string(&report).expect("json");
        assert!(
            json.contains("\"errors\":[{\"chain\":\"billing\""),
            "{json}"
        );
    }
}

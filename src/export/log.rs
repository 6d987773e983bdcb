//! Logs as a sink: one structured event per hop state change and per health-check change.

use crate::diagnose::blind_spot_reason;
use crate::record::Observation;

use super::Sink;

/// Writes state changes to the log (`tracing`), as the recorder found them.
#[derive(Debug, Default)]
pub struct Log;

impl Sink for Log {
    fn observe(&self, observation: &Observation) {
        changes(observation);
        health(observation);
    }
}

/// One structured event per hop state change: chain, hop, from, to, reason.
fn changes(observation: &Observation) {
    let round = &observation.round;
    let verdict = &observation.verdict;
    let chain = &round.chain;
    for change in &observation.changes {
        let hop = &chain.hops[change.hop];
        let result = &round.probed.results[change.hop];
        let state = |up: bool| if up { "up" } else { "down" };
        let from = change.from.map_or("unknown", state);
        let to = state(change.to);
        let reason = if verdict.broken == Some(change.hop) {
            verdict.reason.clone().unwrap_or_default()
        } else if verdict.blind_spots.contains(&change.hop) {
            blind_spot_reason(chain, change.hop, result)
        } else if change.to {
            "answers".to_string()
        } else {
            format!(
                "{}: {}",
                result.outcome,
                result.detail.as_deref().unwrap_or("")
            )
        };
        if change.to {
            tracing::info!(chain = %chain.name, hop = %hop.name, from, to, reason, "hop state changed");
        } else {
            tracing::warn!(chain = %chain.name, hop = %hop.name, from, to, reason, "hop state changed");
        }
    }
}

/// One event each time a health check starts or stops failing. A failing health check behind
/// a passing traffic port is the early warning the brief describes.
fn health(observation: &Observation) {
    let round = &observation.round;
    let chain = &round.chain;
    for change in &observation.health_changes {
        let i = change.hop;
        let (Some(hop), Some(Some(health))) = (chain.hops.get(i), round.probed.health.get(i))
        else {
            continue;
        };
        let url = hop
            .health
            .as_ref()
            .map(|h| h.url.text.as_str())
            .unwrap_or("");
        if change.to {
            tracing::info!(chain = %chain.name, hop = %hop.name, url, "health check passes");
            continue;
        }
        let traffic_ok = observation.up.get(i).is_some()
            && round
                .probed
                .results
                .get(i)
                .is_some_and(|r| r.outcome.is_ok());
        let reason = if traffic_ok {
            format!(
                "{}: health check {} while the traffic port answers; targets will be marked unhealthy; the load balancer then fails open (a security-group rule for the health-check port is the usual cause)",
                hop.name, health.outcome
            )
        } else {
            format!(
                "{}: health check {} and the traffic port fails too",
                hop.name, health.outcome
            )
        };
        tracing::warn!(chain = %chain.name, hop = %hop.name, url, result = %health.outcome, reason, "health check fails");
    }
}

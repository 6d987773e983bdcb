//! Rounds: every chain probes all its hops together once per interval.
//!
//! Chains start at a stable offset inside their interval (a hash of the name), plus a little
//! jitter per round, so a hundred chains with the same interval never fire at once. A chain's
//! rounds run one after another in one task, so they cannot overlap; a global semaphore caps
//! probes in flight across chains.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::Chain;
use crate::probe::{HopConn, ProbeResult, Prober};

/// One round of one chain; `probed.results[i]` belongs to `chain.hops[i]`.
#[derive(Debug, Clone)]
pub struct Round {
    pub chain: Arc<Chain>,
    /// When the round was meant to start.
    pub planned: Instant,
    /// When it did start; `started - planned` is the scheduling lag.
    pub started: Instant,
    pub started_wall: SystemTime,
    pub probed: Probed,
}

impl Round {
    /// Actual start minus planned start.
    pub fn lag(&self) -> Duration {
        self.started.saturating_duration_since(self.planned)
    }
}

/// What one round of probes gave: `results[i]` for `chain.hops[i]`'s traffic URL and
/// `health[i]` for its `health_url`, when it has one.
#[derive(Debug, Clone)]
pub struct Probed {
    pub results: Vec<ProbeResult>,
    pub health: Vec<Option<ProbeResult>>,
    /// For hops named in some `expect_source`/`expect_forwarded`: every address their host
    /// resolves to this round (`None`: not needed, or did not resolve).
    pub resolved: Vec<Option<Vec<IpAddr>>>,
    /// For hops with `per_address`: one probe per address their host resolved to.
    pub addresses: Vec<Vec<(IpAddr, ProbeResult)>>,
}

/// What the scheduler counts of its own work; exporters read it.
#[derive(Debug, Default)]
pub struct Counters {
    /// Rounds not handed over because the recorder fell behind.
    dropped: AtomicU64,
    /// Rounds never started because their chain fell whole intervals behind.
    skipped: AtomicU64,
}

impl Counters {
    /// Rounds dropped and rounds skipped, since start.
    pub fn read(&self) -> (u64, u64) {
        (
            self.dropped.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
        )
    }
}

/// Most addresses probed for one hop: an ALB has one node per AZ, Cloud Map a few instances.
const MAX_ADDRESSES: usize = 16;

/// Probes every address of `hop`'s host, each with the hop's Host header and TLS name.
async fn probe_addresses(
    chain: &Arc<Chain>,
    index: usize,
    prober: &Prober,
    limit: &Arc<Semaphore>,
) -> Vec<(IpAddr, ProbeResult)> {
    let hop = &chain.hops[index];
    let Some(mut addrs) = prober.addresses(hop).await else {
        return Vec::new();
    };
    addrs.truncate(MAX_ADDRESSES);
    let mut handles = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let ip = addr.ip();
        let mut one = hop.clone();
        one.url.host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        if one.url.cloudmap.take().is_some() {
            // A Cloud Map instance: plain HTTP to its address and port, as API Gateway does.
            one.url.port = addr.port();
            one.url.authority = format!("{}:{}", one.url.host, addr.port());
        }
        if one.url.tls && one.tls_server_name.is_none() {
            one.tls_server_name = Some(hop.url.host.clone());
        }
        let prober = prober.clone();
        let limit = limit.clone();
        handles.push((
            ip,
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.ok();
                prober.probe(&one, None).await
            }),
        ));
    }
    let mut out = Vec::with_capacity(handles.len());
    for (ip, handle) in handles {
        out.push((ip, handle.await.unwrap_or_else(|err| failed_task(&err))));
    }
    out
}

fn failed_task(err: &tokio::task::JoinError) -> ProbeResult {
    ProbeResult {
        outcome: crate::probe::Outcome::Protocol,
        status: None,
        total: Duration::ZERO,
        phases: Default::default(),
        started_at: SystemTime::now(),
        remote: None,
        evidence: Default::default(),
        body: Default::default(),
        detail: Some(format!("probe task failed: {err}")),
        trace_id: String::new(),
        cert_not_after: None,
    }
}

/// Probes every hop of `chain` (and every health-check URL) concurrently, each under a permit
/// of `limit`, so all results describe the same moment.
pub async fn run_round(
    chain: &Arc<Chain>,
    prober: &Prober,
    limit: &Arc<Semaphore>,
    conns: &Arc<Vec<HopConn>>,
) -> Probed {
    let spawn = |index: usize, health: bool| {
        let chain = chain.clone();
        let prober = prober.clone();
        let limit = limit.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            // The semaphore is never closed, so acquiring only fails if it were; probe anyway.
            let _permit = limit.acquire_owned().await.ok();
            let hop = &chain.hops[index];
            match (health, hop.health.as_deref()) {
                (true, Some(check)) => prober.probe(check, None).await,
                _ => {
                    let reuse = chain.reuse_connections.then(|| &conns[index]);
                    prober.probe(hop, reuse).await
                }
            }
        })
    };
    let traffic: Vec<_> = (0..chain.hops.len()).map(|i| spawn(i, false)).collect();
    let checks: Vec<_> = (0..chain.hops.len())
        .map(|i| chain.hops[i].health.is_some().then(|| spawn(i, true)))
        .collect();
    let mut named = vec![false; chain.hops.len()];
    for hop in &chain.hops {
        for rule in hop.expect_source.iter().chain(&hop.expect_forwarded) {
            if let crate::config::Rule::Hop(i) = rule {
                named[*i] = true;
            }
        }
    }
    let lookups: Vec<_> = named
        .iter()
        .enumerate()
        .map(|(i, needed)| {
            needed.then(|| {
                let (chain, prober) = (chain.clone(), prober.clone());
                tokio::spawn(async move {
                    let addrs = prober.addresses(&chain.hops[i]).await?;
                    let mut ips: Vec<IpAddr> = addrs.into_iter().map(|a| a.ip()).collect();
                    ips.sort();
                    ips.dedup();
                    Some(ips)
                })
            })
        })
        .collect();
    let fan_outs: Vec<_> = (0..chain.hops.len())
        .map(|i| {
            chain.hops[i].per_address.then(|| {
                let (chain, prober, limit) = (chain.clone(), prober.clone(), limit.clone());
                tokio::spawn(async move { probe_addresses(&chain, i, &prober, &limit).await })
            })
        })
        .collect();
    let mut probed = Probed {
        results: Vec::with_capacity(traffic.len()),
        health: Vec::with_capacity(traffic.len()),
        resolved: Vec::with_capacity(traffic.len()),
        addresses: Vec::with_capacity(traffic.len()),
    };
    for fan_out in fan_outs {
        probed.addresses.push(match fan_out {
            Some(handle) => handle.await.unwrap_or_default(),
            None => Vec::new(),
        });
    }
    for lookup in lookups {
        probed.resolved.push(match lookup {
            Some(handle) => handle.await.ok().flatten(),
            None => None,
        });
    }
    for ((handle, check), hop) in traffic.into_iter().zip(checks).zip(&chain.hops) {
        // A panic inside a probe is a bug; it must not take the chain's schedule with it.
        let result = handle.await.unwrap_or_else(|err| {
            tracing::error!(chain = %chain.name, hop = %hop.name, error = %err, "probe task failed");
            failed_task(&err)
        });
        probed.results.push(result);
        let health = match check {
            Some(handle) => Some(handle.await.unwrap_or_else(|err| failed_task(&err))),
            None => None,
        };
        probed.health.push(health);
    }
    probed
}

/// A stable offset in `[0, interval)` from the chain name (FNV-1a), so restarts keep the spread.
pub fn offset(name: &str, interval: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let nanos = interval.as_nanos().max(1) as u64;
    Duration::from_nanos(hash % nanos)
}

/// Up to 1 % of the interval, at most 100 ms: enough to keep chains that hash close together
/// from locking step, small enough not to blur the interval.
fn jitter(state: &mut u64, interval: Duration) -> Duration {
    // xorshift64*: statistical quality is irrelevant here, and it needs no dependency.
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let max = (interval / 100).min(Duration::from_millis(100)).as_nanos() as u64;
    if max == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(r % max)
}

/// Runs `chain` round after round until `stop` turns true, sending each round to `out`.
/// A full `out` drops the round (counted in `counters`) rather than delay the next one.
pub async fn run_chain(
    chain: Arc<Chain>,
    prober: Prober,
    limit: Arc<Semaphore>,
    epoch: Instant,
    out: mpsc::Sender<Round>,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let conns: Arc<Vec<HopConn>> =
        Arc::new(chain.hops.iter().map(|_| HopConn::default()).collect());
    let mut seed = offset(&chain.name, Duration::from_secs(1 << 30)).as_nanos() as u64 | 1;
    let mut next = epoch + offset(&chain.name, chain.interval);
    loop {
        let planned = next + jitter(&mut seed, chain.interval);
        tokio::select! {
            _ = tokio::time::sleep_until(planned.into()) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let probed = run_round(&chain, &prober, &limit, &conns).await;
        let round = Round {
            chain: chain.clone(),
            planned,
            started,
            started_wall,
            probed,
        };
        if out.try_send(round).is_err() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(chain = %chain.name, "recorder is behind; dropped one round");
        }
        next += chain.interval;
        let now = Instant::now();
        if next < now {
            // Missed whole intervals (the process was paused, or probes waited on the global
            // cap): skip them rather than fire a burst of catch-up rounds.
            let behind = (now - next).as_nanos() / chain.interval.as_nanos().max(1) + 1;
            next += chain.interval * behind as u32;
            counters.skipped.fetch_add(behind as u64, Ordering::Relaxed);
            tracing::warn!(chain = %chain.name, skipped = behind as u64, "rounds skipped: the agent fell behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stable_and_inside_the_interval() {
        let interval = Duration::from_secs(15);
        let a = offset("orders", interval);
        assert_eq!(a, offset("orders", interval));
        assert!(a < interval);
        let spread: std::collections::HashSet<_> = (0..50)
            .map(|i| offset(&format!("chain-{i}"), interval).as_secs())
            .collect();
        assert!(
            spread.len() >= 10,
            "50 chains land in only {} distinct seconds",
            spread.len()
        );
    }

    #[test]
    fn jitter_is_bounded() {
        let mut s = 42;
        for _ in 0..1000 {
            assert!(jitter(&mut s, Duration::from_secs(15)) < Duration::from_millis(100));
            assert!(jitter(&mut s, Duration::from_secs(1)) < Duration::from_millis(10));
        }
    }
}

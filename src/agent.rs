//! The long-running agent: schedule → probe → record → export, wired together.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::diagnose::{blind_spot_reason, ChainTracker, Change, Verdict};
use crate::export::cloudwatch::{self, publish::Publisher};
use crate::export::prometheus::Metrics;
use crate::export::server::{serve, Endpoint};
use crate::probe::{tls::TlsConfigs, Prober};
use crate::schedule::{run_chain, Round};

/// Rounds waiting to be recorded. Recording a round takes microseconds, so this only fills if
/// something is badly wrong; then rounds are dropped and counted rather than delay probing.
const ROUND_QUEUE: usize = 4096;

/// Something that wants to see every round after it is recorded (the demo's live table).
pub type Observer = Box<dyn Fn(&Round) + Send + Sync>;

/// A started agent.
pub struct Running {
    /// The address `/metrics` is served on (useful when listening on port 0).
    pub metrics_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    cloudwatch: Option<Publisher>,
}

/// How long, at shutdown, the agent keeps trying to hand CloudWatch what it holds. Under ECS's
/// default 30 s between SIGTERM and SIGKILL, with room for the rounds in flight.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

impl Running {
    /// Stops scheduling, lets in-flight rounds end (each within its timeout) and waits; then
    /// flushes what CloudWatch has not received yet, within [`SHUTDOWN_FLUSH`].
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(publisher) = self.cloudwatch {
            publisher.finish(SHUTDOWN_FLUSH).await;
        }
    }
}

/// Builds the prober for a config: loads every `ca_file` once.
pub fn prober_for(config: &Config) -> anyhow::Result<Prober> {
    let ca_files = config
        .chains
        .iter()
        .flat_map(|c| c.hops.iter())
        .filter_map(|h| h.ca_file.as_deref());
    let tls = TlsConfigs::new(ca_files).map_err(anyhow::Error::msg)?;
    Ok(Prober::new(tls))
}

/// Starts the agent: binds `listen`, then runs every chain until [`Running::shutdown`].
pub async fn start(
    config: Config,
    listen: SocketAddr,
    observers: Vec<Observer>,
) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let metrics_addr = listener.local_addr()?;
    let prober = prober_for(&config)?;
    let metrics = Arc::new(Metrics::new());
    metrics.describe(&config.chains);
    let cloudwatch = match &config.cloudwatch {
        Some(cw) => {
            let mut cw = cw.clone();
            if cloudwatch::needs_identity(&cw.dimensions) {
                let identity = crate::echo::identity(&prober).await;
                cw.dimensions = cloudwatch::resolve_dimensions(&cw.dimensions, &identity);
            }
            Some(Publisher::start(cw, metrics.cloudwatch()).await)
        }
        None => None,
    };
    let feed = cloudwatch.as_ref().map(Publisher::feed);
    let endpoint = Endpoint::new(metrics.clone());
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(serve(
        listener,
        endpoint.clone(),
        stop_rx.clone(),
    )));

    let (tx, mut rx) = mpsc::channel::<Round>(ROUND_QUEUE);
    let limit = Arc::new(Semaphore::new(config.agent.max_in_flight));
    let epoch = Instant::now();
    let mut chain_tasks = Vec::new();
    for chain in &config.chains {
        chain_tasks.push(tokio::spawn(run_chain(
            chain.clone(),
            prober.clone(),
            limit.clone(),
            epoch,
            tx.clone(),
            stop_rx.clone(),
            metrics.clone(),
        )));
    }
    drop(tx);

    let expected: HashSet<String> = config.chains.iter().map(|c| c.name.clone()).collect();
    let recorder_metrics = metrics.clone();
    tasks.push(tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut trackers: HashMap<String, ChainTracker> = HashMap::new();
        let mut health_ok: HashMap<(String, usize), bool> = HashMap::new();
        // Ends when every chain task has stopped and dropped its sender.
        while let Some(round) = rx.recv().await {
            let tracker = trackers
                .entry(round.chain.name.clone())
                .or_insert_with(|| ChainTracker::new(&round.chain));
            let (up, verdict, changes) = tracker.update(&round.chain, &round.probed.results);
            recorder_metrics.observe(&round, &up, &verdict);
            if let Some(feed) = &feed {
                feed.observe(&round, &up, &verdict);
            }
            log_changes(&round, &verdict, &changes);
            log_health(&round, &mut health_ok);
            if seen.len() < expected.len()
                && seen.insert(round.chain.name.clone())
                && seen.len() == expected.len()
            {
                endpoint.ready.store(true, Ordering::Relaxed);
                tracing::info!("every chain has completed a round; ready");
            }
            for observer in &observers {
                observer(&round);
            }
        }
    }));
    tasks.splice(0..0, chain_tasks);
    tracing::info!(
        listen = %metrics_addr,
        chains = config.chains.len(),
        hops = config.chains.iter().map(|c| c.hops.len()).sum::<usize>(),
        "hopwatch agent started"
    );
    Ok(Running {
        metrics_addr,
        metrics,
        stop,
        tasks,
        cloudwatch,
    })
}

/// One event each time a health check starts or stops failing. A failing health check behind
/// a passing traffic port is the early warning the brief describes.
fn log_health(round: &Round, last: &mut HashMap<(String, usize), bool>) {
    let chain = &round.chain;
    for (i, health) in round.probed.health.iter().enumerate() {
        let Some(health) = health else { continue };
        let ok = health.outcome.is_ok();
        if last.insert((chain.name.clone(), i), ok) == Some(ok) {
            continue;
        }
        let hop = &chain.hops[i];
        let url = hop
            .health
            .as_ref()
            .map(|h| h.url.text.as_str())
            .unwrap_or("");
        if ok {
            tracing::info!(chain = %chain.name, hop = %hop.name, url, "health check passes");
        } else {
            let traffic_ok = round
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
}

/// One structured event per hop state change: chain, hop, from, to, reason.
fn log_changes(round: &Round, verdict: &Verdict, changes: &[Change]) {
    let chain = &round.chain;
    for change in changes {
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

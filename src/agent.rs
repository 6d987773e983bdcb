//! The long-running agent: schedule → probe → record → export, wired together.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{Chain, Config};
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
    /// Stops the metrics server.
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    recorder: JoinHandle<()>,
    chains: BTreeMap<String, ChainTask>,
    /// Tasks of chains removed or replaced by a reload, finishing their last round.
    retiring: Vec<JoinHandle<()>>,
    /// What new chain tasks are started with; `out` is dropped at shutdown so the recorder ends.
    limit: Arc<Semaphore>,
    max_in_flight: usize,
    epoch: Instant,
    out: mpsc::Sender<Round>,
    config: Config,
    cloudwatch: Option<Publisher>,
}

/// One chain's scheduling task and the switch that stops it.
struct ChainTask {
    chain: Arc<Chain>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Chains whose settings changed: restarted with the new ones.
    pub changed: Vec<String>,
    /// Chains left running as they were.
    pub unchanged: usize,
    /// Settings that changed but only take effect after a restart (`[agent] listen`,
    /// `[cloudwatch]`).
    pub need_restart: Vec<&'static str>,
}

/// How long, at shutdown, the agent keeps trying to hand CloudWatch what it holds. Under ECS's
/// default 30 s between SIGTERM and SIGKILL, with room for the rounds in flight.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// Whether two chains are configured alike. `Chain` holds compiled regexes, which have no
/// equality; their `Debug` form carries the pattern, so comparing the whole `Debug` text
/// compares every setting.
fn same_settings(a: &Chain, b: &Chain) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

impl Running {
    /// Stops scheduling, lets in-flight rounds end (each within its timeout) and waits; then
    /// flushes what CloudWatch has not received yet, within [`SHUTDOWN_FLUSH`].
    pub async fn shutdown(self) {
        for chain in self.chains.values() {
            let _ = chain.stop.send(true);
        }
        for task in self
            .chains
            .into_values()
            .map(|c| c.task)
            .chain(self.retiring)
        {
            let _ = task.await;
        }
        // Every chain task has dropped its sender; dropping ours lets the recorder drain and end.
        drop(self.out);
        let _ = self.recorder.await;
        let _ = self.stop.send(true);
        let _ = self.server.await;
        if let Some(publisher) = self.cloudwatch {
            publisher.finish(SHUTDOWN_FLUSH).await;
        }
    }

    fn spawn_chain(&self, chain: Arc<Chain>, prober: &Prober) -> ChainTask {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_chain(
            chain.clone(),
            prober.clone(),
            self.limit.clone(),
            self.epoch,
            self.out.clone(),
            stop_rx,
            self.metrics.clone(),
        ));
        ChainTask { chain, stop, task }
    }

    /// Switches to `config`: starts added chains, stops removed ones, restarts changed ones and
    /// leaves the others running with their series and histograms. Fails, changing nothing,
    /// when the new config can't be used (a `ca_file` that doesn't load).
    pub fn reload(&mut self, config: Config) -> anyhow::Result<Reloaded> {
        let prober = prober_for(&config)?;
        let mut done = Reloaded::default();
        if config.agent.listen != self.config.agent.listen {
            done.need_restart.push("[agent] listen");
        }
        if format!("{:?}", config.cloudwatch) != format!("{:?}", self.config.cloudwatch) {
            done.need_restart.push("[cloudwatch]");
        }
        let wanted = config.agent.max_in_flight;
        if wanted > self.max_in_flight {
            self.limit.add_permits(wanted - self.max_in_flight);
        } else {
            // Permits held by probes in flight can't be taken back; the cap settles as they end.
            self.limit.forget_permits(self.max_in_flight - wanted);
        }
        self.max_in_flight = wanted;

        let mut old = std::mem::take(&mut self.chains);
        let mut effective = Vec::with_capacity(config.chains.len());
        for chain in &config.chains {
            let task = match old.remove(&chain.name) {
                Some(running) if same_settings(&running.chain, chain) => {
                    done.unchanged += 1;
                    running
                }
                Some(running) => {
                    let _ = running.stop.send(true);
                    self.retiring.push(running.task);
                    done.changed.push(chain.name.clone());
                    self.spawn_chain(chain.clone(), &prober)
                }
                None => {
                    done.added.push(chain.name.clone());
                    self.spawn_chain(chain.clone(), &prober)
                }
            };
            effective.push(task.chain.clone());
            self.chains.insert(chain.name.clone(), task);
        }
        for (name, running) in old {
            let _ = running.stop.send(true);
            self.retiring.push(running.task);
            done.removed.push(name);
        }
        self.retiring.retain(|t| !t.is_finished());
        // Before the retiring tasks' last rounds arrive: the recorder drops rounds of chains
        // that are no longer current, so removed chains' series don't come back.
        self.metrics.describe(&effective);
        for name in &done.removed {
            self.metrics.forget_chain(name);
        }
        let mut config = config;
        config.chains = effective;
        self.config = config;
        Ok(done)
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
    metrics.config_loaded(true);
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
    let server = tokio::spawn(serve(listener, endpoint.clone(), stop_rx));

    let (out, mut rx) = mpsc::channel::<Round>(ROUND_QUEUE);
    let expected: HashSet<String> = config.chains.iter().map(|c| c.name.clone()).collect();
    let recorder_metrics = metrics.clone();
    let recorder = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut trackers: HashMap<String, (Arc<Chain>, ChainTracker)> = HashMap::new();
        let mut health_ok: HashMap<(String, usize), bool> = HashMap::new();
        // Ends when every chain task has stopped and the agent dropped its sender.
        while let Some(round) = rx.recv().await {
            // The last round of a chain a reload removed or replaced.
            if !recorder_metrics.is_current(&round.chain) {
                continue;
            }
            let fresh = || (round.chain.clone(), ChainTracker::new(&round.chain));
            let entry = trackers
                .entry(round.chain.name.clone())
                .or_insert_with(fresh);
            if !Arc::ptr_eq(&entry.0, &round.chain) {
                // A reload replaced the chain: its hop states start over with it.
                *entry = fresh();
            }
            let (up, verdict, changes) = entry.1.update(&round.chain, &round.probed.results);
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
    });
    let max_in_flight = config.agent.max_in_flight;
    let hops: usize = config.chains.iter().map(|c| c.hops.len()).sum();
    let mut running = Running {
        metrics_addr,
        metrics: metrics.clone(),
        stop,
        server,
        recorder,
        chains: BTreeMap::new(),
        retiring: Vec::new(),
        limit: Arc::new(Semaphore::new(max_in_flight)),
        max_in_flight,
        epoch: Instant::now(),
        out,
        config,
        cloudwatch,
    };
    for chain in running.config.chains.clone() {
        let task = running.spawn_chain(chain.clone(), &prober);
        running.chains.insert(chain.name.clone(), task);
    }
    tracing::info!(
        listen = %metrics_addr,
        chains = running.chains.len(),
        hops,
        "hopwatch agent started"
    );
    Ok(running)
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

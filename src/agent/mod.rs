//! The long-running agent: schedule → probe → record → export, wired together; its run loop
//! (signals, config reloads) in `run`, and the discovery refresher in `refresh`.

pub mod refresh;
pub mod run;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{Chain, Config};
use crate::export::cloudwatch::{self, publish::Publisher, stats::Stats};
use crate::export::log::Log;
use crate::export::prometheus::Metrics;
use crate::export::server::{serve, Endpoint, Readiness};
use crate::export::Sink;
use crate::facts::{ChainFacts, DiscoveryStats};
use crate::gatewaylog::{LazyLogs, Lookups};
use crate::probe::{tls::TlsConfigs, Prober};
use crate::record::Recorder;
use crate::schedule::{run_chain, Counters, Round};

/// Rounds waiting to be recorded. Recording a round takes microseconds, so this only fills if
/// something is badly wrong; then rounds are dropped and counted rather than delay probing.
const ROUND_QUEUE: usize = 4096;

/// The record stage as the agent runs it: the recorder and the sinks every observation goes to.
/// One lock around both, so a reload can't slip between a round's check against the current
/// chains and its hand-off to the sinks (a removed chain's series would come back).
struct Stage {
    recorder: Mutex<Recorder>,
    sinks: Vec<Arc<dyn Sink>>,
}

impl Stage {
    fn record(&self, round: Round) {
        let mut recorder = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(observation) = recorder.observe(round) {
            for sink in &self.sinks {
                sink.observe(&observation);
            }
        }
    }

    fn set_chains(&self, chains: &[Arc<Chain>]) {
        let mut recorder = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        recorder.set_chains(chains);
        for sink in &self.sinks {
            sink.set_chains(chains);
        }
    }
}

/// Asks API Gateway's own logs about each failed gateway request whose chain names a log
/// group: the lookups run in the background, and what they find reaches the verdicts of the
/// rounds after (the recorder reads it from the same [`Lookups`]).
struct AskGatewayLogs {
    lookups: Lookups,
}

impl Sink for AskGatewayLogs {
    fn observe(&self, observation: &crate::record::Observation) {
        let chain = &observation.round.chain;
        let (Some(gateway), Some(r)) =
            (chain.hops.first(), observation.round.probed.results.first())
        else {
            return;
        };
        let Some(logs) = gateway
            .logs
            .as_ref()
            .filter(|_| gateway.role == crate::config::Role::Gateway)
        else {
            return;
        };
        // Only an answer carries the ids the gateway logs it by; words already found for this
        // failure need no new lookup.
        if r.outcome != crate::probe::Outcome::HttpStatus || observation.words.is_some() {
            return;
        }
        let ids: Vec<&str> = [
            r.evidence.request_id.as_deref(),
            r.evidence.extended_request_id.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.lookups.request(&chain.name, logs, &ids, r.started_at);
    }

    fn set_chains(&self, chains: &[Arc<Chain>]) {
        self.lookups
            .retain(|name| chains.iter().any(|c| c.name == name));
    }
}

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
    counters: Arc<Counters>,
    stage: Arc<Stage>,
    /// How discovery is doing, when `[discovery]` is configured.
    discovery: Option<Arc<DiscoveryStats>>,
    epoch: Instant,
    out: mpsc::Sender<Round>,
    config: Config,
    cloudwatch: Option<Publisher>,
    /// Where this agent probes from, and its zone when ECS says (decided at start).
    vantage: String,
    az: String,
    /// The credentials caches of hops with `auth`, shared by every prober of this agent.
    auth: crate::auth::Registry,
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
            self.counters.clone(),
        ));
        ChainTask { chain, stop, task }
    }

    /// Switches to `config`: starts added chains, stops removed ones, restarts changed ones and
    /// leaves the others running with their series and histograms. Fails, changing nothing,
    /// when the new config can't be used (a `ca_file` that doesn't load).
    pub fn reload(&mut self, config: Config) -> anyhow::Result<Reloaded> {
        let prober = prober_for(&config, &self.auth)?;
        let mut done = Reloaded::default();
        if config.agent.listen != self.config.agent.listen {
            done.need_restart.push("[agent] listen");
        }
        if config.cloudwatch != self.config.cloudwatch {
            done.need_restart.push("[cloudwatch]");
        }
        if config.agent.vantage != self.config.agent.vantage {
            done.need_restart.push("[agent] vantage");
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
                Some(running) if *running.chain == **chain => {
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
        // The recorder drops rounds of chains that are no longer current (the retiring tasks'
        // last ones), so removed chains' series don't come back.
        self.stage.set_chains(&effective);
        let mut config = config;
        config.chains = effective;
        self.metrics.set_agent(&self.vantage, &self.az, &config);
        self.metrics.set_detail(config.agent.detail);
        self.config = config;
        Ok(done)
    }
}

/// Hands the heap memory freed so far back to the kernel, after a config was loaded (at start,
/// and after every reload, rejected ones included: they parse the whole file too).
///
/// Parsing a config peaks far above what it leaves: at 10,000 hops toml's token list and
/// tables reach 32 MB of heap, all freed once the chains are built, but glibc keeps freed memory
/// for reuse, and what lies between long-lived allocations can never leave the heap's top. The
/// agent measured 61 MiB of RSS with 24 MB of live heap (heaptrack, 2026-12-04);
/// `malloc_trim` also releases the free pages inside the heap. Elsewhere a no-op.
pub(super) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer; it walks glibc's own free lists under their locks
    // and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Builds the prober for a config: loads every `ca_file` and client certificate once; its
/// `cloudmap://` hops ask Cloud Map where `[discovery]` says (else the SDK's default chain); its
/// hops with `auth` get their credentials from `auth`'s caches (one per setting, kept across
/// reloads for the settings that stay).
pub fn prober_for(config: &Config, auth: &crate::auth::Registry) -> anyhow::Result<Prober> {
    let hops = config.chains.iter().flat_map(|c| c.hops.iter());
    let tls = TlsConfigs::for_hops(hops).map_err(anyhow::Error::msg)?;
    let endpoint = config
        .discovery
        .as_ref()
        .map(cloudmap_endpoint)
        .unwrap_or_default();
    let auths = config
        .chains
        .iter()
        .flat_map(|c| c.hops.iter())
        .filter_map(|h| h.auth.as_ref());
    Ok(Prober::with_cloudmap(tls, endpoint).with_auth(auth.handles(auths)))
}

fn cloudmap_endpoint(discovery: &crate::config::Discovery) -> crate::probe::cloudmap::Endpoint {
    crate::probe::cloudmap::Endpoint {
        region: discovery.region.clone(),
        endpoint_url: discovery.endpoint_url.clone(),
    }
}

impl Running {
    /// `[discovery]` as the agent started with it, and the counters its walks report to.
    pub fn discovery(&self) -> Option<(crate::config::Discovery, Arc<DiscoveryStats>)> {
        Some((self.config.discovery.clone()?, self.discovery.clone()?))
    }

    /// The counters discovery reports to, when `[discovery]` is configured.
    pub fn discovery_stats(&self) -> Option<Arc<DiscoveryStats>> {
        self.discovery.clone()
    }

    /// The shard this agent runs.
    pub fn shard(&self) -> crate::config::Shard {
        self.config.agent.shard
    }

    /// Discovery's facts of its chains (link status, target health), by chain name: the
    /// reasons and the metrics read them from the next round on.
    pub fn set_facts(&self, facts: HashMap<String, Arc<ChainFacts>>) {
        let mut recorder = self
            .stage
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        recorder.set_facts(facts);
    }
}

/// Starts the agent: binds `listen`, then runs every chain until [`Running::shutdown`].
/// Every recorded round goes to Prometheus, the log, readiness, CloudWatch when configured,
/// and `extra` sinks (the demo's table).
pub async fn start(
    config: Config,
    listen: SocketAddr,
    extra: Vec<Arc<dyn Sink>>,
) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let metrics_addr = listener.local_addr()?;
    let auth = crate::auth::Registry::new();
    let prober = prober_for(&config, &auth)?;
    let counters = Arc::new(Counters::default());
    let metrics = Arc::new(Metrics::new(counters.clone()));
    metrics.watch_auth(auth.counts());
    metrics.config_loaded(true);
    // Off ECS this reads nothing: the host name only.
    let identity = crate::ecs::identity(&prober).await;
    let vantage = crate::ecs::vantage(config.agent.vantage.as_deref(), &identity);
    let az = identity.availability_zone.clone().unwrap_or_default();
    metrics.set_agent(&vantage, &az, &config);
    metrics.set_detail(config.agent.detail);
    let cloudwatch = match &config.cloudwatch {
        Some(cw) => {
            let mut cw = cw.clone();
            if cloudwatch::needs_identity(&cw.dimensions) {
                cw.dimensions = cloudwatch::resolve_dimensions(&cw.dimensions, &identity);
            }
            if cw.vantage_dimension {
                cw.dimensions.push((
                    crate::config::published::dims::VANTAGE.to_string(),
                    vantage.clone(),
                ));
            }
            let stats = Arc::new(Stats::default());
            metrics.watch_cloudwatch(stats.clone());
            Some(Publisher::start(cw, stats).await)
        }
        None => None,
    };
    let discovery = config.discovery.as_ref().map(|_| {
        let stats = Arc::new(DiscoveryStats::default());
        metrics.watch_discovery(stats.clone());
        stats
    });
    let endpoint = Endpoint::new(metrics.clone());
    let (stop, stop_rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, endpoint.clone(), stop_rx));

    // Lazy: no AWS configuration is loaded until a chain's gateway logs are first searched.
    let lookups = Lookups::new(
        Arc::new(LazyLogs::new(config.gateway_logs.clone())),
        &config.gateway_logs,
    );
    metrics.watch_gateway_logs(lookups.counts());
    let mut sinks: Vec<Arc<dyn Sink>> = vec![
        metrics.clone(),
        Arc::new(Log),
        Arc::new(Readiness::new(endpoint, &config.chains)),
        Arc::new(AskGatewayLogs {
            lookups: lookups.clone(),
        }),
    ];
    if let Some(publisher) = &cloudwatch {
        sinks.push(Arc::new(publisher.feed()));
    }
    sinks.extend(extra);
    let mut recorder = Recorder::default();
    recorder.set_words(Arc::new(lookups));
    let stage = Arc::new(Stage {
        recorder: Mutex::new(recorder),
        sinks,
    });
    stage.set_chains(&config.chains);

    let (out, mut rx) = mpsc::channel::<Round>(ROUND_QUEUE);
    let recording = stage.clone();
    // Ends when every chain task has stopped and the agent dropped its sender.
    let recorder = tokio::spawn(async move {
        while let Some(round) = rx.recv().await {
            recording.record(round);
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
        counters,
        stage,
        discovery,
        epoch: Instant::now(),
        out,
        config,
        cloudwatch,
        vantage: vantage.clone(),
        az,
        auth,
    };
    for chain in running.config.chains.clone() {
        let task = running.spawn_chain(chain.clone(), &prober);
        running.chains.insert(chain.name.clone(), task);
    }
    tracing::info!(
        listen = %metrics_addr,
        vantage,
        shard = %running.config.agent.shard,
        chains = running.chains.len(),
        hops,
        "hopwatch agent started"
    );
    release_freed_memory();
    Ok(running)
}

//! The agent's run loop: until SIGTERM or SIGINT it reloads the config on SIGHUP and when its
//! file changes, and merges each discovery walk's chains into it; then it stops gracefully.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::Running;
use crate::config::{self, Config, ConfigError, Placement};
use crate::discover::Estate;
use crate::facts::{ChainFacts, DiscoveryStats};

/// How often `run` looks at its config file for a change (a ConfigMap update, an edit).
const CONFIG_POLL: Duration = Duration::from_secs(2);

/// A fingerprint of the config file's content; `None` for `env:` configs or an unreadable file.
fn config_fingerprint(path: &std::path::Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    if path.to_string_lossy().starts_with("env:") {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// Reloads the config at `path` into `running`. An invalid config is logged, problem by
/// problem, and changes nothing; `hopwatch_config_last_reload_successful` says which it was.
async fn reload(
    running: &mut Running,
    path: &std::path::Path,
    discovered: Option<&Arc<Estate>>,
    place: &Placement,
    why: &str,
) {
    let owned = path.to_path_buf();
    let estate = discovered.cloned();
    let place = place.clone();
    let stats = running.discovery_stats();
    // Validating thousands of hops takes a while: off the thread that times probes.
    let loaded = tokio::task::spawn_blocking(move || {
        load_merged(&owned, estate.as_deref(), &place, stats.as_deref())
    })
    .await;
    let outcome = match loaded {
        Ok(Ok((config, facts))) => {
            log_warnings(&config);
            let done = running.reload(config).map_err(|err| format!("{err:#}"));
            if done.is_ok() {
                running.set_facts(facts);
            }
            done
        }
        Ok(Err(ConfigError::Invalid(problems))) => {
            for p in &problems {
                tracing::error!(problem = %p, "config reload rejected");
            }
            Err(format!("{} problem(s)", problems.len()))
        }
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    running.metrics.config_loaded(outcome.is_ok());
    super::release_freed_memory();
    match outcome {
        Ok(done) => {
            tracing::info!(
                why,
                added = ?done.added,
                removed = ?done.removed,
                changed = ?done.changed,
                unchanged = done.unchanged,
                "config reloaded"
            );
            for setting in done.need_restart {
                tracing::warn!(
                    setting,
                    "changed in the config; takes effect after a restart"
                );
            }
        }
        Err(error) => {
            tracing::error!(
                why,
                error,
                "config reload rejected; the running config stays"
            );
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT; reloads the config on SIGHUP and when its file
/// changes. On the first stop signal it stops scheduling, lets probes in flight end and
/// flushes CloudWatch (within [`crate::agent::SHUTDOWN_FLUSH`]); a second one exits at once.
pub async fn run_until_stopped(
    mut running: Running,
    path: &std::path::Path,
    place: Placement,
) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::new()?;
    let mut last = config_fingerprint(path);
    let mut poll = tokio::time::interval(CONFIG_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // [discovery]: walks arrive on a channel; the last merged estate goes into every reload.
    let (mut walks, discovery_task) = match running.discovery() {
        Some((discovery, stats)) => {
            let shard = running.shard();
            let (rx, task) = super::refresh::spawn(discovery, shard, stats);
            (Some(rx), Some(task))
        }
        None => (None, None),
    };
    let mut estate: Option<Arc<Estate>> = None;
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Reload => {
                    last = config_fingerprint(path);
                    reload(&mut running, path, estate.as_ref(), &place, "SIGHUP").await;
                }
                Signal::Stop => break,
            },
            _ = poll.tick() => {
                let now = config_fingerprint(path);
                if now.is_some() && now != last {
                    last = now;
                    reload(&mut running, path, estate.as_ref(), &place, "config file changed").await;
                }
            }
            Some(walk) = async { match walks.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                estate = Some(walk);
                reload(&mut running, path, estate.as_ref(), &place, "discovery").await;
            }
        }
    }
    if let Some(task) = discovery_task {
        task.abort();
    }
    tracing::info!("stopping: letting in-flight probes finish (a second signal exits at once)");
    tokio::select! {
        _ = running.shutdown() => {
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        _ = signals.stop() => {
            tracing::warn!("second stop signal: exiting without waiting");
            std::process::exit(EXIT_INTERRUPTED);
        }
    }
}

/// Exit status after a second stop signal (128 + SIGINT, as shells report an interrupt).
const EXIT_INTERRUPTED: i32 = 130;

enum Signal {
    Reload,
    Stop,
}

/// SIGHUP, SIGTERM and SIGINT, as a stream.
struct Signals {
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
                term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.hup.recv() => Signal::Reload,
                _ = self.term.recv() => Signal::Stop,
                _ = tokio::signal::ctrl_c() => Signal::Stop,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }

    /// The next stop signal (SIGHUP is ignored while stopping).
    async fn stop(&mut self) {
        while !matches!(self.next().await, Signal::Stop) {}
    }
}

/// The config file, as this agent runs it, with the chains discovery found merged in as
/// typed data (see [`super::refresh::merge`]), and the facts of those chains.
fn load_merged(
    path: &std::path::Path,
    estate: Option<&Estate>,
    place: &Placement,
    stats: Option<&DiscoveryStats>,
) -> Result<(Config, std::collections::HashMap<String, Arc<ChainFacts>>), ConfigError> {
    let text = config::read(path)?;
    let env = |name: &str| std::env::var(name).ok();
    let shown = path.display().to_string();
    let config = place.apply(config::load_str(&shown, &text, &env)?);
    Ok(match estate {
        Some(estate) => super::refresh::merge(config, estate, stats),
        None => (config, Default::default()),
    })
}

/// Config warnings, one log event each.
pub fn log_warnings(config: &Config) {
    for w in &config.warnings {
        tracing::warn!(warning = %w, "config");
    }
}

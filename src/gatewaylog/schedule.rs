//! When lookups run: for the agent, at most one per chain per `min_interval`, in the
//! background, retried while the record is late; for `hopwatch check`, one awaited until a
//! deadline. Both retry with the same loop ([`until_found`]).
//!
//! Access logs reach CloudWatch Logs some time after the request (the gateway batches its
//! deliveries), so "not found" right after a failed probe usually means "not yet": a lookup
//! asks again with backoff for up to `retry_for` before it calls the record absent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::AbortHandle;

use super::{find, unsearchable, usable_id, LookupError, Search};
use crate::config::{GatewayLogLookup, GatewayLogs};
use crate::facts::GatewayWords;
pub use crate::facts::{LookupCounts, LookupResult};

/// The waits between the tries of one lookup: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first try.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    /// 2 s, 4 s, 8 s, then every 15 s: a few tries in the first half minute, when most records
    /// arrive, and few calls against the 5-per-second `FilterLogEvents` quota after that.
    fn default() -> Backoff {
        Backoff {
            first: Duration::from_secs(2),
            max: Duration::from_secs(15),
        }
    }
}

/// What [`Lookups::request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// A lookup started in the background.
    Started,
    /// The chain had one less than `min_interval` ago (counted `skipped`).
    Skipped,
    /// Nothing to look up: no log group that can be read ([`super::unsearchable`]), or no id a
    /// lookup can use. Not counted.
    Nothing,
    /// Called outside a Tokio runtime: nothing started. Not counted.
    NoRuntime,
}

/// How the newest lookup of a chain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupOutcome {
    /// The probe's start the lookup was for.
    pub around: SystemTime,
    /// When it ended.
    pub finished: SystemTime,
    /// Found, absent after `retry_for`, or why it could not tell.
    pub result: Result<Option<GatewayWords>, LookupError>,
}

/// The agent's lookups: started by [`Lookups::request`], read by [`Lookups::words`]. Cheap to
/// clone (one shared state).
#[derive(Clone)]
pub struct Lookups {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("min_interval", &self.shared.min_interval)
            .field("retry_for", &self.shared.retry_for)
            .field("backoff", &self.shared.backoff)
            .finish_non_exhaustive()
    }
}

struct Shared {
    search: Arc<dyn Search>,
    min_interval: Duration,
    retry_for: Duration,
    backoff: Backoff,
    chains: Mutex<HashMap<String, ChainState>>,
    counts: Arc<LookupCounts>,
    generations: AtomicU64,
}

/// One chain's lookups. `generation` tells a forgotten chain's late results from a new one's.
struct ChainState {
    generation: u64,
    last_start: Option<Instant>,
    words: Option<(GatewayWords, SystemTime)>,
    latest: Option<LookupOutcome>,
    running: Vec<AbortHandle>,
}

impl Lookups {
    /// Lookups through `search` (a [`super::Logs`]), paced as `[gateway_logs]` says.
    pub fn new(search: Arc<dyn Search>, config: &GatewayLogLookup) -> Lookups {
        Lookups::with_backoff(search, config, Backoff::default())
    }

    /// The same, with other waits between the tries of a lookup (tests).
    pub fn with_backoff(
        search: Arc<dyn Search>,
        config: &GatewayLogLookup,
        backoff: Backoff,
    ) -> Lookups {
        Lookups {
            shared: Arc::new(Shared {
                search,
                min_interval: config.min_interval,
                retry_for: config.retry_for,
                backoff,
                chains: Mutex::default(),
                counts: Arc::default(),
                generations: AtomicU64::new(0),
            }),
        }
    }

    /// The counters of `hopwatch_gateway_log_lookups_total`, shared with whoever exports them.
    pub fn counts(&self) -> Arc<LookupCounts> {
        self.shared.counts.clone()
    }

    /// Looks up, in the background, what the gateway logged of `chain`'s request `ids` (its
    /// request id and/or extended id), sent at `around`, in `logs`' groups; returns at once.
    /// Skipped when the chain had a lookup less than `min_interval` ago. Must be called inside
    /// a Tokio runtime.
    pub fn request(
        &self,
        chain: &str,
        logs: &GatewayLogs,
        ids: &[&str],
        around: SystemTime,
    ) -> Requested {
        let ids: Vec<String> = ids
            .iter()
            .filter(|id| usable_id(id))
            .map(|id| id.to_string())
            .collect();
        if ids.is_empty() || unsearchable(logs).is_some() {
            return Requested::Nothing;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Requested::NoRuntime;
        };
        let shared = &self.shared;
        let now = Instant::now();
        let generation = {
            let mut chains = shared.chains.lock().unwrap_or_else(|e| e.into_inner());
            let state = chains
                .entry(chain.to_string())
                .or_insert_with(|| ChainState {
                    generation: shared.generations.fetch_add(1, Ordering::Relaxed),
                    last_start: None,
                    words: None,
                    latest: None,
                    running: Vec::new(),
                });
            if state
                .last_start
                .is_some_and(|last| now.duration_since(last) < shared.min_interval)
            {
                shared.counts.count(LookupResult::Skipped);
                return Requested::Skipped;
            }
            state.last_start = Some(now);
            state.running.retain(|task| !task.is_finished());
            state.generation
        };
        let task_shared = self.shared.clone();
        let logs = logs.clone();
        let chain_name = chain.to_string();
        let task = runtime.spawn(async move {
            let shared = task_shared;
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let tried = AtomicBool::new(false);
            let result = until_found(
                &*shared.search,
                &logs,
                &refs,
                around,
                shared.retry_for,
                shared.backoff,
                &tried,
            )
            .await;
            let class = match &result {
                Ok(Some(_)) => LookupResult::Found,
                Ok(None) => LookupResult::NotFound,
                Err(_) => LookupResult::Error,
            };
            shared.counts.count(class);
            if let Err(e) = &result {
                tracing::warn!(chain = %chain_name, error = %e, "gateway log lookup failed");
            }
            shared.publish(
                &chain_name,
                generation,
                LookupOutcome {
                    around,
                    finished: SystemTime::now(),
                    result,
                },
            );
        });
        let mut chains = shared.chains.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = chains.get_mut(chain).filter(|s| s.generation == generation) {
            state.running.push(task.abort_handle());
        } else {
            // Forgotten while the task was being started.
            task.abort();
        }
        Requested::Started
    }

    /// The newest words found for `chain`, with the probe start they were looked up for.
    pub fn words(&self, chain: &str) -> Option<(GatewayWords, SystemTime)> {
        let chains = self.shared.chains.lock().unwrap_or_else(|e| e.into_inner());
        chains.get(chain).and_then(|s| s.words.clone())
    }

    /// How `chain`'s newest lookup (by probe start) ended, found or not.
    pub fn latest(&self, chain: &str) -> Option<LookupOutcome> {
        let chains = self.shared.chains.lock().unwrap_or_else(|e| e.into_inner());
        chains.get(chain).and_then(|s| s.latest.clone())
    }

    /// Drops `chain`'s words (its gateway answers again) and keeps the rest: a chain that
    /// fails again within `min_interval` is not looked up sooner.
    pub fn clear_words(&self, chain: &str) {
        let mut chains = self.shared.chains.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = chains.get_mut(chain) {
            state.words = None;
        }
    }

    /// Forgets `chain` (removed from the config, or recovered): its words, its `min_interval`,
    /// and any lookup still running for it, which is stopped and publishes nothing.
    pub fn forget(&self, chain: &str) {
        let removed = {
            let mut chains = self.shared.chains.lock().unwrap_or_else(|e| e.into_inner());
            chains.remove(chain)
        };
        if let Some(state) = removed {
            for task in state.running {
                task.abort();
            }
        }
    }

    /// Forgets every chain `keep` says is gone (a reload removed it).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = {
            let chains = self.shared.chains.lock().unwrap_or_else(|e| e.into_inner());
            chains.keys().filter(|c| !keep(c)).cloned().collect()
        };
        for chain in gone {
            self.forget(&chain);
        }
    }
}

impl Shared {
    /// Keeps `outcome` if the chain is still the one the lookup was started for, and the
    /// outcome is not older (by probe start) than what is kept.
    fn publish(&self, chain: &str, generation: u64, outcome: LookupOutcome) {
        let mut chains = self.chains.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = chains.get_mut(chain).filter(|s| s.generation == generation) else {
            return;
        };
        if let Ok(Some(words)) = &outcome.result {
            if state
                .words
                .as_ref()
                .is_none_or(|(_, at)| *at <= outcome.around)
            {
                state.words = Some((words.clone(), outcome.around));
            }
        }
        if state
            .latest
            .as_ref()
            .is_none_or(|l| l.around <= outcome.around)
        {
            state.latest = Some(outcome);
        }
    }
}

/// Looks up until found, an error, or `retry_for` after the first try; `tried` is set once a
/// search has gone through every group (so a caller that cuts this short knows whether
/// "absent" was ever established).
async fn until_found(
    search: &dyn Search,
    logs: &GatewayLogs,
    ids: &[&str],
    around: SystemTime,
    retry_for: Duration,
    backoff: Backoff,
    tried: &AtomicBool,
) -> Result<Option<GatewayWords>, LookupError> {
    let start = Instant::now();
    let mut wait = backoff.first;
    loop {
        if let Some(words) = find(search, logs, ids, around).await? {
            return Ok(Some(words));
        }
        tried.store(true, Ordering::Relaxed);
        let elapsed = start.elapsed();
        if elapsed >= retry_for {
            return Ok(None);
        }
        tokio::time::sleep(wait.min(retry_for - elapsed)).await;
        wait = wait.saturating_mul(2).min(backoff.max);
    }
}

/// One lookup awaited until `deadline` (`hopwatch check`): retried with `backoff` while the
/// record is absent. `Ok(None)` when it was still absent at the deadline; a
/// [`LookupError::Timeout`] when the deadline came before any search completed.
pub async fn look_up(
    search: &dyn Search,
    logs: &GatewayLogs,
    ids: &[&str],
    around: SystemTime,
    deadline: Instant,
    backoff: Backoff,
) -> Result<Option<GatewayWords>, LookupError> {
    let tried = AtomicBool::new(false);
    let retry_for = deadline.saturating_duration_since(Instant::now());
    let attempt = until_found(search, logs, ids, around, retry_for, backoff, &tried);
    match tokio::time::timeout_at(deadline.into(), attempt).await {
        Ok(result) => result,
        Err(_) if tried.load(Ordering::Relaxed) => Ok(None),
        Err(_) => Err(LookupError::Timeout {
            group: logs
                .access_log_group
                .clone()
                .or_else(|| logs.execution_log_group.clone())
                .unwrap_or_default(),
            message: "no search completed before the deadline".to_string(),
        }),
    }
}

impl crate::facts::WordsSource for Lookups {
    fn words(&self, chain: &str) -> Option<GatewayWords> {
        Lookups::words(self, chain).map(|(w, _)| w)
    }

    fn recovered(&self, chain: &str) {
        self.clear_words(chain);
    }
}

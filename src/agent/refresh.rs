//! The discovery refresher, in the style of Prometheus's `discovery/refresh`: one small loop
//! on a ticker with a fixed period (a long walk delays the next tick, it never bursts), a
//! deadline per walk, a duration observed and every call counted; a walk that fails (its
//! deadline passes) sends nothing, and the agent keeps what it runs.
//!
//! What the walks read is kept across them (`discover::Memory`): an API whose stages did not
//! change is not read again, and a fact a walk cannot read is taken from the last walk that
//! read it. The budget spends this agent's share of the account's API Gateway quota.
//!
//! The chains found are merged into the user's config as typed data ([`merge`]): each is
//! checked alone, and one that fails is dropped, logged and counted, never rejecting the
//! user's own file.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, Discovery, Shard};
use crate::discover::{Budget, Clients, Estate, Memory, Options, Rates};
use crate::facts::{ChainFacts, DiscoveryStats};

/// The longest one walk may take: a first walk of a large estate at a few calls per second
/// takes minutes. A walk cut off here sends nothing, but what it read stays in its memory, so
/// the next one goes on from there.
pub const MIN_DEADLINE: Duration = Duration::from_secs(600);

/// Starts walking the region every `discovery.refresh`, as shard `shard` of its group (the
/// API Gateway rate divided among the shards, only the APIs this shard owns read in detail).
/// Each walk's estate arrives on the channel.
pub fn spawn(
    discovery: Discovery,
    shard: Shard,
    stats: Arc<DiscoveryStats>,
) -> (mpsc::Receiver<Arc<Estate>>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(async move {
        let options = Options {
            shard,
            ..Options::from(&discovery)
        };
        let clients =
            Clients::new(options.region.as_deref(), options.endpoint_url.as_deref()).await;
        let budget = Budget::new(
            Rates {
                apigateway: discovery.max_calls_per_second,
                ..Rates::default()
            }
            .share(shard.count),
        );
        let mut memory = Memory::default();
        let mut last: Option<Arc<Estate>> = None;
        let deadline = discovery.refresh.max(MIN_DEADLINE);
        let mut ticker = tokio::time::interval(discovery.refresh);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let started = Instant::now();
            let walked = tokio::time::timeout(
                deadline,
                crate::discover::walk(&clients, &options, &budget, &mut memory),
            )
            .await;
            stats.walked(started.elapsed(), walked.is_ok());
            stats.set_calls(
                budget
                    .counts()
                    .into_iter()
                    .map(|((s, o, r), n)| ((s.as_str(), o, r), n))
                    .collect(),
            );
            let Ok(estate) = walked else {
                tracing::warn!(
                    deadline = ?deadline,
                    "discovery: the walk did not finish in time; the chains stay as they were"
                );
                continue;
            };
            for e in &estate.errors {
                stats.failed(e.service);
            }
            if estate.errors.is_empty() {
                stats.succeeded();
            }
            let estate = Arc::new(carry(last.as_deref(), estate));
            tracing::info!(
                chains = estate.chains.len(),
                errors = estate.errors.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "discovery walked the region"
            );
            last = Some(estate.clone());
            if tx.send(estate).await.is_err() {
                return;
            }
        }
    });
    (rx, task)
}

/// The walk's chains, with those of the last walk it could not see again carried over: a walk
/// with failed calls removes only what a successful answer says is gone (an API no longer
/// listed, a NotFound), never what it could not read.
pub fn carry(last: Option<&Estate>, mut now: Estate) -> Estate {
    let Some(last) = last.filter(|_| !now.errors.is_empty()) else {
        return now;
    };
    for kept in &last.chains {
        let listed = now.apis.iter().any(|(id, _)| *id == kept.api_id);
        match now.chains.iter_mut().find(|c| c.name == kept.name) {
            // Seen again, but its edges could not be judged this time: keep the last ones.
            Some(c) if c.facts.path.is_empty() => c.facts.path = kept.facts.path.clone(),
            Some(_) => {}
            None if listed => now.chains.push(kept.clone()),
            None => {}
        }
    }
    now
}

/// The user's config with the discovered chains added, as typed data: each discovered chain is
/// checked alone (`config::check_chain`, with the user's `[agent]` defaults); one that fails
/// is dropped, logged and counted in `hopwatch_discovery_chains_rejected_total`. A chain the
/// user wrote by the same name wins. Returns the config and the discovered chains' facts.
pub fn merge(
    mut config: Config,
    estate: &Estate,
    stats: Option<&DiscoveryStats>,
) -> (Config, HashMap<String, Arc<ChainFacts>>) {
    let mut facts = HashMap::new();
    for found in &estate.chains {
        if config.chains.iter().any(|c| c.name == found.name) {
            continue;
        }
        // A route the agent may only probe when the user opts in (`[discovery] methods`).
        if let Some(why) = &found.disabled {
            tracing::debug!(chain = %found.name, why = %why, "discovery: a found chain is not run");
            continue;
        }
        let raw = crate::discover::render::raw_chain(found);
        match crate::config::check_chain("discovery", raw, &config.agent) {
            Ok(chain) => {
                facts.insert(found.name.clone(), Arc::new(found.facts.clone()));
                config.chains.push(Arc::new(chain));
            }
            Err(problems) => {
                for p in &problems {
                    tracing::error!(chain = %found.name, problem = %p, "discovery: a found chain is not valid; it is left out");
                }
                if let Some(stats) = stats {
                    stats.rejected();
                }
            }
        }
    }
    (config, facts)
}

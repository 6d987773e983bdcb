//! The record stage: each finished round becomes one [`Observation`] (debounced hop states, the
//! verdict with the broken hop and why, what each target saw and whether that was expected, the
//! health checks), computed once here and handed to every sink. Exporters read these facts;
//! none of them computes one again, so a new fact enters here and reaches all of them.

#[cfg(test)]
pub(crate) mod testing;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Chain;
use crate::diagnose::{ChainTracker, Change, Verdict};
use crate::facts::{ChainFacts, GatewayWords, WordsSource};
use crate::probe::Outcome;
use crate::schedule::Round;
use crate::source::{self, Seen};

/// One round of one chain, judged.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The round as the scheduler made it: the chain, its timing and every probe's result.
    pub round: Round,
    /// State of each hop: debounced by the agent, the raw pass/fail for a one-off round.
    pub up: Vec<bool>,
    /// The chain's verdict on those states.
    pub verdict: Verdict,
    /// Hops whose debounced state changed with this round (empty for a one-off round).
    pub changes: Vec<Change>,
    /// What the target saw through each hop, when it answered as `hopwatch echo`.
    pub seen: Vec<Option<Seen>>,
    /// Per hop, whether `seen` met its `expect_source`/`expect_forwarded`; `None` when
    /// nothing was expected or nothing seen.
    pub source_expected: Vec<Option<bool>>,
    /// Per hop, whether its `health_url` answered 2xx; `None` for hops without one.
    pub health_up: Vec<Option<bool>>,
    /// Health checks that changed state with this round, their first answer included.
    pub health_changes: Vec<HealthChange>,
    /// What AWS says of the chain (discovery): link status, target health. `None` for chains
    /// discovery does not know.
    pub facts: Option<Arc<ChainFacts>>,
    /// What API Gateway logged of a failed gateway request of this failure, when a lookup
    /// found it; the verdict quotes it.
    pub words: Option<GatewayWords>,
}

/// A hop's health check started or stopped passing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChange {
    pub hop: usize,
    /// `None` on the first answer.
    pub from: Option<bool>,
    pub to: bool,
}

impl Observation {
    /// A round judged with the given hop states and verdict; the per-hop facts are read from
    /// the round itself.
    pub fn new(round: Round, up: Vec<bool>, verdict: Verdict, changes: Vec<Change>) -> Self {
        let probed = &round.probed;
        let seen: Vec<Option<Seen>> = probed
            .results
            .iter()
            .map(|r| source::seen(&r.body))
            .collect();
        let source_expected = round
            .chain
            .hops
            .iter()
            .zip(&seen)
            .map(|(hop, seen)| {
                source::expected(
                    seen.as_ref(),
                    &hop.expect_source,
                    &hop.expect_forwarded,
                    &probed.resolved,
                )
            })
            .collect();
        let health_up = probed
            .health
            .iter()
            .map(|h| h.as_ref().map(|h| h.outcome.is_ok()))
            .collect();
        Observation {
            round,
            up,
            verdict,
            changes,
            seen,
            source_expected,
            health_up,
            health_changes: Vec::new(),
            facts: None,
            words: None,
        }
    }

    /// A one-off round judged on its raw results, with no history (`check`, the demo's table).
    pub fn raw(round: Round) -> Self {
        Observation::raw_with(round, None, None)
    }

    /// [`Observation::raw`] with what discovery says of the chain (`check` with `[discovery]`)
    /// and what the gateway logged of the round's request.
    pub fn raw_with(
        round: Round,
        facts: Option<Arc<ChainFacts>>,
        words: Option<GatewayWords>,
    ) -> Self {
        let words = words.filter(|w| applies(w, &round));
        let pass: Vec<bool> = round
            .probed
            .results
            .iter()
            .map(|r| r.outcome.is_ok())
            .collect();
        let verdict = crate::diagnose::judge_with(
            &round.chain,
            &pass,
            &round.probed.results,
            facts.as_deref(),
            words.as_ref(),
        );
        let mut observation = Observation::new(round, pass, verdict, Vec::new());
        observation.facts = facts;
        observation.words = words;
        observation
    }
}

/// Whether the gateway's words on an earlier request speak of this round: its gateway probe
/// failed, with the status the log recorded (a failure that changed is another failure).
fn applies(words: &GatewayWords, round: &Round) -> bool {
    let Some(first) = round.probed.results.first() else {
        return false;
    };
    first.outcome != Outcome::Ok && words.status.is_none_or(|s| first.status == Some(s))
}

/// What the recorder keeps of one configured chain between rounds.
#[derive(Debug)]
struct Tracked {
    /// The configured version; rounds of any other version are dropped.
    chain: Arc<Chain>,
    tracker: ChainTracker,
    /// Last health-check answer per hop.
    health: Vec<Option<bool>>,
}

impl Tracked {
    fn new(chain: Arc<Chain>) -> Self {
        Tracked {
            tracker: ChainTracker::new(&chain),
            health: vec![None; chain.hops.len()],
            chain,
        }
    }
}

/// The state that turns rounds into observations: per configured chain, its debounced hop
/// states and its last health-check answers.
#[derive(Debug, Default)]
pub struct Recorder {
    chains: HashMap<String, Tracked>,
    /// Discovery's facts, by chain name.
    facts: HashMap<String, Arc<ChainFacts>>,
    /// Where the gateway log lookups put what they found, when the agent runs them.
    words: Option<Arc<dyn WordsSource>>,
}

impl Recorder {
    /// A recorder for `chains`.
    pub fn new(chains: &[Arc<Chain>]) -> Self {
        let mut recorder = Recorder::default();
        recorder.set_chains(chains);
        recorder
    }

    /// Makes `chains` the configured ones. A chain kept as it was (the same `Arc`) keeps its
    /// state; a changed one starts over; a removed one is forgotten.
    pub fn set_chains(&mut self, chains: &[Arc<Chain>]) {
        let mut old = std::mem::take(&mut self.chains);
        for chain in chains {
            let tracked = match old.remove(&chain.name) {
                Some(kept) if Arc::ptr_eq(&kept.chain, chain) => kept,
                _ => Tracked::new(chain.clone()),
            };
            self.chains.insert(chain.name.clone(), tracked);
        }
    }

    /// Discovery's facts of every chain it knows, replacing the last ones.
    pub fn set_facts(&mut self, facts: HashMap<String, Arc<ChainFacts>>) {
        self.facts = facts;
    }

    /// Reads the gateway's words from `board` with each round.
    pub fn set_words(&mut self, board: Arc<dyn WordsSource>) {
        self.words = Some(board);
    }

    /// Chains whose state is kept.
    pub fn tracked(&self) -> usize {
        self.chains.len()
    }

    /// Records one round. `None` when its chain is not the configured version of its name: the
    /// last round of a chain a reload removed or replaced, which must not bring its series back.
    pub fn observe(&mut self, round: Round) -> Option<Observation> {
        let tracked = self
            .chains
            .get_mut(&round.chain.name)
            .filter(|t| Arc::ptr_eq(&t.chain, &round.chain))?;
        let facts = self.facts.get(&round.chain.name).cloned();
        let words = match (&self.words, round.probed.results.first()) {
            // A gateway that answers again ends the failure its words spoke of.
            (Some(board), Some(first)) if first.outcome.is_ok() => {
                board.recovered(&round.chain.name);
                None
            }
            (Some(board), _) => board
                .words(&round.chain.name)
                .filter(|w| applies(w, &round)),
            (None, _) => None,
        };
        let (up, verdict, changes) = tracked.tracker.update(
            &round.chain,
            &round.probed.results,
            facts.as_deref(),
            words.as_ref(),
        );
        let mut observation = Observation::new(round, up, verdict, changes);
        observation.facts = facts;
        observation.words = words;
        for (hop, (last, now)) in tracked
            .health
            .iter_mut()
            .zip(&observation.health_up)
            .enumerate()
        {
            let Some(now) = *now else { continue };
            if *last != Some(now) {
                observation.health_changes.push(HealthChange {
                    hop,
                    from: *last,
                    to: now,
                });
                *last = Some(now);
            }
        }
        Some(observation)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{at, chain, result, round};
    use super::*;
    use crate::probe::Outcome;

    #[test]
    fn removed_chains_leave_no_state() {
        let orders = chain();
        let mut recorder = Recorder::new(std::slice::from_ref(&orders));
        let ok = vec![result(Outcome::Ok, 1, at(1.0), ""); 3];
        assert!(recorder
            .observe(round(&orders, at(1.0), ok.clone(), true))
            .is_some());
        assert_eq!(recorder.tracked(), 1);
        recorder.set_chains(&[]);
        assert_eq!(
            recorder.tracked(),
            0,
            "a removed chain's trackers are pruned"
        );
        assert!(
            recorder
                .observe(round(&orders, at(2.0), ok, true))
                .is_none(),
            "the last round of a removed chain is dropped"
        );
    }

    #[test]
    fn a_replaced_chain_starts_over_and_its_old_rounds_are_dropped() {
        let before = chain();
        let mut recorder = Recorder::new(std::slice::from_ref(&before));
        let down = vec![result(Outcome::ConnectTimeout, 1, at(1.0), ""); 3];
        let first = recorder
            .observe(round(&before, at(1.0), down.clone(), true))
            .expect("current");
        assert_eq!(first.up, [false; 3]);
        let after = Arc::new((*before).clone());
        recorder.set_chains(std::slice::from_ref(&after));
        assert!(recorder
            .observe(round(&before, at(2.0), down, true))
            .is_none());
        let ok = vec![result(Outcome::Ok, 1, at(3.0), ""); 3];
        let fresh = recorder
            .observe(round(&after, at(3.0), ok, true))
            .expect("current");
        assert_eq!(
            fresh.up, [true; 3],
            "no debouncing against the old version's states"
        );
    }

    #[test]
    fn health_checks_report_each_change_once() {
        let orders = chain();
        let mut recorder = Recorder::new(std::slice::from_ref(&orders));
        let results = vec![result(Outcome::Ok, 1, at(1.0), ""); 3];
        let mut with_health = |ok: bool, t: f64| {
            let mut r = round(&orders, at(t), results.clone(), true);
            r.probed.health[1] = Some(result(
                if ok {
                    Outcome::Ok
                } else {
                    Outcome::ConnectTimeout
                },
                1,
                at(t),
                "",
            ));
            recorder.observe(r).expect("current").health_changes
        };
        let first = with_health(true, 1.0);
        assert_eq!(
            first,
            [HealthChange {
                hop: 1,
                from: None,
                to: true
            }]
        );
        assert!(with_health(true, 2.0).is_empty());
        assert_eq!(
            with_health(false, 3.0),
            [HealthChange {
                hop: 1,
                from: Some(true),
                to: false
            }]
        );
    }
}

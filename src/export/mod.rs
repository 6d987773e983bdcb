//! Where numbers go. Every exporter is a [`Sink`]: the agent hands each recorded round to all
//! of them, and each owns its own state, batching and failure handling. None can block probing.

pub mod cloudwatch;
pub mod log;
pub mod prometheus;
pub mod server;

use std::sync::Arc;

use crate::config::Chain;
use crate::record::Observation;

/// Something that takes every recorded round.
pub trait Sink: Send + Sync {
    /// One observed round. Called on the recorder's task for every round, so it must return
    /// at once: take a lock, bump counters, hand work to a task of its own.
    fn observe(&self, observation: &Observation);

    /// The configured chains changed (a reload): forget what belongs to chains that are gone.
    /// Called before any round of the new chains is observed.
    fn set_chains(&self, chains: &[Arc<Chain>]) {
        let _ = chains;
    }
}

/// A sink made of a closure (the demo's live table).
pub struct FnSink<F>(pub F);

impl<F: Fn(&Observation) + Send + Sync> Sink for FnSink<F> {
    fn observe(&self, observation: &Observation) {
        (self.0)(observation);
    }
}

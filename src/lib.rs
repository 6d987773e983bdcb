//! hopwatch: watches private API integrations on AWS hop by hop.
//!
//! The stages, in the order data flows through them (see docs/architecture.md):
//! [`config`] → [`schedule`] → [`probe`] → [`diagnose`] / [`record`] → [`export`], with the
//! commands ([`agent`], [`check`], [`demo`], [`cli`]) on top; [`auth`], below the probe, holds
//! the agent's own credentials for hops that authenticate. A module imports only stages before
//! it; `tests/layers.rs` checks that.

pub mod agent;
pub mod auth;
pub mod aws;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod diagnose;
pub mod discover;
pub mod echo;
pub mod ecs;
pub mod export;
pub mod facts;
pub mod gatewaylog;
pub mod probe;
pub mod record;
pub mod schedule;
pub mod source;
pub mod wire;

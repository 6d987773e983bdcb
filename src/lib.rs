pub mod config;
pub mod probe;
pub mod record;
pub mod schedule;
pub mod export;
pub mod agent;

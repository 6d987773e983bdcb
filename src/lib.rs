pub mod config;
pub mod probe;

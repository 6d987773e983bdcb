//! Where numbers go. Each exporter owns its own state; none of them can block probing.

pub mod cloudwatch;
pub mod prometheus;
pub mod server;

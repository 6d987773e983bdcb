//! The names hopwatch publishes under in CloudWatch: metric, dimension and EMF property names.
//! They are a contract with alarms and dashboards, like the Prometheus names. They live with the
//! config because a configured dimension may not take any of them (in an EMF line, dimensions,
//! metrics and properties share the root object); the CloudWatch exporter imports them from here.

/// Metric names in the namespace: a contract with alarms and dashboards, like the Prometheus names.
pub mod names {
    /// Milliseconds of successful probes, as a distribution (percentiles work). `Chain`, `Hop`.
    pub const LATENCY: &str = "Latency";
    /// Probes by outcome class. `Chain`, `Hop`, `Result`.
    pub const PROBES: &str = "Probes";
    /// Failed probes of any class. `Chain`, `Hop`.
    pub const PROBE_FAILURES: &str = "ProbeFailures";
    /// 1 per round the hop was up (debounced), 0 when down. `Chain`, `Hop`.
    pub const HOP_UP: &str = "HopUp";
    /// 1 per round the chain was up. `Chain`.
    pub const CHAIN_UP: &str = "ChainUp";
    /// 1 per round this hop was the one blamed. `Chain`, `Hop`.
    pub const BROKEN_HOP: &str = "BrokenHop";
    /// 1 per round the health-check URL answered 2xx. `Chain`, `Hop`.
    pub const HEALTH_CHECK_UP: &str = "HealthCheckUp";
    /// 1 per round the target saw a source outside `expect_source`/`expect_forwarded`.
    pub const UNEXPECTED_SOURCE: &str = "UnexpectedSource";
    /// Rounds the chain was down with this reason code. `Chain`, `ReasonCode`.
    pub const CHAIN_DOWN_REASON: &str = "ChainDownReason";
}

/// Dimension names hopwatch sets itself.
pub mod dims {
    pub const CHAIN: &str = "Chain";
    pub const HOP: &str = "Hop";
    pub const RESULT: &str = "Result";
    pub const REASON_CODE: &str = "ReasonCode";
    /// The agent's vantage, on every datum with `[cloudwatch] vantage_dimension = true`.
    pub const VANTAGE: &str = "Vantage";
}

/// Searchable properties of a line (not metrics).
pub mod props {
    pub const TRACE_ID: &str = "TraceId";
    pub const LAST_RESULT: &str = "LastResult";
    pub const HTTP_STATUS: &str = "HttpStatus";
    pub const RESULTS: &str = "Results";
    pub const SOURCE_IP: &str = "SourceIp";
    pub const X_FORWARDED_FOR: &str = "XForwardedFor";
    pub const PROXY_PROTOCOL_SOURCE: &str = "ProxyProtocolSource";
    pub const VPC_ENDPOINT_ID: &str = "VpcEndpointId";
    /// Hop lines: the reason code of the period's last round that blamed this hop.
    pub const REASON_CODE: &str = "ReasonCode";
    /// On continuation lines: which one.
    pub const CONTINUES: &str = "Continues";
    /// TLS hops: Unix time of the earliest `notAfter` in the certificate chain last presented.
    pub const TLS_CERTIFICATE_EXPIRY: &str = "TlsCertificateExpiry";
}

/// Root keys of a line that no configured dimension may take.
pub const RESERVED_KEYS: &[&str] = &[
    "_aws",
    names::LATENCY,
    names::PROBES,
    names::PROBE_FAILURES,
    names::HOP_UP,
    names::CHAIN_UP,
    names::BROKEN_HOP,
    names::HEALTH_CHECK_UP,
    names::UNEXPECTED_SOURCE,
    names::CHAIN_DOWN_REASON,
    props::TRACE_ID,
    props::LAST_RESULT,
    props::HTTP_STATUS,
    props::RESULTS,
    props::SOURCE_IP,
    props::X_FORWARDED_FOR,
    props::PROXY_PROTOCOL_SOURCE,
    props::VPC_ENDPOINT_ID,
    props::REASON_CODE,
    props::CONTINUES,
    props::TLS_CERTIFICATE_EXPIRY,
];

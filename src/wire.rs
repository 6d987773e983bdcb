//! The echo's answer on the wire: what `hopwatch echo` writes and the agent reads. Both sides
//! import it from here, so the responder and the reader of its answers cannot drift apart.

use serde::{Deserialize, Serialize};

/// Who the responder is: ECS task metadata when present, else the host name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub hostname: String,
    pub task_arn: Option<String>,
    pub cluster: Option<String>,
    pub availability_zone: Option<String>,
}

/// The JSON body of every answer. The field names are read by the agent (and by people).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EchoReply {
    /// Always "hopwatch-echo": lets the agent tell an echo answer from an application's.
    pub service: String,
    /// The TCP peer: the address the target's security group must allow.
    pub peer: String,
    /// The responder's own address for this connection.
    pub local: String,
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub x_forwarded_proto: Option<String>,
    pub x_forwarded_port: Option<String>,
    pub x_amzn_trace_id: Option<String>,
    /// PROXY protocol headers that preceded the connection's first request, nearest proxy
    /// first; empty when none came (or `--proxy-protocol` is off).
    #[serde(default)]
    pub proxy_protocol: Vec<ProxyReport>,
    /// Artificial delay actually applied before answering, in microseconds.
    pub delay_us: u64,
    pub identity: Identity,
}

/// One PROXY protocol header as the echo reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProxyReport {
    pub version: u8,
    /// `proxy`, or `local` for the proxy's own connections (NLB health checks).
    pub command: String,
    /// The original caller.
    pub src: Option<String>,
    /// The original destination (the address the caller connected to).
    pub dst: Option<String>,
    /// VPC endpoint id (`vpce-…`) from the AWS TLV: which PrivateLink endpoint the caller used.
    pub vpce_id: Option<String>,
}

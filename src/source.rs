//! What a target saw of a probe: its TCP peer, `X-Forwarded-For` and PROXY protocol headers,
//! read from a `hopwatch echo` answer. The address a target's security group must allow is
//! the peer it sees, usually not the caller's (brief §2).

use serde::Serialize;

use crate::echo::EchoReply;

/// The source seen at the target when entering through one hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// The TCP peer's IP (an NLB node, an ALB node, a VPC link ENI, or the agent).
    pub peer: String,
    /// `X-Forwarded-For`, split; the last entry was appended by the nearest ALB.
    pub forwarded_for: Vec<String>,
    /// The first PROXY header that carried a caller (the nearest proxy's).
    pub proxy_protocol: Option<ProxySeen>,
}

/// The caller and endpoint a PROXY protocol header named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxySeen {
    pub src: Option<String>,
    pub dst: Option<String>,
    pub vpce_id: Option<String>,
}

/// Reads a probe's body as an echo answer; `None` when it is not one (an application's own
/// health endpoint, an error page).
pub fn seen(body: &[u8]) -> Option<Seen> {
    let reply: EchoReply = serde_json::from_slice(body).ok()?;
    if reply.service != "hopwatch-echo" {
        return None;
    }
    let peer = reply
        .peer
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or(reply.peer);
    let forwarded_for = reply
        .x_forwarded_for
        .as_deref()
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let proxy_protocol = reply
        .proxy_protocol
        .iter()
        .find(|p| p.command == "proxy")
        .map(|p| ProxySeen {
            src: p.src.clone(),
            dst: p.dst.clone(),
            vpce_id: p.vpce_id.clone(),
        });
    Some(Seen {
        peer,
        forwarded_for,
        proxy_protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_echo_answer_and_nothing_else() {
        let body = br#"{"service":"hopwatch-echo","peer":"10.0.2.17:40312","local":"10.0.3.10:80","method":"GET","path":"/","host":"x","x_forwarded_for":"10.0.0.5, 10.0.1.9","x_forwarded_proto":"http","x_forwarded_port":"80","x_amzn_trace_id":null,"proxy_protocol":[{"version":2,"command":"proxy","src":"10.0.1.25:50000","dst":"10.0.2.9:80","vpce_id":"vpce-0abc"}],"delay_us":0,"identity":{"hostname":"t","task_arn":null,"cluster":null,"availability_zone":null}}"#;
        let seen = seen(body).expect("echo");
        assert_eq!(seen.peer, "10.0.2.17");
        assert_eq!(seen.forwarded_for, ["10.0.0.5", "10.0.1.9"]);
        let pp = seen.proxy_protocol.expect("pp");
        assert_eq!(pp.vpce_id.as_deref(), Some("vpce-0abc"));
        assert_eq!(super::seen(br#"{"status":"ok"}"#), None);
        assert_eq!(super::seen(b"<html>502 Bad Gateway</html>"), None);
    }
}

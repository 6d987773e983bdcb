//! What a target saw of a probe: its TCP peer, `X-Forwarded-For` and PROXY protocol headers,
//! read from a `hopwatch echo` answer. The address a target's security group must allow is
//! the peer it sees, usually not the caller's (brief §2).

use std::net::IpAddr;

use serde::Serialize;

use crate::config::Rule;
use crate::wire::EchoReply;

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

/// `X-Forwarded-For` entries kept, the nearest last: more than any real chain of proxies.
pub const MAX_FORWARDED: usize = 16;
/// Longest text kept of any one value a target reports (an address, a VPC endpoint id).
pub const MAX_FIELD: usize = 64;

/// `s` cut to [`MAX_FIELD`] bytes, on a character boundary. What a target reports ends up in
/// labels, `check` output and EMF lines; a hostile one must not make those large.
fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Reads a probe's body as an echo answer; `None` when it is not one (an application's own
/// health endpoint, an error page, or something claiming to be the echo with a peer that is
/// not an address).
pub fn seen(body: &[u8]) -> Option<Seen> {
    let reply: EchoReply = serde_json::from_slice(body).ok()?;
    if reply.service != "hopwatch-echo" {
        return None;
    }
    let peer = match reply.peer.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip(),
        Err(_) => reply.peer.parse::<std::net::IpAddr>().ok()?,
    }
    .to_string();
    let mut forwarded_for: Vec<String> = reply
        .x_forwarded_for
        .as_deref()
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(bounded)
                .collect()
        })
        .unwrap_or_default();
    if forwarded_for.len() > MAX_FORWARDED {
        forwarded_for.drain(..forwarded_for.len() - MAX_FORWARDED);
    }
    let proxy_protocol = reply
        .proxy_protocol
        .iter()
        .find(|p| p.command == "proxy")
        .map(|p| ProxySeen {
            src: p.src.as_deref().map(bounded),
            dst: p.dst.as_deref().map(bounded),
            vpce_id: p.vpce_id.as_deref().map(bounded),
        });
    Some(Seen {
        peer,
        forwarded_for,
        proxy_protocol,
    })
}

/// The address of one `X-Forwarded-For` entry: `10.0.0.5`, `2001:db8::1`, and, when the ALB's
/// `routing.http.xff_client_port.enabled` is on, `10.0.0.5:41234` or `[2001:db8::1]:41234`
/// (docs.aws.amazon.com/elasticloadbalancing/latest/application/x-forwarded-headers.html).
pub fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|v6| v6.parse().ok())
}

/// Whether `ip` satisfies any of `rules`; `resolved[i]` holds hop `i`'s addresses this round.
/// `None` when a rule could not be evaluated (a named hop did not resolve).
pub fn allowed(ip: IpAddr, rules: &[Rule], resolved: &[Option<Vec<IpAddr>>]) -> Option<bool> {
    let mut unknown = false;
    for rule in rules {
        match rule {
            Rule::Cidr(c) if c.contains(ip) => return Some(true),
            Rule::Cidr(_) => {}
            Rule::Hop(i) => match resolved.get(*i).and_then(Option::as_ref) {
                Some(addrs) if addrs.contains(&ip) => return Some(true),
                Some(_) => {}
                None => unknown = true,
            },
        }
    }
    if unknown {
        None
    } else {
        Some(false)
    }
}

/// Compares what the target saw through a hop with what that hop expects: `None` when nothing
/// is expected or nothing was seen, else whether every expectation held.
pub fn expected(
    seen: Option<&Seen>,
    expect_source: &[Rule],
    expect_forwarded: &[Rule],
    resolved: &[Option<Vec<IpAddr>>],
) -> Option<bool> {
    let seen = seen?;
    if expect_source.is_empty() && expect_forwarded.is_empty() {
        return None;
    }
    let mut verdict = Some(true);
    let mut fold = |check: Option<bool>| {
        verdict = match (verdict, check) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        };
    };
    if !expect_source.is_empty() {
        fold(
            seen.peer
                .parse()
                .ok()
                .map_or(Some(false), |ip| allowed(ip, expect_source, resolved)),
        );
    }
    if !expect_forwarded.is_empty() {
        let last = seen.forwarded_for.last().and_then(|v| forwarded_ip(v));
        fold(last.map_or(Some(false), |ip| allowed(ip, expect_forwarded, resolved)));
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;

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

    #[test]
    fn expectations() {
        let seen = Seen {
            peer: "10.0.2.17".into(),
            forwarded_for: vec!["10.0.0.5".into(), "10.0.1.9".into()],
            proxy_protocol: None,
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let resolved = vec![
            None,
            Some(vec![ip("10.0.1.9"), ip("10.0.1.10")]),
            Some(vec![ip("10.0.2.17")]),
        ];
        let by_hop = |i| vec![Rule::Hop(i)];
        assert_eq!(
            expected(Some(&seen), &by_hop(2), &by_hop(1), &resolved),
            Some(true)
        );
        assert_eq!(
            expected(Some(&seen), &by_hop(1), &[], &resolved),
            Some(false),
            "peer is no NLB node"
        );
        assert_eq!(
            expected(Some(&seen), &by_hop(0), &[], &resolved),
            None,
            "hop 0 did not resolve"
        );
        let wide = vec![Rule::Cidr(Cidr::parse("10.0.0.0/16").expect("cidr"))];
        assert_eq!(expected(Some(&seen), &wide, &[], &resolved), Some(true));
        assert_eq!(
            expected(Some(&seen), &[], &[], &resolved),
            None,
            "nothing expected"
        );
        assert_eq!(expected(None, &wide, &[], &resolved), None, "nothing seen");
        let direct = Seen {
            forwarded_for: vec![],
            ..seen.clone()
        };
        assert_eq!(
            expected(Some(&direct), &[], &by_hop(1), &resolved),
            Some(false),
            "no XFF where one was expected"
        );
    }

    #[test]
    fn forwarded_entries_with_and_without_a_port() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(forwarded_ip("10.0.0.5"), ip("10.0.0.5"));
        assert_eq!(forwarded_ip(" 10.0.0.5:41234"), ip("10.0.0.5"));
        assert_eq!(forwarded_ip("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(forwarded_ip("[2001:db8::1]:41234"), ip("2001:db8::1"));
        assert_eq!(forwarded_ip("[2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(forwarded_ip("unknown"), None);
        assert_eq!(forwarded_ip("10.0.0.5:99999"), None);
        // An `ip:port` entry meets the expectation its address meets.
        let seen = Seen {
            peer: "10.0.2.17".into(),
            forwarded_for: vec!["10.0.1.9:50123".into()],
            proxy_protocol: None,
        };
        let resolved = vec![None, Some(vec!["10.0.1.9".parse().expect("ip")])];
        assert_eq!(
            expected(Some(&seen), &[], &[Rule::Hop(1)], &resolved),
            Some(true)
        );
    }

    #[test]
    fn what_a_target_reports_is_bounded() {
        let long = "9".repeat(10_000);
        let xff: Vec<String> = (0..100).map(|i| format!("10.0.0.{i}")).collect();
        let body = format!(
            r#"{{"service":"hopwatch-echo","peer":"10.0.2.17:40312","local":"x","method":"GET","path":"/","host":null,"x_forwarded_for":"{}, {long}","x_forwarded_proto":null,"x_forwarded_port":null,"x_amzn_trace_id":null,"proxy_protocol":[{{"version":2,"command":"proxy","src":"{long}","dst":null,"vpce_id":"{long}"}}],"delay_us":0,"identity":{{"hostname":"t","task_arn":null,"cluster":null,"availability_zone":null}}}}"#,
            xff.join(", ")
        );
        let seen = seen(body.as_bytes()).expect("an echo answer");
        assert_eq!(seen.forwarded_for.len(), MAX_FORWARDED);
        assert_eq!(seen.forwarded_for.last().map(String::len), Some(MAX_FIELD));
        assert_eq!(
            seen.forwarded_for[0], "10.0.0.85",
            "the nearest entries are kept"
        );
        let pp = seen.proxy_protocol.expect("proxy header");
        assert_eq!(pp.src.map(|s| s.len()), Some(MAX_FIELD));
        assert_eq!(pp.vpce_id.map(|s| s.len()), Some(MAX_FIELD));
        // A peer that is not an address is not an echo answer: no label is made of it.
        let fake = body.replace("10.0.2.17:40312", &long);
        assert!(super::seen(fake.as_bytes()).is_none());
    }
}

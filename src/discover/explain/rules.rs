//! Security groups and network ACLs as EC2 describes them, and how they judge one flow.
//!
//! The semantics, from AWS's documentation:
//! - Security groups are stateful and allow-only: a flow passes when one rule of one of the
//!   destination's groups allows it inbound (and, where the source has groups, one of the
//!   source's allows it outbound); the answer needs no rule. A rule names a protocol (`-1` is
//!   every protocol), a port range and a source: CIDRs, or another security group, which then
//!   means "any interface that has that group". (docs.aws.amazon.com/vpc/latest/userguide/
//!   security-group-rules.html)
//! - Network ACLs are stateless and ordered: for each direction, the entry with the lowest
//!   number that matches decides, allow or deny; the final `*` entry (32767) denies. The
//!   answer travels back on the client's ephemeral port, so the return direction needs its own
//!   allow, on 1024–65535. (docs.aws.amazon.com/vpc/latest/userguide/vpc-network-acls.html,
//!   …/nacl-ephemeral-ports.html)

use std::net::IpAddr;

use crate::config::Cidr;

pub use super::super::model::net::{Nacl, NaclEntry, Permission, SecurityGroup};

impl Permission {
    /// Whether the rule covers TCP to `port`.
    fn covers_tcp(&self, port: u16) -> bool {
        let tcp = matches!(self.protocol.as_str(), "-1" | "tcp" | "6");
        tcp && self
            .ports
            .is_none_or(|(from, to)| from <= port && port <= to)
    }

    /// The rule as a person reads it: `tcp 80 from sg-0abc` / `all traffic from 10.0.0.0/16`.
    pub fn describe(&self, toward: &str) -> String {
        let what = match (self.protocol.as_str(), self.ports) {
            ("-1", _) => "all traffic".to_string(),
            (p, Some((a, b))) if a == b => format!("{} {a}", proto_name(p)),
            (p, Some((a, b))) => format!("{} {a}-{b}", proto_name(p)),
            (p, None) => proto_name(p).to_string(),
        };
        let mut peers: Vec<String> = self.groups.clone();
        peers.extend(self.cidrs.iter().map(ToString::to_string));
        format!("{what} {toward} {}", peers.join(", "))
    }
}

fn proto_name(p: &str) -> &str {
    match p {
        "6" => "tcp",
        "17" => "udp",
        other => other,
    }
}

/// What sends or receives a flow: its addresses (single hosts or, where the hosts are not
/// known, the subnets they live in) and its security groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Party {
    pub addresses: Vec<Cidr>,
    pub groups: Vec<String>,
}

/// Where a rule allowing a flow was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowing {
    /// The group holding the rule.
    pub group: String,
    /// The group's name.
    pub name: String,
    /// The rule, as a person reads it.
    pub rule: String,
}

/// The rules of `groups` (the destination's, inbound) that allow TCP `port` from `source`,
/// or `None`. Addresses may be allowed by several rules together; a security group reference
/// allows all of them at once.
pub fn ingress(groups: &[&SecurityGroup], source: &Party, port: u16) -> Option<Vec<Allowing>> {
    allow(groups, source, port, false)
}

/// The rules of `groups` (the source's, outbound) that allow TCP `port` to `dest`, or `None`.
pub fn egress(groups: &[&SecurityGroup], dest: &Party, port: u16) -> Option<Vec<Allowing>> {
    allow(groups, dest, port, true)
}

fn allow(
    groups: &[&SecurityGroup],
    peer: &Party,
    port: u16,
    outbound: bool,
) -> Option<Vec<Allowing>> {
    let toward = if outbound { "to" } else { "from" };
    let rules = || {
        groups.iter().flat_map(move |g| {
            let list = if outbound { &g.egress } else { &g.ingress };
            list.iter()
                .filter(move |p| p.covers_tcp(port))
                .map(move |p| (*g, p))
        })
    };
    // A reference to one of the peer's groups covers every address it has.
    if let Some((g, p)) = rules().find(|(_, p)| p.groups.iter().any(|r| peer.groups.contains(r))) {
        return Some(vec![Allowing {
            group: g.id.clone(),
            name: g.name.clone(),
            rule: p.describe(toward),
        }]);
    }
    if peer.addresses.is_empty() {
        return None;
    }
    let mut found: Vec<Allowing> = Vec::new();
    for addr in &peer.addresses {
        let (g, p) = rules().find(|(_, p)| p.cidrs.iter().any(|c| covers(c, addr)))?;
        let allowing = Allowing {
            group: g.id.clone(),
            name: g.name.clone(),
            rule: p.describe(toward),
        };
        if !found.contains(&allowing) {
            found.push(allowing);
        }
    }
    Some(found)
}

/// Whether network `outer` contains all of network `inner`.
pub fn covers(outer: &Cidr, inner: &Cidr) -> bool {
    outer.prefix() <= inner.prefix() && outer.contains(inner.addr())
}

/// How a NACL judges TCP between the subnet and `peer` on `ports`, in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NaclVerdict {
    /// Allowed by this entry.
    Allowed(u32),
    /// Denied by this entry (`None`: no entry matched, the implicit final deny).
    Denied(Option<u32>),
}

impl Nacl {
    /// The entry that decides TCP with every address of `peer`, on every port of `ports`, in
    /// the direction `egress`. A range is allowed only when each of its parts is: the first
    /// entry that denies any part decides.
    pub fn judge(&self, egress: bool, peer: &[Cidr], ports: (u16, u16)) -> NaclVerdict {
        self.judge_with(egress, peer, ports, true)
    }

    /// [`Nacl::judge`] for an answer's ephemeral ports: a deny of a few ports inside the range
    /// (a service port denied inbound, say) breaks one connection in thousands, not the flow,
    /// so only a deny of the whole range still open decides.
    pub fn judge_answers(&self, egress: bool, peer: &[Cidr], ports: (u16, u16)) -> NaclVerdict {
        self.judge_with(egress, peer, ports, false)
    }

    fn judge_with(
        &self,
        egress: bool,
        peer: &[Cidr],
        ports: (u16, u16),
        partial_denies: bool,
    ) -> NaclVerdict {
        let mut entries: Vec<&NaclEntry> =
            self.entries.iter().filter(|e| e.egress == egress).collect();
        entries.sort_by_key(|e| e.number);
        let mut allowed_by = None;
        for addr in peer {
            // Walk the ordered entries; an entry decides for the part of the flow it matches.
            let mut open = vec![ports];
            for e in &entries {
                if !matches!(e.protocol.as_str(), "-1" | "6" | "tcp") {
                    continue;
                }
                if !overlaps(&e.cidr, addr) {
                    continue;
                }
                let (from, to) = e.ports.unwrap_or((0, u16::MAX));
                let mut rest = Vec::new();
                for (a, b) in open {
                    if b < from || a > to {
                        rest.push((a, b));
                        continue;
                    }
                    // Part of the range is decided here.
                    if !e.allow || !covers(&e.cidr, addr) {
                        // A deny, or an allow for only part of the peer's addresses: the
                        // rest of them fall through to later entries; a deny decides now
                        // (for answers, only one that takes the whole open range).
                        let whole = from <= a && b <= to && covers(&e.cidr, addr);
                        if !e.allow && (partial_denies || whole) {
                            return NaclVerdict::Denied(Some(e.number));
                        }
                        rest.push((a, b));
                        continue;
                    }
                    allowed_by.get_or_insert(e.number);
                    if a < from {
                        rest.push((a, from - 1));
                    }
                    if b > to {
                        rest.push((to + 1, b));
                    }
                }
                open = rest;
                if open.is_empty() {
                    break;
                }
            }
            if !open.is_empty() {
                return NaclVerdict::Denied(None);
            }
        }
        allowed_by.map_or(NaclVerdict::Denied(None), NaclVerdict::Allowed)
    }
}

/// Whether two networks share an address.
fn overlaps(a: &Cidr, b: &Cidr) -> bool {
    covers(a, b) || covers(b, a)
}

/// An address as a one-host network.
pub fn host(ip: IpAddr) -> Cidr {
    Cidr::host(ip)
}

/// The ephemeral ports an answer returns on, as AWS advises NACLs to allow them.
pub const EPHEMERAL: (u16, u16) = (1024, 65535);

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("cidr")
    }

    fn rule(ports: (u16, u16), cidrs: &[&str], groups: &[&str]) -> Permission {
        Permission {
            protocol: "tcp".into(),
            ports: Some(ports),
            cidrs: cidrs.iter().map(|c| cidr(c)).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            prefix_lists: Vec::new(),
        }
    }

    fn sg(id: &str, ingress: Vec<Permission>, egress: Vec<Permission>) -> SecurityGroup {
        SecurityGroup {
            id: id.into(),
            name: format!("{id}-name"),
            ingress,
            egress,
        }
    }

    #[test]
    fn a_reference_or_covering_cidrs_allow_and_nothing_else() {
        let alb = sg(
            "sg-alb",
            vec![
                rule((80, 80), &["10.0.0.0/16"], &[]),
                rule((8080, 8080), &["10.0.1.0/24"], &[]),
            ],
            vec![rule((80, 80), &[], &["sg-target"])],
        );
        let nlb = Party {
            addresses: vec![cidr("10.0.1.10/32"), cidr("10.0.2.10/32")],
            groups: vec![],
        };
        let got = ingress(&[&alb], &nlb, 80).expect("80 from the VPC CIDR");
        assert_eq!(got[0].rule, "tcp 80 from 10.0.0.0/16");
        // 8080 covers only one of the two NLB nodes.
        assert_eq!(ingress(&[&alb], &nlb, 8080), None);
        assert_eq!(ingress(&[&alb], &nlb, 443), None);
        let target = Party {
            addresses: vec![cidr("10.0.3.5/32")],
            groups: vec!["sg-target".into()],
        };
        assert!(egress(&[&alb], &target, 80).is_some());
        assert_eq!(egress(&[&alb], &target, 8080), None);
        // All traffic allows any port.
        let open = sg(
            "sg-open",
            vec![Permission {
                protocol: "-1".into(),
                ports: None,
                cidrs: vec![cidr("0.0.0.0/0")],
                groups: vec![],
                prefix_lists: Vec::new(),
            }],
            vec![],
        );
        assert_eq!(
            ingress(&[&open], &nlb, 9999).expect("open")[0].rule,
            "all traffic from 0.0.0.0/0"
        );
    }

    #[test]
    fn a_nacl_decides_by_its_lowest_matching_entry() {
        let nacl = Nacl {
            id: "acl-1".into(),
            subnets: vec!["subnet-a".into()],
            entries: vec![
                NaclEntry {
                    number: 90,
                    protocol: "6".into(),
                    allow: false,
                    egress: false,
                    cidr: cidr("10.0.1.0/24"),
                    ports: Some((8080, 8080)),
                },
                NaclEntry {
                    number: 100,
                    protocol: "-1".into(),
                    allow: true,
                    egress: false,
                    cidr: cidr("0.0.0.0/0"),
                    ports: None,
                },
                NaclEntry {
                    number: 100,
                    protocol: "-1".into(),
                    allow: true,
                    egress: true,
                    cidr: cidr("10.0.0.0/16"),
                    ports: None,
                },
            ],
        };
        let from_a = [cidr("10.0.1.10/32")];
        assert_eq!(
            nacl.judge(false, &from_a, (8080, 8080)),
            NaclVerdict::Denied(Some(90))
        );
        assert_eq!(
            nacl.judge(false, &from_a, (80, 80)),
            NaclVerdict::Allowed(100)
        );
        assert_eq!(
            nacl.judge(false, &[cidr("10.0.2.10/32")], (8080, 8080)),
            NaclVerdict::Allowed(100)
        );
        // Egress to outside the VPC: no entry matches, the implicit deny.
        assert_eq!(
            nacl.judge(true, &[cidr("192.168.0.1/32")], EPHEMERAL),
            NaclVerdict::Denied(None)
        );
        assert_eq!(
            nacl.judge(true, &from_a, EPHEMERAL),
            NaclVerdict::Allowed(100)
        );
        // Answers from the first subnet come back on ephemeral ports, 8080 among them: the
        // deny of that one port decides for a strict flow, not for answers.
        assert_eq!(
            nacl.judge(false, &from_a, EPHEMERAL),
            NaclVerdict::Denied(Some(90))
        );
        assert_eq!(
            nacl.judge_answers(false, &from_a, EPHEMERAL),
            NaclVerdict::Allowed(100)
        );
    }
}

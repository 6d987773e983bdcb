//! `hopwatch explain`: every edge of a chain's path, every port on it, judged against the
//! security groups and network ACLs EC2 holds, with the source the destination really sees.
//!
//! Who sends what, from AWS's documentation (see the brief, section 2):
//! - Over a VPC link v1 (PrivateLink) the NLB's targets see the NLB's private addresses:
//!   client IP preservation never applies to PrivateLink traffic. An NLB with security groups
//!   applies their inbound rules to that traffic unless
//!   `EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic` is off; the endpoint's addresses
//!   are API Gateway's, not the account's (elasticloadbalancing/latest/network/
//!   load-balancer-security-groups.html).
//! - A VPC link v2 sends from its network interfaces in its subnets, with its security groups
//!   (apigateway/latest/developerguide/http-api-vpc-links.html).
//! - An NLB with client IP preservation on (the default for instance targets) hands its targets
//!   the client's address; otherwise its own. An ALB always sends from its own addresses, with
//!   its security groups. Health checks always come from the load balancer's own addresses, on
//!   the health-check port (network/target-group-health-checks.html).
//! - An NLB's nodes are the interfaces described `ELB net/NAME/ID`; where none can be read, its
//!   subnets' ranges stand in, said as such.

pub mod render;
pub mod rules;

use serde::Serialize;

use super::model::net::Network;
use super::model::{Entry, FoundChain, NetLb, NetMember, NetPath};
use crate::config::{Cidr, Kind};
use crate::facts::{Direction, EdgeState, EdgeVerdict, Purpose};
use rules::{Nacl, NaclVerdict, Party, SecurityGroup, EPHEMERAL};

/// What `explain` prints: `{"chains": [{"name", "kind", "edges": [...]}]}`.
#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    pub chains: Vec<ChainExplained>,
}

impl Explained {
    /// Every edge allowed.
    pub fn all_allowed(&self) -> bool {
        self.chains
            .iter()
            .all(|c| c.edges.iter().all(|e| e.allowed))
    }

    /// Some edge is missing a rule or denied by a NACL.
    pub fn blocked(&self) -> bool {
        self.chains
            .iter()
            .any(|c| c.edges.iter().any(|e| e.state.blocks()))
    }

    /// Some edge could not be judged: what it needs was not read.
    pub fn unknown(&self) -> bool {
        self.chains
            .iter()
            .any(|c| c.edges.iter().any(|e| e.state == EdgeState::Unknown))
    }
}

/// One chain's edges.
#[derive(Debug, Clone, Serialize)]
pub struct ChainExplained {
    pub name: String,
    pub kind: Kind,
    pub edges: Vec<EdgeVerdict>,
    /// What could not be judged, and stand-ins used (a load balancer whose interfaces could
    /// not be read).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A sender or receiver, for the rules and for people.
#[derive(Clone)]
struct Side {
    party: Party,
    /// In words: "the NLB orders-nlb's addresses 10.0.1.10, 10.0.2.10".
    desc: String,
    subnets: Vec<String>,
    /// Objects whose reading this side depends on (its interface, its subnets): when one was
    /// not read, what a check of this side would say is unknown.
    depends: Vec<String>,
}

/// Judges every edge of `chain` against `net`.
pub fn judge(chain: &FoundChain, net: &Network) -> ChainExplained {
    let mut out = ChainExplained {
        name: chain.name.clone(),
        kind: chain.kind,
        edges: Vec::new(),
        notes: Vec::new(),
    };
    let path = &chain.net;
    let link = link_side(path, net);
    // The VPC link into the first load balancer, or into the Cloud Map instances.
    match (&path.entry, path.lbs.first()) {
        (Entry::V1, Some(nlb)) => privatelink(&mut out, nlb, net),
        (Entry::V2 { .. }, Some(first)) => {
            if let Some(link) = &link {
                let dest = lb_side(first, net, &mut out.notes);
                flow(
                    &mut out,
                    net,
                    Flow {
                        from: "gateway",
                        to: &first.hop,
                        port: first.listener_port,
                        purpose: Purpose::Traffic,
                        source: link,
                        sender: true,
                        dest: &dest,
                    },
                );
            }
        }
        (Entry::V2 { .. }, None) => {
            if let (Some(link), Some(targets)) = (&link, &path.targets) {
                for m in &targets.members {
                    let dest = member_side(m, net);
                    flow(
                        &mut out,
                        net,
                        Flow {
                            from: "gateway",
                            to: &targets.hop,
                            port: m.port,
                            purpose: Purpose::Traffic,
                            source: link,
                            sender: true,
                            dest: &dest,
                        },
                    );
                }
            }
        }
        (Entry::Unknown, _) => out
            .notes
            .push("the VPC link could not be read: the gateway's edge is not judged".into()),
        (Entry::V1, None) => {}
    }
    // Each load balancer into what its target group holds.
    for (i, lb) in path.lbs.iter().enumerate() {
        let Some(tg) = &lb.tg else { continue };
        let own = lb_side(lb, net, &mut out.notes);
        // The client's address reaches the targets only through an NLB that preserves it, and
        // never over PrivateLink.
        // A target rule that references the NLB's security group admits the NLB's traffic
        // "even if you enable client IP preservation" (docs.aws.amazon.com/
        // elasticloadbalancing/latest/network/load-balancer-security-groups.html): the
        // client's packets count as coming from the NLB's groups too.
        let client: Option<Side> = (lb.network && tg.preserve_client_ip && i == 0)
            .then_some(())
            .and(link.as_ref())
            .filter(|_| matches!(path.entry, Entry::V2 { .. }))
            .map(|c| {
                let mut c = c.clone();
                c.party.groups.extend(lb.security_groups.iter().cloned());
                c
            });
        let dests: Vec<(String, Side, u16)> = if tg.target_type == "alb" {
            match path.lbs.get(i + 1) {
                Some(alb) => vec![(alb.hop.clone(), lb_side(alb, net, &mut out.notes), tg.port)],
                None => Vec::new(),
            }
        } else {
            path.targets
                .iter()
                .flat_map(|t| {
                    t.members
                        .iter()
                        .map(|m| (t.hop.clone(), member_side(m, net), m.port))
                })
                .collect()
        };
        for (to, dest, port) in &dests {
            let (source, sender) = match &client {
                Some(c) => (c, false),
                None => (&own, true),
            };
            flow(
                &mut out,
                net,
                Flow {
                    from: &lb.hop,
                    to,
                    port: *port,
                    purpose: Purpose::Traffic,
                    source,
                    sender,
                    dest,
                },
            );
            flow(
                &mut out,
                net,
                Flow {
                    from: &lb.hop,
                    to,
                    port: tg.health_port,
                    purpose: Purpose::HealthCheck,
                    source: &own,
                    sender: true,
                    dest,
                },
            );
        }
    }
    let mut seen = Vec::new();
    out.edges.retain(|e| {
        let keep = !seen.contains(e);
        if keep {
            seen.push(e.clone());
        }
        keep
    });
    out.notes.sort();
    out.notes.dedup();
    out
}

/// A VPC link v1 into its NLB: only the NLB's own security groups can stop it. Which addresses
/// the VPC endpoint sends from is API Gateway's and not documented, so only a rule open to every
/// address (0.0.0.0/0) is read as admitting it: an inference, not AWS's word.
fn privatelink(out: &mut ChainExplained, nlb: &NetLb, net: &Network) {
    if nlb.security_groups.is_empty() || !nlb.enforce_privatelink {
        return;
    }
    let anyone = Party {
        addresses: Cidr::parse("0.0.0.0/0").into_iter().collect(),
        groups: Vec::new(),
    };
    let judged = judge_groups(
        net,
        &nlb.security_groups,
        &anyone,
        nlb.listener_port,
        false,
        &[],
    );
    let fix = (judged.state == EdgeState::Missing).then(|| {
        format!(
            "aws elbv2 set-security-groups --load-balancer-arn {} --security-groups {} --enforce-security-group-inbound-rules-on-private-link-traffic off",
            nlb.arn,
            nlb.security_groups.join(" ")
        )
    });
    out.edges.push(EdgeVerdict {
        from: "gateway".into(),
        to: nlb.hop.clone(),
        port: nlb.listener_port,
        purpose: Purpose::Traffic,
        direction: Direction::Ingress,
        source: "API Gateway over PrivateLink (the VPC endpoint's addresses are AWS's and not documented: only a rule open to 0.0.0.0/0 is read as admitting them, an inference)".into(),
        state: judged.state,
        allowed: judged.state == EdgeState::Allowed,
        rule: judged.rule,
        fix,
        unknown: judged.unknown,
        stale: judged.stale,
    });
}

/// What a check of security groups found.
struct Judged {
    state: EdgeState,
    rule: Option<String>,
    unknown: Option<String>,
    stale: Option<String>,
}

/// Judges the rules of `groups` (inbound, or outbound with `outbound`) for `peer` on `port`.
/// Allowed as soon as one rule that was read allows it: security groups only add. Otherwise
/// unknown when a group, a prefix list its rules name, or anything in `depends` (the peer's
/// interface and subnets) was not read; missing only when everything was.
fn judge_groups(
    net: &Network,
    groups: &[String],
    peer: &Party,
    port: u16,
    outbound: bool,
    depends: &[String],
) -> Judged {
    let read = groups_of(groups, net);
    let allowing = if outbound {
        rules::egress(&read, peer, port)
    } else {
        rules::ingress(&read, peer, port)
    };
    let lists = read
        .iter()
        .flat_map(|g| if outbound { &g.egress } else { &g.ingress })
        .flat_map(|p| p.prefix_lists.iter().cloned());
    let needed: Vec<String> = groups
        .iter()
        .cloned()
        .chain(lists)
        .chain(depends.iter().cloned())
        .collect();
    let stale = stale_of(net, &needed);
    match allowing {
        Some(a) => Judged {
            state: EdgeState::Allowed,
            rule: Some(describe(&a)),
            unknown: None,
            stale,
        },
        None => match unread_of(net, &needed) {
            Some(why) => Judged {
                state: EdgeState::Unknown,
                rule: None,
                unknown: Some(why),
                stale,
            },
            None => Judged {
                state: EdgeState::Missing,
                rule: None,
                unknown: None,
                stale,
            },
        },
    }
}

/// What of `ids` could not be read and why, in one sentence; `None` when all were.
fn unread_of(net: &Network, ids: &[String]) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    for id in ids {
        if let Some(why) = net.unread(id) {
            let what = format!("{} ({why})", id.trim_start_matches("nacl:"));
            if !seen.contains(&what) {
                seen.push(what);
            }
        }
    }
    (!seen.is_empty()).then(|| format!("could not be read: {}", seen.join("; ")))
}

/// Which of `ids` were judged on an earlier walk's reading, and how old it is.
fn stale_of(net: &Network, ids: &[String]) -> Option<String> {
    let now = std::time::SystemTime::now();
    let mut seen: Vec<String> = Vec::new();
    for id in ids {
        if let Some((at, why)) = net.stale.get(id) {
            let age = now.duration_since(*at).unwrap_or_default();
            let what = format!(
                "{} as read {} ago (not now: {why})",
                id.trim_start_matches("nacl:"),
                crate::config::duration::format_duration(std::time::Duration::from_secs(
                    age.as_secs()
                ))
            );
            if !seen.contains(&what) {
                seen.push(what);
            }
        }
    }
    (!seen.is_empty()).then(|| seen.join("; "))
}

fn groups_of<'a>(ids: &[String], net: &'a Network) -> Vec<&'a SecurityGroup> {
    ids.iter().filter_map(|id| net.groups.get(id)).collect()
}

fn describe(allowing: &[rules::Allowing]) -> String {
    allowing
        .iter()
        .map(|a| format!("{} ({}): {}", a.group, a.name, a.rule))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The VPC link v2's interfaces: its subnets' ranges (API Gateway does not say which addresses
/// in them it took) and its security groups.
fn link_side(path: &NetPath, net: &Network) -> Option<Side> {
    let Entry::V2 {
        id,
        subnets,
        security_groups,
    } = &path.entry
    else {
        return None;
    };
    let cidrs: Vec<Cidr> = subnets
        .iter()
        .filter_map(|s| net.subnets.get(s).map(|s| s.cidr))
        .collect();
    Some(Side {
        desc: format!(
            "the VPC link {id}'s interfaces (subnets {}) with {}",
            list(&cidrs),
            if security_groups.is_empty() {
                "no security group".to_string()
            } else {
                security_groups.join(", ")
            }
        ),
        party: Party {
            addresses: cidrs,
            groups: security_groups.clone(),
        },
        subnets: subnets.clone(),
        depends: subnets.clone(),
    })
}

/// A load balancer's nodes: their addresses from its interfaces, else its subnets' ranges.
fn lb_side(lb: &NetLb, net: &Network, notes: &mut Vec<String>) -> Side {
    let what = if lb.network { "NLB" } else { "ALB" };
    let (addresses, how) = match net.lb_addresses.get(&lb.arn).filter(|a| !a.is_empty()) {
        Some(ips) => (
            ips.iter().map(|ip| Cidr::host(*ip)).collect::<Vec<_>>(),
            "addresses".to_string(),
        ),
        None => {
            notes.push(format!(
                "the {what} {}'s network interfaces could not be read: its subnets' ranges stand in for its addresses",
                lb.name
            ));
            (
                lb.subnets
                    .iter()
                    .filter_map(|s| net.subnets.get(s).map(|s| s.cidr))
                    .collect(),
                "subnets".to_string(),
            )
        }
    };
    let groups = if lb.security_groups.is_empty() {
        String::new()
    } else {
        format!(" with {}", lb.security_groups.join(", "))
    };
    Side {
        desc: format!(
            "the {what} {}'s {how} {}{groups}",
            lb.name,
            list(&addresses)
        ),
        party: Party {
            addresses,
            groups: lb.security_groups.clone(),
        },
        subnets: lb.subnets.clone(),
        depends: lb.subnets.clone(),
    }
}

fn member_side(m: &NetMember, net: &Network) -> Side {
    let host = net
        .hosts
        .get(&m.id)
        .or_else(|| m.ip.as_ref().and_then(|ip| net.hosts.get(ip)));
    let ip = host
        .and_then(|h| h.ip)
        .or_else(|| m.ip.as_ref().and_then(|ip| ip.parse().ok()));
    let subnet = host.and_then(|h| h.subnet.clone()).or_else(|| {
        ip.and_then(|ip| net.subnet_holding(ip))
            .map(|s| s.id.clone())
    });
    Side {
        desc: match ip {
            Some(ip) if ip.to_string() != m.id => format!("{} ({ip})", m.id),
            _ => m.id.clone(),
        },
        party: Party {
            addresses: ip.map(Cidr::host).into_iter().collect(),
            groups: host.map(|h| h.groups.clone()).unwrap_or_default(),
        },
        // Its groups and subnet come from its interface: not read, they are unknown.
        depends: std::iter::once(m.id.clone())
            .chain(m.ip.clone())
            .chain(subnet.clone())
            .collect(),
        subnets: subnet.into_iter().collect(),
    }
}

fn list(cidrs: &[Cidr]) -> String {
    if cidrs.is_empty() {
        return "(unknown)".to_string();
    }
    cidrs
        .iter()
        .map(|c| {
            if c.prefix() == 32 || c.prefix() == 128 {
                c.addr().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One flow to judge.
struct Flow<'a> {
    from: &'a str,
    to: &'a str,
    port: u16,
    purpose: Purpose,
    source: &'a Side,
    /// The source sends the packets itself (its outbound rules apply); false when an NLB
    /// forwards a client's packets with the client's address.
    sender: bool,
    dest: &'a Side,
}

fn flow(out: &mut ChainExplained, net: &Network, f: Flow<'_>) {
    let base = |direction, j: Judged, fix| EdgeVerdict {
        from: f.from.to_string(),
        to: f.to.to_string(),
        port: f.port,
        purpose: f.purpose,
        direction,
        source: f.source.desc.clone(),
        state: j.state,
        allowed: j.state == EdgeState::Allowed,
        rule: j.rule,
        fix,
        unknown: j.unknown,
        stale: j.stale,
    };
    // The destination's security groups, inbound (an NLB without any has none to check).
    if !f.dest.party.groups.is_empty() {
        let j = judge_groups(
            net,
            &f.dest.party.groups,
            &f.source.party,
            f.port,
            false,
            &f.source.depends,
        );
        let fix = (j.state == EdgeState::Missing)
            .then(|| ingress_fix(&f.dest.party.groups[0], &f.source.party, f.port));
        out.edges.push(base(Direction::Ingress, j, fix));
    }
    // The source's security groups, outbound.
    if f.sender && !f.source.party.groups.is_empty() {
        let j = judge_groups(
            net,
            &f.source.party.groups,
            &f.dest.party,
            f.port,
            true,
            &f.dest.depends,
        );
        let fix = (j.state == EdgeState::Missing)
            .then(|| egress_fix(&f.source.party.groups[0], &f.dest.party, f.port));
        out.edges.push(base(Direction::Egress, j, fix));
    }
    // The network ACLs, both subnets, both ways.
    if let Some(verdict) = nacls(net, &f) {
        let needed: Vec<String> = f
            .dest
            .subnets
            .iter()
            .chain(f.source.subnets.iter().filter(|_| f.sender))
            .flat_map(|s| [s.clone(), format!("nacl:{s}")])
            .collect();
        let row = base(
            Direction::Nacl,
            Judged {
                state: EdgeState::Allowed,
                rule: None,
                unknown: None,
                stale: stale_of(net, &needed),
            },
            None,
        );
        out.edges.push(verdict_row(row, verdict));
    }
}

/// A NACL check's outcome: the entries that allowed each part, the first that did not, or
/// what could not be read (a NACL denies in order, so one not read leaves the flow unknown).
enum NaclOutcome {
    Allowed(Vec<String>),
    Denied { rule: String, fix: String },
    Unknown(String),
}

fn verdict_row(mut row: EdgeVerdict, outcome: NaclOutcome) -> EdgeVerdict {
    match outcome {
        NaclOutcome::Allowed(entries) => {
            row.rule = Some(entries.join("; "));
        }
        NaclOutcome::Denied { rule, fix } => {
            row.state = EdgeState::Denied;
            row.allowed = false;
            row.rule = Some(rule);
            row.fix = Some(fix);
        }
        NaclOutcome::Unknown(why) => {
            row.state = EdgeState::Unknown;
            row.allowed = false;
            row.unknown = Some(why);
        }
    }
    row
}

/// The four NACL checks of a flow between subnets: out of the source's, into the
/// destination's, and the answer back on the ephemeral ports. `None` when no NACL applies (the
/// same subnet) or none was read.
fn nacls(net: &Network, f: &Flow<'_>) -> Option<NaclOutcome> {
    // Traffic inside one subnet meets no NACL: each side's NACL is asked only about the peers
    // outside its subnet.
    let outside = |subnet: &str, peers: &[Cidr]| -> Vec<Cidr> {
        match net.subnets.get(subnet) {
            Some(s) => peers
                .iter()
                .filter(|p| !rules::covers(&s.cidr, p))
                .copied()
                .collect(),
            None => peers.to_vec(),
        }
    };
    let port = (f.port, f.port);
    let mut allowed: Vec<(String, u32)> = Vec::new();
    let mut asked = false;
    let mut check = |nacl: &Nacl, subnet: &str, egress: bool, peer: &[Cidr], ports: (u16, u16)| {
        let what = format!(
            "{} ({subnet}) {} tcp {} {} {}",
            nacl.id,
            if egress { "outbound" } else { "inbound" },
            if ports == EPHEMERAL {
                "1024-65535".to_string()
            } else {
                ports.0.to_string()
            },
            if egress { "to" } else { "from" },
            list(peer)
        );
        let verdict = if ports == EPHEMERAL {
            nacl.judge_answers(egress, peer, ports)
        } else {
            nacl.judge(egress, peer, ports)
        };
        match verdict {
            NaclVerdict::Allowed(n) => {
                if !allowed.contains(&(nacl.id.clone(), n)) {
                    allowed.push((nacl.id.clone(), n));
                }
                Ok(())
            }
            NaclVerdict::Denied(n) => Err(NaclOutcome::Denied {
                rule: match n {
                    Some(n) => format!("{what}: denied by entry {n}"),
                    None => format!("{what}: no entry allows it (the final deny)"),
                },
                fix: nacl_fix(nacl, n, egress, peer, ports),
            }),
        }
    };
    // A subnet, or the NACL guarding it, that could not be read.
    let mut unread: Vec<String> = Vec::new();
    let mut note_unread = |subnet: &str| {
        for id in [subnet.to_string(), format!("nacl:{subnet}")] {
            if net.unread(&id).is_some() && !unread.contains(&id) {
                unread.push(id);
            }
        }
    };
    for subnet in f
        .dest
        .subnets
        .iter()
        .chain(f.source.subnets.iter().filter(|_| f.sender))
    {
        note_unread(subnet);
    }
    let mut run = || -> Result<(), NaclOutcome> {
        for subnet in &f.dest.subnets {
            let peers = outside(subnet, &f.source.party.addresses);
            if let (false, Some(nacl)) = (peers.is_empty(), net.nacl_of(subnet)) {
                asked = true;
                check(nacl, subnet, false, &peers, port)?;
                check(nacl, subnet, true, &peers, EPHEMERAL)?;
            }
        }
        // Where the packets really leave from: the sender's own subnets.
        if f.sender {
            for subnet in &f.source.subnets {
                let peers = outside(subnet, &f.dest.party.addresses);
                if let (false, Some(nacl)) = (peers.is_empty(), net.nacl_of(subnet)) {
                    asked = true;
                    check(nacl, subnet, true, &peers, port)?;
                    check(nacl, subnet, false, &peers, EPHEMERAL)?;
                }
            }
        }
        Ok(())
    };
    let outcome = run();
    match outcome {
        Ok(()) if !unread.is_empty() => Some(NaclOutcome::Unknown(
            unread_of(net, &unread).unwrap_or_default(),
        )),
        Ok(()) if !asked => None,
        Ok(()) => {
            // One line whatever the peers: the NACLs and the entries that let it through.
            let mut by_acl: Vec<(String, Vec<u32>)> = Vec::new();
            for (acl, n) in allowed {
                match by_acl.iter_mut().find(|(a, _)| *a == acl) {
                    Some((_, ns)) => ns.push(n),
                    None => by_acl.push((acl, vec![n])),
                }
            }
            Some(NaclOutcome::Allowed(
                by_acl
                    .into_iter()
                    .map(|(acl, mut ns)| {
                        ns.sort_unstable();
                        ns.dedup();
                        let ns: Vec<String> = ns.iter().map(u32::to_string).collect();
                        format!(
                            "{acl}: {} {} (in and out, answers on 1024-65535 too)",
                            if ns.len() == 1 { "entry" } else { "entries" },
                            ns.join(", ")
                        )
                    })
                    .collect(),
            ))
        }
        Err(denied) => Some(denied),
    }
}

/// `aws ec2 authorize-security-group-ingress` for the destination's group: the source's
/// group when it has one, else its addresses.
fn ingress_fix(group: &str, source: &Party, port: u16) -> String {
    match source.groups.first() {
        Some(g) => format!(
            "aws ec2 authorize-security-group-ingress --group-id {group} --protocol tcp --port {port} --source-group {g}"
        ),
        None => source
            .addresses
            .iter()
            .map(|c| {
                format!(
                    "aws ec2 authorize-security-group-ingress --group-id {group} --protocol tcp --port {port} --cidr {c}"
                )
            })
            .collect::<Vec<_>>()
            .join(" && "),
    }
}

/// `aws ec2 authorize-security-group-egress` for the source's group (it takes IP permissions
/// only).
fn egress_fix(group: &str, dest: &Party, port: u16) -> String {
    let peer = match dest.groups.first() {
        Some(g) => format!("UserIdGroupPairs=[{{GroupId={g}}}]"),
        None => format!(
            "IpRanges=[{}]",
            dest.addresses
                .iter()
                .map(|c| format!("{{CidrIp={c}}}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    format!(
        "aws ec2 authorize-security-group-egress --group-id {group} --ip-permissions 'IpProtocol=tcp,FromPort={port},ToPort={port},{peer}'"
    )
}

/// An allow entry numbered below the one that denies (or a free number when no entry
/// matched), for each peer range.
fn nacl_fix(
    nacl: &Nacl,
    denied_by: Option<u32>,
    egress: bool,
    peer: &[Cidr],
    ports: (u16, u16),
) -> String {
    let used: Vec<u32> = nacl
        .entries
        .iter()
        .filter(|e| e.egress == egress)
        .map(|e| e.number)
        .collect();
    let mut number = denied_by.map_or(100, |n| n.saturating_sub(1).max(1));
    while used.contains(&number) && number > 1 {
        number -= 1;
    }
    peer.iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "aws ec2 create-network-acl-entry --network-acl-id {} {} --rule-number {} --protocol 6 --port-range From={},To={} --cidr-block {c} --rule-action allow",
                nacl.id,
                if egress { "--egress" } else { "--ingress" },
                number.saturating_sub(i as u32).max(1),
                ports.0,
                ports.1
            )
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;
    use crate::discover::model::net::{Host, Subnet};
    use crate::discover::model::{FoundHop, NetMember, NetTargets, NetTg};
    use rules::Permission;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("cidr")
    }

    fn allow(port: u16, group: &str) -> Permission {
        Permission {
            protocol: "tcp".into(),
            ports: Some((port, port)),
            cidrs: vec![],
            groups: vec![group.into()],
            prefix_lists: Vec::new(),
        }
    }

    /// T5 with client IP preservation on: the targets see the VPC link's interfaces for
    /// traffic (so a rule for httpapi-sg passes), but the NLB's own addresses for health
    /// checks (which that rule does not cover).
    #[test]
    fn a_preserving_nlb_hands_the_targets_the_links_address_but_checks_from_its_own() {
        let chain = FoundChain {
            name: "cart".into(),
            kind: Kind::HttpNlb,
            notes: vec![],
            hops: vec![
                FoundHop::new("gateway", Role::Gateway, "https://x/".into()),
                FoundHop::new("nlb", Role::Nlb, "http://nlb/".into()),
                FoundHop::new("target", Role::Target, "http://10.0.1.30/".into()),
            ],
            facts: Default::default(),
            api_id: "x".into(),
            disabled: None,
            net: NetPath {
                entry: Entry::V2 {
                    id: "vl-1".into(),
                    subnets: vec!["subnet-a".into()],
                    security_groups: vec!["sg-link".into()],
                },
                lbs: vec![NetLb {
                    hop: "nlb".into(),
                    arn: "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/net/nlb/1".into(),
                    name: "nlb".into(),
                    network: true,
                    security_groups: vec![],
                    subnets: vec!["subnet-a".into()],
                    enforce_privatelink: true,
                    listener_port: 80,
                    tg: Some(NetTg {
                        arn: "tg".into(),
                        target_type: "instance".into(),
                        port: 80,
                        health_port: 80,
                        preserve_client_ip: true,
                    }),
                }],
                targets: Some(NetTargets {
                    hop: "target".into(),
                    members: vec![NetMember {
                        id: "i-1".into(),
                        ip: Some("10.0.1.30".into()),
                        port: 80,
                    }],
                }),
            },
        };
        let mut net = Network::default();
        net.subnets.insert(
            "subnet-a".into(),
            Subnet {
                id: "subnet-a".into(),
                cidr: cidr("10.0.1.0/24"),
                vpc: "vpc-1".into(),
            },
        );
        net.hosts.insert(
            "i-1".into(),
            Host {
                ip: "10.0.1.30".parse().ok(),
                subnet: Some("subnet-a".into()),
                groups: vec!["sg-target".into()],
            },
        );
        for (id, ingress, egress) in [
            ("sg-target", vec![allow(80, "sg-link")], vec![]),
            ("sg-link", vec![], vec![allow(80, "sg-nothing")]),
        ] {
            net.groups.insert(
                id.into(),
                SecurityGroup {
                    id: id.into(),
                    name: id.into(),
                    ingress,
                    egress,
                },
            );
        }
        let judged = judge(&chain, &net);
        let find = |from: &str, purpose: Purpose, direction: Direction| {
            judged
                .edges
                .iter()
                .find(|e| e.from == from && e.purpose == purpose && e.direction == direction)
                .unwrap_or_else(|| panic!("{from} {purpose:?} {direction:?}: {judged:#?}"))
        };
        let traffic = find("nlb", Purpose::Traffic, Direction::Ingress);
        assert!(traffic.allowed, "{traffic:?}");
        assert!(traffic.source.contains("VPC link vl-1"), "{traffic:?}");
        let health = find("nlb", Purpose::HealthCheck, Direction::Ingress);
        assert!(!health.allowed, "{health:?}");
        assert!(health.source.contains("NLB nlb"), "{health:?}");
        assert_eq!(
            health.fix.as_deref(),
            Some("aws ec2 authorize-security-group-ingress --group-id sg-target --protocol tcp --port 80 --cidr 10.0.1.0/24")
        );
        // The NLB has no security group: nothing to check going into it, and the link's own
        // outbound rule does not reach it.
        let out = find("gateway", Purpose::Traffic, Direction::Egress);
        assert!(!out.allowed);
        assert!(
            !judged
                .edges
                .iter()
                .any(|e| e.to == "nlb" && e.direction == Direction::Ingress),
            "{judged:#?}"
        );
    }
}

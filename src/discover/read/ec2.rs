//! What EC2 says of the network the chains cross: the security groups of every load balancer,
//! VPC link and target on a path (with the managed prefix lists their rules name), the subnets
//! they live in and those subnets' network ACLs, the load balancers' own addresses (their
//! network interfaces) and the targets' interfaces.
//!
//! Three states for every object: read; absent (a successful answer that does not hold it: it
//! is gone); not read (the call failed). Objects are asked by filter, never by id list: an id
//! list fails the whole call when one id is gone (`InvalidGroup.NotFound`), where a filter
//! answers with what exists. What could not be read this walk is taken from the last walk that
//! read it, with its age ([`NetMemory`]); what no walk read is `unread`, and every edge that
//! depends on it is unknown, never missing.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::SystemTime;

use super::super::call::{from_aws, CallError, Service};
use super::super::ec2::{filter_params, Node};
use super::super::model::aws::{Dated, Vpce};
use super::super::model::net::{Host, Nacl, NaclEntry, Network, Permission, SecurityGroup, Subnet};
use super::super::model::{Entry, NetPath, WalkError};
use super::Reader;
use crate::config::Cidr;

/// EC2 takes at most this many values per filter in one call; more are asked in several.
const PER_CALL: usize = 100;

const EC2: Service = Service::Ec2;

/// The last good reading of every network object, kept across walks.
#[derive(Debug, Clone, Default)]
pub struct NetMemory {
    pub groups: HashMap<String, Dated<SecurityGroup>>,
    pub subnets: HashMap<String, Dated<Subnet>>,
    /// By subnet id: the NACL associated with it.
    pub nacls: HashMap<String, Dated<Nacl>>,
    /// By instance id or address.
    pub hosts: HashMap<String, Dated<Host>>,
    /// By load balancer ARN.
    pub lb_addresses: HashMap<String, Dated<Vec<IpAddr>>>,
    /// By prefix list id: its CIDRs.
    pub prefix_lists: HashMap<String, Dated<Vec<Cidr>>>,
}

impl NetMemory {
    /// Keeps only the objects `used` (the network a walk just judged its paths with) holds:
    /// what a walk read, or took from here because its read failed. What no path needs any
    /// more (a deregistered target's interface, a group no rule or interface names) is never
    /// asked for again, so nothing else would forget it.
    pub fn keep_only(&mut self, used: &Network) {
        self.groups.retain(|id, _| used.groups.contains_key(id));
        self.subnets.retain(|id, _| used.subnets.contains_key(id));
        // Keyed `nacl:SUBNET`, as in `unread` and `stale`.
        self.nacls.retain(|key, _| {
            let subnet = key.strip_prefix("nacl:").unwrap_or(key);
            used.subnets.contains_key(subnet)
                || used
                    .nacls
                    .iter()
                    .any(|n| n.subnets.iter().any(|s| s == subnet))
        });
        self.hosts.retain(|id, _| used.hosts.contains_key(id));
        self.lb_addresses
            .retain(|arn, _| used.lb_addresses.contains_key(arn));
        let lists: BTreeSet<&String> = used
            .groups
            .values()
            .flat_map(|g| g.ingress.iter().chain(&g.egress))
            .flat_map(|p| &p.prefix_lists)
            .collect();
        self.prefix_lists.retain(|id, _| lists.contains(id));
    }
}

/// What the paths need read.
#[derive(Debug, Default)]
struct Wanted {
    groups: BTreeSet<String>,
    subnets: BTreeSet<String>,
    instances: BTreeSet<String>,
    addresses: BTreeSet<String>,
    lbs: Vec<(String, bool)>,
}

/// The `ELB net/NAME/ID` description of a load balancer's interfaces, from its ARN
/// (`…:loadbalancer/net/NAME/ID`). The type comes from the load balancer, not the ARN.
pub fn eni_description(arn: &str, network: bool) -> Option<String> {
    let mut parts = arn.rsplit('/');
    let id = parts.next()?;
    let name = parts.next()?;
    Some(format!(
        "ELB {}/{name}/{id}",
        if network { "net" } else { "app" }
    ))
}

/// Every item of one filtered listing, paged, through the budget.
async fn listing(
    r: &Reader<'_>,
    action: &'static str,
    filter: &str,
    values: &[String],
    list: &str,
) -> Result<Vec<Node>, CallError> {
    let params = filter_params(1, filter, values);
    r.budget
        .paged(EC2, action, |token| {
            let params = params.clone();
            async move {
                r.c.ec2
                    .page(action, &params, list, token)
                    .await
                    .map_err(|e| from_aws(EC2, action, &e))
            }
        })
        .await
}

/// The outcome of one chunk of ids: read (and what came back), or not read and why.
fn settle<T: Clone>(
    ids: &[String],
    read: Result<HashMap<String, T>, CallError>,
    now: SystemTime,
    memory: &mut HashMap<String, Dated<T>>,
    out: &mut HashMap<String, T>,
    net_unread: &mut std::collections::BTreeMap<String, String>,
    net_stale: &mut std::collections::BTreeMap<String, (SystemTime, String)>,
) {
    match read {
        Ok(mut found) => {
            for id in ids {
                match found.remove(id) {
                    Some(v) => {
                        memory.insert(
                            id.clone(),
                            Dated {
                                value: v.clone(),
                                read_at: now,
                            },
                        );
                        out.insert(id.clone(), v);
                    }
                    // Absent from a successful answer: gone, and forgotten.
                    None => {
                        memory.remove(id);
                    }
                }
            }
            // Anything more the answer held (an instance's second interface).
            out.extend(found);
        }
        Err(e) => {
            for id in ids {
                match memory.get(id) {
                    Some(old) => {
                        out.insert(id.clone(), old.value.clone());
                        net_stale.insert(id.clone(), (old.read_at, e.to_string()));
                    }
                    None => {
                        net_unread.insert(id.clone(), e.to_string());
                    }
                }
            }
        }
    }
}

/// Reads the interfaces of targets: instances by id, IP targets and Cloud Map instances by
/// their address, into `net.hosts`. Failed calls are returned.
pub async fn hosts(
    r: &Reader<'_>,
    instances: &[String],
    addresses: &[String],
    memory: &mut NetMemory,
    net: &mut Network,
) -> Vec<WalkError> {
    let now = SystemTime::now();
    let mut errors = Vec::new();
    let missing = |have: &Network, ids: &[String]| -> Vec<String> {
        ids.iter()
            .filter(|id| !have.hosts.contains_key(*id) && !have.unread.contains_key(*id))
            .cloned()
            .collect()
    };
    let ids = missing(net, instances);
    for chunk in ids.chunks(PER_CALL) {
        let read = listing(
            r,
            "DescribeInstances",
            "instance-id",
            chunk,
            "reservationSet",
        )
        .await
        .map(|reservations| {
            reservations
                .iter()
                .flat_map(|res| res.items("instancesSet"))
                .filter_map(|i| Some((i.text("instanceId")?.to_string(), host_of(i))))
                .collect::<HashMap<_, _>>()
        });
        if let Err(e) = &read {
            errors.push(e.noted());
        }
        settle(
            chunk,
            read,
            now,
            &mut memory.hosts,
            &mut net.hosts,
            &mut net.unread,
            &mut net.stale,
        );
    }
    let ips = missing(net, addresses);
    for chunk in ips.chunks(PER_CALL) {
        let read = listing(
            r,
            "DescribeNetworkInterfaces",
            "addresses.private-ip-address",
            chunk,
            "networkInterfaceSet",
        )
        .await
        .map(|interfaces| {
            let mut found = HashMap::new();
            for eni in &interfaces {
                let host = host_of(eni);
                for ip in eni_addresses(eni) {
                    if chunk.contains(&ip.to_string()) {
                        found.insert(ip.to_string(), host.clone());
                    }
                }
            }
            found
        });
        if let Err(e) = &read {
            errors.push(e.noted());
        }
        settle(
            chunk,
            read,
            now,
            &mut memory.hosts,
            &mut net.hosts,
            &mut net.unread,
            &mut net.stale,
        );
    }
    errors
}

/// Reads what `paths` need from EC2 into `net` (which may hold the targets' interfaces
/// already). Failed calls are returned; what they would have told comes from `memory` where
/// an earlier walk read it, else is `unread`.
pub async fn network(
    r: &Reader<'_>,
    paths: &[&NetPath],
    memory: &mut NetMemory,
    net: &mut Network,
) -> Vec<WalkError> {
    let now = SystemTime::now();
    let mut errors = Vec::new();
    let mut want = Wanted::default();
    for path in paths {
        if let Entry::V2 {
            subnets,
            security_groups,
            ..
        } = &path.entry
        {
            want.subnets.extend(subnets.iter().cloned());
            want.groups.extend(security_groups.iter().cloned());
        }
        for lb in &path.lbs {
            want.subnets.extend(lb.subnets.iter().cloned());
            want.groups.extend(lb.security_groups.iter().cloned());
            if !want.lbs.iter().any(|(a, _)| a == &lb.arn) {
                want.lbs.push((lb.arn.clone(), lb.network));
            }
        }
        for m in path.targets.iter().flat_map(|t| &t.members) {
            if m.id.starts_with("i-") {
                want.instances.insert(m.id.clone());
            } else if let Some(ip) = &m.ip {
                want.addresses.insert(ip.clone());
            }
        }
    }
    let instances: Vec<String> = want.instances.iter().cloned().collect();
    let addresses: Vec<String> = want.addresses.iter().cloned().collect();
    errors.extend(hosts(r, &instances, &addresses, memory, net).await);
    for host in net.hosts.values() {
        want.subnets.extend(host.subnet.clone());
        want.groups.extend(host.groups.iter().cloned());
    }

    // The load balancers' own interfaces: the addresses their nodes send from.
    let descriptions: Vec<(String, String)> = want
        .lbs
        .iter()
        .filter_map(|(arn, network)| Some((eni_description(arn, *network)?, arn.clone())))
        .collect();
    let wanted: Vec<String> = descriptions.iter().map(|(d, _)| d.clone()).collect();
    for chunk in wanted.chunks(PER_CALL) {
        let arns: Vec<String> = descriptions
            .iter()
            .filter(|(d, _)| chunk.contains(d))
            .map(|(_, a)| a.clone())
            .collect();
        let read = listing(
            r,
            "DescribeNetworkInterfaces",
            "description",
            chunk,
            "networkInterfaceSet",
        )
        .await
        .map(|interfaces| {
            let mut found: HashMap<String, Vec<IpAddr>> = HashMap::new();
            for eni in &interfaces {
                let Some(arn) = eni.text("description").and_then(|d| {
                    descriptions
                        .iter()
                        .find(|(want, _)| want == d)
                        .map(|(_, arn)| arn)
                }) else {
                    continue;
                };
                found
                    .entry(arn.clone())
                    .or_default()
                    .extend(eni_addresses(eni));
            }
            found
        });
        if let Err(e) = &read {
            errors.push(e.noted());
        }
        // A load balancer without interfaces in a good answer stands in with its subnets
        // (moto makes none): neither unknown nor remembered.
        match read {
            Ok(found) => {
                for arn in &arns {
                    match found.get(arn) {
                        Some(ips) => {
                            memory.lb_addresses.insert(
                                arn.clone(),
                                Dated {
                                    value: ips.clone(),
                                    read_at: now,
                                },
                            );
                            net.lb_addresses.insert(arn.clone(), ips.clone());
                        }
                        None => {
                            memory.lb_addresses.remove(arn);
                        }
                    }
                }
            }
            Err(e) => {
                for arn in &arns {
                    if let Some(old) = memory.lb_addresses.get(arn) {
                        net.lb_addresses.insert(arn.clone(), old.value.clone());
                        net.stale.insert(arn.clone(), (old.read_at, e.to_string()));
                    }
                }
            }
        }
    }

    let ids: Vec<String> = want.groups.iter().cloned().collect();
    for chunk in ids.chunks(PER_CALL) {
        let read = listing(
            r,
            "DescribeSecurityGroups",
            "group-id",
            chunk,
            "securityGroupInfo",
        )
        .await
        .map(|found| {
            found
                .iter()
                .filter_map(|g| {
                    let id = g.text("groupId")?.to_string();
                    Some((
                        id.clone(),
                        SecurityGroup {
                            id,
                            name: g.text("groupName").unwrap_or("").to_string(),
                            ingress: g.items("ipPermissions").map(permission).collect(),
                            egress: g.items("ipPermissionsEgress").map(permission).collect(),
                        },
                    ))
                })
                .collect::<HashMap<_, _>>()
        });
        if let Err(e) = &read {
            errors.push(e.noted());
        }
        settle(
            chunk,
            read,
            now,
            &mut memory.groups,
            &mut net.groups,
            &mut net.unread,
            &mut net.stale,
        );
    }
    prefix_lists(r, net, memory, now, &mut errors).await;

    let ids: Vec<String> = want.subnets.iter().cloned().collect();
    for chunk in ids.chunks(PER_CALL) {
        let read = listing(r, "DescribeSubnets", "subnet-id", chunk, "subnetSet")
            .await
            .map(|found| {
                found
                    .iter()
                    .filter_map(|s| {
                        let id = s.text("subnetId")?.to_string();
                        let cidr = s.text("cidrBlock").and_then(Cidr::parse)?;
                        Some((
                            id.clone(),
                            Subnet {
                                id,
                                cidr,
                                vpc: s.text("vpcId").unwrap_or("").to_string(),
                            },
                        ))
                    })
                    .collect::<HashMap<_, _>>()
            });
        if let Err(e) = &read {
            errors.push(e.noted());
        }
        settle(
            chunk,
            read,
            now,
            &mut memory.subnets,
            &mut net.subnets,
            &mut net.unread,
            &mut net.stale,
        );

        // The NACL of each subnet, keyed by subnet so that one that could not be read is
        // unknown for exactly the subnets it guards.
        let read = listing(
            r,
            "DescribeNetworkAcls",
            "association.subnet-id",
            chunk,
            "networkAclSet",
        )
        .await
        .map(|found| {
            let mut by_subnet = HashMap::new();
            for acl in &found {
                let Some(id) = acl.text("networkAclId") else {
                    continue;
                };
                let nacl = Nacl {
                    id: id.to_string(),
                    subnets: acl
                        .items("associationSet")
                        .filter_map(|a| a.text("subnetId").map(str::to_string))
                        .collect(),
                    entries: acl.items("entrySet").filter_map(nacl_entry).collect(),
                };
                for s in &nacl.subnets {
                    by_subnet.insert(s.clone(), nacl.clone());
                }
            }
            by_subnet
        });
        if let Err(e) = &read {
            errors.push(e.noted());
        }
        let mut nacls: HashMap<String, Nacl> = HashMap::new();
        // NACLs are keyed `nacl:SUBNET` in `unread` and `stale`, apart from the subnets.
        let keys: Vec<String> = chunk.iter().map(|s| format!("nacl:{s}")).collect();
        let read = read.map(|m| {
            m.into_iter()
                .map(|(k, v)| (format!("nacl:{k}"), v))
                .collect::<HashMap<_, _>>()
        });
        settle(
            &keys,
            read,
            now,
            &mut memory.nacls,
            &mut nacls,
            &mut net.unread,
            &mut net.stale,
        );
        for nacl in nacls.into_values() {
            if !net.nacls.iter().any(|n| n.id == nacl.id) {
                net.nacls.push(nacl);
            }
        }
    }
    errors
}

/// Resolves the managed prefix lists the rules name (`GetManagedPrefixListEntries`, one list
/// per call), into each permission's CIDRs. A list that could not be read stays named and
/// `unread`: what it would allow is unknown.
async fn prefix_lists(
    r: &Reader<'_>,
    net: &mut Network,
    memory: &mut NetMemory,
    now: SystemTime,
    errors: &mut Vec<WalkError>,
) {
    let wanted: BTreeSet<String> = net
        .groups
        .values()
        .flat_map(|g| g.ingress.iter().chain(&g.egress))
        .flat_map(|p| p.prefix_lists.iter().cloned())
        .collect();
    let mut resolved: HashMap<String, Vec<Cidr>> = HashMap::new();
    for id in wanted {
        let params = vec![("PrefixListId".to_string(), id.clone())];
        let read = r
            .budget
            .paged(EC2, "GetManagedPrefixListEntries", |token| {
                let params = params.clone();
                async move {
                    r.c.ec2
                        .page("GetManagedPrefixListEntries", &params, "entrySet", token)
                        .await
                        .map_err(|e| from_aws(EC2, "GetManagedPrefixListEntries", &e))
                }
            })
            .await;
        match read {
            Ok(entries) => {
                let cidrs: Vec<Cidr> = entries
                    .iter()
                    .filter_map(|e| e.text("cidr").and_then(Cidr::parse))
                    .collect();
                memory.prefix_lists.insert(
                    id.clone(),
                    Dated {
                        value: cidrs.clone(),
                        read_at: now,
                    },
                );
                resolved.insert(id, cidrs);
            }
            Err(e) if e.not_found() => {
                memory.prefix_lists.remove(&id);
                resolved.insert(id, Vec::new());
            }
            Err(e) => {
                errors.push(e.noted());
                match memory.prefix_lists.get(&id) {
                    Some(old) => {
                        net.stale.insert(id.clone(), (old.read_at, e.to_string()));
                        resolved.insert(id, old.value.clone());
                    }
                    None => {
                        net.unread.insert(id, e.to_string());
                    }
                }
            }
        }
    }
    for g in net.groups.values_mut() {
        for p in g.ingress.iter_mut().chain(g.egress.iter_mut()) {
            for pl in &p.prefix_lists {
                if let Some(cidrs) = resolved.get(pl) {
                    p.cidrs.extend(cidrs.iter().copied());
                }
            }
        }
    }
}

/// The region's execute-api interface endpoints: how private REST APIs are reached
/// (`DescribeVpcEndpoints`, service `com.amazonaws.REGION.execute-api`;
/// apigateway/latest/developerguide/apigateway-private-api-test-invoke-url.html).
pub async fn vpc_endpoints(r: &Reader<'_>) -> Result<Vec<Vpce>, CallError> {
    let service = vec![format!("com.amazonaws.{}.execute-api", r.c.region)];
    let found = listing(
        r,
        "DescribeVpcEndpoints",
        "service-name",
        &service,
        "vpcEndpointSet",
    )
    .await?;
    Ok(found
        .iter()
        .filter_map(|e| {
            Some(Vpce {
                id: e.text("vpcEndpointId")?.to_string(),
                dns_names: e
                    .items("dnsEntrySet")
                    .filter_map(|d| d.text("dnsName").map(str::to_string))
                    .collect(),
                private_dns: e.text("privateDnsEnabled") == Some("true"),
            })
        })
        .collect())
}

/// An instance's or interface's address, subnet and groups.
fn host_of(node: &Node) -> Host {
    Host {
        ip: node.text("privateIpAddress").and_then(|a| a.parse().ok()),
        subnet: node.text("subnetId").map(str::to_string),
        groups: node
            .items("groupSet")
            .filter_map(|g| g.text("groupId").map(str::to_string))
            .collect(),
    }
}

/// Every private address of an interface (its primary and secondary ones).
fn eni_addresses(eni: &Node) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = eni
        .items("privateIpAddressesSet")
        .filter_map(|a| a.text("privateIpAddress")?.parse().ok())
        .collect();
    if let Some(ip) = eni
        .text("privateIpAddress")
        .and_then(|a| a.parse::<IpAddr>().ok())
    {
        if !out.contains(&ip) {
            out.insert(0, ip);
        }
    }
    out
}

pub(crate) fn permission(p: &Node) -> Permission {
    let port = |name: &str| p.text(name).and_then(|v| v.parse::<i32>().ok());
    let ports = match (port("fromPort"), port("toPort")) {
        (Some(from), Some(to)) if from >= 0 && to >= 0 => Some((
            u16::try_from(from).unwrap_or(0),
            u16::try_from(to).unwrap_or(u16::MAX),
        )),
        _ => None,
    };
    Permission {
        protocol: p.text("ipProtocol").unwrap_or("-1").to_string(),
        ports,
        cidrs: p
            .items("ipRanges")
            .filter_map(|r| r.text("cidrIp").and_then(Cidr::parse))
            .chain(
                p.items("ipv6Ranges")
                    .filter_map(|r| r.text("cidrIpv6").and_then(Cidr::parse)),
            )
            .collect(),
        groups: p
            .items("groups")
            .filter_map(|g| g.text("groupId").map(str::to_string))
            .collect(),
        prefix_lists: p
            .items("prefixListIds")
            .filter_map(|l| l.text("prefixListId").map(str::to_string))
            .collect(),
    }
}

fn nacl_entry(e: &Node) -> Option<NaclEntry> {
    let range = e.child("portRange");
    let port = |name: &str| {
        range
            .and_then(|r| r.text(name))
            .and_then(|v| v.parse::<u16>().ok())
    };
    Some(NaclEntry {
        number: e.text("ruleNumber")?.parse().ok()?,
        protocol: e.text("protocol").unwrap_or("-1").to_string(),
        allow: e.text("ruleAction") == Some("allow"),
        egress: e.text("egress") == Some("true"),
        cidr: e
            .text("cidrBlock")
            .or_else(|| e.text("ipv6CidrBlock"))
            .and_then(Cidr::parse)?,
        ports: match (port("from"), port("to")) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_memory_keeps_only_what_the_last_walk_used() {
        let at = SystemTime::UNIX_EPOCH;
        let dated = |value| Dated { value, read_at: at };
        let group = |id: &str, lists: &[&str]| SecurityGroup {
            id: id.into(),
            name: id.into(),
            ingress: vec![Permission {
                protocol: "tcp".into(),
                ports: Some((80, 80)),
                cidrs: Vec::new(),
                groups: Vec::new(),
                prefix_lists: lists.iter().map(|s| s.to_string()).collect(),
            }],
            egress: Vec::new(),
        };
        let subnet = |id: &str| Subnet {
            id: id.into(),
            cidr: Cidr::parse("10.0.0.0/24").expect("cidr"),
            vpc: "vpc-1".into(),
        };
        let nacl = |subnet: &str| Nacl {
            id: format!("acl-{subnet}"),
            subnets: vec![subnet.into()],
            entries: Vec::new(),
        };
        let mut m = NetMemory::default();
        for id in ["sg-used", "sg-gone"] {
            m.groups.insert(id.into(), dated(group(id, &["pl-used"])));
        }
        for id in ["subnet-used", "subnet-gone"] {
            m.subnets.insert(
                id.into(),
                Dated {
                    value: subnet(id),
                    read_at: at,
                },
            );
            m.nacls.insert(
                format!("nacl:{id}"),
                Dated {
                    value: nacl(id),
                    read_at: at,
                },
            );
        }
        for id in ["i-used", "10.0.0.9"] {
            m.hosts.insert(
                id.into(),
                Dated {
                    value: Host::default(),
                    read_at: at,
                },
            );
        }
        for arn in ["lb-used", "lb-gone"] {
            m.lb_addresses.insert(
                arn.into(),
                Dated {
                    value: Vec::new(),
                    read_at: at,
                },
            );
        }
        for id in ["pl-used", "pl-gone"] {
            m.prefix_lists.insert(
                id.into(),
                Dated {
                    value: Vec::new(),
                    read_at: at,
                },
            );
        }
        let mut used = Network::default();
        used.groups
            .insert("sg-used".into(), group("sg-used", &["pl-used"]));
        used.subnets
            .insert("subnet-used".into(), subnet("subnet-used"));
        used.nacls.push(nacl("subnet-used"));
        used.hosts.insert("i-used".into(), Host::default());
        used.lb_addresses.insert("lb-used".into(), Vec::new());

        m.keep_only(&used);

        let keys = |m: Vec<&String>| -> Vec<String> {
            let mut k: Vec<String> = m.into_iter().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(m.groups.keys().collect()), ["sg-used"]);
        assert_eq!(keys(m.subnets.keys().collect()), ["subnet-used"]);
        assert_eq!(keys(m.nacls.keys().collect()), ["nacl:subnet-used"]);
        assert_eq!(keys(m.hosts.keys().collect()), ["i-used"]);
        assert_eq!(keys(m.lb_addresses.keys().collect()), ["lb-used"]);
        assert_eq!(keys(m.prefix_lists.keys().collect()), ["pl-used"]);
    }

    #[test]
    fn interfaces_are_named_by_type_not_by_arn() {
        // Some tools label every ARN `app`; the type decides.
        assert_eq!(
            eni_description(
                "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/orders-nlb/50dc6c495c0c9188",
                true
            )
            .as_deref(),
            Some("ELB net/orders-nlb/50dc6c495c0c9188")
        );
    }

    #[test]
    fn reads_rules_as_ec2_writes_them() {
        let xml = r#"<DescribeSecurityGroupsResponse><securityGroupInfo><item>
<groupId>sg-alb</groupId><groupName>alb-sg</groupName>
<ipPermissions>
 <item><ipProtocol>tcp</ipProtocol><fromPort>80</fromPort><toPort>80</toPort>
  <groups/><ipRanges><item><cidrIp>10.0.0.0/16</cidrIp></item></ipRanges>
  <prefixListIds><item><prefixListId>pl-0123</prefixListId></item></prefixListIds></item>
</ipPermissions>
<ipPermissionsEgress>
 <item><ipProtocol>-1</ipProtocol><groups><item><groupId>sg-target</groupId><userId>1</userId></item></groups><ipRanges/></item>
</ipPermissionsEgress>
</item></securityGroupInfo></DescribeSecurityGroupsResponse>"#;
        let root = super::super::super::ec2::parse(xml).expect("xml");
        let g = root.items("securityGroupInfo").next().expect("group");
        let ingress: Vec<Permission> = g.items("ipPermissions").map(permission).collect();
        assert_eq!(ingress[0].ports, Some((80, 80)));
        assert_eq!(
            ingress[0].cidrs,
            vec![Cidr::parse("10.0.0.0/16").expect("cidr")]
        );
        assert_eq!(ingress[0].prefix_lists, vec!["pl-0123".to_string()]);
        let egress: Vec<Permission> = g.items("ipPermissionsEgress").map(permission).collect();
        assert_eq!(egress[0].protocol, "-1");
        assert_eq!(egress[0].ports, None);
        assert_eq!(egress[0].groups, vec!["sg-target".to_string()]);
    }

    #[test]
    fn absent_unread_and_stale_are_three_states() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut memory: HashMap<String, Dated<u8>> = HashMap::new();
        let (mut out, mut unread, mut stale) =
            (HashMap::new(), Default::default(), Default::default());
        let ids = vec!["a".to_string(), "b".to_string()];
        settle(
            &ids,
            Ok(HashMap::from([("a".to_string(), 1u8)])),
            t0,
            &mut memory,
            &mut out,
            &mut unread,
            &mut stale,
        );
        assert_eq!(out.get("a"), Some(&1));
        assert!(
            !out.contains_key("b") && unread.is_empty(),
            "b is absent, not unknown"
        );
        let failed = CallError::other(
            Service::Ec2,
            "DescribeSecurityGroups",
            "RequestLimitExceeded".into(),
        );
        let mut out = HashMap::new();
        settle(
            &ids,
            Err(failed),
            t0,
            &mut memory,
            &mut out,
            &mut unread,
            &mut stale,
        );
        assert_eq!(out.get("a"), Some(&1), "the last good reading stands in");
        assert!(stale.contains_key("a"));
        assert!(unread.contains_key("b"), "never read: unknown");
    }
}

//! What EC2 says of the network the chains cross: the security groups of every load balancer,
//! VPC link and target on a path, the subnets they live in and those subnets' network ACLs, and
//! the load balancers' own addresses (their network interfaces). Read-only, paged, bounded.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::ec2::{filter_params, list_params, Ec2, Ec2Error, Node};
use super::explain::rules::{Nacl, NaclEntry, Permission, SecurityGroup};
use super::model::{Entry, NetPath, WalkError};
use crate::config::Cidr;

/// EC2 takes at most this many values per filter or id list in one call; more are asked in
/// several.
const PER_CALL: usize = 100;

/// The network facts of a set of paths.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Network {
    pub groups: HashMap<String, SecurityGroup>,
    pub subnets: HashMap<String, Subnet>,
    pub nacls: Vec<Nacl>,
    /// By load balancer ARN: its nodes' private addresses (the interfaces EC2 describes as
    /// `ELB net/NAME/ID` or `ELB app/NAME/ID`). Absent: none could be read.
    pub lb_addresses: HashMap<String, Vec<IpAddr>>,
    /// By instance id or target address: where a target lives.
    pub hosts: HashMap<String, Host>,
}

/// A subnet: its range and VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub cidr: Cidr,
    pub vpc: String,
}

/// A target's interface: its address, subnet and security groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    pub ip: Option<IpAddr>,
    pub subnet: Option<String>,
    pub groups: Vec<String>,
}

impl Network {
    /// The NACL associated with `subnet`.
    pub fn nacl_of(&self, subnet: &str) -> Option<&Nacl> {
        self.nacls
            .iter()
            .find(|n| n.subnets.iter().any(|s| s == subnet))
    }

    /// The subnet that holds `ip`, among those read.
    pub fn subnet_holding(&self, ip: IpAddr) -> Option<&Subnet> {
        self.subnets.values().find(|s| s.cidr.contains(ip))
    }
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

/// Reads what `paths` need from EC2; failed calls are returned, what they would have told is
/// left out.
pub async fn read(ec2: &Ec2, paths: &[&NetPath]) -> (Network, Vec<WalkError>) {
    let mut net = Network::default();
    let mut errors = Vec::new();
    let mut groups: BTreeSet<String> = BTreeSet::new();
    let mut subnets: BTreeSet<String> = BTreeSet::new();
    let mut instances: BTreeSet<String> = BTreeSet::new();
    let mut addresses: BTreeSet<String> = BTreeSet::new();
    let mut lbs: Vec<(String, bool)> = Vec::new();
    for path in paths {
        if let Entry::V2 {
            subnets: s,
            security_groups: g,
            ..
        } = &path.entry
        {
            subnets.extend(s.iter().cloned());
            groups.extend(g.iter().cloned());
        }
        for lb in &path.lbs {
            subnets.extend(lb.subnets.iter().cloned());
            groups.extend(lb.security_groups.iter().cloned());
            if !lbs.iter().any(|(a, _)| a == &lb.arn) {
                lbs.push((lb.arn.clone(), lb.network));
            }
        }
        for m in path.targets.iter().flat_map(|t| &t.members) {
            if m.id.starts_with("i-") {
                instances.insert(m.id.clone());
            } else if let Some(ip) = &m.ip {
                addresses.insert(ip.clone());
            }
        }
    }

    // Targets: instances by id, IP targets and Cloud Map instances by their interface.
    let ids: Vec<String> = instances.into_iter().collect();
    for chunk in ids.chunks(PER_CALL) {
        match ec2
            .items(
                "DescribeInstances",
                &list_params("InstanceId", chunk),
                "reservationSet",
            )
            .await
        {
            Ok(reservations) => {
                for i in reservations.iter().flat_map(|r| r.items("instancesSet")) {
                    let Some(id) = i.text("instanceId") else {
                        continue;
                    };
                    let host = host_of(i);
                    subnets.extend(host.subnet.clone());
                    groups.extend(host.groups.iter().cloned());
                    net.hosts.insert(id.to_string(), host);
                }
            }
            Err(e) => errors.push(failed("DescribeInstances", &e)),
        }
    }
    let ips: Vec<String> = addresses.into_iter().collect();
    for chunk in ips.chunks(PER_CALL) {
        match ec2
            .items(
                "DescribeNetworkInterfaces",
                &filter_params(1, "addresses.private-ip-address", chunk),
                "networkInterfaceSet",
            )
            .await
        {
            Ok(interfaces) => {
                for eni in &interfaces {
                    let host = host_of(eni);
                    subnets.extend(host.subnet.clone());
                    groups.extend(host.groups.iter().cloned());
                    for ip in eni_addresses(eni) {
                        if chunk.contains(&ip.to_string()) {
                            net.hosts.insert(ip.to_string(), host.clone());
                        }
                    }
                }
            }
            Err(e) => errors.push(failed("DescribeNetworkInterfaces", &e)),
        }
    }

    // The load balancers' own interfaces: the addresses their nodes send from.
    let descriptions: Vec<(String, String)> = lbs
        .iter()
        .filter_map(|(arn, network)| Some((eni_description(arn, *network)?, arn.clone())))
        .collect();
    let wanted: Vec<String> = descriptions.iter().map(|(d, _)| d.clone()).collect();
    for chunk in wanted.chunks(PER_CALL) {
        match ec2
            .items(
                "DescribeNetworkInterfaces",
                &filter_params(1, "description", chunk),
                "networkInterfaceSet",
            )
            .await
        {
            Ok(interfaces) => {
                for eni in &interfaces {
                    let Some(arn) = eni.text("description").and_then(|d| {
                        descriptions
                            .iter()
                            .find(|(want, _)| want == d)
                            .map(|(_, arn)| arn)
                    }) else {
                        continue;
                    };
                    net.lb_addresses
                        .entry(arn.clone())
                        .or_default()
                        .extend(eni_addresses(eni));
                }
            }
            Err(e) => errors.push(failed("DescribeNetworkInterfaces", &e)),
        }
    }

    let ids: Vec<String> = groups.into_iter().collect();
    for chunk in ids.chunks(PER_CALL) {
        match ec2
            .items(
                "DescribeSecurityGroups",
                &list_params("GroupId", chunk),
                "securityGroupInfo",
            )
            .await
        {
            Ok(found) => {
                for g in &found {
                    let Some(id) = g.text("groupId") else {
                        continue;
                    };
                    net.groups.insert(
                        id.to_string(),
                        SecurityGroup {
                            id: id.to_string(),
                            name: g.text("groupName").unwrap_or("").to_string(),
                            ingress: g.items("ipPermissions").map(permission).collect(),
                            egress: g.items("ipPermissionsEgress").map(permission).collect(),
                        },
                    );
                }
            }
            Err(e) => errors.push(failed("DescribeSecurityGroups", &e)),
        }
    }

    let ids: Vec<String> = subnets.into_iter().collect();
    for chunk in ids.chunks(PER_CALL) {
        match ec2
            .items(
                "DescribeSubnets",
                &list_params("SubnetId", chunk),
                "subnetSet",
            )
            .await
        {
            Ok(found) => {
                for s in &found {
                    let (Some(id), Some(cidr)) = (
                        s.text("subnetId"),
                        s.text("cidrBlock").and_then(Cidr::parse),
                    ) else {
                        continue;
                    };
                    net.subnets.insert(
                        id.to_string(),
                        Subnet {
                            id: id.to_string(),
                            cidr,
                            vpc: s.text("vpcId").unwrap_or("").to_string(),
                        },
                    );
                }
            }
            Err(e) => errors.push(failed("DescribeSubnets", &e)),
        }
        match ec2
            .items(
                "DescribeNetworkAcls",
                &filter_params(1, "association.subnet-id", chunk),
                "networkAclSet",
            )
            .await
        {
            Ok(found) => {
                for acl in &found {
                    let Some(id) = acl.text("networkAclId") else {
                        continue;
                    };
                    if net.nacls.iter().any(|n| n.id == id) {
                        continue;
                    }
                    net.nacls.push(Nacl {
                        id: id.to_string(),
                        subnets: acl
                            .items("associationSet")
                            .filter_map(|a| a.text("subnetId").map(str::to_string))
                            .collect(),
                        entries: acl.items("entrySet").filter_map(nacl_entry).collect(),
                    });
                }
            }
            Err(e) => errors.push(failed("DescribeNetworkAcls", &e)),
        }
    }
    (net, errors)
}

fn failed(action: &'static str, err: &Ec2Error) -> WalkError {
    WalkError {
        service: "ec2",
        action,
        message: err.to_string(),
        access_denied: matches!(
            err.code.as_deref(),
            Some("UnauthorizedOperation" | "AccessDenied")
        ),
    }
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

fn permission(p: &Node) -> Permission {
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
  <groups/><ipRanges><item><cidrIp>10.0.0.0/16</cidrIp></item></ipRanges></item>
</ipPermissions>
<ipPermissionsEgress>
 <item><ipProtocol>-1</ipProtocol><groups><item><groupId>sg-target</groupId><userId>1</userId></item></groups><ipRanges/></item>
</ipPermissionsEgress>
</item></securityGroupInfo></DescribeSecurityGroupsResponse>"#;
        let root = super::super::ec2::parse(xml).expect("xml");
        let g = root.items("securityGroupInfo").next().expect("group");
        let ingress: Vec<Permission> = g.items("ipPermissions").map(permission).collect();
        assert_eq!(ingress[0].ports, Some((80, 80)));
        assert_eq!(
            ingress[0].cidrs,
            vec![Cidr::parse("10.0.0.0/16").expect("cidr")]
        );
        let egress: Vec<Permission> = g.items("ipPermissionsEgress").map(permission).collect();
        assert_eq!(egress[0].protocol, "-1");
        assert_eq!(egress[0].ports, None);
        assert_eq!(egress[0].groups, vec!["sg-target".to_string()]);
    }
}

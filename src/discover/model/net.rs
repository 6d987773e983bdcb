//! What EC2 says of the network the chains cross: security groups and their rules, subnets,
//! network ACLs, the load balancers' and targets' interfaces, and what could not be read.
//! `explain/rules.rs` says how these judge a flow.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::SystemTime;

use crate::config::Cidr;

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
    /// Objects (a security group id, a subnet id, a prefix list id, an instance id) this walk
    /// could not read and no earlier walk had read, with why: what depends on them is unknown,
    /// never missing.
    pub unread: BTreeMap<String, String>,
    /// Objects this walk could not read whose earlier reading stands in: when, and why not now.
    pub stale: BTreeMap<String, (SystemTime, String)>,
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

    /// Why `id` could not be read, when it could not.
    pub fn unread(&self, id: &str) -> Option<&str> {
        self.unread.get(id).map(String::as_str)
    }
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

/// A security group and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub ingress: Vec<Permission>,
    pub egress: Vec<Permission>,
}

/// One rule of a security group (EC2's `IpPermission`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// `tcp`, `udp`, `icmp`, a number, or `-1` (every protocol).
    pub protocol: String,
    /// The port range; `None` for every port (`-1` protocols).
    pub ports: Option<(u16, u16)>,
    /// Its CIDRs, those of the managed prefix lists it names included (resolved on read).
    pub cidrs: Vec<Cidr>,
    /// Security groups the rule names as source (ingress) or destination (egress).
    pub groups: Vec<String>,
    /// Managed prefix lists it names (`pl-…`), resolved into `cidrs` where they were read.
    pub prefix_lists: Vec<String>,
}

/// A network ACL and the subnets it is associated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nacl {
    pub id: String,
    pub subnets: Vec<String>,
    pub entries: Vec<NaclEntry>,
}

/// One numbered entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaclEntry {
    pub number: u32,
    /// `6` (tcp), `17`, `-1` (all), …
    pub protocol: String,
    pub allow: bool,
    pub egress: bool,
    pub cidr: Cidr,
    /// `None`: every port.
    pub ports: Option<(u16, u16)>,
}

//! Every piece of plain data discovery has: what each service said (`aws`), the network
//! (`net`), and what a walk of a region made of it: the chains, each hop with the facts behind
//! its settings and the ARN each fact came from. The readers (`read/`) fill the raw facts,
//! `assemble` turns them into chains, `render` into a config; the agent turns them into facts
//! for the diagnosis. Nothing here knows the SDK.

pub mod aws;
pub mod net;
pub mod rules;

use std::time::Duration;

use crate::config::{Kind, ProxyVersion, Role, XffMode};
use crate::facts::ChainFacts;

/// Everything one walk found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estate {
    pub region: String,
    pub chains: Vec<FoundChain>,
    /// Calls that failed; the walk went on without what they would have told.
    pub errors: Vec<WalkError>,
    /// The security groups, subnets and NACLs along the chains' paths.
    pub network: net::Network,
    /// Integrations through a VPC link that were not made into a chain, and why.
    pub unbuilt: Vec<Unbuilt>,
    /// What a user should hear about the estate (a stage without an access log).
    pub warnings: Vec<String>,
    /// The APIs this walk saw listed, by id, and whether their detail was read (`false`: it
    /// could not be read, so their chains are those of the last walk that could).
    pub apis: Vec<(String, bool)>,
}

/// An integration through a VPC link that is not probed: the API, the route and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unbuilt {
    /// `orders (abc123) stage prod`.
    pub api: String,
    /// `POST /orders`.
    pub route: String,
    pub why: String,
}

/// A call the walk could not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkError {
    /// `apigateway`, `apigatewayv2`, `elasticloadbalancing`, `servicediscovery`, `ec2`.
    pub service: &'static str,
    /// The API action (`GetRestApis`), as IAM names it.
    pub action: &'static str,
    /// What went wrong; for AccessDenied, the IAM action to allow.
    pub message: String,
    /// The error was AccessDenied: the policy lacks `service:action`.
    pub access_denied: bool,
}

impl WalkError {
    /// `elasticloadbalancing:DescribeTargetHealth`; API Gateway's reads are all `apigateway:GET`
    /// on the resource's path.
    pub fn iam_action(&self) -> String {
        if self.service == "apigateway" {
            return "apigateway:GET (on arn:aws:apigateway:REGION::/restapis/*, /vpclinks/*, /apis/*)"
                .to_string();
        }
        format!("{}:{}", self.service, self.action)
    }
}

/// One chain: an API stage's route or resource whose integration goes through a VPC link.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundChain {
    /// `orders-prod-items`: the API's name, the stage, the route when the API has several.
    pub name: String,
    pub kind: Kind,
    /// Lines said above the chain: API, stage, route, integration, link.
    pub notes: Vec<String>,
    pub hops: Vec<FoundHop>,
    /// What AWS says of the chain now (link status, target health), for the agent.
    pub facts: ChainFacts,
    /// The API's id (for `[discovery] apis` and the chain's own comment).
    pub api_id: String,
    /// The network path the gateway's traffic takes, for `explain`.
    pub net: NetPath,
    /// Why the chain is written commented out and not run (a route the agent may only probe
    /// when the user opts in); `None`: it runs.
    pub disabled: Option<String>,
}

/// The network path of a chain as the walk read it: what `explain` judges against the
/// security groups and network ACLs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetPath {
    /// How the gateway enters the VPC.
    pub entry: Entry,
    /// The load balancers, outermost first.
    pub lbs: Vec<NetLb>,
    /// What the last load balancer (or the link, for Cloud Map) sends to.
    pub targets: Option<NetTargets>,
}

/// How API Gateway's traffic enters the VPC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Entry {
    /// Not known (the integration could not be read).
    #[default]
    Unknown,
    /// A VPC link v1: PrivateLink into the NLB's endpoint service.
    V1,
    /// A VPC link v2: network interfaces in the link's subnets, with its security groups.
    V2 {
        id: String,
        subnets: Vec<String>,
        security_groups: Vec<String>,
    },
}

/// One load balancer on the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetLb {
    /// Its hop's name.
    pub hop: String,
    pub arn: String,
    pub name: String,
    pub network: bool,
    pub security_groups: Vec<String>,
    pub subnets: Vec<String>,
    /// An NLB with security groups applies their inbound rules to PrivateLink traffic unless
    /// `EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic` is `off`.
    pub enforce_privatelink: bool,
    /// The listener the chain enters by.
    pub listener_port: u16,
    /// The target group that listener forwards to.
    pub tg: Option<NetTg>,
}

/// A target group: its ports and whether the targets see the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetTg {
    pub arn: String,
    /// `instance`, `ip` or `alb`.
    pub target_type: String,
    pub port: u16,
    /// The health check's port (`traffic-port` resolved).
    pub health_port: u16,
    pub preserve_client_ip: bool,
}

/// The targets at the end of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetTargets {
    /// The target hop's name.
    pub hop: String,
    pub members: Vec<NetMember>,
}

/// One target: an instance or an address, and the port it serves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetMember {
    /// The instance id, or the address for IP targets and Cloud Map instances.
    pub id: String,
    /// Its private address, where known.
    pub ip: Option<String>,
    pub port: u16,
}

/// One hop of a found chain.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundHop {
    /// `gateway`, the load balancer's name, `target`.
    pub name: String,
    pub role: Role,
    pub url: String,
    /// Lines said above the hop (what it is, its ARN).
    pub notes: Vec<String>,
    /// The load balancer's health check of this hop's targets, as a URL.
    pub health_url: Option<Setting<String>>,
    pub per_address: bool,
    pub preserve_client_ip: Option<Setting<bool>>,
    pub xff_mode: Option<Setting<XffMode>>,
    pub send_proxy_protocol: Option<Setting<ProxyVersion>>,
    /// Hop names or CIDRs the target must see (written only when the kind's default differs).
    pub expect_source: Option<Setting<Vec<String>>>,
    /// The VPC link generation, on the gateway hop of a `rest-nlb` chain.
    pub vpc_link: Option<Setting<crate::config::VpcLink>>,
    /// Request headers the hop needs: the `Host` the gateway sends its integration, the
    /// `x-apigw-api-id` of a private API reached through its VPC endpoint's own name.
    pub headers: Vec<(String, Setting<String>)>,
    /// The method probed, when not `GET` (a route that takes only `POST`, opted into).
    pub method: Option<Setting<String>>,
    /// The body a non-idempotent route is probed with, and its content type.
    pub body: Option<Setting<(String, String)>>,
    /// Sign probes with SigV4 for this region (an `AWS_IAM` route).
    pub sigv4_region: Option<Setting<String>>,
    /// The TLS server name the integration verifies (the integration URI's host, or an HTTP
    /// API's `tlsConfig.serverNameToVerify`).
    pub tls_server_name: Option<Setting<String>>,
    /// Gateway: how long API Gateway waits for the integration (`timeoutInMillis`).
    pub integration_timeout: Option<Setting<Duration>>,
    /// Gateway: the stage's access log group, its format, and its execution log group.
    pub access_log_group: Option<Setting<String>>,
    pub access_log_format: Option<Setting<String>>,
    pub execution_log_group: Option<Setting<String>>,
    /// Why no header is set here though one is needed (an API key, an authorizer): secrets
    /// are never discovered.
    pub needs: Vec<String>,
}

impl FoundHop {
    /// A hop with nothing set beyond its name, role and URL.
    pub fn new(name: &str, role: Role, url: String) -> Self {
        FoundHop {
            name: name.to_string(),
            role,
            url,
            notes: Vec::new(),
            health_url: None,
            per_address: false,
            preserve_client_ip: None,
            xff_mode: None,
            send_proxy_protocol: None,
            expect_source: None,
            vpc_link: None,
            headers: Vec::new(),
            method: None,
            body: None,
            tls_server_name: None,
            sigv4_region: None,
            integration_timeout: None,
            access_log_group: None,
            access_log_format: None,
            execution_log_group: None,
            needs: Vec::new(),
        }
    }
}

/// A value for the config and the fact it comes from: `preserve_client_ip = true` because
/// `preserve_client_ip.enabled` is missing from an instance target group's attributes, and
/// AWS's default for instance targets is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting<T> {
    pub value: T,
    /// The fact, in a few words, with its source (ARN or attribute).
    pub because: String,
}

impl<T> Setting<T> {
    pub fn new(value: T, because: impl Into<String>) -> Self {
        Setting {
            value,
            because: because.into(),
        }
    }
}

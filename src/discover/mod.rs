//! `hopwatch discover`, and the walk `run` repeats with `[discovery]`: the chains of a region
//! read from the AWS APIs (API Gateway, ELBv2, Cloud Map, EC2), written as a commented config,
//! and their facts (link status, target health, the rules along each path) for the agent.
//!
//! - `read/`: one reader per service, every call through `call`'s budget;
//! - `assemble`: pure, from what the services said to chains;
//! - `walk`: the readers in order, what earlier walks read kept in `Memory`;
//! - `render`: chains as a commented config; `explain`: the rules along each path;
//! - `model`: every piece of plain data the others share.

pub mod assemble;
pub mod call;
pub mod ec2;
pub mod explain;
pub mod model;
pub mod read;
pub mod render;
pub mod walk;

pub use call::{Budget, Rates};
pub use model::{Estate, FoundChain, WalkError};
pub use read::Clients;
pub use walk::{walk, walk_once, Memory, Options};

/// Every call discovery and `cloudmap://` hops make, as IAM names them (API Gateway's reads are
/// all `apigateway:GET`): what deploy/iam/hopwatch-discovery.json allows, and nothing more.
pub const CALLS: &[(&str, &str)] = &[
    ("apigateway", "GetRestApis"),
    ("apigateway", "GetVpcLinks"),
    ("apigateway", "GetStages"),
    ("apigateway", "GetResources"),
    ("apigateway", "GetApis"),
    ("apigateway", "GetRoutes"),
    ("apigateway", "GetIntegrations"),
    ("apigateway", "GetAuthorizer"),
    ("apigateway", "GetExport"),
    ("apigateway", "GetDomainNames"),
    ("apigateway", "GetBasePathMappings"),
    ("apigateway", "GetApiMappings"),
    ("elasticloadbalancing", "DescribeLoadBalancers"),
    ("elasticloadbalancing", "DescribeLoadBalancerAttributes"),
    ("elasticloadbalancing", "DescribeListeners"),
    ("elasticloadbalancing", "DescribeRules"),
    ("elasticloadbalancing", "DescribeTargetGroups"),
    ("elasticloadbalancing", "DescribeTargetGroupAttributes"),
    ("elasticloadbalancing", "DescribeTargetHealth"),
    ("servicediscovery", "GetService"),
    ("servicediscovery", "GetNamespace"),
    ("servicediscovery", "ListInstances"),
    ("servicediscovery", "DiscoverInstances"),
    ("ec2", "DescribeInstances"),
    ("ec2", "DescribeNetworkInterfaces"),
    ("ec2", "DescribeSecurityGroups"),
    ("ec2", "GetManagedPrefixListEntries"),
    ("ec2", "DescribeSubnets"),
    ("ec2", "DescribeNetworkAcls"),
    ("ec2", "DescribeVpcEndpoints"),
];

//! `hopwatch discover`, and the walk `run` repeats with `[discovery]`: the chains of a region
//! read from the AWS APIs (API Gateway, ELBv2, Cloud Map, EC2), written as a commented config,
//! and their facts (link status, target health) for the agent.

pub mod ec2;
pub mod explain;
pub mod model;
pub mod network;
pub mod render;
pub mod walk;

pub use model::{Estate, FoundChain, WalkError};
pub use walk::{walk, Clients, Options};

/// Every call discovery and `cloudmap://` hops make, as IAM names them (API Gateway's reads are
/// all `apigateway:GET`): what deploy/iam/hopwatch-discovery.json allows, and nothing more.
pub const CALLS: &[(&str, &str)] = &[
    ("apigateway", "GetRestApis"),
    ("apigateway", "GetVpcLinks"),
    ("apigateway", "GetStages"),
    ("apigateway", "GetResources"),
    ("apigateway", "GetVpcLink"),
    ("apigateway", "GetApis"),
    ("apigateway", "GetRoutes"),
    ("apigateway", "GetIntegrations"),
    ("elasticloadbalancing", "DescribeLoadBalancers"),
    ("elasticloadbalancing", "DescribeLoadBalancerAttributes"),
    ("elasticloadbalancing", "DescribeListeners"),
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
    ("ec2", "DescribeSubnets"),
    ("ec2", "DescribeNetworkAcls"),
];

//! What each service said, as read: the raw facts the readers (`read/`) fill and the pure
//! `assemble` step turns into chains. Plain data, no SDK type: a fact read at one walk can be
//! kept for the next (when the API did not change) and compared.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::facts::TargetHealth;

/// A REST API (`GetRestApis`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestApi {
    pub id: String,
    pub name: String,
    /// Its endpoint type is `PRIVATE`: reached through an execute-api VPC endpoint.
    pub private: bool,
    /// The VPC endpoints the private API names (`endpointConfiguration.vpcEndpointIds`).
    pub vpc_endpoint_ids: Vec<String>,
    /// `disableExecuteApiEndpoint`: callers use a custom domain.
    pub default_endpoint_disabled: bool,
}

/// An HTTP API (`GetApis`, protocol HTTP).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpApi {
    pub id: String,
    pub name: String,
    /// `apiEndpoint`: `https://{id}.execute-api.{region}.amazonaws.com`.
    pub endpoint: String,
    pub default_endpoint_disabled: bool,
}

/// A stage, REST or HTTP API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    /// The deployment it serves.
    pub deployment_id: Option<String>,
    /// When the stage was last changed (epoch seconds), as API Gateway reports it.
    pub last_updated: Option<i64>,
    /// `accessLogSettings`.
    pub access_log: Option<AccessLog>,
    /// REST: execution logging is on (`methodSettings["*/*"].loggingLevel` INFO or ERROR).
    pub execution_logging: bool,
    /// Stage variables, for `${stageVariables.x}` in integrations.
    pub variables: BTreeMap<String, String>,
}

impl Stage {
    /// What says whether an API changed since a walk: its stages' deployments and update
    /// times. Equal stamps: nothing it serves changed.
    pub fn stamp(stages: &[Stage]) -> Vec<(String, Option<String>, Option<i64>)> {
        let mut out: Vec<_> = stages
            .iter()
            .map(|s| (s.name.clone(), s.deployment_id.clone(), s.last_updated))
            .collect();
        out.sort();
        out
    }
}

/// Where and how a stage writes its access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// `destinationArn`: a CloudWatch Logs group (`arn:aws:logs:…:log-group:NAME`) or a
    /// Firehose stream (`arn:aws:firehose:…`).
    pub destination_arn: String,
    /// The format, with `$context` variables.
    pub format: Option<String>,
}

/// One method of a REST resource whose integration goes through a VPC link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestMethod {
    /// The resource path: `/orders/{id}`, `/{proxy+}`.
    pub path: String,
    /// `GET`, `POST`, `ANY`.
    pub method: String,
    pub uri: Option<String>,
    /// `connectionId`: a VPC link id, or `${stageVariables.x}`.
    pub connection_id: Option<String>,
    /// `integrationTarget` (VPC link v2 into an ALB or NLB): the load balancer's ARN.
    pub integration_target: Option<String>,
    /// `timeoutInMillis`.
    pub timeout_ms: Option<i64>,
    /// `tlsConfig.insecureSkipVerification`.
    pub insecure_skip_verification: bool,
    /// `requestParameters` of the integration.
    pub request_parameters: BTreeMap<String, String>,
    pub api_key_required: bool,
    /// `NONE`, `AWS_IAM`, `CUSTOM`, `COGNITO_USER_POOLS`.
    pub authorization: Option<String>,
    pub authorization_scopes: Vec<String>,
}

/// What one REST API serves, read once per change of its stages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestDetail {
    pub stages: Vec<Stage>,
    /// The working copy's methods (`GetResources`).
    pub methods: Vec<RestMethod>,
    /// By stage: what the stage's deployment serves (`GetExport` with the integrations
    /// extension), where it could be read; a stage absent here is judged on the working copy.
    pub deployed: BTreeMap<String, Vec<RestMethod>>,
}

/// An HTTP API route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRoute {
    /// `GET /orders/{id}`, `ANY /{proxy+}`, `$default`.
    pub key: String,
    /// The integration it targets (`integrations/ID`).
    pub integration_id: Option<String>,
    pub api_key_required: bool,
    /// `NONE`, `AWS_IAM`, `JWT`, `CUSTOM`.
    pub authorization: Option<String>,
    pub authorization_scopes: Vec<String>,
    /// The authorizer of a `JWT` or `CUSTOM` route.
    pub authorizer_id: Option<String>,
}

/// An HTTP API's JWT authorizer (`GetAuthorizers`): who issues the tokens it takes, and for
/// which audiences (for Cognito: the app client ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtAuthorizer {
    pub id: String,
    pub name: String,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
}

/// An HTTP API integration through a VPC link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpIntegration {
    pub id: String,
    /// An ALB or NLB listener ARN, or a Cloud Map service ARN (maybe with a query string).
    pub uri: String,
    pub connection_id: Option<String>,
    pub timeout_ms: Option<i64>,
    /// `tlsConfig.serverNameToVerify`.
    pub server_name: Option<String>,
    /// `requestParameters` (`overwrite:path`, …).
    pub request_parameters: BTreeMap<String, String>,
}

/// What one HTTP API serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpDetail {
    pub stages: Vec<Stage>,
    pub routes: Vec<HttpRoute>,
    pub integrations: Vec<HttpIntegration>,
    /// JWT authorizers, read when a route uses one.
    pub authorizers: Vec<JwtAuthorizer>,
}

/// A VPC link, v1 (PrivateLink to NLBs) or v2 (ENIs in subnets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub id: String,
    pub name: String,
    pub status: String,
    pub message: Option<String>,
    /// v1: the NLBs.
    pub target_arns: Vec<String>,
    /// v2: where its ENIs are, and their groups.
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
}

/// A load balancer (`DescribeLoadBalancers`, its attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lb {
    pub arn: String,
    pub name: String,
    pub dns: String,
    /// From its type, never its ARN: some tools mislabel network ARNs.
    pub network: bool,
    pub security_groups: Vec<String>,
    pub zones: usize,
    pub subnets: Vec<String>,
    /// `EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic`: on unless `off` (AWS's default
    /// for an NLB created with security groups).
    pub enforce_privatelink: bool,
    pub attributes: BTreeMap<String, String>,
}

/// A listener and where it sends requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listener {
    pub arn: String,
    pub lb_arn: String,
    pub port: u16,
    pub tls: bool,
    /// Target groups its default action forwards to.
    pub forward: Vec<String>,
    /// Mutual TLS mode, when not off.
    pub mtls: Option<String>,
}

/// A target group, its attributes and its targets' health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tg {
    pub arn: String,
    pub name: String,
    /// `instance`, `ip`, `alb`, `lambda`.
    pub target_type: String,
    pub port: u16,
    pub tls: bool,
    /// The health check: HTTPS, its port (`traffic-port` or a number), its path.
    pub health: Option<(bool, String, String)>,
    pub attributes: BTreeMap<String, String>,
    /// (id, port, health) of each registered target.
    pub targets: Vec<(String, u16, TargetHealth)>,
}

/// A Cloud Map service an HTTP API integrates with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudMapService {
    pub id: String,
    pub name: String,
    /// The namespace's HTTP name (what `DiscoverInstances` takes).
    pub namespace: String,
    /// `ip:port` of each registered instance.
    pub instances: Vec<String>,
}

/// A custom domain's mapping to an API stage: REST base path mappings, HTTP API mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainMapping {
    pub domain: String,
    /// The base path (REST) or mapping key (HTTP API); empty for `(none)`.
    pub base_path: String,
    pub api_id: String,
    pub stage: String,
}

/// An interface VPC endpoint of `execute-api`: how a private REST API is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vpce {
    pub id: String,
    /// Its own DNS names (`vpce-….execute-api.REGION.vpce.amazonaws.com`).
    pub dns_names: Vec<String>,
    /// Private DNS on: `{api}.execute-api.{region}.amazonaws.com` resolves to it in its VPC.
    pub private_dns: bool,
}

/// A fact with when it was read, for the walks after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dated<T> {
    pub value: T,
    pub read_at: SystemTime,
}

/// The load balancer a listener belongs to, from the listener's ARN:
/// `…:listener/app/NAME/LB-ID/LISTENER-ID` → `…:loadbalancer/app/NAME/LB-ID`
/// (docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-listeners.html:
/// the ARN formats). No call needed.
pub fn lb_of_listener(listener_arn: &str) -> Option<String> {
    let (head, rest) = listener_arn.split_once(":listener/")?;
    let (lb, _listener_id) = rest.rsplit_once('/')?;
    Some(format!("{head}:loadbalancer/{lb}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_names_its_load_balancer() {
        assert_eq!(
            lb_of_listener("arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/orders-alb/50dc6c495c0c9188/f2f7dc8efc522ab2").as_deref(),
            Some("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/orders-alb/50dc6c495c0c9188")
        );
        assert_eq!(
            lb_of_listener("arn:aws:servicediscovery:us-east-1:1:service/srv-1"),
            None
        );
    }
}

//! The walk: read-only calls to API Gateway (REST and HTTP APIs), ELBv2, Cloud Map and EC2,
//! from every API with an integration through a VPC link down to the targets, into an
//! [`Estate`]. A call that fails (AccessDenied, throttling after the SDK's retries) is noted and
//! the walk goes on with the rest.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_apigateway::types::{ConnectionType as RestConnection, EndpointType};
use aws_sdk_apigatewayv2::types::ConnectionType as HttpConnection;
use aws_sdk_elasticloadbalancingv2::types::{LoadBalancerTypeEnum, ProtocolEnum, TargetTypeEnum};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tokio::sync::{Mutex, Semaphore};

use super::model::{
    Entry, Estate, FoundChain, FoundHop, NetLb, NetMember, NetPath, NetTargets, NetTg, Setting,
    WalkError,
};
use crate::config::{Kind, ProxyVersion, Role, VpcLink, XffMode};
use crate::facts::{ChainFacts, LinkFact, LinkStatus, TargetHealth};

/// What to walk.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The AWS region; `None`: the SDK's default chain.
    pub region: Option<String>,
    /// One endpoint for every service (tests, or VPC interface endpoints).
    pub endpoint_url: Option<String>,
    /// Only these API ids; empty: every API with a VPC-link integration.
    pub apis: Vec<String>,
    /// Only these stages; empty: every stage.
    pub stages: Vec<String>,
    /// The path to probe; `None`: the route's own where it has no parameters, else `/`.
    pub path: Option<String>,
}

impl From<&crate::config::Discovery> for Options {
    /// What `[discovery]` asks the walk for.
    fn from(d: &crate::config::Discovery) -> Self {
        Options {
            region: d.region.clone(),
            endpoint_url: d.endpoint_url.clone(),
            apis: d.apis.clone(),
            stages: d.stages.clone(),
            path: d.path.clone(),
        }
    }
}

/// The SDK clients, made once.
#[derive(Clone)]
pub struct Clients {
    pub rest: aws_sdk_apigateway::Client,
    pub http: aws_sdk_apigatewayv2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub cloudmap: aws_sdk_servicediscovery::Client,
    pub ec2: super::ec2::Ec2,
    pub region: String,
}

/// At most this many APIs are walked at once: API Gateway's and ELB's control planes throttle
/// at a few requests per second per account.
const CONCURRENT_APIS: usize = 4;

/// How long one call may take, retries included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Clients {
    /// Clients from the SDK's default chain (env, profile, ECS task role, IMDS) with the
    /// standard retry mode, which backs off on throttling.
    pub async fn new(options: &Options) -> Clients {
        use aws_config::retry::RetryConfig;
        use aws_config::timeout::TimeoutConfig;
        let sdk = crate::aws::loader(options.region.as_deref(), options.endpoint_url.as_deref())
            .retry_config(RetryConfig::standard().with_max_attempts(4))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "unknown-region".to_string());
        let mut cloudmap = aws_sdk_servicediscovery::config::Builder::from(&sdk);
        if options.endpoint_url.is_some() {
            cloudmap = cloudmap.interceptor(crate::probe::cloudmap::AsGiven);
        }
        Clients {
            rest: aws_sdk_apigateway::Client::new(&sdk),
            http: aws_sdk_apigatewayv2::Client::new(&sdk),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
            cloudmap: aws_sdk_servicediscovery::Client::from_conf(cloudmap.build()),
            ec2: super::ec2::Ec2::new(&sdk, &region, options.endpoint_url.as_deref()),
            region,
        }
    }
}

/// A failed EC2 call, as the estate notes it.
fn ec2_failed(action: &'static str, err: &super::ec2::Ec2Error) -> WalkError {
    WalkError {
        service: "ec2",
        action,
        message: err.to_string(),
        access_denied: is_access_denied(err.code.as_deref().unwrap_or("")),
    }
}

/// The error codes AWS answers a call the role may not make with.
fn is_access_denied(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "UnauthorizedException"
    )
}

/// A failed call, as the estate notes it.
fn failed<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    service: &'static str,
    action: &'static str,
    err: &aws_sdk_apigateway::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> WalkError {
    let code = err.code().unwrap_or("");
    let access_denied = is_access_denied(code);
    let message = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_smithy_types::error::display::DisplayErrorContext(err).to_string(),
    };
    WalkError {
        service,
        action,
        message,
        access_denied,
    }
}

/// The next page of an API Gateway v1 listing: its `position`, unless the page came back
/// empty (a position with nothing in it would page forever).
fn rest_position<T>(items: &[T], position: Option<&str>) -> Option<String> {
    position.filter(|_| !items.is_empty()).map(str::to_string)
}

/// One load balancer, as much as the chains need.
#[derive(Debug, Clone)]
struct Lb {
    arn: String,
    name: String,
    dns: String,
    network: bool,
    security_groups: Vec<String>,
    zones: usize,
    subnets: Vec<String>,
    /// `EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic`: `on` unless it says `off`
    /// (AWS's default for an NLB created with security groups).
    enforce_privatelink: bool,
    attributes: HashMap<String, String>,
}

/// One listener: its port, protocol, where its default action forwards, mutual TLS.
#[derive(Debug, Clone)]
struct Listener {
    arn: String,
    lb_arn: String,
    port: u16,
    tls: bool,
    forward: Vec<String>,
    mtls: Option<String>,
}

/// One target group, its attributes and its targets' health.
#[derive(Debug, Clone)]
struct Tg {
    arn: String,
    name: String,
    target_type: String,
    port: u16,
    tls: bool,
    health: Option<(bool, String, String)>,
    attributes: HashMap<String, String>,
    targets: Vec<(String, u16, TargetHealth)>,
}

/// The walk's state: clients, what failed, and what was already read (many chains share a
/// load balancer).
struct Walk {
    c: Clients,
    options: Options,
    errors: Mutex<Vec<WalkError>>,
    lbs: Mutex<Option<BTreeMap<String, Lb>>>,
    listeners: Mutex<HashMap<String, Vec<Listener>>>,
    tgs: Mutex<HashMap<String, Option<Tg>>>,
}

/// One page of a paged call: its items and the token of the next page (`None`: the last).
type Page<T> = (Vec<T>, Option<String>);

impl Walk {
    async fn note(&self, e: WalkError) {
        tracing::warn!(service = e.service, action = e.action, error = %e.message, "discovery: a call failed; going on without it");
        self.errors.lock().await.push(e);
    }

    /// Every item of a paged call: `call` sends the request for one page (`None`: the first)
    /// and gives its items and the next page's token. A failed page is noted and ends the
    /// paging; the items before it are returned with `false` (not the whole list).
    async fn paged<T, E, F, Fut>(
        &self,
        service: &'static str,
        action: &'static str,
        mut call: F,
    ) -> (Vec<T>, bool)
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut(Option<String>) -> Fut,
        Fut: std::future::Future<
            Output = Result<
                Page<T>,
                aws_sdk_apigateway::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
            >,
        >,
    {
        let mut items = Vec::new();
        let mut token = None;
        loop {
            match call(token.take()).await {
                Ok((page, next)) => {
                    items.extend(page);
                    token = next;
                    if token.is_none() {
                        return (items, true);
                    }
                }
                Err(e) => {
                    self.note(failed(service, action, &e)).await;
                    return (items, false);
                }
            }
        }
    }

    /// Every load balancer of the region, by ARN (once per walk).
    async fn load_balancers(&self) -> BTreeMap<String, Lb> {
        let mut cached = self.lbs.lock().await;
        if let Some(lbs) = cached.as_ref() {
            return lbs.clone();
        }
        let (found, complete) = self
            .paged(
                "elasticloadbalancing",
                "DescribeLoadBalancers",
                |marker| async move {
                    let page = self
                        .c
                        .elb
                        .describe_load_balancers()
                        .set_marker(marker)
                        .send()
                        .await?;
                    Ok((
                        page.load_balancers().to_vec(),
                        page.next_marker().map(str::to_string),
                    ))
                },
            )
            .await;
        let mut out = BTreeMap::new();
        for lb in found {
            let Some(arn) = lb.load_balancer_arn() else {
                continue;
            };
            out.insert(
                arn.to_string(),
                Lb {
                    arn: arn.to_string(),
                    name: lb.load_balancer_name().unwrap_or("").to_string(),
                    dns: lb.dns_name().unwrap_or("").to_string(),
                    // The type, never the ARN: some tools mislabel network ARNs.
                    network: lb.r#type() == Some(&LoadBalancerTypeEnum::Network),
                    security_groups: lb.security_groups().to_vec(),
                    zones: lb.availability_zones().len(),
                    subnets: lb
                        .availability_zones()
                        .iter()
                        .filter_map(|z| z.subnet_id().map(str::to_string))
                        .collect(),
                    enforce_privatelink: lb
                        .enforce_security_group_inbound_rules_on_private_link_traffic()
                        != Some("off"),
                    attributes: HashMap::new(),
                },
            );
        }
        if !complete {
            // Not cached: the next chain's lookup asks again.
            return out;
        }
        for lb in out.values_mut() {
            match self
                .c
                .elb
                .describe_load_balancer_attributes()
                .load_balancer_arn(&lb.arn)
                .send()
                .await
            {
                Ok(a) => {
                    lb.attributes = a
                        .attributes()
                        .iter()
                        .filter_map(|kv| Some((kv.key()?.to_string(), kv.value()?.to_string())))
                        .collect()
                }
                Err(e) => {
                    self.errors.lock().await.push(failed(
                        "elasticloadbalancing",
                        "DescribeLoadBalancerAttributes",
                        &e,
                    ));
                }
            }
        }
        *cached = Some(out.clone());
        out
    }

    async fn listeners(&self, lb_arn: &str) -> Vec<Listener> {
        if let Some(known) = self.listeners.lock().await.get(lb_arn) {
            return known.clone();
        }
        let (found, _) = self
            .paged(
                "elasticloadbalancing",
                "DescribeListeners",
                |marker| async move {
                    let page = self
                        .c
                        .elb
                        .describe_listeners()
                        .load_balancer_arn(lb_arn)
                        .set_marker(marker)
                        .send()
                        .await?;
                    Ok((
                        page.listeners().to_vec(),
                        page.next_marker().map(str::to_string),
                    ))
                },
            )
            .await;
        let mut out = Vec::new();
        for l in &found {
            let forward = l
                .default_actions()
                .iter()
                .flat_map(|a| {
                    let direct = a.target_group_arn().map(str::to_string);
                    let weighted = a.forward_config().into_iter().flat_map(|f| {
                        f.target_groups()
                            .iter()
                            .filter_map(|t| t.target_group_arn().map(str::to_string))
                    });
                    direct.into_iter().chain(weighted).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>();
            let mut forward_unique = Vec::new();
            for arn in forward {
                if !forward_unique.contains(&arn) {
                    forward_unique.push(arn);
                }
            }
            out.push(Listener {
                arn: l.listener_arn().unwrap_or("").to_string(),
                lb_arn: lb_arn.to_string(),
                port: l.port().unwrap_or(80).clamp(1, 65535) as u16,
                tls: matches!(l.protocol(), Some(ProtocolEnum::Https | ProtocolEnum::Tls)),
                forward: forward_unique,
                mtls: l
                    .mutual_authentication()
                    .and_then(|m| m.mode())
                    .filter(|m| *m != "off")
                    .map(str::to_string),
            });
        }
        out.sort_by_key(|l| l.port);
        self.listeners
            .lock()
            .await
            .insert(lb_arn.to_string(), out.clone());
        out
    }

    /// A listener by its ARN (what an HTTP API integration names).
    async fn listener(&self, arn: &str) -> Option<Listener> {
        let found = self
            .c
            .elb
            .describe_listeners()
            .listener_arns(arn)
            .send()
            .await;
        match found {
            Ok(out) => {
                let lb_arn = out.listeners().first()?.load_balancer_arn()?.to_string();
                self.listeners(&lb_arn)
                    .await
                    .into_iter()
                    .find(|l| l.arn == arn)
            }
            Err(e) => {
                self.note(failed("elasticloadbalancing", "DescribeListeners", &e))
                    .await;
                None
            }
        }
    }

    async fn target_group(&self, arn: &str) -> Option<Tg> {
        if let Some(known) = self.tgs.lock().await.get(arn) {
            return known.clone();
        }
        let tg = self.read_target_group(arn).await;
        self.tgs.lock().await.insert(arn.to_string(), tg.clone());
        tg
    }

    async fn read_target_group(&self, arn: &str) -> Option<Tg> {
        let described = match self
            .c
            .elb
            .describe_target_groups()
            .target_group_arns(arn)
            .send()
            .await
        {
            Ok(d) => d,
            Err(e) => {
                self.note(failed("elasticloadbalancing", "DescribeTargetGroups", &e))
                    .await;
                return None;
            }
        };
        let g = described.target_groups().first()?;
        let port = g.port().unwrap_or(80).clamp(1, 65535) as u16;
        let health = g.health_check_enabled().unwrap_or(true).then(|| {
            let tls = matches!(g.health_check_protocol(), Some(ProtocolEnum::Https));
            let hc_port = match g.health_check_port() {
                None | Some("traffic-port") => "traffic-port".to_string(),
                Some(p) => p.to_string(),
            };
            let path = g.health_check_path().unwrap_or("/").to_string();
            (tls, hc_port, path)
        });
        let mut tg = Tg {
            arn: arn.to_string(),
            name: g.target_group_name().unwrap_or("").to_string(),
            target_type: g
                .target_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_else(|| TargetTypeEnum::Instance.as_str().to_string()),
            port,
            tls: matches!(g.protocol(), Some(ProtocolEnum::Https | ProtocolEnum::Tls)),
            health,
            attributes: HashMap::new(),
            targets: Vec::new(),
        };
        match self
            .c
            .elb
            .describe_target_group_attributes()
            .target_group_arn(arn)
            .send()
            .await
        {
            Ok(a) => {
                tg.attributes = a
                    .attributes()
                    .iter()
                    .filter_map(|kv| Some((kv.key()?.to_string(), kv.value()?.to_string())))
                    .collect()
            }
            Err(e) => {
                self.note(failed(
                    "elasticloadbalancing",
                    "DescribeTargetGroupAttributes",
                    &e,
                ))
                .await
            }
        }
        match self
            .c
            .elb
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
        {
            Ok(h) => {
                for d in h.target_health_descriptions() {
                    let Some(t) = d.target() else { continue };
                    let id = t.id().unwrap_or("").to_string();
                    let tport = t.port().map_or(port, |p| p.clamp(1, 65535) as u16);
                    let th = d.target_health();
                    tg.targets.push((
                        id.clone(),
                        tport,
                        TargetHealth {
                            target: format!("{id}:{tport}"),
                            state: th
                                .and_then(|h| h.state())
                                .map(|s| s.as_str().to_string())
                                .unwrap_or_else(|| "unknown".to_string()),
                            reason: th.and_then(|h| h.reason()).map(|r| r.as_str().to_string()),
                            description: th.and_then(|h| h.description()).map(str::to_string),
                        },
                    ));
                }
            }
            Err(e) => {
                self.note(failed("elasticloadbalancing", "DescribeTargetHealth", &e))
                    .await
            }
        }
        Some(tg)
    }

    /// Private IPs of instance targets.
    async fn instance_ips(&self, ids: &[String]) -> HashMap<String, String> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return out;
        }
        let params = super::ec2::list_params("InstanceId", ids);
        match self
            .c
            .ec2
            .items("DescribeInstances", &params, "reservationSet")
            .await
        {
            Ok(reservations) => {
                for i in reservations.iter().flat_map(|r| r.items("instancesSet")) {
                    if let (Some(id), Some(ip)) = (i.text("instanceId"), i.text("privateIpAddress"))
                    {
                        out.insert(id.to_string(), ip.to_string());
                    }
                }
            }
            Err(e) => self.note(ec2_failed("DescribeInstances", &e)).await,
        }
        out
    }
}

/// A name piece for a chain: lower case, `-` between words.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The path to probe for a route or resource path: its own, unless it has parameters.
fn probe_path(own: &str, options: &Options) -> String {
    if let Some(p) = &options.path {
        return p.clone();
    }
    if own.is_empty() || own.contains('{') {
        "/".to_string()
    } else {
        own.to_string()
    }
}

/// What a hop behind a listener looks like: the URL of the load balancer's own entry point.
fn lb_url(lb: &Lb, listener: &Listener, path: &str) -> String {
    let scheme = if listener.tls { "https" } else { "http" };
    format!("{scheme}://{}:{}{path}", lb.dns, listener.port)
}

/// The rest of a chain from a load balancer inward: its hop, and what its default listener
/// forwards to (an ALB behind an NLB, then the targets).
struct Tail {
    hops: Vec<FoundHop>,
    kind_has_alb_behind_nlb: bool,
    facts: BTreeMap<usize, Vec<TargetHealth>>,
    notes: Vec<String>,
    /// The load balancers and targets, for `explain`.
    net_lbs: Vec<NetLb>,
    net_targets: Option<NetTargets>,
}

impl Walk {
    /// Hops from the load balancer of `listener` to the targets, the first at index `first`.
    async fn tail(&self, listener: &Listener, path: &str, first: usize) -> Option<Tail> {
        let lbs = self.load_balancers().await;
        let lb = lbs.get(&listener.lb_arn)?.clone();
        let mut tail = Tail {
            hops: Vec::new(),
            kind_has_alb_behind_nlb: false,
            facts: BTreeMap::new(),
            notes: Vec::new(),
            net_lbs: Vec::new(),
            net_targets: None,
        };
        let role = if lb.network { Role::Nlb } else { Role::Alb };
        let mut hop = FoundHop::new(&slug(&lb.name), role, lb_url(&lb, listener, path));
        hop.notes.push(format!(
            "{} {} ({}), listener {} on port {}",
            if lb.network { "NLB" } else { "ALB" },
            lb.name,
            lb.arn,
            listener.arn,
            listener.port
        ));
        hop.per_address = lb.zones > 1;
        if lb.network && !lb.security_groups.is_empty() {
            hop.notes.push(format!(
                "the NLB has security groups {} (inbound rules apply to PrivateLink traffic unless turned off)",
                lb.security_groups.join(", ")
            ));
        }
        if !lb.network {
            hop.xff_mode = Some(match lb.attributes.get("routing.http.xff_header_processing.mode") {
                Some(m) => match XffMode::parse(m) {
                    Some(mode) => Setting::new(mode, format!("routing.http.xff_header_processing.mode = {m} on {}", lb.arn)),
                    None => Setting::new(XffMode::Append, format!("routing.http.xff_header_processing.mode = {m} (unknown; append assumed) on {}", lb.arn)),
                },
                None => Setting::new(XffMode::Append, format!("routing.http.xff_header_processing.mode not returned for {}: AWS's default, append", lb.arn)),
            });
            if lb
                .attributes
                .get("routing.http.xff_client_port.enabled")
                .map(String::as_str)
                == Some("true")
            {
                hop.notes.push("routing.http.xff_client_port.enabled = true: X-Forwarded-For entries are ip:port".to_string());
            }
            if let Some(mode) = &listener.mtls {
                hop.needs.push(format!(
                    "the listener uses mutual TLS ({mode}): set client_cert and client_key to enter it"
                ));
            }
        }
        let tg_arn = listener.forward.first()?;
        let tg = self.target_group(tg_arn).await?;
        if listener.forward.len() > 1 {
            tail.notes.push(format!(
                "{} forwards to {} target groups; the first, {}, is followed",
                lb.name,
                listener.forward.len(),
                tg.name
            ));
        }
        let behind_index = first + 1;
        let resolve_port = |port: &str| -> u16 {
            if port == "traffic-port" {
                tg.port
            } else {
                port.parse().unwrap_or(tg.port)
            }
        };
        let preserve = tg
            .attributes
            .get("preserve_client_ip.enabled")
            .map_or(tg.target_type != "ip", |v| v == "true");
        tail.net_lbs.push(NetLb {
            hop: hop.name.clone(),
            arn: lb.arn.clone(),
            name: lb.name.clone(),
            network: lb.network,
            security_groups: lb.security_groups.clone(),
            subnets: lb.subnets.clone(),
            enforce_privatelink: lb.enforce_privatelink,
            listener_port: listener.port,
            tg: Some(NetTg {
                arn: tg.arn.clone(),
                target_type: tg.target_type.clone(),
                port: tg.port,
                health_port: tg
                    .health
                    .as_ref()
                    .map_or(tg.port, |(_, port, _)| resolve_port(port)),
                preserve_client_ip: lb.network && preserve,
            }),
        });
        if lb.network {
            // Client IP preservation: AWS's default is on for instance (and alb) targets, off
            // for IP targets over TCP/TLS (edit-target-group-attributes.html).
            let default_on = tg.target_type != "ip";
            hop.preserve_client_ip = Some(match tg.attributes.get("preserve_client_ip.enabled") {
                Some(v) => Setting::new(v == "true", format!("preserve_client_ip.enabled = {v} on target group {}", tg.arn)),
                None => Setting::new(default_on, format!(
                    "preserve_client_ip.enabled not returned for target group {}: AWS's default for {} targets, {}",
                    tg.arn, tg.target_type, if default_on { "on" } else { "off" }
                )),
            });
        }
        tail.hops.push(hop);
        if tg.target_type == "alb" {
            // An ALB registered behind the NLB (T2): follow it.
            tail.kind_has_alb_behind_nlb = true;
            let alb_arn = tg.targets.first().map(|t| t.0.clone())?;
            tail.facts.insert(
                behind_index,
                tg.targets.iter().map(|t| t.2.clone()).collect(),
            );
            let alb_listeners = self.listeners(&alb_arn).await;
            let alb_listener = alb_listeners
                .iter()
                .find(|l| l.port == tg.port)
                .or_else(|| alb_listeners.first())?
                .clone();
            let mut inner = Box::pin(self.tail(&alb_listener, path, behind_index)).await?;
            if let (Some(alb_hop), Some((tls, port, hc_path))) =
                (inner.hops.first_mut(), &tg.health)
            {
                let alb = lbs.get(&alb_arn);
                if let Some(alb) = alb {
                    let p = if port == "traffic-port" {
                        tg.port.to_string()
                    } else {
                        port.clone()
                    };
                    alb_hop.health_url = Some(Setting::new(
                        format!(
                            "{}://{}:{p}{hc_path}",
                            if *tls { "https" } else { "http" },
                            alb.dns
                        ),
                        format!(
                            "the NLB's health check of the ALB (target group {})",
                            tg.arn
                        ),
                    ));
                }
            }
            tail.hops.append(&mut inner.hops);
            tail.facts.append(&mut inner.facts);
            tail.notes.append(&mut inner.notes);
            tail.net_lbs.append(&mut inner.net_lbs);
            tail.net_targets = inner.net_targets;
            return Some(tail);
        }
        // Targets: the first one's address is the target hop; the others are listed.
        let ids: Vec<String> = tg
            .targets
            .iter()
            .filter(|_| tg.target_type == "instance")
            .map(|t| t.0.clone())
            .collect();
        let ips = self.instance_ips(&ids).await;
        let mut addresses: Vec<(String, u16, &TargetHealth)> = tg
            .targets
            .iter()
            .map(|(id, port, health)| {
                let addr = ips.get(id).cloned().unwrap_or_else(|| id.clone());
                (addr, *port, health)
            })
            .collect();
        addresses
            .sort_by(|a, b| (a.2.state != "healthy", &a.0).cmp(&(b.2.state != "healthy", &b.0)));
        tail.facts.insert(
            behind_index,
            tg.targets.iter().map(|t| t.2.clone()).collect(),
        );
        tail.net_targets = Some(NetTargets {
            hop: "target".to_string(),
            members: tg
                .targets
                .iter()
                .map(|(id, port, _)| NetMember {
                    id: id.clone(),
                    ip: ips
                        .get(id)
                        .cloned()
                        .or_else(|| (tg.target_type == "ip").then(|| id.clone())),
                    port: *port,
                })
                .collect(),
        });
        let Some((addr, port, _)) = addresses.first() else {
            tail.notes
                .push(format!("target group {} has no registered target", tg.arn));
            return Some(tail);
        };
        let scheme = if tg.tls { "https" } else { "http" };
        let host = if addr.contains(':') {
            format!("[{addr}]")
        } else {
            addr.clone()
        };
        let mut target = FoundHop::new(
            "target",
            Role::Target,
            format!("{scheme}://{host}:{port}{path}"),
        );
        target.notes.push(format!(
            "target group {} ({} targets): {}",
            tg.arn,
            tg.target_type,
            addresses
                .iter()
                .map(|(a, p, h)| format!(
                    "{a}:{p} {}{}",
                    h.state,
                    h.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if let Some((tls, hc_port, hc_path)) = &tg.health {
            let p = if hc_port == "traffic-port" {
                port.to_string()
            } else {
                hc_port.clone()
            };
            target.health_url = Some(Setting::new(
                format!(
                    "{}://{host}:{p}{hc_path}",
                    if *tls { "https" } else { "http" }
                ),
                format!(
                    "the health check of target group {} (port {hc_port})",
                    tg.arn
                ),
            ));
        }
        if lb.network
            && tg
                .attributes
                .get("proxy_protocol_v2.enabled")
                .map(String::as_str)
                == Some("true")
        {
            target.send_proxy_protocol = Some(Setting::new(
                ProxyVersion::V2,
                format!("proxy_protocol_v2.enabled = true on target group {}: the targets expect a PROXY header", tg.arn),
            ));
        }
        tail.hops.push(target);
        Some(tail)
    }
}

/// API Gateway's VPC link status in hopwatch's words.
fn link_status(text: &str) -> LinkStatus {
    LinkStatus::parse(text).unwrap_or(LinkStatus::Failed)
}

impl Walk {
    async fn rest_apis(&self) -> Vec<FoundChain> {
        let (apis, _) = self
            .paged("apigateway", "GetRestApis", |position| async move {
                let page = self
                    .c
                    .rest
                    .get_rest_apis()
                    .set_position(position)
                    .limit(500)
                    .send()
                    .await?;
                Ok((
                    page.items().to_vec(),
                    rest_position(page.items(), page.position()),
                ))
            })
            .await;
        let v1_links = self.rest_links().await;
        let mut out = Vec::new();
        for api in apis {
            let Some(id) = api.id() else { continue };
            if !self.options.apis.is_empty() && !self.options.apis.iter().any(|a| a == id) {
                continue;
            }
            out.extend(self.rest_api(&api, &v1_links).await);
        }
        out
    }

    /// Every VPC link v1, by id.
    async fn rest_links(&self) -> BTreeMap<String, aws_sdk_apigateway::types::VpcLink> {
        let (links, _) = self
            .paged("apigateway", "GetVpcLinks", |position| async move {
                let page = self
                    .c
                    .rest
                    .get_vpc_links()
                    .set_position(position)
                    .limit(500)
                    .send()
                    .await?;
                Ok((
                    page.items().to_vec(),
                    rest_position(page.items(), page.position()),
                ))
            })
            .await;
        links
            .into_iter()
            .filter_map(|l| Some((l.id()?.to_string(), l)))
            .collect()
    }

    async fn rest_api(
        &self,
        api: &aws_sdk_apigateway::types::RestApi,
        links: &BTreeMap<String, aws_sdk_apigateway::types::VpcLink>,
    ) -> Vec<FoundChain> {
        let id = api.id().unwrap_or("");
        let name = api.name().unwrap_or(id);
        let region = &self.c.region;
        let endpoint = api.endpoint_configuration();
        let private = endpoint.is_some_and(|e| e.types().contains(&EndpointType::Private));
        let vpce = endpoint.and_then(|e| e.vpc_endpoint_ids().first().cloned());
        let stages: Vec<String> = match self.c.rest.get_stages().rest_api_id(id).send().await {
            Ok(s) => s
                .item()
                .iter()
                .filter_map(|s| s.stage_name().map(str::to_string))
                .collect(),
            Err(e) => {
                self.note(failed("apigateway", "GetStages", &e)).await;
                return Vec::new();
            }
        };
        // Every resource with its methods in one paged call.
        let (resources, _) = self
            .paged("apigateway", "GetResources", |position| async move {
                let page = self
                    .c
                    .rest
                    .get_resources()
                    .rest_api_id(id)
                    .embed("methods")
                    .set_position(position)
                    .limit(500)
                    .send()
                    .await?;
                Ok((
                    page.items().to_vec(),
                    rest_position(page.items(), page.position()),
                ))
            })
            .await;
        struct Found {
            path: String,
            method: String,
            uri: Option<String>,
            link_id: Option<String>,
            target: Option<String>,
            key: bool,
            auth: Option<String>,
        }
        let mut found = Vec::new();
        for r in &resources {
            let path = r.path().unwrap_or("/").to_string();
            let mut methods: Vec<_> = r.resource_methods().into_iter().flatten().collect();
            methods.sort_by(|a, b| a.0.cmp(b.0));
            for (verb, m) in methods {
                let Some(i) = m.method_integration() else {
                    continue;
                };
                if i.connection_type() != Some(&RestConnection::VpcLink) {
                    continue;
                }
                found.push(Found {
                    path: path.clone(),
                    method: verb.clone(),
                    uri: i.uri().map(str::to_string),
                    link_id: i
                        .connection_id()
                        .filter(|c| !c.starts_with("${"))
                        .map(str::to_string),
                    target: i.integration_target().map(str::to_string),
                    key: m.api_key_required().unwrap_or(false),
                    auth: m
                        .authorization_type()
                        .filter(|a| *a != "NONE")
                        .map(str::to_string),
                });
            }
        }
        let several = found.len() > 1;
        let lbs = self.load_balancers().await;
        let mut out = Vec::new();
        for stage in &stages {
            if !self.options.stages.is_empty() && !self.options.stages.contains(stage) {
                continue;
            }
            for f in &found {
                let uri_host = f.uri.as_deref().and_then(|u| u.parse::<http::Uri>().ok());
                let uri_path = uri_host
                    .as_ref()
                    .map(|u| u.path().to_string())
                    .unwrap_or_default();
                let path = probe_path(&f.path, &self.options);
                // The first load balancer: the link's target (v1), the integration target (v2),
                // else the integration URI's host (a tool that forgets connectionId).
                let link = f
                    .link_id
                    .as_ref()
                    .and_then(|l| links.get(l))
                    .cloned()
                    .or_else(|| {
                        let host = uri_host.as_ref().and_then(|u| u.host())?;
                        let lb = lbs.values().find(|lb| lb.dns == host)?;
                        links
                            .values()
                            .find(|l| l.target_arns().contains(&lb.arn))
                            .cloned()
                    });
                let first_lb = f
                    .target
                    .clone()
                    .or_else(|| link.as_ref().and_then(|l| l.target_arns().first().cloned()))
                    .or_else(|| {
                        let host = uri_host.as_ref().and_then(|u| u.host())?;
                        lbs.values()
                            .find(|lb| lb.dns == host)
                            .map(|lb| lb.arn.clone())
                    });
                let Some(lb) = first_lb.and_then(|arn| lbs.get(&arn).cloned()) else {
                    self.note(WalkError {
                        service: "apigateway",
                        action: "GetResources",
                        message: format!(
                            "{name} {} {}: no load balancer found for the integration ({})",
                            f.method,
                            f.path,
                            f.uri.as_deref().unwrap_or("no uri")
                        ),
                        access_denied: false,
                    })
                    .await;
                    continue;
                };
                let port = uri_host.as_ref().and_then(|u| u.port_u16());
                let listeners = self.listeners(&lb.arn).await;
                let Some(listener) = listeners
                    .iter()
                    .find(|l| Some(l.port) == port)
                    .or_else(|| listeners.first())
                    .cloned()
                else {
                    continue;
                };
                let lb_path = if uri_path.is_empty() {
                    path.clone()
                } else {
                    uri_path.clone()
                };
                let Some(tail) = self.tail(&listener, &lb_path, 1).await else {
                    continue;
                };
                let v2 = f.target.is_some();
                let kind = match (lb.network, tail.kind_has_alb_behind_nlb, v2) {
                    (true, true, _) => Kind::RestNlbAlb,
                    (true, false, _) => Kind::RestNlb,
                    (false, _, _) => Kind::RestAlb,
                };
                let (gateway_url, host_note) = match (private, &vpce) {
                    (true, Some(vpce)) => (
                        format!("https://{id}-{vpce}.execute-api.{region}.vpce.amazonaws.com/{stage}{path}"),
                        Some(format!("a private API: reached through the execute-api VPC endpoint {vpce} by its endpoint-specific name (with private DNS on, https://{id}.execute-api.{region}.amazonaws.com works too, or any name with the header x-apigw-api-id: {id})")),
                    ),
                    (true, None) => (
                        format!("https://{id}.execute-api.{region}.amazonaws.com/{stage}{path}"),
                        Some("a private API: this name resolves only where an execute-api VPC endpoint has private DNS on".to_string()),
                    ),
                    _ => (format!("https://{id}.execute-api.{region}.amazonaws.com/{stage}{path}"), None),
                };
                let mut gateway = FoundHop::new("gateway", Role::Gateway, gateway_url);
                gateway.notes.push(format!(
                    "REST API {name} ({id}), stage {stage}, {} {}",
                    f.method, f.path
                ));
                gateway.notes.extend(host_note);
                if f.key {
                    gateway.needs.push("this method requires an API key (apiKeyRequired): add headers = { x-api-key = \"${API_KEY}\" }".to_string());
                }
                if let Some(auth) = &f.auth {
                    gateway.needs.push(format!("this method is authorized by {auth}: add the header its authorizer reads, from the environment"));
                }
                let mut facts = ChainFacts::default();
                let mut notes = Vec::new();
                let mut entry = Entry::Unknown;
                match (&link, v2) {
                    (Some(l), _) => {
                        entry = Entry::V1;
                        let status = l
                            .status()
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_default();
                        notes.push(format!(
                            "VPC link v1 {} ({}), {status}",
                            l.name().unwrap_or(""),
                            l.id().unwrap_or("")
                        ));
                        facts.link = Some(LinkFact {
                            id: l.id().unwrap_or("").to_string(),
                            status: link_status(&status),
                            message: l.status_message().map(str::to_string),
                        });
                    }
                    (None, true) => {
                        if let Some((_, fact, e)) = match &f.link_id {
                            Some(id) => self.http_link(id).await,
                            None => None,
                        } {
                            facts.link = Some(fact);
                            entry = e;
                        }
                        if kind == Kind::RestNlb {
                            gateway.vpc_link = Some(Setting::new(
                                VpcLink::V2,
                                "the integration names a VPC link v2 target (integrationTarget)",
                            ));
                        }
                    }
                    (None, false) => {
                        notes.push("VPC link: not found (connectionId not returned)".to_string())
                    }
                }
                let net = NetPath {
                    entry,
                    lbs: tail.net_lbs,
                    targets: tail.net_targets,
                };
                let mut hops = vec![gateway];
                hops.extend(tail.hops);
                for (i, t) in tail.facts {
                    facts.targets.insert(i, t);
                }
                notes.extend(tail.notes);
                let mut chain_name = format!("{}-{}", slug(name), slug(stage));
                if several {
                    let route = slug(&format!("{} {}", f.method, f.path));
                    chain_name.push('-');
                    chain_name.push_str(if route.is_empty() { "root" } else { &route });
                }
                out.push(FoundChain {
                    name: chain_name,
                    kind,
                    notes,
                    hops,
                    facts,
                    api_id: id.to_string(),
                    net,
                });
            }
        }
        out
    }

    /// A VPC link v2: its note and its fact.
    async fn http_link(&self, id: &str) -> Option<(String, LinkFact, Entry)> {
        match self.c.http.get_vpc_link().vpc_link_id(id).send().await {
            Ok(l) => {
                let status = l
                    .vpc_link_status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default();
                Some((
                    format!(
                        "VPC link v2 {} ({id}), {status}, subnets {}, security groups {}",
                        l.name().unwrap_or(""),
                        l.subnet_ids().join(", "),
                        l.security_group_ids().join(", ")
                    ),
                    LinkFact {
                        id: id.to_string(),
                        status: link_status(&status),
                        message: l.vpc_link_status_message().map(str::to_string),
                    },
                    Entry::V2 {
                        id: id.to_string(),
                        subnets: l.subnet_ids().to_vec(),
                        security_groups: l.security_group_ids().to_vec(),
                    },
                ))
            }
            Err(e) => {
                self.note(failed("apigateway", "GetVpcLink", &e)).await;
                None
            }
        }
    }

    async fn http_apis(&self) -> Vec<FoundChain> {
        let (apis, _) = self
            .paged("apigateway", "GetApis", |token| async move {
                let page = self.c.http.get_apis().set_next_token(token).send().await?;
                Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
            })
            .await;
        let mut out = Vec::new();
        for api in apis {
            let Some(id) = api.api_id() else { continue };
            if api.protocol_type().map(|p| p.as_str()) != Some("HTTP") {
                continue;
            }
            if !self.options.apis.is_empty() && !self.options.apis.iter().any(|a| a == id) {
                continue;
            }
            out.extend(self.http_api(&api).await);
        }
        out
    }

    async fn http_api(&self, api: &aws_sdk_apigatewayv2::types::Api) -> Vec<FoundChain> {
        let id = api.api_id().unwrap_or("");
        let name = api.name().unwrap_or(id);
        let endpoint = api
            .api_endpoint()
            .map(str::to_string)
            .unwrap_or_else(|| format!("https://{id}.execute-api.{}.amazonaws.com", self.c.region));
        let stages: Vec<String> = match self.c.http.get_stages().api_id(id).send().await {
            Ok(s) => s
                .items()
                .iter()
                .filter_map(|s| s.stage_name().map(str::to_string))
                .collect(),
            Err(e) => {
                self.note(failed("apigateway", "GetStages", &e)).await;
                return Vec::new();
            }
        };
        let routes = match self.c.http.get_routes().api_id(id).send().await {
            Ok(r) => r.items().to_vec(),
            Err(e) => {
                self.note(failed("apigateway", "GetRoutes", &e)).await;
                return Vec::new();
            }
        };
        let integrations: HashMap<String, aws_sdk_apigatewayv2::types::Integration> =
            match self.c.http.get_integrations().api_id(id).send().await {
                Ok(i) => i
                    .items()
                    .iter()
                    .filter_map(|i| Some((i.integration_id()?.to_string(), i.clone())))
                    .collect(),
                Err(e) => {
                    self.note(failed("apigateway", "GetIntegrations", &e)).await;
                    return Vec::new();
                }
            };
        let mut found = Vec::new();
        for r in &routes {
            let Some(target) = r.target().and_then(|t| t.strip_prefix("integrations/")) else {
                continue;
            };
            let Some(i) = integrations.get(target) else {
                continue;
            };
            if i.connection_type() != Some(&HttpConnection::VpcLink) {
                continue;
            }
            found.push((r.clone(), i.clone()));
        }
        found.sort_by(|a, b| a.0.route_key().cmp(&b.0.route_key()));
        let several = found.len() > 1;
        let mut out = Vec::new();
        for stage in &stages {
            if !self.options.stages.is_empty() && !self.options.stages.contains(stage) {
                continue;
            }
            for (route, integration) in &found {
                let key = route.route_key().unwrap_or("$default");
                let own_path = match key.split_once(' ') {
                    Some((_, p)) => p.to_string(),
                    None => "/".to_string(),
                };
                let path = probe_path(&own_path, &self.options);
                let stage_prefix = if stage == "$default" {
                    String::new()
                } else {
                    format!("/{stage}")
                };
                let mut gateway = FoundHop::new(
                    "gateway",
                    Role::Gateway,
                    format!("{endpoint}{stage_prefix}{path}"),
                );
                gateway.notes.push(format!(
                    "HTTP API {name} ({id}), stage {stage}, route {key}, integration {}",
                    integration.integration_id().unwrap_or("")
                ));
                if route.api_key_required() == Some(true) {
                    gateway.needs.push("this route requires an API key: add headers = { x-api-key = \"${API_KEY}\" }".to_string());
                }
                if let Some(auth) = route
                    .authorization_type()
                    .map(|a| a.as_str())
                    .filter(|a| *a != "NONE")
                {
                    gateway.needs.push(format!("this route is authorized by {auth}: add the header its authorizer reads (Authorization), from the environment"));
                }
                let mut facts = ChainFacts::default();
                let mut notes = Vec::new();
                let mut net = NetPath::default();
                if let Some(link_id) = integration.connection_id() {
                    if let Some((note, fact, entry)) = self.http_link(link_id).await {
                        notes.push(note);
                        facts.link = Some(fact);
                        net.entry = entry;
                    }
                }
                let uri = integration.integration_uri().unwrap_or("");
                let (kind, tail) = if uri.contains(":servicediscovery:") {
                    let Some((hops, targets)) = self.cloudmap_hops(uri, &path).await else {
                        continue;
                    };
                    net.targets = Some(targets);
                    (Kind::HttpCloudmap, hops)
                } else {
                    let Some(listener) = self.listener(uri).await else {
                        self.note(WalkError {
                            service: "elasticloadbalancing",
                            action: "DescribeListeners",
                            message: format!(
                                "{name} {key}: integration URI {uri} is no listener found"
                            ),
                            access_denied: false,
                        })
                        .await;
                        continue;
                    };
                    let lbs = self.load_balancers().await;
                    let network = lbs.get(&listener.lb_arn).is_some_and(|lb| lb.network);
                    let Some(tail) = self.tail(&listener, &path, 1).await else {
                        continue;
                    };
                    for (i, t) in tail.facts {
                        facts.targets.insert(i, t);
                    }
                    notes.extend(tail.notes);
                    net.lbs = tail.net_lbs;
                    net.targets = tail.net_targets;
                    (
                        if network {
                            Kind::HttpNlb
                        } else {
                            Kind::HttpAlb
                        },
                        tail.hops,
                    )
                };
                let mut hops = vec![gateway];
                hops.extend(tail);
                let mut chain_name = format!(
                    "{}-{}",
                    slug(name),
                    if stage == "$default" {
                        "default".to_string()
                    } else {
                        slug(stage)
                    }
                );
                if several {
                    let route = slug(key);
                    chain_name.push('-');
                    chain_name.push_str(if route.is_empty() { "default" } else { &route });
                }
                out.push(FoundChain {
                    name: chain_name,
                    kind,
                    notes,
                    hops,
                    facts,
                    api_id: id.to_string(),
                    net,
                });
            }
        }
        out
    }

    /// T6: the Cloud Map hop (what API Gateway itself calls) and the first instance as target.
    async fn cloudmap_hops(
        &self,
        service_arn: &str,
        path: &str,
    ) -> Option<(Vec<FoundHop>, NetTargets)> {
        let service_id = service_arn.rsplit('/').next()?;
        let service = match self.c.cloudmap.get_service().id(service_id).send().await {
            Ok(s) => s.service?.clone(),
            Err(e) => {
                self.note(failed("servicediscovery", "GetService", &e))
                    .await;
                return None;
            }
        };
        let service_name = service.name()?.to_string();
        let namespace = match self
            .c
            .cloudmap
            .get_namespace()
            .id(service.namespace_id()?)
            .send()
            .await
        {
            Ok(n) => n.namespace?,
            Err(e) => {
                self.note(failed("servicediscovery", "GetNamespace", &e))
                    .await;
                return None;
            }
        };
        let namespace_name = namespace
            .properties()
            .and_then(|p| p.http_properties())
            .and_then(|h| h.http_name())
            .or(namespace.name())?
            .to_string();
        let instances = match self
            .c
            .cloudmap
            .list_instances()
            .service_id(service_id)
            .send()
            .await
        {
            Ok(i) => i.instances().to_vec(),
            Err(e) => {
                self.note(failed("servicediscovery", "ListInstances", &e))
                    .await;
                Vec::new()
            }
        };
        let mut addresses: Vec<String> = instances
            .iter()
            .filter_map(|i| {
                let a = i.attributes()?;
                let ip = a.get("AWS_INSTANCE_IPV4")?;
                let port = a
                    .get("AWS_INSTANCE_PORT")
                    .map(String::as_str)
                    .unwrap_or("80");
                Some(format!("{ip}:{port}"))
            })
            .collect();
        addresses.sort();
        let mut cloudmap = FoundHop::new(
            "cloudmap",
            Role::Cloudmap,
            format!("cloudmap://{namespace_name}/{service_name}{path}"),
        );
        cloudmap.notes.push(format!(
            "Cloud Map service {service_name} in namespace {namespace_name} ({service_arn}): API Gateway calls DiscoverInstances, no DNS; instances {}",
            if addresses.is_empty() { "none".to_string() } else { addresses.join(", ") }
        ));
        cloudmap.per_address = true;
        let targets = NetTargets {
            hop: "target".to_string(),
            members: addresses
                .iter()
                .filter_map(|a| {
                    let (ip, port) = a.rsplit_once(':')?;
                    Some(NetMember {
                        id: ip.to_string(),
                        ip: Some(ip.to_string()),
                        port: port.parse().ok()?,
                    })
                })
                .collect(),
        };
        let mut hops = vec![cloudmap];
        if let Some(first) = addresses.first() {
            let mut target = FoundHop::new("target", Role::Target, format!("http://{first}{path}"));
            target.notes.push(
                "the first registered instance (the cloudmap hop probes every one)".to_string(),
            );
            hops.push(target);
        }
        Some((hops, targets))
    }
}

/// Walks the region as `options` say.
pub async fn walk(clients: &Clients, options: &Options) -> Estate {
    let w = Arc::new(Walk {
        c: clients.clone(),
        options: options.clone(),
        errors: Mutex::new(Vec::new()),
        lbs: Mutex::new(None),
        listeners: Mutex::new(HashMap::new()),
        tgs: Mutex::new(HashMap::new()),
    });
    let limit = Arc::new(Semaphore::new(CONCURRENT_APIS));
    let rest = {
        let (w, limit) = (w.clone(), limit.clone());
        tokio::spawn(async move {
            let _p = limit.acquire_owned().await.ok();
            w.rest_apis().await
        })
    };
    let http = {
        let (w, limit) = (w.clone(), limit.clone());
        tokio::spawn(async move {
            let _p = limit.acquire_owned().await.ok();
            w.http_apis().await
        })
    };
    let mut chains = Vec::new();
    for task in [rest, http] {
        match task.await {
            Ok(found) => chains.extend(found),
            Err(e) => {
                w.note(WalkError {
                    service: "hopwatch",
                    action: "walk",
                    message: format!("a part of the walk failed: {e}"),
                    access_denied: false,
                })
                .await
            }
        }
    }
    // Names are unique: a second chain of the same name gets a number.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for c in &mut chains {
        let n = seen.entry(c.name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            c.name = format!("{}-{n}", c.name);
        }
    }
    // The security groups and NACLs along every path: each chain's edges, judged once here
    // and carried as facts (explain prints them; the agent quotes and exports them).
    let paths: Vec<&super::model::NetPath> = chains.iter().map(|c| &c.net).collect();
    let (network, failures) = super::network::read(&clients.ec2, &paths).await;
    for e in failures {
        w.note(e).await;
    }
    for c in &mut chains {
        c.facts.path = super::explain::judge(c, &network).edges;
    }
    let errors = std::mem::take(&mut *w.errors.lock().await);
    Estate {
        region: clients.region.clone(),
        chains,
        errors,
        network,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(slug("Orders API"), "orders-api");
        assert_eq!(slug("GET /items/{id}"), "get-items-id");
        assert_eq!(slug("$default"), "default");
        let o = Options::default();
        assert_eq!(probe_path("/items", &o), "/items");
        assert_eq!(probe_path("/items/{id}", &o), "/");
        assert_eq!(probe_path("/{proxy+}", &o), "/");
        let fixed = Options {
            path: Some("/health".into()),
            ..Options::default()
        };
        assert_eq!(probe_path("/items", &fixed), "/health");
    }
}

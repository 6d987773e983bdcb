//! From what the services said to chains: pure functions over the facts the readers gathered
//! ([`World`]), no call and no clock, so every decision is a table test away.
//!
//! A chain is one API stage's route (HTTP API) or method (REST) whose integration goes through
//! a VPC link, followed through the load balancers it names to the targets. An integration
//! that cannot be followed is an [`Unbuilt`] with its reason, never dropped in silence.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::model::aws::{
    CloudMapService, HttpApi, HttpDetail, HttpIntegration, HttpRoute, Lb, Link, Listener, RestApi,
    RestDetail, RestMethod, Stage, Tg,
};
use super::model::net::Host;
use super::model::{
    Entry, FoundChain, FoundHop, NetLb, NetMember, NetPath, NetTargets, NetTg, Setting, Unbuilt,
};
use crate::config::{Kind, ProxyVersion, Role, VpcLink, XffMode};
use crate::facts::{ChainFacts, LinkFact, LinkStatus, TargetHealth};

/// Everything read for one walk, by id or ARN.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub region: String,
    pub rest: Vec<(RestApi, RestDetail)>,
    pub http: Vec<(HttpApi, HttpDetail)>,
    pub v1_links: BTreeMap<String, Link>,
    pub v2_links: BTreeMap<String, Link>,
    pub lbs: BTreeMap<String, Lb>,
    /// By load balancer ARN.
    pub listeners: BTreeMap<String, Vec<Listener>>,
    pub tgs: BTreeMap<String, Tg>,
    /// By service id.
    pub cloudmap: BTreeMap<String, CloudMapService>,
    /// By instance id: where an instance target lives.
    pub hosts: HashMap<String, Host>,
}

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// Only these stages; empty: every stage.
    pub stages: Vec<String>,
    /// The path to probe, over every route's own.
    pub path: Option<String>,
}

/// What assembling made: chains, and what could not be made into one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assembled {
    pub chains: Vec<FoundChain>,
    pub unbuilt: Vec<Unbuilt>,
    pub warnings: Vec<String>,
}

/// A name piece for a chain: lower case, `-` between words.
pub fn slug(text: &str) -> String {
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
pub fn probe_path(own: &str, ask: &Ask) -> String {
    if let Some(p) = &ask.path {
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

/// API Gateway's VPC link status in hopwatch's words.
fn link_status(text: &str) -> LinkStatus {
    LinkStatus::parse(text).unwrap_or(LinkStatus::Failed)
}

fn link_fact(l: &Link) -> LinkFact {
    LinkFact {
        id: l.id.clone(),
        status: link_status(&l.status),
        message: l.message.clone(),
    }
}

/// The format to add to a stage's access log so the agent can read why a request failed:
/// the ids it looks requests up by and the fields that say why (set-up-logging.html;
/// http-api-logging-variables.html).
pub const ACCESS_LOG_FORMAT: &str = r#"{"requestId":"$context.requestId","extendedRequestId":"$context.extendedRequestId","status":"$context.status","responseType":"$context.error.responseType","errorMessage":"$context.error.message","integrationError":"$context.integrationErrorMessage","integrationStatus":"$context.integration.status"}"#;

/// The gateway's log settings of one stage, as hop settings, and what to warn about.
fn log_settings(
    hop: &mut FoundHop,
    api: &str,
    stage: &Stage,
    rest: bool,
    warnings: &mut Vec<String>,
) {
    let what = format!("stage {} of API {api}", stage.name);
    match &stage.access_log {
        Some(log) if log.destination_arn.contains(":log-group:") => {
            let name = crate::config::log_group_name(&log.destination_arn)
                .unwrap_or_else(|| log.destination_arn.clone());
            hop.access_log_group = Some(Setting::new(
                name,
                format!("the stage's access log (accessLogSettings.destinationArn {})", log.destination_arn),
            ));
            match &log.format {
                Some(format) => {
                    hop.access_log_format = Some(Setting::new(
                        format.clone(),
                        "the stage's access log format (accessLogSettings.format): the agent reads its fields by it",
                    ));
                    let has = |v: &str| format.contains(v);
                    let ids = has("$context.requestId") || has("$context.extendedRequestId");
                    let why = has("$context.error.responseType")
                        || has("$context.integrationErrorMessage")
                        || has("$context.integration.error");
                    if !ids || !why {
                        warnings.push(format!(
                            "{what}: its access log format lacks {}: the agent cannot read why a probe failed; add them, e.g. {ACCESS_LOG_FORMAT}",
                            match (ids, why) {
                                (false, false) => "the request id and the error fields",
                                (false, true) => "the request id ($context.requestId)",
                                _ => "the error fields ($context.error.responseType, $context.integrationErrorMessage)",
                            }
                        ));
                    }
                }
                None => warnings.push(format!(
                    "{what}: its access log has no format the agent can read; set one, e.g. {ACCESS_LOG_FORMAT}"
                )),
            }
        }
        Some(log) => {
            hop.notes.push(format!(
                "the access log goes to {}, not to CloudWatch Logs: the agent cannot look its records up",
                log.destination_arn
            ));
        }
        None => warnings.push(format!(
            "{what} has no access log: the agent cannot quote API Gateway's own words on a failure; turn it on with a format such as {ACCESS_LOG_FORMAT}"
        )),
    }
    // "The log group is named API-Gateway-Execution-Logs_{rest-api-id}/{stage_name}"
    // (rest-api-execution-logging.html); HTTP APIs have none.
    if rest && stage.execution_logging {
        hop.execution_log_group = Some(Setting::new(
            format!("API-Gateway-Execution-Logs_{api}/{}", stage.name),
            "execution logging is on for the stage (methodSettings */* loggingLevel)",
        ));
    }
}

/// The integration timeout as a hop setting.
fn timeout_setting(ms: Option<i64>, what: &str) -> Option<Setting<Duration>> {
    let ms = u64::try_from(ms?).ok().filter(|m| *m > 0)?;
    Some(Setting::new(
        Duration::from_millis(ms),
        format!("the integration's timeoutInMillis ({ms}) on {what}"),
    ))
}

/// The rest of a chain from a load balancer inward: its hop, and what its listener forwards
/// to (an ALB behind an NLB, then the targets).
#[derive(Debug, Default)]
struct Tail {
    hops: Vec<FoundHop>,
    alb_behind_nlb: bool,
    facts: BTreeMap<usize, Vec<TargetHealth>>,
    notes: Vec<String>,
    net_lbs: Vec<NetLb>,
    net_targets: Option<NetTargets>,
}

impl World {
    /// Hops from the load balancer of `listener` to the targets, the first at index `first`;
    /// `Err` says why the chain cannot be followed.
    fn tail(&self, listener: &Listener, path: &str, first: usize) -> Result<Tail, String> {
        let lb = self
            .lbs
            .get(&listener.lb_arn)
            .ok_or_else(|| format!("load balancer {} was not found", listener.lb_arn))?;
        let mut tail = Tail::default();
        let role = if lb.network { Role::Nlb } else { Role::Alb };
        let mut hop = FoundHop::new(&slug(&lb.name), role, lb_url(lb, listener, path));
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
        let tg_arn = listener.forward.first().ok_or_else(|| {
            format!(
                "listener {} of {} forwards to no target group (a fixed response or a redirect)",
                listener.arn, lb.name
            )
        })?;
        let tg = self
            .tgs
            .get(tg_arn)
            .ok_or_else(|| format!("target group {tg_arn} could not be read"))?;
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
        // Client IP preservation: AWS's default is on for instance (and alb) targets, off for
        // IP targets over TCP/TLS (docs.aws.amazon.com/elasticloadbalancing/latest/network/
        // edit-target-group-attributes.html).
        let default_on = tg.target_type != "ip";
        let preserve = tg
            .attributes
            .get("preserve_client_ip.enabled")
            .map_or(default_on, |v| v == "true");
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
            tail.alb_behind_nlb = true;
            let alb_arn = tg
                .targets
                .first()
                .map(|t| t.0.clone())
                .ok_or_else(|| format!("target group {} holds no ALB", tg.arn))?;
            tail.facts.insert(
                behind_index,
                tg.targets.iter().map(|t| t.2.clone()).collect(),
            );
            let alb_listeners = self
                .listeners
                .get(&alb_arn)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let alb_listener = alb_listeners
                .iter()
                .find(|l| l.port == tg.port)
                .or_else(|| alb_listeners.first())
                .ok_or_else(|| format!("the ALB {alb_arn} behind the NLB has no listener"))?;
            let mut inner = self.tail(alb_listener, path, behind_index)?;
            if let (Some(alb_hop), Some((tls, port, hc_path)), Some(alb)) =
                (inner.hops.first_mut(), &tg.health, self.lbs.get(&alb_arn))
            {
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
            tail.hops.append(&mut inner.hops);
            tail.facts.append(&mut inner.facts);
            tail.notes.append(&mut inner.notes);
            tail.net_lbs.append(&mut inner.net_lbs);
            tail.net_targets = inner.net_targets;
            return Ok(tail);
        }
        // Targets: the first one's address is the target hop; the others are listed.
        let ip_of = |id: &str| -> Option<String> {
            self.hosts
                .get(id)
                .and_then(|h| h.ip)
                .map(|ip| ip.to_string())
        };
        let mut addresses: Vec<(String, u16, &TargetHealth)> = tg
            .targets
            .iter()
            .map(|(id, port, health)| (ip_of(id).unwrap_or_else(|| id.clone()), *port, health))
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
                    ip: ip_of(id).or_else(|| (tg.target_type == "ip").then(|| id.clone())),
                    port: *port,
                })
                .collect(),
        });
        let Some((addr, port, _)) = addresses.first() else {
            tail.notes
                .push(format!("target group {} has no registered target", tg.arn));
            return Ok(tail);
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
        Ok(tail)
    }

    /// The load balancer a REST integration enters: the integration target (v2 link), the
    /// link's NLB (v1), else the load balancer whose DNS name is the URI's host.
    fn rest_entry(&self, m: &RestMethod) -> Result<(&Lb, Option<&Link>), String> {
        let host = m
            .uri
            .as_deref()
            .and_then(|u| u.parse::<http::Uri>().ok())
            .and_then(|u| u.host().map(str::to_string));
        let by_host = || {
            host.as_deref()
                .and_then(|h| self.lbs.values().find(|lb| lb.dns == h))
        };
        let link = m
            .connection_id
            .as_ref()
            .filter(|c| !c.starts_with("${"))
            .and_then(|l| self.v1_links.get(l))
            .or_else(|| {
                // A tool that forgets connectionId: the link whose NLB is the URI's host.
                let lb = by_host()?;
                self.v1_links
                    .values()
                    .find(|l| l.target_arns.contains(&lb.arn))
            });
        let arn = m
            .integration_target
            .clone()
            .or_else(|| link.and_then(|l| l.target_arns.first().cloned()))
            .or_else(|| by_host().map(|lb| lb.arn.clone()));
        match arn.and_then(|a| self.lbs.get(&a)) {
            Some(lb) => Ok((lb, link)),
            None => Err(format!(
                "no load balancer found for the integration ({})",
                m.uri.as_deref().unwrap_or("no uri")
            )),
        }
    }

    fn rest_api(&self, api: &RestApi, d: &RestDetail, ask: &Ask, out: &mut Assembled) {
        let (id, name, region) = (&api.id, &api.name, &self.region);
        let several = d.methods.len() > 1;
        for stage in &d.stages {
            if !ask.stages.is_empty() && !ask.stages.contains(&stage.name) {
                continue;
            }
            let api_words = format!("{name} ({id}) stage {}", stage.name);
            for m in &d.methods {
                let route = format!("{} {}", m.method, m.path);
                let unbuilt = |why: String| Unbuilt {
                    api: api_words.clone(),
                    route: route.clone(),
                    why,
                };
                let (lb, link) = match self.rest_entry(m) {
                    Ok(found) => found,
                    Err(why) => {
                        out.unbuilt.push(unbuilt(why));
                        continue;
                    }
                };
                let uri = m.uri.as_deref().and_then(|u| u.parse::<http::Uri>().ok());
                let uri_path = uri
                    .as_ref()
                    .map(|u| u.path().to_string())
                    .unwrap_or_default();
                let path = probe_path(&m.path, ask);
                let listeners = self
                    .listeners
                    .get(&lb.arn)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let port = uri.as_ref().and_then(|u| u.port_u16());
                let Some(listener) = listeners
                    .iter()
                    .find(|l| Some(l.port) == port)
                    .or_else(|| listeners.first())
                else {
                    out.unbuilt.push(unbuilt(format!(
                        "the load balancer {} has no listener",
                        lb.name
                    )));
                    continue;
                };
                let lb_path = if uri_path.is_empty() {
                    path.clone()
                } else {
                    uri_path.clone()
                };
                let tail = match self.tail(listener, &lb_path, 1) {
                    Ok(t) => t,
                    Err(why) => {
                        out.unbuilt.push(unbuilt(why));
                        continue;
                    }
                };
                let v2 = m.integration_target.is_some();
                let kind = match (lb.network, tail.alb_behind_nlb) {
                    (true, true) => Kind::RestNlbAlb,
                    (true, false) => Kind::RestNlb,
                    (false, _) => Kind::RestAlb,
                };
                let vpce = api.vpc_endpoint_ids.first();
                let (gateway_url, host_note) = match (api.private, vpce) {
                    (true, Some(vpce)) => (
                        format!("https://{id}-{vpce}.execute-api.{region}.vpce.amazonaws.com/{}{path}", stage.name),
                        Some(format!("a private API: reached through the execute-api VPC endpoint {vpce} by its endpoint-specific name (with private DNS on, https://{id}.execute-api.{region}.amazonaws.com works too, or any name with the header x-apigw-api-id: {id})")),
                    ),
                    (true, None) => (
                        format!("https://{id}.execute-api.{region}.amazonaws.com/{}{path}", stage.name),
                        Some("a private API: this name resolves only where an execute-api VPC endpoint has private DNS on".to_string()),
                    ),
                    _ => (format!("https://{id}.execute-api.{region}.amazonaws.com/{}{path}", stage.name), None),
                };
                let mut gateway = FoundHop::new("gateway", Role::Gateway, gateway_url);
                gateway.notes.push(format!(
                    "REST API {name} ({id}), stage {}, {} {}",
                    stage.name, m.method, m.path
                ));
                gateway.notes.extend(host_note);
                gateway.integration_timeout =
                    timeout_setting(m.timeout_ms, &format!("{} {}", m.method, m.path));
                log_settings(&mut gateway, id, stage, true, &mut out.warnings);
                if m.api_key_required {
                    gateway.needs.push("this method requires an API key (apiKeyRequired): add headers = { x-api-key = \"${API_KEY}\" }".to_string());
                }
                if let Some(auth) = &m.authorization {
                    gateway.needs.push(format!("this method is authorized by {auth}: add the header its authorizer reads, from the environment"));
                }
                let mut facts = ChainFacts::default();
                let mut notes = Vec::new();
                let mut entry = Entry::Unknown;
                match (link, v2) {
                    (Some(l), _) => {
                        entry = Entry::V1;
                        notes.push(format!("VPC link v1 {} ({}), {}", l.name, l.id, l.status));
                        facts.link = Some(link_fact(l));
                    }
                    (None, true) => {
                        if let Some(l) = m.connection_id.as_ref().and_then(|c| self.v2_links.get(c))
                        {
                            notes.push(v2_note(l));
                            facts.link = Some(link_fact(l));
                            entry = v2_entry(l);
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
                facts.targets.extend(tail.facts);
                notes.extend(tail.notes);
                let mut chain_name = format!("{}-{}", slug(name), slug(&stage.name));
                if several {
                    let route = slug(&format!("{} {}", m.method, m.path));
                    chain_name.push('-');
                    chain_name.push_str(if route.is_empty() { "root" } else { &route });
                }
                out.chains.push(FoundChain {
                    name: chain_name,
                    kind,
                    notes,
                    hops,
                    facts,
                    api_id: id.clone(),
                    net,
                });
            }
        }
    }

    fn http_api(&self, api: &HttpApi, d: &HttpDetail, ask: &Ask, out: &mut Assembled) {
        let (id, name) = (&api.id, &api.name);
        let integrations: HashMap<&str, &HttpIntegration> =
            d.integrations.iter().map(|i| (i.id.as_str(), i)).collect();
        let mut found: Vec<(&HttpRoute, &HttpIntegration)> = d
            .routes
            .iter()
            .filter_map(|r| Some((r, *integrations.get(r.integration_id.as_deref()?)?)))
            .collect();
        found.sort_by(|a, b| a.0.key.cmp(&b.0.key));
        let several = found.len() > 1;
        for stage in &d.stages {
            if !ask.stages.is_empty() && !ask.stages.contains(&stage.name) {
                continue;
            }
            let api_words = format!("{name} ({id}) stage {}", stage.name);
            for (route, integration) in &found {
                let unbuilt = |why: String| Unbuilt {
                    api: api_words.clone(),
                    route: route.key.clone(),
                    why,
                };
                let own_path = match route.key.split_once(' ') {
                    Some((_, p)) => p.to_string(),
                    None => "/".to_string(),
                };
                let path = probe_path(&own_path, ask);
                let stage_prefix = if stage.name == "$default" {
                    String::new()
                } else {
                    format!("/{}", stage.name)
                };
                let mut gateway = FoundHop::new(
                    "gateway",
                    Role::Gateway,
                    format!("{}{stage_prefix}{path}", api.endpoint),
                );
                gateway.notes.push(format!(
                    "HTTP API {name} ({id}), stage {}, route {}, integration {}",
                    stage.name, route.key, integration.id
                ));
                gateway.integration_timeout = timeout_setting(
                    integration.timeout_ms,
                    &format!("integration {}", integration.id),
                );
                log_settings(&mut gateway, id, stage, false, &mut out.warnings);
                if route.api_key_required {
                    gateway.needs.push("this route requires an API key: add headers = { x-api-key = \"${API_KEY}\" }".to_string());
                }
                if let Some(auth) = &route.authorization {
                    gateway.needs.push(format!("this route is authorized by {auth}: add the header its authorizer reads (Authorization), from the environment"));
                }
                let mut facts = ChainFacts::default();
                let mut notes = Vec::new();
                let mut net = NetPath::default();
                if let Some(l) = integration
                    .connection_id
                    .as_ref()
                    .and_then(|c| self.v2_links.get(c))
                {
                    notes.push(v2_note(l));
                    facts.link = Some(link_fact(l));
                    net.entry = v2_entry(l);
                }
                let uri = integration.uri.as_str();
                let (kind, tail) = if uri.contains(":servicediscovery:") {
                    match self.cloudmap_hops(uri, &path) {
                        Ok((hops, targets)) => {
                            net.targets = Some(targets);
                            (Kind::HttpCloudmap, hops)
                        }
                        Err(why) => {
                            out.unbuilt.push(unbuilt(why));
                            continue;
                        }
                    }
                } else {
                    let listener = super::model::aws::lb_of_listener(uri)
                        .and_then(|lb| self.listeners.get(&lb))
                        .and_then(|ls| ls.iter().find(|l| l.arn == uri));
                    let Some(listener) = listener else {
                        out.unbuilt.push(unbuilt(format!(
                            "integration URI {uri} is no listener that could be read"
                        )));
                        continue;
                    };
                    let network = self.lbs.get(&listener.lb_arn).is_some_and(|lb| lb.network);
                    let tail = match self.tail(listener, &path, 1) {
                        Ok(t) => t,
                        Err(why) => {
                            out.unbuilt.push(unbuilt(why));
                            continue;
                        }
                    };
                    facts.targets.extend(tail.facts);
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
                    if stage.name == "$default" {
                        "default".to_string()
                    } else {
                        slug(&stage.name)
                    }
                );
                if several {
                    let route = slug(&route.key);
                    chain_name.push('-');
                    chain_name.push_str(if route.is_empty() { "default" } else { &route });
                }
                out.chains.push(FoundChain {
                    name: chain_name,
                    kind,
                    notes,
                    hops,
                    facts,
                    api_id: id.clone(),
                    net,
                });
            }
        }
    }

    /// T6: the Cloud Map hop (what API Gateway itself calls) and the first instance as target.
    fn cloudmap_hops(
        &self,
        service_arn: &str,
        path: &str,
    ) -> Result<(Vec<FoundHop>, NetTargets), String> {
        let service_id = cloudmap_service_id(service_arn)
            .ok_or_else(|| format!("{service_arn} names no Cloud Map service"))?;
        let service = self
            .cloudmap
            .get(service_id)
            .ok_or_else(|| format!("Cloud Map service {service_id} could not be read"))?;
        let (namespace, name) = (&service.namespace, &service.name);
        let mut cloudmap = FoundHop::new(
            "cloudmap",
            Role::Cloudmap,
            format!("cloudmap://{namespace}/{name}{path}"),
        );
        cloudmap.notes.push(format!(
            "Cloud Map service {name} in namespace {namespace} ({service_arn}): API Gateway calls DiscoverInstances, no DNS; instances {}",
            if service.instances.is_empty() { "none".to_string() } else { service.instances.join(", ") }
        ));
        cloudmap.per_address = true;
        let targets = NetTargets {
            hop: "target".to_string(),
            members: service
                .instances
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
        if let Some(first) = service.instances.first() {
            let mut target = FoundHop::new("target", Role::Target, format!("http://{first}{path}"));
            target.notes.push(
                "the first registered instance (the cloudmap hop probes every one)".to_string(),
            );
            hops.push(target);
        }
        Ok((hops, targets))
    }
}

/// The service id of a Cloud Map service ARN (`…:service/srv-xyz`, maybe with a query).
pub fn cloudmap_service_id(arn: &str) -> Option<&str> {
    let arn = arn.split('?').next()?;
    arn.rsplit('/').next().filter(|s| !s.is_empty())
}

fn v2_note(l: &Link) -> String {
    format!(
        "VPC link v2 {} ({}), {}, subnets {}, security groups {}",
        l.name,
        l.id,
        l.status,
        l.subnets.join(", "),
        l.security_groups.join(", ")
    )
}

fn v2_entry(l: &Link) -> Entry {
    Entry::V2 {
        id: l.id.clone(),
        subnets: l.subnets.clone(),
        security_groups: l.security_groups.clone(),
    }
}

/// Every chain the world holds, names made unique.
pub fn assemble(world: &World, ask: &Ask) -> Assembled {
    let mut out = Assembled::default();
    for (api, detail) in &world.rest {
        world.rest_api(api, detail, ask, &mut out);
    }
    for (api, detail) in &world.http {
        world.http_api(api, detail, ask, &mut out);
    }
    // Names are unique: a second chain of the same name gets a number.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for c in &mut out.chains {
        let n = seen.entry(c.name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            c.name = format!("{}-{n}", c.name);
        }
    }
    out.warnings.sort();
    out.warnings.dedup();
    out
}

pub mod listener;

#[cfg(test)]
mod tests;

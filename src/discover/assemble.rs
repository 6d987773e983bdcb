//! From what the services said to chains: pure functions over the facts the readers gathered
//! ([`World`]), no call and no clock, so every decision is a table test away.
//!
//! A chain is one API stage's route (HTTP API) or method (REST) whose integration goes through
//! a VPC link, followed through the load balancers it names to the targets. An integration
//! that cannot be followed is an [`Unbuilt`] with its reason, never dropped in silence.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::model::aws::{
    lb_of_listener, CloudMapService, DomainMapping, HttpApi, HttpDetail, HttpIntegration,
    HttpRoute, JwtAuthorizer, Lb, Link, Listener, RestApi, RestDetail, RestMethod, Stage, Tg, Vpce,
};
use super::model::net::Host;
use super::model::rules::ListenerRule;
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
    /// By listener ARN: an ALB listener's rules (`DescribeRules`).
    pub rules: BTreeMap<String, Vec<ListenerRule>>,
    /// Custom domains' mappings to API stages (read when an API's default endpoint is off).
    pub domains: Vec<DomainMapping>,
    /// The region's execute-api interface endpoints (read when an API is private).
    pub vpc_endpoints: Vec<Vpce>,
}

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// Only these stages; empty: every stage.
    pub stages: Vec<String>,
    /// The path to probe, over every route's own.
    pub path: Option<String>,
    /// Non-idempotent methods routes may be probed with (opted into).
    pub methods: Vec<String>,
    /// Values of path parameters, by name.
    pub path_params: BTreeMap<String, String>,
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

/// The request the gateway sends its integration: what the hops behind it are probed with, so
/// a fault on the path the gateway sends is seen by them too.
#[derive(Debug, Clone, Default)]
struct Sent {
    method: String,
    /// The path (and query) the integration receives.
    path: String,
    /// The `Host` the gateway sends: the integration URI's host (REST). `None` for HTTP APIs,
    /// whose integration URI is an ARN: what they send is not documented.
    host: Option<String>,
    /// The TLS name the integration verifies, and why.
    tls_name: Option<(String, String)>,
    /// The body of an opted-in non-idempotent route.
    body: Option<(String, String)>,
    /// What was said of how the path came to be.
    because: String,
}

/// Where callers reach an API's stage: the URL up to the resource path (the stage, or a
/// custom domain's base path), the headers that name the API, and how it was chosen.
type Base = (String, Vec<(String, Setting<String>)>, Option<String>);

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
    /// The target group a listener sends `sent` to: for an ALB with rules, the first rule the
    /// request meets, in priority order (its conditions as AWS evaluates them,
    /// `assemble::listener`); else the default action. `Err`: the request ends in a
    /// fixed response or a redirect, or in no target group.
    fn target_group_for(
        &self,
        lb: &Lb,
        listener: &Listener,
        sent: &Sent,
        hop: &mut FoundHop,
    ) -> Result<String, String> {
        if let Some(rules) = self.rules.get(&listener.arn).filter(|_| !lb.network) {
            let host = sent.host.clone().unwrap_or_else(|| lb.dns.clone());
            let (path, query) = sent.path.split_once('?').unwrap_or((&sent.path, ""));
            let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let req = listener::Request {
                method: &sent.method,
                host: &host,
                path,
                query: &query,
                headers: &[],
                source: &[],
            };
            let routed = listener::evaluate(rules, &req);
            for (rule, judged) in &routed.passed_over {
                let why = match judged {
                    listener::Matches::Partly(why) | listener::Matches::Unknown(why) => {
                        why.as_str()
                    }
                    _ => "",
                };
                hop.notes.push(format!(
                    "listener rule {} (priority {}) may take some of these requests instead: {why}",
                    rule.arn, rule.priority
                ));
            }
            let Some(rule) = routed.rule else {
                return Err(format!(
                    "no rule of listener {} of {} takes {} {}",
                    listener.arn, lb.name, sent.method, sent.path
                ));
            };
            return match listener::outcome(rule) {
                listener::Outcome::Forward {
                    target_groups,
                    authenticated_first,
                } => {
                    if let Some(kind) = authenticated_first {
                        hop.notes.push(format!(
                            "the rule ({}) authenticates the caller first (authenticate-{kind}): the agent is answered by the identity provider's redirect unless it brings a session",
                            rule.priority
                        ));
                    }
                    hop.notes.push(format!(
                        "listener rule {} (priority {}) takes {} {}",
                        rule.arn, rule.priority, sent.method, sent.path
                    ));
                    // Weight 0 receives no request (ForwardActionConfig); the first group that
                    // receives some is followed.
                    let live: Vec<&(String, Option<i32>)> =
                        target_groups.iter().filter(|(_, w)| *w != Some(0)).collect();
                    if live.len() > 1 {
                        hop.notes.push(format!(
                            "the rule forwards to {} weighted target groups; the first, {}, is followed",
                            live.len(),
                            live[0].0
                        ));
                    }
                    live.first()
                        .map(|(arn, _)| arn.clone())
                        .ok_or_else(|| format!("rule {} forwards to no target group that receives requests", rule.arn))
                }
                listener::Outcome::FixedResponse { status } => Err(format!(
                    "{} {} ends in a fixed {status} response of listener {} of {} (rule {}, priority {}): nothing behind it is reached",
                    sent.method, sent.path, listener.arn, lb.name, rule.arn, rule.priority
                )),
                listener::Outcome::Redirect { status, target } => Err(format!(
                    "{} {} ends in a {status} redirect to {target} at listener {} of {} (rule {}, priority {})",
                    sent.method, sent.path, listener.arn, lb.name, rule.arn, rule.priority
                )),
                listener::Outcome::Unknown(why) => Err(format!(
                    "rule {} (priority {}) of listener {} takes {} {}, and what it does cannot be read: {why}",
                    rule.arn, rule.priority, listener.arn, sent.method, sent.path
                )),
            };
        }
        listener.forward.first().cloned().ok_or_else(|| {
            format!(
                "listener {} of {} forwards to no target group (a fixed response or a redirect)",
                listener.arn, lb.name
            )
        })
    }

    /// Hops from the load balancer of `listener` to the targets, the first at index `first`,
    /// each probed with `sent`; `Err` says why the chain cannot be followed.
    fn tail(&self, listener: &Listener, sent: &Sent, first: usize) -> Result<Tail, String> {
        let lb = self
            .lbs
            .get(&listener.lb_arn)
            .ok_or_else(|| format!("load balancer {} was not found", listener.lb_arn))?;
        let mut tail = Tail::default();
        let role = if lb.network { Role::Nlb } else { Role::Alb };
        let mut hop = FoundHop::new(&slug(&lb.name), role, lb_url(lb, listener, &sent.path));
        hop.notes.push(format!(
            "{} {} ({}), listener {} on port {}",
            if lb.network { "NLB" } else { "ALB" },
            lb.name,
            lb.arn,
            listener.arn,
            listener.port
        ));
        if first == 1 && !sent.because.is_empty() {
            hop.notes.push(sent.because.clone());
        }
        said(&mut hop, sent, &lb.dns);
        if first == 1 && listener.tls {
            if let Some((name, because)) = &sent.tls_name {
                if *name != lb.dns {
                    hop.tls_server_name = Some(Setting::new(name.clone(), because.clone()));
                }
            }
        }
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
        let tg_arn = self.target_group_for(lb, listener, sent, &mut hop)?;
        let tg = self
            .tgs
            .get(&tg_arn)
            .ok_or_else(|| format!("target group {tg_arn} could not be read"))?;
        if listener.forward.len() > 1 && !self.rules.contains_key(&listener.arn) {
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
            // An ALB registered behind the NLB (T2): follow it. The NLB passes the bytes on,
            // so the ALB sees the same request, Host included.
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
            let mut inner = self.tail(alb_listener, sent, behind_index)?;
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
            format!("{scheme}://{host}:{port}{}", sent.path),
        );
        said(&mut target, sent, &host);
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

    /// The health-check path of the targets a listener's default forward ends at (following
    /// an ALB behind an NLB): what a greedy path parameter is best given.
    fn health_path(&self, listener: &Listener) -> Option<String> {
        let tg = self.tgs.get(listener.forward.first()?)?;
        if tg.target_type == "alb" {
            let alb = tg.targets.first()?.0.clone();
            let inner = self
                .listeners
                .get(&alb)?
                .iter()
                .find(|l| l.port == tg.port)?;
            return self.health_path(inner);
        }
        tg.health.as_ref().map(|(_, _, path)| path.clone())
    }

    /// The load balancer a REST integration enters: the integration target (v2 link), the
    /// link's NLB (v1), else the load balancer whose DNS name is the URI's host.
    fn rest_entry(
        &self,
        uri: Option<&str>,
        connection_id: Option<&str>,
        integration_target: Option<&str>,
    ) -> Result<(&Lb, Option<&Link>), String> {
        let host = uri
            .and_then(|u| u.parse::<http::Uri>().ok())
            .and_then(|u| u.host().map(str::to_string));
        let by_host = || {
            host.as_deref()
                .and_then(|h| self.lbs.values().find(|lb| lb.dns == h))
        };
        let link = connection_id
            .and_then(|l| self.v1_links.get(l))
            .or_else(|| {
                // A tool that forgets connectionId: the link whose NLB is the URI's host.
                let lb = by_host()?;
                self.v1_links
                    .values()
                    .find(|l| l.target_arns.contains(&lb.arn))
            });
        let arn = integration_target
            .map(str::to_string)
            .or_else(|| link.and_then(|l| l.target_arns.first().cloned()))
            .or_else(|| by_host().map(|lb| lb.arn.clone()));
        match arn.and_then(|a| self.lbs.get(&a)) {
            Some(lb) => Ok((lb, link)),
            None => Err(format!(
                "no load balancer found for the integration ({})",
                uri.unwrap_or("no uri")
            )),
        }
    }

    /// Where callers reach a REST API's stage: the custom domain when the default endpoint is
    /// disabled; for a private API, the VPC endpoint forms AWS documents
    /// (apigateway-private-api-test-invoke-url.html); else the regional name. The URL's path
    /// (the stage, or the base path) without the resource path, headers, and a note.
    fn rest_base(&self, api: &RestApi, stage: &str) -> Result<Base, String> {
        let (id, region) = (&api.id, &self.region);
        if api.default_endpoint_disabled {
            return self.domain_base(id, stage);
        }
        if !api.private {
            return Ok((
                format!("https://{id}.execute-api.{region}.amazonaws.com/{stage}"),
                Vec::new(),
                None,
            ));
        }
        if let Some(vpce) = api.vpc_endpoint_ids.first() {
            return Ok((
                format!("https://{id}-{vpce}.execute-api.{region}.amazonaws.com/{stage}"),
                Vec::new(),
                Some(format!("a private API: reached by the name AWS gives the endpoint {vpce} the API lists in vpcEndpointIds ({{api}}-{{vpce}}.execute-api.{{region}}.amazonaws.com)")),
            ));
        }
        if let Some(e) = self.vpc_endpoints.iter().find(|e| e.private_dns) {
            return Ok((
                format!("https://{id}.execute-api.{region}.amazonaws.com/{stage}"),
                Vec::new(),
                Some(format!("a private API: the execute-api endpoint {} has private DNS on, so the API's own name resolves to it in its VPC", e.id)),
            ));
        }
        if let Some((e, dns)) = self
            .vpc_endpoints
            .iter()
            .find_map(|e| Some((e, e.dns_names.first()?)))
        {
            return Ok((
                format!("https://{dns}/{stage}"),
                vec![(
                    "x-apigw-api-id".to_string(),
                    Setting::new(
                        id.clone(),
                        format!("a private API reached by its VPC endpoint {}'s own name: the header says which API", e.id),
                    ),
                )],
                None,
            ));
        }
        Ok((
            format!("https://{id}.execute-api.{region}.amazonaws.com/{stage}"),
            Vec::new(),
            Some("a private API, and no execute-api VPC endpoint was found: this name resolves only where one has private DNS on".to_string()),
        ))
    }

    /// The custom domain a stage is mapped to, when the default endpoint is disabled.
    fn domain_base(&self, api: &str, stage: &str) -> Result<Base, String> {
        let m = self
            .domains
            .iter()
            .find(|m| m.api_id == api && m.stage == stage)
            .ok_or_else(|| format!("the API's default endpoint is disabled (disableExecuteApiEndpoint) and no custom domain maps stage {stage}"))?;
        let base = if m.base_path.is_empty() {
            format!("https://{}", m.domain)
        } else {
            format!("https://{}/{}", m.domain, m.base_path.trim_matches('/'))
        };
        Ok((
            base,
            Vec::new(),
            Some(format!(
                "the default endpoint is disabled: callers use the custom domain {} (mapping {:?} to stage {stage})",
                m.domain, m.base_path
            )),
        ))
    }

    fn rest_api(&self, api: &RestApi, d: &RestDetail, ask: &Ask, out: &mut Assembled) {
        let (id, name) = (&api.id, &api.name);
        for stage in &d.stages {
            if !ask.stages.is_empty() && !ask.stages.contains(&stage.name) {
                continue;
            }
            let (methods, source) = match d.deployed.get(&stage.name) {
                Some(m) => (m, "read from the stage's deployment (GetExport)"),
                None => (&d.methods, "read from the API's working copy (GetResources): what the stage's deployment serves may differ"),
            };
            let several = methods.len() > 1;
            let api_words = format!("{name} ({id}) stage {}", stage.name);
            for m in methods {
                let route = format!("{} {}", m.method, m.path);
                let unbuilt = |why: String| Unbuilt {
                    api: api_words.clone(),
                    route: route.clone(),
                    why,
                };
                match self.rest_chain(api, stage, m, ask, source, several) {
                    Ok(chain) => out.chains.push(chain),
                    Err(why) => out.unbuilt.push(unbuilt(why)),
                }
            }
            let _ = &mut out.warnings;
            let mut words = Vec::new();
            log_settings(
                &mut FoundHop::new("", Role::Gateway, String::new()),
                id,
                stage,
                true,
                &mut words,
            );
            out.warnings.extend(words);
        }
    }

    /// The method a route is probed with, and the chain's state: GET for GET, HEAD and ANY;
    /// a method that changes state only when opted into (else the chain is written commented
    /// out); never OPTIONS (the gateway answers preflights itself, and REST CORS methods are
    /// usually MOCK).
    fn method_for(route_method: &str, ask: &Ask) -> Result<(String, Option<String>), String> {
        match route_method {
            "GET" | "ANY" => Ok(("GET".to_string(), None)),
            // A route that takes only HEAD answers GET with the gateway's own 404.
            "HEAD" => Ok(("HEAD".to_string(), None)),
            "OPTIONS" => Err("OPTIONS is answered by the gateway itself (CORS preflight): nothing behind it would be tested".to_string()),
            m if ask.methods.iter().any(|o| o == m) => Ok((m.to_string(), None)),
            m => Ok((m.to_string(), Some(format!(
                "the route takes only {m}, which changes state: probed only when you opt in (--methods {m} or [discovery] methods = [\"{m}\"]), with a body it accepts"
            )))),
        }
    }

    /// The values of a route's path parameters: the user's, and a greedy parameter's child
    /// path chosen to reach the targets' health check where the mapping allows.
    fn param_values(
        template: &str,
        backend_template: Option<&str>,
        health: Option<&str>,
        ask: &Ask,
    ) -> Result<(BTreeMap<String, String>, Option<String>), String> {
        let mut values = BTreeMap::new();
        let mut said = None;
        for p in request::params(template) {
            if let Some(v) = ask.path_params.get(&p.name) {
                values.insert(p.name.clone(), v.clone());
                continue;
            }
            if !p.greedy {
                return Err(format!(
                    "path parameter {{{}}} has no value: pass --path-param {}=VALUE ([discovery] path_params)",
                    p.name, p.name
                ));
            }
            let from_health = backend_template
                .zip(health)
                .and_then(|(t, h)| request::greedy_from_health(t, &p.name, h));
            let child = match from_health {
                Some(c) => {
                    said = Some(format!(
                        "{{{}+}} is given {c:?}: the backend then receives the target group's health-check path {}",
                        p.name,
                        health.unwrap_or("")
                    ));
                    c
                }
                None => {
                    said = Some(format!(
                        "{{{}+}} is given {:?} (never the root of a proxy-only API, which answers 403 Missing Authentication Token); pass --path-param {}=PATH for another",
                        p.name,
                        request::DEFAULT_CHILD,
                        p.name
                    ));
                    request::DEFAULT_CHILD.to_string()
                }
            };
            values.insert(p.name.clone(), child);
        }
        Ok((values, said))
    }

    fn rest_chain(
        &self,
        api: &RestApi,
        stage: &Stage,
        m: &RestMethod,
        ask: &Ask,
        source: &str,
        several: bool,
    ) -> Result<FoundChain, String> {
        let (id, name) = (&api.id, &api.name);
        let vars = |t: &str| {
            request::stage_variables(t, &stage.variables).map_err(|v| {
                format!(
                    "stage variable {v} is not defined on stage {}: ${{stageVariables.{v}}} cannot be resolved",
                    stage.name
                )
            })
        };
        let uri = m.uri.as_deref().map(vars).transpose()?;
        let connection = m.connection_id.as_deref().map(vars).transpose()?;
        let (method, disabled) = Self::method_for(&m.method, ask)?;
        let (lb, link) = self.rest_entry(
            uri.as_deref(),
            connection.as_deref(),
            m.integration_target.as_deref(),
        )?;
        let parsed = uri.as_deref().and_then(|u| u.parse::<http::Uri>().ok());
        let uri_path = parsed
            .as_ref()
            .map(|u| u.path().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        let listeners = self
            .listeners
            .get(&lb.arn)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let port = parsed.as_ref().and_then(|u| u.port_u16());
        let listener = listeners
            .iter()
            .find(|l| Some(l.port) == port)
            .or_else(|| listeners.first())
            .ok_or_else(|| format!("the load balancer {} has no listener", lb.name))?;
        // The request: the user's path, else the resource's with its parameters filled.
        let (gateway_path, backend, mut notes) = match &ask.path {
            Some(p) => (
                p.clone(),
                p.clone(),
                vec!["the path given (--path) is probed on every hop".to_string()],
            ),
            None => {
                let (values, said) = Self::param_values(
                    &m.path,
                    Some(&uri_path),
                    self.health_path(listener).as_deref(),
                    ask,
                )?;
                let gateway = request::fill(&m.path, &values)
                    .map_err(|n| format!("path parameter {{{n}}} has no value"))?;
                let backend = request::rest_backend_path(&uri_path, &values, &m.request_parameters)
                    .map_err(|n| {
                        format!(
                            "the integration URI's {{{n}}} has no value in the parameter mapping"
                        )
                    })?;
                (gateway, backend, said.into_iter().collect::<Vec<_>>())
            }
        };
        for (what, raw, resolved) in [
            ("integration URI", &m.uri, &uri),
            ("VPC link id", &m.connection_id, &connection),
        ] {
            if let (Some(raw), Some(resolved)) = (raw, resolved) {
                if raw.contains("${stageVariables.") {
                    notes.push(format!(
                        "the {what} {raw} is {resolved} with stage {}'s stageVariables",
                        stage.name
                    ));
                }
            }
        }
        let v2 = m.integration_target.is_some();
        let (path, because) = if v2 {
            let (p, prefixed) = request::prefixed_path(
                &stage.name,
                &backend,
                &m.request_parameters,
                &BTreeMap::new(),
            );
            let because = if prefixed {
                format!("the gateway sends {p}: API Gateway includes the stage in the path it sends a private integration through a VPC link v2 (private-integration.html)")
            } else {
                format!("the gateway sends {p} (parameter mapping overwrites the path)")
            };
            (p, because)
        } else {
            (
                backend.clone(),
                format!("the gateway sends {backend}: the integration URI's path, its parameters mapped (a VPC link v1 adds no stage)"),
            )
        };
        let uri_host = parsed.as_ref().and_then(|u| u.host().map(str::to_string));
        let https = parsed.as_ref().and_then(|u| u.scheme_str()) == Some("https");
        // Written on a chain left commented out too: uncommenting it is all it takes.
        let body = (method != "GET" && method != "HEAD")
            .then(|| ("{}".to_string(), "application/json".to_string()));
        let sent = Sent {
            method: method.clone(),
            path,
            host: uri_host.clone(),
            tls_name: uri_host.filter(|_| https).map(|h| {
                (
                    h,
                    "the integration URI's host: the certificate name API Gateway verifies"
                        .to_string(),
                )
            }),
            body,
            because,
        };
        let tail = self.tail(listener, &sent, 1)?;
        let kind = match (lb.network, tail.alb_behind_nlb) {
            (true, true) => Kind::RestNlbAlb,
            (true, false) => Kind::RestNlb,
            (false, _) => Kind::RestAlb,
        };
        let (base, headers, host_note) = self.rest_base(api, &stage.name)?;
        let mut gateway = FoundHop::new("gateway", Role::Gateway, format!("{base}{gateway_path}"));
        gateway.headers = headers;
        gateway.notes.push(format!(
            "REST API {name} ({id}), stage {}, {} {}; {source}",
            stage.name, m.method, m.path
        ));
        gateway.notes.extend(host_note);
        gateway.notes.append(&mut notes);
        gateway.integration_timeout =
            timeout_setting(m.timeout_ms, &format!("{} {}", m.method, m.path));
        log_settings(&mut gateway, id, stage, true, &mut Vec::new());
        opted(&mut gateway, &method, &sent, disabled.is_none());
        if m.insecure_skip_verification {
            gateway.notes.push("the integration skips TLS verification (tlsConfig.insecureSkipVerification); the agent verifies: set ca_file on the hop behind to the certificate's CA".to_string());
        }
        if m.api_key_required {
            gateway.needs.push("this method requires an API key (apiKeyRequired): add headers = { x-api-key = \"${API_KEY}\" }".to_string());
        }
        let account = lb.arn.split(':').nth(4).unwrap_or("ACCOUNT_ID");
        authorized(
            &mut gateway,
            &Caller {
                region: &self.region,
                resource: format!(
                    "arn:aws:execute-api:{}:{account}:{id}/{}/{}{}",
                    self.region,
                    stage.name,
                    m.method.replace("ANY", "*"),
                    m.path
                ),
                authorization: m.authorization.as_deref(),
                scopes: &m.authorization_scopes,
                jwt: None,
            },
        );
        let mut facts = ChainFacts::default();
        let mut chain_notes = Vec::new();
        let mut entry = Entry::Unknown;
        match (link, v2) {
            (Some(l), _) => {
                entry = Entry::V1;
                chain_notes.push(format!("VPC link v1 {} ({}), {}", l.name, l.id, l.status));
                facts.link = Some(link_fact(l));
            }
            (None, true) => {
                if let Some(l) = connection.as_ref().and_then(|c| self.v2_links.get(c)) {
                    chain_notes.push(v2_note(l));
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
                chain_notes.push("VPC link: not found (connectionId not returned)".to_string())
            }
        }
        let mut hops = vec![gateway];
        hops.extend(tail.hops);
        facts.targets.extend(tail.facts);
        chain_notes.extend(tail.notes);
        let mut chain_name = format!("{}-{}", slug(name), slug(&stage.name));
        if several {
            let route = slug(&format!("{} {}", m.method, m.path));
            chain_name.push('-');
            chain_name.push_str(if route.is_empty() { "root" } else { &route });
        }
        Ok(FoundChain {
            name: chain_name,
            kind,
            notes: chain_notes,
            hops,
            facts,
            api_id: id.clone(),
            net: NetPath {
                entry,
                lbs: tail.net_lbs,
                targets: tail.net_targets,
            },
            disabled,
        })
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
                let served = Served {
                    route,
                    integration,
                    authorizers: &d.authorizers,
                };
                match self.http_chain(api, stage, served, ask, several) {
                    Ok(chain) => out.chains.push(chain),
                    Err(why) => out.unbuilt.push(Unbuilt {
                        api: api_words.clone(),
                        route: route.key.clone(),
                        why,
                    }),
                }
            }
            let mut words = Vec::new();
            log_settings(
                &mut FoundHop::new("", Role::Gateway, String::new()),
                id,
                stage,
                false,
                &mut words,
            );
            out.warnings.extend(words);
        }
    }

    fn http_chain(
        &self,
        api: &HttpApi,
        stage: &Stage,
        served: Served<'_>,
        ask: &Ask,
        several: bool,
    ) -> Result<FoundChain, String> {
        let Served {
            route,
            integration,
            authorizers,
        } = served;
        let (id, name) = (&api.id, &api.name);
        let (route_method, own_path) = match route.key.split_once(' ') {
            Some((m, p)) => (m.to_string(), p.to_string()),
            // `$default` catches every request the other routes do not.
            None => ("ANY".to_string(), "/{proxy+}".to_string()),
        };
        let (method, disabled) = Self::method_for(&route_method, ask)?;
        let uri = request::stage_variables(&integration.uri, &stage.variables)
            .map_err(|v| format!("stage variable {v} is not defined on stage {}", stage.name))?;
        let listener = (!uri.contains(":servicediscovery:"))
            .then(|| lb_of_listener(&uri))
            .flatten()
            .and_then(|lb| self.listeners.get(&lb))
            .and_then(|ls| ls.iter().find(|l| l.arn == uri));
        let (path, values, mut notes) = match &ask.path {
            Some(p) => (
                p.clone(),
                BTreeMap::new(),
                vec!["the path given (--path) is probed on every hop".to_string()],
            ),
            None => {
                let health = listener.and_then(|l| self.health_path(l));
                let (values, said) = Self::param_values(&own_path, None, health.as_deref(), ask)?;
                let p = request::fill(&own_path, &values)
                    .map_err(|n| format!("path parameter {{{n}}} has no value"))?;
                (p, values, said.into_iter().collect())
            }
        };
        let (sent_path, prefixed) =
            request::prefixed_path(&stage.name, &path, &integration.request_parameters, &values);
        let because = if prefixed {
            format!("the gateway sends {sent_path}: API Gateway includes the stage in the path it sends a private integration (http-api-develop-integrations-private.html); what Host it sends is not documented: set headers = {{ host = ... }} where a listener rule matches on it")
        } else {
            format!("the gateway sends {sent_path}; what Host it sends is not documented: set headers = {{ host = ... }} where a listener rule matches on it")
        };
        // Written on a chain left commented out too: uncommenting it is all it takes.
        let body = (method != "GET" && method != "HEAD")
            .then(|| ("{}".to_string(), "application/json".to_string()));
        let sent = Sent {
            method: method.clone(),
            path: sent_path,
            host: None,
            tls_name: integration.server_name.clone().map(|n| {
                (
                    n,
                    "the integration's tlsConfig.serverNameToVerify: the certificate name API Gateway verifies".to_string(),
                )
            }),
            body,
            because,
        };
        let base = if api.default_endpoint_disabled {
            let (b, _, note) = self.domain_base(id, &stage.name)?;
            notes.extend(note);
            b
        } else if stage.name == "$default" {
            api.endpoint.clone()
        } else {
            format!("{}/{}", api.endpoint, stage.name)
        };
        let mut gateway = FoundHop::new("gateway", Role::Gateway, format!("{base}{path}"));
        gateway.notes.push(format!(
            "HTTP API {name} ({id}), stage {}, route {}, integration {}; routes and integrations read from the API's working copy (what an auto-deployed stage serves)",
            stage.name, route.key, integration.id
        ));
        gateway.notes.append(&mut notes);
        gateway.integration_timeout = timeout_setting(
            integration.timeout_ms,
            &format!("integration {}", integration.id),
        );
        log_settings(&mut gateway, id, stage, false, &mut Vec::new());
        opted(&mut gateway, &method, &sent, disabled.is_none());
        if route.api_key_required {
            gateway.needs.push(
                "this route requires an API key: add headers = { x-api-key = \"${API_KEY}\" }"
                    .to_string(),
            );
        }
        let account = uri.split(':').nth(4).unwrap_or("ACCOUNT_ID");
        let jwt = route
            .authorizer_id
            .as_ref()
            .and_then(|a| authorizers.iter().find(|j| &j.id == a));
        authorized(
            &mut gateway,
            &Caller {
                region: &self.region,
                resource: format!(
                    "arn:aws:execute-api:{}:{account}:{id}/{}/{}{}",
                    self.region,
                    stage.name,
                    route_method.replace("ANY", "*"),
                    own_path
                ),
                authorization: route.authorization.as_deref(),
                scopes: &route.authorization_scopes,
                jwt,
            },
        );
        let mut facts = ChainFacts::default();
        let mut chain_notes = Vec::new();
        let mut net = NetPath::default();
        if let Some(l) = integration
            .connection_id
            .as_ref()
            .and_then(|c| self.v2_links.get(c))
        {
            chain_notes.push(v2_note(l));
            facts.link = Some(link_fact(l));
            net.entry = v2_entry(l);
        }
        let (kind, tail) = if uri.contains(":servicediscovery:") {
            let (hops, targets) = self.cloudmap_hops(&uri, &sent)?;
            net.targets = Some(targets);
            (Kind::HttpCloudmap, hops)
        } else {
            let listener = listener.ok_or_else(|| {
                format!("integration URI {uri} is no listener that could be read")
            })?;
            let network = self.lbs.get(&listener.lb_arn).is_some_and(|lb| lb.network);
            let tail = self.tail(listener, &sent, 1)?;
            facts.targets.extend(tail.facts);
            chain_notes.extend(tail.notes);
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
        Ok(FoundChain {
            name: chain_name,
            kind,
            notes: chain_notes,
            hops,
            facts,
            api_id: id.clone(),
            net,
            disabled,
        })
    }

    /// T6: the Cloud Map hop (what API Gateway itself calls) and the first instance as target.
    fn cloudmap_hops(
        &self,
        service_arn: &str,
        sent: &Sent,
    ) -> Result<(Vec<FoundHop>, NetTargets), String> {
        let service_id = cloudmap_service_id(service_arn)
            .ok_or_else(|| format!("{service_arn} names no Cloud Map service"))?;
        let service = self
            .cloudmap
            .get(service_id)
            .ok_or_else(|| format!("Cloud Map service {service_id} could not be read"))?;
        let (namespace, name) = (&service.namespace, &service.name);
        // The integration URI's query filters instances by attribute (API Gateway passes it to
        // DiscoverInstances); a cloudmap:// URL's query means the same. The path the gateway
        // sends goes without its own query there, which the target hop keeps.
        let attributes = service_arn
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        let path = sent
            .path
            .split_once('?')
            .map_or(sent.path.as_str(), |(p, _)| p);
        let mut cloudmap = FoundHop::new(
            "cloudmap",
            Role::Cloudmap,
            format!("cloudmap://{namespace}/{name}{path}{attributes}"),
        );
        if !sent.because.is_empty() {
            cloudmap.notes.push(sent.because.clone());
        }
        said(&mut cloudmap, sent, "");
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
            let mut target = FoundHop::new(
                "target",
                Role::Target,
                format!("http://{first}{}", sent.path),
            );
            said(&mut target, sent, first);
            target.notes.push(
                "the first registered instance (the cloudmap hop probes every one)".to_string(),
            );
            hops.push(target);
        }
        Ok((hops, targets))
    }
}

/// The `Host` the gateway sends, on a hop whose own host differs (an ALB reached through an NLB
/// sees the NLB's name; a target sees what its load balancer passes on).
fn said(hop: &mut FoundHop, sent: &Sent, own_host: &str) {
    if let Some(host) = sent.host.as_ref().filter(|h| h.as_str() != own_host) {
        hop.headers.push((
            "host".to_string(),
            Setting::new(
                host.clone(),
                "the Host API Gateway sends its integration: the integration URI's host",
            ),
        ));
    }
    if sent.method != "GET" {
        hop.method = Some(Setting::new(
            sent.method.clone(),
            "the route's method, as the gateway forwards it",
        ));
        if let Some(body) = &sent.body {
            hop.body = Some(Setting::new(
                body.clone(),
                "a body the route accepts: edit it to one your application takes",
            ));
        }
    }
}

/// One route of an HTTP API as it serves: its integration and the API's JWT authorizers.
#[derive(Clone, Copy)]
struct Served<'a> {
    route: &'a HttpRoute,
    integration: &'a HttpIntegration,
    authorizers: &'a [JwtAuthorizer],
}

/// How a method is authorized, for [`authorized`].
struct Caller<'a> {
    region: &'a str,
    /// The `execute-api:Invoke` resource of the route.
    resource: String,
    /// `AWS_IAM`, `COGNITO_USER_POOLS`, `JWT`, `CUSTOM`; `None`: open.
    authorization: Option<&'a str>,
    scopes: &'a [String],
    jwt: Option<&'a JwtAuthorizer>,
}

/// The auth a route needs, as the agent can do it: SigV4 written (it needs no secret, the
/// task role signs), an OAuth 2.0 client-credentials block to fill in for JWT and Cognito
/// authorizers (secrets are never discovered), a word on what the agent cannot do.
fn authorized(gateway: &mut FoundHop, c: &Caller) {
    let oauth2 = |scopes: &[String], client_id: &str, why: &str| {
        let scopes = if scopes.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
            format!(", scopes = [{}]", quoted.join(", "))
        };
        format!(
            "{why}: the agent fetches a token with the client credentials grant; fill in and uncomment:\n\
             auth = {{ oauth2 = {{ token_url = \"https://YOUR_DOMAIN.auth.{}.amazoncognito.com/oauth2/token\", client_id = \"{client_id}\", client_secret = \"${{HOPWATCH_CLIENT_SECRET}}\"{scopes} }} }}",
            c.region
        )
    };
    match c.authorization {
        None => {}
        Some("AWS_IAM") => {
            gateway.sigv4_region = Some(Setting::new(
                c.region.to_string(),
                format!("authorized by AWS_IAM: the agent signs each probe (SigV4) with its role, which needs execute-api:Invoke on {}", c.resource),
            ));
        }
        Some("JWT") => {
            let (issuer, client) = match c.jwt {
                Some(j) => (
                    j.issuer.clone().unwrap_or_else(|| "its issuer".to_string()),
                    j.audience.first().cloned().unwrap_or_else(|| "YOUR_CLIENT_ID".to_string()),
                ),
                None => ("its issuer".to_string(), "YOUR_CLIENT_ID".to_string()),
            };
            gateway.needs.push(oauth2(
                c.scopes,
                &client,
                &format!("this route's JWT authorizer takes tokens of {issuer} for its audience (client_id: an app client it lists, with a secret and the client credentials flow)"),
            ));
        }
        Some("COGNITO_USER_POOLS") if !c.scopes.is_empty() => {
            gateway.needs.push(oauth2(
                c.scopes,
                "YOUR_CLIENT_ID",
                "this method's Cognito authorizer takes access tokens with these scopes",
            ));
        }
        Some("COGNITO_USER_POOLS") => gateway.needs.push(
            "this method's Cognito authorizer has no authorizationScopes, so it takes only ID tokens (apigateway-enable-cognito-user-pool.html), which the client credentials grant cannot give: add scopes to the method (a resource server's) to let the agent in with auth.oauth2, or send a user's ID token in headers = { authorization = \"${ID_TOKEN}\" }".to_string(),
        ),
        Some(other) => gateway.needs.push(format!(
            "this route is authorized by {other} (a Lambda authorizer): add the header it reads, from the environment (headers = {{ authorization = \"${{TOKEN}}\" }})"
        )),
    }
}

/// The gateway hop of an opted-in method: its method and body.
fn opted(gateway: &mut FoundHop, method: &str, sent: &Sent, opted_in: bool) {
    if method != "GET" {
        gateway.method = Some(Setting::new(
            method.to_string(),
            if opted_in {
                "the route takes only this method, opted into (--methods)"
            } else {
                "the route takes only this method"
            },
        ));
        if let Some(body) = &sent.body {
            gateway.body = Some(Setting::new(
                body.clone(),
                "a body the route accepts: edit it to one your application takes",
            ));
        }
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
pub mod request;

#[cfg(test)]
mod tests;

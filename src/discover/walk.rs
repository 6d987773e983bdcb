//! The walk: the readers in order, each object read once, through one [`Budget`], then
//! [`assemble`](super::assemble) and the network judged along every chain.
//!
//! 1. API Gateway's listings: REST APIs, HTTP APIs, VPC links v1 and v2 (a constant: one page
//!    each in most accounts).
//! 2. Per API this agent owns: its stages (one call). When no stage's deployment or update time
//!    changed since the last walk, what the API serves is known already: nothing more is read.
//!    Otherwise its resources (REST) or routes and integrations (HTTP API), and what each
//!    REST stage's deployment serves (`GetExport`).
//! 3. The load balancers (one listing), then, for those the integrations name, their
//!    attributes, listeners and an ALB listener's rules, the target groups those forward to,
//!    their attributes and targets' health: each shared object once, however many chains use
//!    it.
//! 4. Cloud Map services, the targets' interfaces.
//! 5. Custom domains, when an API's default endpoint is off; execute-api VPC endpoints, when
//!    an API is private.
//! 6. The security groups, subnets, NACLs and prefix lists along every path (EC2).
//!
//! A fact that cannot be read this walk is taken from the last walk that read it ([`Memory`]),
//! and said to be old; absent (a listing without it, a NotFound) it is gone. A failed call
//! never stops the walk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

use super::assemble::{self, Ask, World};
use super::call::{Budget, CallError};
use super::model::aws::{
    CloudMapService, Dated, DomainMapping, HttpApi, HttpDetail, Lb, Link, Listener, RestApi,
    RestDetail, Stage, Tg, Vpce,
};
use super::model::rules::{Action, ListenerRule};
use super::model::{Estate, WalkError};
use super::read::{self, ec2::NetMemory, Clients, Reader};
use crate::config::Shard;

/// What to walk.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The AWS region; `None`: the SDK's default chain.
    pub region: Option<String>,
    /// One endpoint for every service (tests, or VPC interface endpoints).
    pub endpoint_url: Option<String>,
    /// Only these API ids; empty: every API with a VPC-link integration.
    pub apis: Vec<String>,
    /// Only these stages; empty: every stage.
    pub stages: Vec<String>,
    /// The path to probe over every route's own.
    pub path: Option<String>,
    /// Non-idempotent methods routes may be probed with.
    pub methods: Vec<String>,
    /// Values of path parameters.
    pub path_params: BTreeMap<String, String>,
    /// The APIs of this agent's shard: each of a group's agents reads in detail only the
    /// APIs it owns (by API id), and spends its share of the rate.
    pub shard: Shard,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            region: None,
            endpoint_url: None,
            apis: Vec::new(),
            stages: Vec::new(),
            path: None,
            methods: Vec::new(),
            path_params: BTreeMap::new(),
            shard: Shard::WHOLE,
        }
    }
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
            methods: d.methods.clone(),
            path_params: d.path_params.clone(),
            shard: Shard::WHOLE,
        }
    }
}

/// What earlier walks read, kept for the walks after them: what each API served with the
/// stamp of its stages (to skip reading it again), and the last good reading of everything
/// else, for when a later read fails. The agent keeps one across walks; `discover` and
/// `explain` start with an empty one.
#[derive(Debug, Default)]
pub struct Memory {
    rest_apis: Option<Dated<Vec<RestApi>>>,
    http_apis: Option<Dated<Vec<HttpApi>>>,
    v1_links: Option<Dated<Vec<Link>>>,
    v2_links: Option<Dated<Vec<Link>>>,
    rest: HashMap<String, (Stamp, Dated<RestDetail>)>,
    http: HashMap<String, (Stamp, Dated<HttpDetail>)>,
    lbs: Option<Dated<BTreeMap<String, Lb>>>,
    lb_attributes: HashMap<String, Dated<BTreeMap<String, String>>>,
    listeners: HashMap<String, Dated<Vec<Listener>>>,
    rules: HashMap<String, Dated<Vec<ListenerRule>>>,
    domains: Option<Dated<Vec<DomainMapping>>>,
    vpc_endpoints: Option<Dated<Vec<Vpce>>>,
    tgs: HashMap<String, Dated<Tg>>,
    cloudmap: HashMap<String, Dated<CloudMapService>>,
    net: NetMemory,
}

impl Memory {
    /// Forgets what nothing refers to any more, once a walk is over. The per-object readings
    /// are dropped by a NotFound, but an object that is gone is usually never asked for again
    /// (a deleted load balancer is not in the listing, a target group no listener forwards to
    /// is not described, a deregistered target's interface is not looked up), so without this
    /// the agent would keep every object it ever read: memory that grows with the account's
    /// history, not its size. Kept: the load balancers of the last good listing, the
    /// listeners of those, the rules of those listeners, the target groups those forward to,
    /// the Cloud Map services this walk's integrations name, and every network object this
    /// walk judged a path with (read now, or taken from here because the read failed).
    fn forget_unused(&mut self, services: &BTreeSet<String>, network: &super::model::net::Network) {
        if let Some(lbs) = &self.lbs {
            self.lb_attributes
                .retain(|arn, _| lbs.value.contains_key(arn));
            self.listeners.retain(|arn, _| lbs.value.contains_key(arn));
        }
        let listeners: BTreeSet<&str> = self
            .listeners
            .values()
            .flat_map(|d| d.value.iter().map(|l| l.arn.as_str()))
            .collect();
        self.rules.retain(|arn, _| listeners.contains(arn.as_str()));
        let forwarded_to: BTreeSet<String> = self
            .listeners
            .values()
            .flat_map(|d| d.value.iter().flat_map(|l| l.forward.iter().cloned()))
            .chain(
                self.rules
                    .values()
                    .flat_map(|d| d.value.iter().flat_map(forwarded)),
            )
            .collect();
        self.tgs.retain(|arn, _| forwarded_to.contains(arn));
        self.cloudmap.retain(|id, _| services.contains(id));
        self.net.keep_only(network);
    }
}

/// The stages of an API as change detection compares them.
type Stamp = Vec<(String, Option<String>, Option<i64>)>;

/// A walk in progress: what it read and what failed.
struct Walk<'a> {
    r: Reader<'a>,
    now: SystemTime,
    errors: Vec<WalkError>,
}

impl Walk<'_> {
    fn failed(&mut self, e: &CallError) {
        tracing::warn!(service = e.service.as_str(), action = e.operation, error = %e.message, "discovery: a call failed; going on without it");
        self.errors.push(e.noted());
    }

    /// A listing read now, or the last good one when it cannot be read.
    fn listed<T: Clone>(
        &mut self,
        read: Result<T, CallError>,
        memory: &mut Option<Dated<T>>,
    ) -> Option<T> {
        match read {
            Ok(v) => {
                *memory = Some(Dated {
                    value: v.clone(),
                    read_at: self.now,
                });
                Some(v)
            }
            Err(e) => {
                self.failed(&e);
                memory.as_ref().map(|d| d.value.clone())
            }
        }
    }

    /// One object read by key now, else its last good reading; a NotFound forgets it.
    fn one<T: Clone>(
        &mut self,
        key: &str,
        read: Result<T, CallError>,
        memory: &mut HashMap<String, Dated<T>>,
    ) -> Option<T> {
        match read {
            Ok(v) => {
                memory.insert(
                    key.to_string(),
                    Dated {
                        value: v.clone(),
                        read_at: self.now,
                    },
                );
                Some(v)
            }
            Err(e) if e.not_found() => {
                memory.remove(key);
                None
            }
            Err(e) => {
                self.failed(&e);
                memory.get(key).map(|d| d.value.clone())
            }
        }
    }
}

/// Walks the region as `options` say, spending `budget`, remembering in `memory`.
pub async fn walk(
    clients: &Clients,
    options: &Options,
    budget: &Budget,
    memory: &mut Memory,
) -> Estate {
    let mut w = Walk {
        r: Reader { c: clients, budget },
        now: SystemTime::now(),
        errors: Vec::new(),
    };
    let mut world = World {
        region: clients.region.clone(),
        ..World::default()
    };
    let wanted = |id: &str| {
        (options.apis.is_empty() || options.apis.iter().any(|a| a == id)) && options.shard.owns(id)
    };
    let mut apis_seen = Vec::new();

    // 1. Listings.
    let rest_apis = read::rest::apis(&w.r).await;
    let rest_apis = w
        .listed(rest_apis, &mut memory.rest_apis)
        .unwrap_or_default();
    let http_apis = read::http::apis(&w.r).await;
    let http_apis = w
        .listed(http_apis, &mut memory.http_apis)
        .unwrap_or_default();
    let v1 = read::rest::links(&w.r).await;
    world.v1_links = w
        .listed(v1, &mut memory.v1_links)
        .unwrap_or_default()
        .into_iter()
        .map(|l| (l.id.clone(), l))
        .collect();
    let v2 = read::http::links(&w.r).await;
    world.v2_links = w
        .listed(v2, &mut memory.v2_links)
        .unwrap_or_default()
        .into_iter()
        .map(|l| (l.id.clone(), l))
        .collect();
    // Forget what no listing holds any more.
    memory
        .rest
        .retain(|id, _| rest_apis.iter().any(|a| &a.id == id));
    memory
        .http
        .retain(|id, _| http_apis.iter().any(|a| &a.id == id));

    // 2. Each API's stages; its detail only when they changed.
    for api in rest_apis.iter().filter(|a| wanted(&a.id)) {
        let stages = read::rest::stages(&w.r, &api.id).await;
        if let Some((detail, fresh)) =
            rest_detail(&mut w, api, stages, &options.stages, memory).await
        {
            apis_seen.push((api.id.clone(), fresh));
            world.rest.push((api.clone(), detail));
        }
    }
    for api in http_apis.iter().filter(|a| wanted(&a.id)) {
        let stages = read::http::stages(&w.r, &api.id).await;
        if let Some((detail, fresh)) = http_detail(&mut w, api, stages, memory).await {
            apis_seen.push((api.id.clone(), fresh));
            world.http.push((api.clone(), detail));
        }
    }

    // 3. Load balancers, listeners, target groups: what the integrations name, once each.
    if !world.rest.is_empty() || !world.http.is_empty() {
        load_balancing(&mut w, &mut world, memory).await;
    }

    // 4. Cloud Map services; the targets' interfaces.
    let mut namespaces = HashMap::new();
    let services: BTreeSet<String> = world
        .http
        .iter()
        .flat_map(|(_, d)| &d.integrations)
        .filter(|i| i.uri.contains(":servicediscovery:"))
        .filter_map(|i| assemble::cloudmap_service_id(&i.uri).map(str::to_string))
        .collect();
    for id in &services {
        let read = read::cloudmap::service(&w.r, id, &mut namespaces).await;
        if let Some(s) = w.one(id, read, &mut memory.cloudmap) {
            world.cloudmap.insert(id.clone(), s);
        }
    }
    let instances: Vec<String> = world
        .tgs
        .values()
        .filter(|t| t.target_type == "instance")
        .flat_map(|t| t.targets.iter().map(|x| x.0.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut network = super::model::net::Network::default();
    let errors = read::ec2::hosts(&w.r, &instances, &[], &mut memory.net, &mut network).await;
    w.errors.extend(errors);
    world.hosts = network.hosts.clone();

    // 5. How callers reach the APIs: custom domains, read only when an API's default
    // endpoint is off; execute-api VPC endpoints, only when an API is private.
    let disabled = world.rest.iter().any(|(a, _)| a.default_endpoint_disabled)
        || world.http.iter().any(|(a, _)| a.default_endpoint_disabled);
    if disabled {
        let rest = read::rest::domains(&w.r).await;
        let http = match &rest {
            Ok(_) => Some(read::http::domains(&w.r).await),
            Err(_) => None,
        };
        let read = match (rest, http) {
            (Ok(mut rest), Some(Ok(http))) => {
                rest.extend(http);
                Ok(rest)
            }
            (Err(e), _) | (_, Some(Err(e))) => Err(e),
            (Ok(_), None) => Ok(Vec::new()),
        };
        world.domains = w.listed(read, &mut memory.domains).unwrap_or_default();
    }
    if world.rest.iter().any(|(a, _)| a.private) {
        let read = read::ec2::vpc_endpoints(&w.r).await;
        world.vpc_endpoints = w
            .listed(read, &mut memory.vpc_endpoints)
            .unwrap_or_default();
    }

    let assembled = assemble::assemble(
        &world,
        &Ask {
            stages: options.stages.clone(),
            path: options.path.clone(),
            methods: options.methods.clone(),
            path_params: options.path_params.clone(),
        },
    );
    let mut chains = assembled.chains;

    // 6. The security groups and NACLs along every path: each chain's edges, judged once here
    // and carried as facts (explain prints them; the agent quotes and exports them).
    let paths: Vec<&super::model::NetPath> = chains.iter().map(|c| &c.net).collect();
    let failures = read::ec2::network(&w.r, &paths, &mut memory.net, &mut network).await;
    w.errors.extend(failures);
    for c in &mut chains {
        c.facts.path = super::explain::judge(c, &network).edges;
    }
    memory.forget_unused(&services, &network);
    Estate {
        region: clients.region.clone(),
        chains,
        errors: w.errors,
        network,
        unbuilt: assembled.unbuilt,
        warnings: assembled.warnings,
        apis: apis_seen,
    }
}

/// One walk with nothing remembered and the default budget (this shard's share): what
/// `discover`, `explain` and `check` make.
pub async fn walk_once(options: &Options) -> Estate {
    let clients = Clients::new(options.region.as_deref(), options.endpoint_url.as_deref()).await;
    let budget = Budget::new(super::call::Rates::default().share(options.shard.count));
    walk(&clients, options, &budget, &mut Memory::default()).await
}

/// What a REST API serves: read again only when its stages changed. `None`: the API is gone.
/// The bool says whether it was read (or known unchanged) this walk.
async fn rest_detail(
    w: &mut Walk<'_>,
    api: &RestApi,
    stages: Result<Vec<Stage>, CallError>,
    stages_wanted: &[String],
    memory: &mut Memory,
) -> Option<(RestDetail, bool)> {
    let stages = match stages {
        Ok(s) => s,
        Err(e) if e.not_found() => {
            memory.rest.remove(&api.id);
            return None;
        }
        Err(e) => {
            w.failed(&e);
            return memory
                .rest
                .get(&api.id)
                .map(|(_, d)| (d.value.clone(), false));
        }
    };
    let stamp = Stage::stamp(&stages);
    if let Some((known, d)) = memory.rest.get(&api.id) {
        if *known == stamp {
            return Some((d.value.clone(), true));
        }
    }
    match read::rest::methods(&w.r, &api.id).await {
        Ok(methods) => {
            let deployed = deployed(w, api, &stages, stages_wanted).await;
            let detail = RestDetail {
                stages,
                methods,
                deployed,
            };
            memory.rest.insert(
                api.id.clone(),
                (
                    stamp,
                    Dated {
                        value: detail.clone(),
                        read_at: w.now,
                    },
                ),
            );
            Some((detail, true))
        }
        Err(e) if e.not_found() => {
            memory.rest.remove(&api.id);
            None
        }
        Err(e) => {
            w.failed(&e);
            memory
                .rest
                .get(&api.id)
                .map(|(_, d)| (d.value.clone(), false))
        }
    }
}

/// What each stage's deployment serves (`GetExport`), for the stages asked for. An export
/// without integrations (an implementation that leaves the extension out) says the others
/// would hold none either: the rest are not asked. A stage not here is judged on the working
/// copy, and the chain says so.
async fn deployed(
    w: &mut Walk<'_>,
    api: &RestApi,
    stages: &[Stage],
    wanted: &[String],
) -> BTreeMap<String, Vec<super::model::aws::RestMethod>> {
    let mut out = BTreeMap::new();
    for stage in stages
        .iter()
        .filter(|s| wanted.is_empty() || wanted.contains(&s.name))
    {
        match read::rest::export(&w.r, &api.id, &stage.name).await {
            Ok(Some(methods)) => {
                out.insert(stage.name.clone(), methods);
            }
            Ok(None) => break,
            Err(e) => w.failed(&e),
        }
    }
    out
}

/// What an HTTP API serves: read again only when its stages changed.
async fn http_detail(
    w: &mut Walk<'_>,
    api: &HttpApi,
    stages: Result<Vec<Stage>, CallError>,
    memory: &mut Memory,
) -> Option<(HttpDetail, bool)> {
    let stages = match stages {
        Ok(s) => s,
        Err(e) if e.not_found() => {
            memory.http.remove(&api.id);
            return None;
        }
        Err(e) => {
            w.failed(&e);
            return memory
                .http
                .get(&api.id)
                .map(|(_, d)| (d.value.clone(), false));
        }
    };
    let stamp = Stage::stamp(&stages);
    if let Some((known, d)) = memory.http.get(&api.id) {
        if *known == stamp {
            return Some((d.value.clone(), true));
        }
    }
    let routes = read::http::routes(&w.r, &api.id).await;
    let integrations = match &routes {
        Ok(_) => Some(read::http::integrations(&w.r, &api.id).await),
        Err(_) => None,
    };
    match (routes, integrations) {
        (Ok(routes), Some(Ok(integrations))) => {
            // Only for what a JWT route needs to say (the token's issuer and audience), one
            // call per authorizer a route names; a failure costs the hint, never the chain.
            let ids: BTreeSet<&String> = routes
                .iter()
                .filter(|r| r.authorization.as_deref() == Some("JWT"))
                .filter_map(|r| r.authorizer_id.as_ref())
                .collect();
            let remembered = memory
                .http
                .get(&api.id)
                .map(|(_, d)| d.value.authorizers.clone())
                .unwrap_or_default();
            let mut authorizers = Vec::new();
            for id in ids {
                match read::http::authorizer(&w.r, &api.id, id).await {
                    Ok(found) => authorizers.extend(found),
                    Err(e) => {
                        w.failed(&e);
                        authorizers.extend(remembered.iter().filter(|a| &a.id == id).cloned());
                    }
                }
            }
            let detail = HttpDetail {
                stages,
                routes,
                integrations,
                authorizers,
            };
            memory.http.insert(
                api.id.clone(),
                (
                    stamp,
                    Dated {
                        value: detail.clone(),
                        read_at: w.now,
                    },
                ),
            );
            Some((detail, true))
        }
        (Err(e), _) | (_, Some(Err(e))) if e.not_found() => {
            memory.http.remove(&api.id);
            None
        }
        (Err(e), _) | (_, Some(Err(e))) => {
            w.failed(&e);
            memory
                .http
                .get(&api.id)
                .map(|(_, d)| (d.value.clone(), false))
        }
        (Ok(_), None) => None,
    }
}

/// Reads the load balancers the integrations name, their listeners, and the target groups
/// those forward to, following ALBs registered behind NLBs; each object once.
async fn load_balancing(w: &mut Walk<'_>, world: &mut World, memory: &mut Memory) {
    let listed = read::elb::load_balancers(&w.r).await;
    let Some(lbs) = w.listed(listed, &mut memory.lbs) else {
        return;
    };
    world.lbs = lbs;
    // Which load balancers the integrations enter.
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for (_, d) in &world.rest {
        for m in &d.methods {
            wanted.extend(m.integration_target.clone());
            if let Some(l) = m.connection_id.as_ref().and_then(|c| world.v1_links.get(c)) {
                wanted.extend(l.target_arns.iter().cloned());
            }
            let host = m
                .uri
                .as_deref()
                .and_then(|u| u.parse::<http::Uri>().ok())
                .and_then(|u| u.host().map(str::to_string));
            if let Some(lb) = host.and_then(|h| world.lbs.values().find(|lb| lb.dns == h)) {
                wanted.insert(lb.arn.clone());
            }
        }
    }
    for (_, d) in &world.http {
        for i in &d.integrations {
            wanted.extend(super::model::aws::lb_of_listener(&i.uri));
        }
    }
    let mut done_lbs: BTreeSet<String> = BTreeSet::new();
    let mut done_tgs: BTreeSet<String> = BTreeSet::new();
    while !wanted.is_empty() {
        let round: Vec<String> = std::mem::take(&mut wanted)
            .into_iter()
            .filter(|a| world.lbs.contains_key(a) && done_lbs.insert(a.clone()))
            .collect();
        let mut tg_arns: Vec<String> = Vec::new();
        for arn in &round {
            let attributes = read::elb::lb_attributes(&w.r, arn).await;
            if let Some(a) = w.one(arn, attributes, &mut memory.lb_attributes) {
                if let Some(lb) = world.lbs.get_mut(arn) {
                    lb.attributes = a;
                }
            }
            let listeners = read::elb::listeners(&w.r, arn).await;
            if let Some(ls) = w.one(arn, listeners, &mut memory.listeners) {
                let alb = world.lbs.get(arn).is_some_and(|lb| !lb.network);
                for l in &ls {
                    tg_arns.extend(l.forward.iter().cloned());
                    // An ALB routes by its listener's rules, not its default action alone.
                    if alb {
                        let rules = read::rules::rules(&w.r, &l.arn).await;
                        if let Some(rules) = w.one(&l.arn, rules, &mut memory.rules) {
                            tg_arns.extend(rules.iter().flat_map(forwarded));
                            world.rules.insert(l.arn.clone(), rules);
                        }
                    }
                }
                world.listeners.insert(arn.clone(), ls);
            }
        }
        tg_arns.retain(|a| done_tgs.insert(a.clone()));
        if tg_arns.is_empty() {
            continue;
        }
        let described = read::elb::target_groups(&w.r, &tg_arns).await;
        let described: Vec<Tg> = match described {
            Ok(found) => found,
            Err(e) => {
                w.failed(&e);
                tg_arns
                    .iter()
                    .filter_map(|a| memory.tgs.get(a).map(|d| d.value.clone()))
                    .collect()
            }
        };
        for mut tg in described {
            let arn = tg.arn.clone();
            let attributes = read::elb::tg_attributes(&w.r, &arn).await;
            let health = read::elb::target_health(&w.r, &arn, tg.port).await;
            let remembered = memory.tgs.get(&arn).map(|d| d.value.clone());
            match attributes {
                Ok(a) => tg.attributes = a,
                Err(e) => {
                    w.failed(&e);
                    tg.attributes = remembered
                        .as_ref()
                        .map(|t| t.attributes.clone())
                        .unwrap_or_default();
                }
            }
            match health {
                Ok(t) => tg.targets = t,
                Err(e) => {
                    w.failed(&e);
                    tg.targets = remembered.map(|t| t.targets).unwrap_or_default();
                }
            }
            if tg.target_type == "alb" {
                wanted.extend(tg.targets.iter().map(|t| t.0.clone()));
            }
            memory.tgs.insert(
                arn.clone(),
                Dated {
                    value: tg.clone(),
                    read_at: w.now,
                },
            );
            world.tgs.insert(arn, tg);
        }
    }
}

/// The target groups a rule's forward actions name.
fn forwarded(rule: &ListenerRule) -> Vec<String> {
    rule.actions
        .iter()
        .flat_map(|a| match a {
            Action::Forward(groups) => groups.iter().map(|(arn, _)| arn.clone()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::model::net::Network;

    fn dated<T>(value: T) -> Dated<T> {
        Dated {
            value,
            read_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn listener(arn: &str, lb: &str, forward: &[&str]) -> Listener {
        Listener {
            arn: arn.into(),
            lb_arn: lb.into(),
            forward: forward.iter().map(|s| s.to_string()).collect(),
            ..Listener::default()
        }
    }

    #[test]
    fn a_walk_forgets_what_nothing_refers_to_any_more() {
        // One load balancer left in the listing; "gone" was deleted.
        let mut m = Memory {
            lbs: Some(dated(BTreeMap::from([("lb".to_string(), Lb::default())]))),
            ..Memory::default()
        };
        for lb in ["lb", "gone"] {
            m.lb_attributes.insert(lb.into(), dated(BTreeMap::new()));
        }
        m.listeners.insert(
            "lb".into(),
            dated(vec![listener("l1", "lb", &["tg-default"])]),
        );
        m.listeners.insert(
            "gone".into(),
            dated(vec![listener("l-gone", "gone", &["tg-gone"])]),
        );
        let rule = ListenerRule {
            actions: vec![Action::Forward(vec![("tg-rule".into(), None)])],
            ..ListenerRule::default()
        };
        m.rules.insert("l1".into(), dated(vec![rule]));
        m.rules.insert("l-removed".into(), dated(Vec::new()));
        m.rules.insert("l-gone".into(), dated(Vec::new()));
        for tg in ["tg-default", "tg-rule", "tg-gone", "tg-unused"] {
            m.tgs.insert(tg.into(), dated(Tg::default()));
        }
        for id in ["srv-used", "srv-gone"] {
            m.cloudmap
                .insert(id.into(), dated(CloudMapService::default()));
        }

        m.forget_unused(
            &BTreeSet::from(["srv-used".to_string()]),
            &Network::default(),
        );

        fn keys<T>(m: &HashMap<String, T>) -> BTreeSet<String> {
            m.keys().cloned().collect()
        }
        assert_eq!(keys(&m.lb_attributes), BTreeSet::from(["lb".into()]));
        assert_eq!(keys(&m.listeners), BTreeSet::from(["lb".into()]));
        assert_eq!(keys(&m.rules), BTreeSet::from(["l1".into()]));
        assert_eq!(
            keys(&m.tgs),
            BTreeSet::from(["tg-default".into(), "tg-rule".into()])
        );
        assert_eq!(keys(&m.cloudmap), BTreeSet::from(["srv-used".into()]));
    }

    #[test]
    fn without_a_load_balancer_listing_nothing_is_judged_gone_by_it() {
        let mut m = Memory::default();
        m.lb_attributes.insert("lb".into(), dated(BTreeMap::new()));
        m.listeners
            .insert("lb".into(), dated(vec![listener("l1", "lb", &["tg"])]));
        m.tgs.insert("tg".into(), dated(Tg::default()));
        m.forget_unused(&BTreeSet::new(), &Network::default());
        assert!(m.lb_attributes.contains_key("lb"));
        assert!(m.listeners.contains_key("lb"));
        assert!(m.tgs.contains_key("tg"));
    }
}

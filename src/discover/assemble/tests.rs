//! Table tests of assembly: worlds written out by hand as AWS would describe them, and the
//! chains (or the reasons for none) each must give.

use super::*;
use crate::discover::model::aws::AccessLog;

const REGION: &str = "us-east-1";
const NLB: &str = "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/net/orders-nlb/n1";
const ALB: &str = "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/orders-alb/a1";
const NLB_L: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/net/orders-nlb/n1/l1";
const ALB_L: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/orders-alb/a1/l2";
const NLB_TG: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/nlb-tg/t1";
const NLB_ALB_TG: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/nlb-alb/t2";
const ALB_TG: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/alb-tg/t3";

fn healthy(id: &str, port: u16) -> (String, u16, TargetHealth) {
    (
        id.to_string(),
        port,
        TargetHealth {
            target: format!("{id}:{port}"),
            state: "healthy".into(),
            reason: None,
            description: None,
        },
    )
}

fn lb(arn: &str, name: &str, network: bool) -> Lb {
    Lb {
        arn: arn.into(),
        name: name.into(),
        dns: format!("{name}.elb.amazonaws.com"),
        network,
        zones: 2,
        enforce_privatelink: true,
        ..Lb::default()
    }
}

fn listener(arn: &str, lb: &str, forward: &[&str]) -> Listener {
    Listener {
        arn: arn.into(),
        lb_arn: lb.into(),
        port: 80,
        forward: forward.iter().map(|s| s.to_string()).collect(),
        ..Listener::default()
    }
}

fn tg(arn: &str, target_type: &str, targets: Vec<(String, u16, TargetHealth)>) -> Tg {
    Tg {
        arn: arn.into(),
        name: arn.rsplit('/').nth(1).unwrap_or("").into(),
        target_type: target_type.into(),
        port: 80,
        health: Some((false, "traffic-port".into(), "/health".into())),
        targets,
        ..Tg::default()
    }
}

fn stage(name: &str) -> Stage {
    Stage {
        name: name.into(),
        deployment_id: Some("d1".into()),
        ..Stage::default()
    }
}

/// An estate of every kind: a REST API over a v1 link into an NLB with an ALB behind it (T2),
/// and an HTTP API into the ALB's listener (T4).
fn world() -> World {
    let mut w = World {
        region: REGION.into(),
        ..World::default()
    };
    w.lbs.insert(NLB.into(), lb(NLB, "orders-nlb", true));
    w.lbs.insert(ALB.into(), lb(ALB, "orders-alb", false));
    w.listeners
        .insert(NLB.into(), vec![listener(NLB_L, NLB, &[NLB_ALB_TG])]);
    w.listeners
        .insert(ALB.into(), vec![listener(ALB_L, ALB, &[ALB_TG])]);
    w.tgs.insert(
        NLB_ALB_TG.into(),
        tg(NLB_ALB_TG, "alb", vec![healthy(ALB, 80)]),
    );
    w.tgs.insert(
        ALB_TG.into(),
        tg(
            ALB_TG,
            "ip",
            vec![healthy("10.0.1.20", 80), healthy("10.0.2.20", 80)],
        ),
    );
    w.tgs.insert(
        NLB_TG.into(),
        tg(NLB_TG, "instance", vec![healthy("i-1", 80)]),
    );
    w.hosts.insert(
        "i-1".into(),
        Host {
            ip: "10.0.1.30".parse().ok(),
            ..Host::default()
        },
    );
    w.v1_links.insert(
        "vl1".into(),
        Link {
            id: "vl1".into(),
            name: "orders-link".into(),
            status: "AVAILABLE".into(),
            target_arns: vec![NLB.into()],
            ..Link::default()
        },
    );
    w.v2_links.insert(
        "vl2".into(),
        Link {
            id: "vl2".into(),
            name: "http-link".into(),
            status: "AVAILABLE".into(),
            subnets: vec!["subnet-a".into()],
            security_groups: vec!["sg-link".into()],
            ..Link::default()
        },
    );
    w.rest.push((
        RestApi {
            id: "r1".into(),
            name: "Orders".into(),
            ..RestApi::default()
        },
        RestDetail {
            stages: vec![stage("prod")],
            methods: vec![RestMethod {
                path: "/orders".into(),
                method: "GET".into(),
                uri: Some("http://orders-nlb.elb.amazonaws.com/orders".into()),
                connection_id: Some("vl1".into()),
                timeout_ms: Some(12_000),
                ..RestMethod::default()
            }],
            deployed: Default::default(),
        },
    ));
    w.http.push((
        HttpApi {
            id: "h1".into(),
            name: "Billing".into(),
            endpoint: "https://h1.execute-api.us-east-1.amazonaws.com".into(),
            default_endpoint_disabled: false,
        },
        HttpDetail {
            stages: vec![stage("prod")],
            routes: vec![HttpRoute {
                key: "GET /invoices".into(),
                integration_id: Some("i1".into()),
                ..HttpRoute::default()
            }],
            integrations: vec![HttpIntegration {
                id: "i1".into(),
                uri: ALB_L.into(),
                connection_id: Some("vl2".into()),
                timeout_ms: Some(30_000),
                ..HttpIntegration::default()
            }],
            authorizers: Vec::new(),
        },
    ));
    w
}

fn urls(c: &FoundChain) -> Vec<(String, String)> {
    c.hops
        .iter()
        .map(|h| (h.name.clone(), h.url.clone()))
        .collect()
}

#[test]
fn every_kind_is_followed_to_its_targets() {
    let out = assemble(&world(), &Ask::default());
    assert!(out.unbuilt.is_empty(), "{:?}", out.unbuilt);
    let t2 = &out.chains[0];
    assert_eq!(
        (t2.name.as_str(), t2.kind),
        ("orders-prod", Kind::RestNlbAlb)
    );
    assert_eq!(
        urls(t2),
        [
            (
                "gateway".into(),
                "https://r1.execute-api.us-east-1.amazonaws.com/prod/orders".into()
            ),
            (
                "orders-nlb".into(),
                "http://orders-nlb.elb.amazonaws.com:80/orders".into()
            ),
            (
                "orders-alb".into(),
                "http://orders-alb.elb.amazonaws.com:80/orders".into()
            ),
            ("target".into(), "http://10.0.1.20:80/orders".into()),
        ]
    );
    assert_eq!(t2.net.entry, Entry::V1);
    assert_eq!(t2.facts.link.as_ref().map(|l| l.id.as_str()), Some("vl1"));
    assert_eq!(
        t2.hops[0].integration_timeout.as_ref().map(|s| s.value),
        Some(Duration::from_millis(12_000))
    );
    assert!(
        t2.hops[2].health_url.is_some(),
        "the NLB's health check of the ALB"
    );
    let t4 = &out.chains[1];
    assert_eq!((t4.name.as_str(), t4.kind), ("billing-prod", Kind::HttpAlb));
    assert_eq!(
        t4.hops[0].url,
        "https://h1.execute-api.us-east-1.amazonaws.com/prod/invoices"
    );
    assert!(matches!(t4.net.entry, Entry::V2 { .. }));
}

/// Why an integration is not made into a chain: (what is broken, the reason's phrase).
#[test]
fn what_cannot_be_followed_is_said_never_dropped() {
    type Break = fn(&mut World);
    let cases: &[(&str, Break, &str)] = &[
        (
            "the NLB is gone",
            |w| {
                w.lbs.remove(NLB);
            },
            "no load balancer found",
        ),
        (
            "the ALB's listener answers itself",
            |w| {
                w.listeners
                    .insert(ALB.into(), vec![listener(ALB_L, ALB, &[])]);
            },
            "forwards to no target group",
        ),
        (
            "a target group could not be read",
            |w| {
                w.tgs.remove(ALB_TG);
            },
            "could not be read",
        ),
    ];
    for (name, broken, phrase) in cases {
        let mut w = world();
        broken(&mut w);
        let out = assemble(&w, &Ask::default());
        assert!(
            out.unbuilt.iter().any(|u| u.why.contains(phrase)),
            "{name}: {:?}",
            out.unbuilt
        );
        assert_eq!(
            out.chains.len() + out.unbuilt.len(),
            2,
            "{name}: every integration is a chain or a reason"
        );
    }
}

#[test]
fn the_gateways_own_logs_are_found_and_their_gaps_said() {
    let mut w = world();
    w.rest[0].1.stages[0].access_log = Some(AccessLog {
        destination_arn: "arn:aws:logs:us-east-1:1:log-group:orders-access".into(),
        format: Some(r#"{"rid":"$context.requestId","why":"$context.error.responseType"}"#.into()),
    });
    w.rest[0].1.stages[0].execution_logging = true;
    w.http[0].1.stages[0].access_log = Some(AccessLog {
        destination_arn: "arn:aws:logs:us-east-1:1:log-group:billing-access:*".into(),
        format: Some(r#"{"status":"$context.status"}"#.into()),
    });
    let out = assemble(&w, &Ask::default());
    let g = &out.chains[0].hops[0];
    assert_eq!(
        g.access_log_group.as_ref().map(|s| s.value.as_str()),
        Some("orders-access")
    );
    assert_eq!(
        g.execution_log_group.as_ref().map(|s| s.value.as_str()),
        Some("API-Gateway-Execution-Logs_r1/prod")
    );
    let g = &out.chains[1].hops[0];
    assert_eq!(
        g.access_log_group.as_ref().map(|s| s.value.as_str()),
        Some("billing-access")
    );
    assert!(
        g.execution_log_group.is_none(),
        "HTTP APIs have no execution logs"
    );
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(out.warnings[0].contains("lacks the request id and the error fields"));
    // No access log at all, and one sent to Firehose.
    let mut w = world();
    w.http[0].1.stages[0].access_log = Some(AccessLog {
        destination_arn: "arn:aws:firehose:us-east-1:1:deliverystream/amazon-apigateway-logs"
            .into(),
        format: None,
    });
    let out = assemble(&w, &Ask::default());
    assert!(out
        .warnings
        .iter()
        .any(|w| w.contains("stage prod of API r1 has no access log")));
    assert!(out.chains[1].hops[0].access_log_group.is_none());
    assert!(out.chains[1].hops[0]
        .notes
        .iter()
        .any(|n| n.contains("not to CloudWatch Logs")));
}

#[test]
fn stages_paths_and_names() {
    assert_eq!(slug("Orders API"), "orders-api");
    assert_eq!(slug("GET /items/{id}"), "get-items-id");
    assert_eq!(slug("$default"), "default");
    let ask = Ask::default();
    assert_eq!(probe_path("/items", &ask), "/items");
    assert_eq!(probe_path("/items/{id}", &ask), "/");
    let fixed = Ask {
        path: Some("/health".into()),
        ..Ask::default()
    };
    assert_eq!(probe_path("/items", &fixed), "/health");
    let mut w = world();
    w.http[0].1.stages.push(stage("$default"));
    let only = Ask {
        stages: vec!["$default".into()],
        ..Ask::default()
    };
    let out = assemble(&w, &only);
    let names: Vec<&str> = out.chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["billing-default"]);
    assert_eq!(
        out.chains[0].hops[0].url, "https://h1.execute-api.us-east-1.amazonaws.com/invoices",
        "a $default stage has no prefix"
    );
}

/// A Cloud Map integration's attribute filter stays on the cloudmap hop (sent as
/// DiscoverInstances QueryParameters); the path carries the stage, as for every private
/// integration of an HTTP API; a HEAD-only route is probed with HEAD.
#[test]
fn cloud_map_filters_and_the_stage_reach_the_hops_behind() {
    let mut w = world();
    w.rest.clear();
    let service = "arn:aws:servicediscovery:us-east-1:1:service/srv-cat";
    w.cloudmap.insert(
        "srv-cat".into(),
        CloudMapService {
            id: "srv-cat".into(),
            name: "catalog".into(),
            namespace: "shop".into(),
            instances: vec!["10.0.1.40:8080".into()],
        },
    );
    let (_, d) = &mut w.http[0];
    d.routes = vec![HttpRoute {
        key: "HEAD /items".into(),
        integration_id: Some("i1".into()),
        ..HttpRoute::default()
    }];
    d.integrations[0].uri = format!("{service}?stage=prod&zone=a");
    let out = assemble(&w, &Ask::default());
    assert!(out.unbuilt.is_empty(), "{:?}", out.unbuilt);
    let c = &out.chains[0];
    assert_eq!(
        urls(c),
        [
            (
                "gateway".into(),
                "https://h1.execute-api.us-east-1.amazonaws.com/prod/items".into()
            ),
            (
                "cloudmap".into(),
                "cloudmap://shop/catalog/prod/items?stage=prod&zone=a".into()
            ),
            ("target".into(), "http://10.0.1.40:8080/prod/items".into()),
        ]
    );
    assert_eq!(
        c.hops[0].method.as_ref().map(|m| m.value.as_str()),
        Some("HEAD")
    );
    assert!(c.hops.iter().all(|h| h.body.is_none()));
    // The filter as the probe reads it.
    let url = crate::config::HopUrl::parse(&c.hops[1].url).expect("cloudmap url");
    let name = url.cloudmap.expect("a cloudmap name");
    assert_eq!(
        name.query,
        [
            ("stage".to_string(), "prod".to_string()),
            ("zone".to_string(), "a".to_string())
        ]
    );
    assert_eq!(url.path_and_query, "/prod/items");
}

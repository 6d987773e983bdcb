//! Elastic Load Balancing v2: load balancers and their attributes, listeners, target groups,
//! their attributes and their targets' health. Each shared object is read once per walk: the
//! walk asks for exactly the ones its chains use.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::types::{LoadBalancerTypeEnum, ProtocolEnum, TargetTypeEnum};

use super::super::call::{from_sdk, CallError, Service};
use super::super::model::aws::{Lb, Listener, Tg};
use super::Reader;
use crate::facts::TargetHealth;

const ELB: Service = Service::Elb;

/// Target groups described per call (DescribeTargetGroups takes a list of ARNs).
const TG_PER_CALL: usize = 20;

fn port(p: Option<i32>) -> u16 {
    u16::try_from(p.unwrap_or(80).clamp(1, 65535)).unwrap_or(80)
}

/// Every load balancer of the region, by ARN (attributes not read yet).
pub async fn load_balancers(r: &Reader<'_>) -> Result<BTreeMap<String, Lb>, CallError> {
    let found = r
        .budget
        .paged(ELB, "DescribeLoadBalancers", |marker| async move {
            let page =
                r.c.elb
                    .describe_load_balancers()
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| from_sdk(ELB, "DescribeLoadBalancers", &e))?;
            Ok((
                page.load_balancers().to_vec(),
                page.next_marker().map(str::to_string),
            ))
        })
        .await?;
    Ok(found
        .iter()
        .filter_map(|lb| {
            let arn = lb.load_balancer_arn()?.to_string();
            Some((
                arn.clone(),
                Lb {
                    arn,
                    name: lb.load_balancer_name().unwrap_or_default().to_string(),
                    dns: lb.dns_name().unwrap_or_default().to_string(),
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
                    attributes: BTreeMap::new(),
                },
            ))
        })
        .collect())
}

/// A load balancer's attributes.
pub async fn lb_attributes(
    r: &Reader<'_>,
    arn: &str,
) -> Result<BTreeMap<String, String>, CallError> {
    let out = r
        .budget
        .call(ELB, "DescribeLoadBalancerAttributes", || async {
            r.c.elb
                .describe_load_balancer_attributes()
                .load_balancer_arn(arn)
                .send()
                .await
                .map_err(|e| from_sdk(ELB, "DescribeLoadBalancerAttributes", &e))
        })
        .await?;
    Ok(out
        .attributes()
        .iter()
        .filter_map(|kv| Some((kv.key()?.to_string(), kv.value()?.to_string())))
        .collect())
}

/// A load balancer's listeners, by port.
pub async fn listeners(r: &Reader<'_>, lb_arn: &str) -> Result<Vec<Listener>, CallError> {
    let found = r
        .budget
        .paged(ELB, "DescribeListeners", |marker| async move {
            let page =
                r.c.elb
                    .describe_listeners()
                    .load_balancer_arn(lb_arn)
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| from_sdk(ELB, "DescribeListeners", &e))?;
            Ok((
                page.listeners().to_vec(),
                page.next_marker().map(str::to_string),
            ))
        })
        .await?;
    let mut out: Vec<Listener> = found
        .iter()
        .map(|l| {
            let mut forward = Vec::new();
            for a in l.default_actions() {
                let direct = a.target_group_arn().map(str::to_string);
                let weighted = a.forward_config().into_iter().flat_map(|f| {
                    f.target_groups()
                        .iter()
                        .filter_map(|t| t.target_group_arn().map(str::to_string))
                });
                for arn in direct.into_iter().chain(weighted) {
                    if !forward.contains(&arn) {
                        forward.push(arn);
                    }
                }
            }
            Listener {
                arn: l.listener_arn().unwrap_or_default().to_string(),
                lb_arn: lb_arn.to_string(),
                port: port(l.port()),
                tls: matches!(l.protocol(), Some(ProtocolEnum::Https | ProtocolEnum::Tls)),
                forward,
                mtls: l
                    .mutual_authentication()
                    .and_then(|m| m.mode())
                    .filter(|m| *m != "off")
                    .map(str::to_string),
            }
        })
        .collect();
    out.sort_by_key(|l| l.port);
    Ok(out)
}

/// The target groups named, described (attributes and health not read yet). One entry per
/// ARN the answer holds: an ARN missing from a successful answer is gone.
pub async fn target_groups(r: &Reader<'_>, arns: &[String]) -> Result<Vec<Tg>, CallError> {
    let mut out = Vec::new();
    for chunk in arns.chunks(TG_PER_CALL) {
        let described = r
            .budget
            .call(ELB, "DescribeTargetGroups", || async {
                r.c.elb
                    .describe_target_groups()
                    .set_target_group_arns(Some(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(|e| from_sdk(ELB, "DescribeTargetGroups", &e))
            })
            .await?;
        for g in described.target_groups() {
            let Some(arn) = g.target_group_arn() else {
                continue;
            };
            let health = g.health_check_enabled().unwrap_or(true).then(|| {
                let tls = matches!(g.health_check_protocol(), Some(ProtocolEnum::Https));
                let hc_port = match g.health_check_port() {
                    None | Some("traffic-port") => "traffic-port".to_string(),
                    Some(p) => p.to_string(),
                };
                (
                    tls,
                    hc_port,
                    g.health_check_path().unwrap_or("/").to_string(),
                )
            });
            out.push(Tg {
                arn: arn.to_string(),
                name: g.target_group_name().unwrap_or_default().to_string(),
                target_type: g
                    .target_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_else(|| TargetTypeEnum::Instance.as_str().to_string()),
                port: port(g.port()),
                tls: matches!(g.protocol(), Some(ProtocolEnum::Https | ProtocolEnum::Tls)),
                health,
                attributes: BTreeMap::new(),
                targets: Vec::new(),
            });
        }
    }
    Ok(out)
}

/// A target group's attributes.
pub async fn tg_attributes(
    r: &Reader<'_>,
    arn: &str,
) -> Result<BTreeMap<String, String>, CallError> {
    let out = r
        .budget
        .call(ELB, "DescribeTargetGroupAttributes", || async {
            r.c.elb
                .describe_target_group_attributes()
                .target_group_arn(arn)
                .send()
                .await
                .map_err(|e| from_sdk(ELB, "DescribeTargetGroupAttributes", &e))
        })
        .await?;
    Ok(out
        .attributes()
        .iter()
        .filter_map(|kv| Some((kv.key()?.to_string(), kv.value()?.to_string())))
        .collect())
}

/// Each registered target of a group, with its port and health.
pub async fn target_health(
    r: &Reader<'_>,
    arn: &str,
    default_port: u16,
) -> Result<Vec<(String, u16, TargetHealth)>, CallError> {
    let out = r
        .budget
        .call(ELB, "DescribeTargetHealth", || async {
            r.c.elb
                .describe_target_health()
                .target_group_arn(arn)
                .send()
                .await
                .map_err(|e| from_sdk(ELB, "DescribeTargetHealth", &e))
        })
        .await?;
    Ok(out
        .target_health_descriptions()
        .iter()
        .filter_map(|d| {
            let t = d.target()?;
            let id = t.id().unwrap_or_default().to_string();
            let tport = t.port().map_or(default_port, |p| port(Some(p)));
            let th = d.target_health();
            Some((
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
            ))
        })
        .collect())
}

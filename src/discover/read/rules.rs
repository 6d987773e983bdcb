//! An ALB listener's rules (`DescribeRules`), as `model::rules` holds them: the default rule
//! and every numbered one, with their conditions and actions, so `assemble::listener` can
//! follow the rule the gateway's request meets rather than the default action alone.
//!
//! How AWS describes rules: docs.aws.amazon.com/elasticloadbalancing/latest/application/
//! listener-update-rules.html (priority, actions, conditions) and
//! docs.aws.amazon.com/elasticloadbalancing/latest/application/rule-condition-types.html
//! (each condition field, in its legacy `Values` form and its `*Config` form).

use aws_sdk_elasticloadbalancingv2::types::{
    Action as SdkAction, ActionTypeEnum, Rule, RuleCondition,
};

use super::super::call::{from_sdk, CallError, Service};
use super::super::model::rules::{Action, Condition, ListenerRule, Priority};
use super::Reader;
use crate::config::Cidr;

const ELB: Service = Service::Elb;

/// Every rule of a listener, the default rule last and the others by priority, lowest first
/// (the order AWS evaluates them in).
pub async fn rules(r: &Reader<'_>, listener_arn: &str) -> Result<Vec<ListenerRule>, CallError> {
    let found = r
        .budget
        .paged(ELB, "DescribeRules", |marker| async move {
            let page =
                r.c.elb
                    .describe_rules()
                    .listener_arn(listener_arn)
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| from_sdk(ELB, "DescribeRules", &e))?;
            Ok((
                page.rules().to_vec(),
                page.next_marker().map(str::to_string),
            ))
        })
        .await?;
    let mut out: Vec<ListenerRule> = found.iter().map(rule).collect();
    // Stable: two rules AWS never gives the same priority keep the answer's order.
    out.sort_by_key(|r| r.priority);
    Ok(out)
}

/// One rule as the model holds it.
fn rule(r: &Rule) -> ListenerRule {
    let priority = if r.is_default() == Some(true) || r.priority() == Some("default") {
        Priority::Default
    } else {
        // AWS sends 1 to 50000 as a string; anything else is placed after them all.
        Priority::Number(
            r.priority()
                .and_then(|p| p.parse().ok())
                .unwrap_or(u32::MAX),
        )
    };
    let mut actions: Vec<&SdkAction> = r.actions().iter().collect();
    // `Order` decides, lowest first; a single action may carry none.
    actions.sort_by_key(|a| a.order().unwrap_or(i32::MAX));
    ListenerRule {
        arn: r.rule_arn().unwrap_or_default().to_string(),
        priority,
        conditions: r.conditions().iter().flat_map(conditions).collect(),
        actions: actions.into_iter().map(action).collect(),
    }
}

/// Both forms of a list of values, without repeats: AWS may answer with `Values` and the
/// `*Config` both filled for a rule made in the legacy form.
fn union<'a>(a: &'a [String], b: &'a [String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in a.iter().chain(b) {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

/// The model's conditions for one SDK condition: usually one; a condition with wildcard
/// values and regular expressions both (AWS takes one match type per condition) gives both.
fn conditions(c: &RuleCondition) -> Vec<Condition> {
    let field = c.field().unwrap_or_default();
    let mut out = Vec::new();
    match field {
        "path-pattern" => {
            let cfg = c.path_pattern_config();
            let values = union(cfg.map(|p| p.values()).unwrap_or_default(), c.values());
            let regex = union(
                cfg.map(|p| p.regex_values()).unwrap_or_default(),
                c.regex_values(),
            );
            if !values.is_empty() {
                out.push(Condition::PathPattern(values));
            }
            if !regex.is_empty() {
                out.push(Condition::PathRegex(regex));
            }
        }
        "host-header" => {
            let cfg = c.host_header_config();
            let values = union(cfg.map(|h| h.values()).unwrap_or_default(), c.values());
            let regex = union(
                cfg.map(|h| h.regex_values()).unwrap_or_default(),
                c.regex_values(),
            );
            if !values.is_empty() {
                out.push(Condition::HostHeader(values));
            }
            if !regex.is_empty() {
                out.push(Condition::HostRegex(regex));
            }
        }
        "http-request-method" => {
            let values = union(
                c.http_request_method_config()
                    .map(|m| m.values())
                    .unwrap_or_default(),
                c.values(),
            );
            out.push(Condition::HttpRequestMethod(values));
        }
        "query-string" => {
            let pairs = c
                .query_string_config()
                .map(|q| q.values())
                .unwrap_or_default()
                .iter()
                .filter_map(|kv| Some((kv.key().map(str::to_string), kv.value()?.to_string())))
                .collect();
            out.push(Condition::QueryString(pairs));
        }
        "http-header" => {
            let cfg = c.http_header_config();
            let name = cfg
                .and_then(|h| h.http_header_name())
                .unwrap_or_default()
                .to_string();
            let values = union(cfg.map(|h| h.values()).unwrap_or_default(), c.values());
            let regex = union(
                cfg.map(|h| h.regex_values()).unwrap_or_default(),
                c.regex_values(),
            );
            if !values.is_empty() || regex.is_empty() {
                out.push(Condition::HttpHeader {
                    name: name.clone(),
                    values,
                });
            }
            if !regex.is_empty() {
                out.push(Condition::HttpHeaderRegex {
                    name,
                    patterns: regex,
                });
            }
        }
        "source-ip" => {
            let values = union(
                c.source_ip_config().map(|s| s.values()).unwrap_or_default(),
                c.values(),
            );
            out.push(Condition::SourceIp(
                values.iter().filter_map(|v| Cidr::parse(v)).collect(),
            ));
        }
        other => out.push(Condition::Other(other.to_string())),
    }
    out
}

/// One action as the model holds it.
fn action(a: &SdkAction) -> Action {
    match a.r#type() {
        Some(ActionTypeEnum::Forward) => {
            let mut groups: Vec<(String, Option<i32>)> = Vec::new();
            let weighted = a
                .forward_config()
                .map(|f| f.target_groups())
                .unwrap_or_default()
                .iter()
                .filter_map(|t| Some((t.target_group_arn()?.to_string(), t.weight())));
            let direct = a.target_group_arn().map(|arn| (arn.to_string(), None));
            // AWS may send `TargetGroupArn` and `ForwardConfig` both for the same group:
            // one entry, with its weight.
            for (arn, weight) in weighted.chain(direct) {
                if !groups.iter().any(|(g, _)| *g == arn) {
                    groups.push((arn, weight));
                }
            }
            Action::Forward(groups)
        }
        Some(ActionTypeEnum::FixedResponse) => {
            let cfg = a.fixed_response_config();
            Action::FixedResponse {
                status: cfg
                    .and_then(|f| f.status_code())
                    .unwrap_or_default()
                    .to_string(),
                content_type: cfg.and_then(|f| f.content_type()).map(str::to_string),
            }
        }
        Some(ActionTypeEnum::Redirect) => {
            let cfg = a.redirect_config();
            // A component left out keeps the request's own: AWS's `#{…}` keyword for it.
            let part = |v: Option<&str>, keep: &str| v.unwrap_or(keep).to_string();
            let protocol = part(cfg.and_then(|c| c.protocol()), "#{protocol}");
            let host = part(cfg.and_then(|c| c.host()), "#{host}");
            let port = part(cfg.and_then(|c| c.port()), "#{port}");
            let path = part(cfg.and_then(|c| c.path()), "/#{path}");
            let query = part(cfg.and_then(|c| c.query()), "#{query}");
            let status = cfg
                .and_then(|c| c.status_code())
                .map(|s| s.as_str().trim_start_matches("HTTP_").to_string())
                .unwrap_or_default();
            Action::Redirect {
                status,
                target: format!("{protocol}://{host}:{port}{path}?{query}"),
            }
        }
        Some(ActionTypeEnum::AuthenticateOidc) => Action::Authenticate {
            kind: "oidc".to_string(),
        },
        Some(ActionTypeEnum::AuthenticateCognito) => Action::Authenticate {
            kind: "cognito".to_string(),
        },
        Some(ActionTypeEnum::JwtValidation) => Action::Authenticate {
            kind: "jwt-validation".to_string(),
        },
        Some(other) => Action::Other(other.as_str().to_string()),
        None => Action::Other(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_elasticloadbalancingv2::types::{
        AuthenticateOidcActionConfig, FixedResponseActionConfig, ForwardActionConfig,
        HostHeaderConditionConfig, HttpHeaderConditionConfig, HttpRequestMethodConditionConfig,
        PathPatternConditionConfig, QueryStringConditionConfig, QueryStringKeyValuePair,
        RedirectActionConfig, RedirectActionStatusCodeEnum, SourceIpConditionConfig,
        TargetGroupTuple,
    };

    const TG_A: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/a/1";
    const TG_B: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/b/2";

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("cidr")
    }

    #[test]
    fn sdk_rules_map_into_the_model() {
        let numbered = Rule::builder()
            .rule_arn("arn:rule/10")
            .priority("10")
            .is_default(false)
            // Legacy form and config form of the same field.
            .conditions(
                RuleCondition::builder()
                    .field("path-pattern")
                    .values("/prod/*")
                    .path_pattern_config(
                        PathPatternConditionConfig::builder()
                            .values("/prod/*")
                            .values("/v?/*")
                            .build(),
                    )
                    .build(),
            )
            .conditions(
                RuleCondition::builder()
                    .field("host-header")
                    .values("*.example.com")
                    .build(),
            )
            .conditions(
                RuleCondition::builder()
                    .field("http-request-method")
                    .http_request_method_config(
                        HttpRequestMethodConditionConfig::builder()
                            .values("GET")
                            .values("HEAD")
                            .build(),
                    )
                    .build(),
            )
            .conditions(
                RuleCondition::builder()
                    .field("query-string")
                    .query_string_config(
                        QueryStringConditionConfig::builder()
                            .values(
                                QueryStringKeyValuePair::builder()
                                    .key("version")
                                    .value("v1")
                                    .build(),
                            )
                            .values(QueryStringKeyValuePair::builder().value("beta").build())
                            .build(),
                    )
                    .build(),
            )
            .conditions(
                RuleCondition::builder()
                    .field("http-header")
                    .http_header_config(
                        HttpHeaderConditionConfig::builder()
                            .http_header_name("X-Env")
                            .values("blue*")
                            .build(),
                    )
                    .build(),
            )
            .conditions(
                RuleCondition::builder()
                    .field("source-ip")
                    .source_ip_config(
                        SourceIpConditionConfig::builder()
                            .values("10.0.0.0/16")
                            .values("not-a-cidr")
                            .build(),
                    )
                    .build(),
            )
            .conditions(
                RuleCondition::builder()
                    .field("host-header")
                    .host_header_config(
                        HostHeaderConditionConfig::builder()
                            .regex_values("^api\\.")
                            .build(),
                    )
                    .build(),
            )
            .conditions(RuleCondition::builder().field("cookie").build())
            // Out of order: `Order` decides.
            .actions(
                SdkAction::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .order(2)
                    .target_group_arn(TG_A)
                    .forward_config(
                        ForwardActionConfig::builder()
                            .target_groups(
                                TargetGroupTuple::builder()
                                    .target_group_arn(TG_A)
                                    .weight(90)
                                    .build(),
                            )
                            .target_groups(
                                TargetGroupTuple::builder()
                                    .target_group_arn(TG_B)
                                    .weight(10)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .actions(
                SdkAction::builder()
                    .r#type(ActionTypeEnum::AuthenticateOidc)
                    .order(1)
                    .authenticate_oidc_config(AuthenticateOidcActionConfig::builder().build())
                    .build(),
            )
            .build();
        assert_eq!(
            rule(&numbered),
            ListenerRule {
                arn: "arn:rule/10".into(),
                priority: Priority::Number(10),
                conditions: vec![
                    Condition::PathPattern(vec!["/prod/*".into(), "/v?/*".into()]),
                    Condition::HostHeader(vec!["*.example.com".into()]),
                    Condition::HttpRequestMethod(vec!["GET".into(), "HEAD".into()]),
                    Condition::QueryString(vec![
                        (Some("version".into()), "v1".into()),
                        (None, "beta".into()),
                    ]),
                    Condition::HttpHeader {
                        name: "X-Env".into(),
                        values: vec!["blue*".into()],
                    },
                    Condition::SourceIp(vec![cidr("10.0.0.0/16")]),
                    Condition::HostRegex(vec!["^api\\.".into()]),
                    Condition::Other("cookie".into()),
                ],
                actions: vec![
                    Action::Authenticate {
                        kind: "oidc".into()
                    },
                    Action::Forward(vec![(TG_A.into(), Some(90)), (TG_B.into(), Some(10))]),
                ],
            }
        );

        let default = Rule::builder()
            .rule_arn("arn:rule/default")
            .priority("default")
            .is_default(true)
            .actions(
                SdkAction::builder()
                    .r#type(ActionTypeEnum::FixedResponse)
                    .order(1)
                    .fixed_response_config(
                        FixedResponseActionConfig::builder()
                            .status_code("404")
                            .content_type("text/plain")
                            .build(),
                    )
                    .build(),
            )
            .build();
        assert_eq!(
            rule(&default),
            ListenerRule {
                arn: "arn:rule/default".into(),
                priority: Priority::Default,
                conditions: vec![],
                actions: vec![Action::FixedResponse {
                    status: "404".into(),
                    content_type: Some("text/plain".into()),
                }],
            }
        );

        let redirect = Rule::builder()
            .priority("5")
            .actions(
                SdkAction::builder()
                    .r#type(ActionTypeEnum::Redirect)
                    .redirect_config(
                        RedirectActionConfig::builder()
                            .protocol("HTTPS")
                            .port("443")
                            .status_code(RedirectActionStatusCodeEnum::Http301)
                            .build(),
                    )
                    .build(),
            )
            .actions(
                SdkAction::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(TG_B)
                    .build(),
            )
            .build();
        let mapped = rule(&redirect);
        assert_eq!(mapped.priority, Priority::Number(5));
        assert_eq!(
            mapped.actions,
            vec![
                Action::Redirect {
                    status: "301".into(),
                    target: "HTTPS://#{host}:443/#{path}?#{query}".into(),
                },
                Action::Forward(vec![(TG_B.into(), None)]),
            ]
        );
    }
}

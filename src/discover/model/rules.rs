//! An ALB listener's rules as `DescribeRules` describes them: plain data, no SDK type, so a
//! walk can keep them and `assemble::listener` can judge which rule a request meets.
//!
//! A listener has one default rule (no conditions, evaluated last) and any number of rules
//! with a priority, conditions and actions
//! (docs.aws.amazon.com/elasticloadbalancing/latest/application/listener-update-rules.html;
//! the condition types: docs.aws.amazon.com/elasticloadbalancing/latest/application/
//! rule-condition-types.html).

use crate::config::Cidr;

/// One rule of a listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerRule {
    pub arn: String,
    pub priority: Priority,
    /// All must match (AND); a condition with several values matches if any does (OR).
    pub conditions: Vec<Condition>,
    /// In the order AWS performs them (`Order`, lowest first).
    pub actions: Vec<Action>,
}

/// Where a rule stands in the evaluation: numbered rules from the lowest number up, the
/// default rule last. The derived order is exactly that (`Number` before `Default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// 1 to 50000. A priority AWS would never send (not a number) is read as `u32::MAX`:
    /// after every numbered rule, before the default.
    Number(u32),
    /// The listener's default rule (`IsDefault`, priority `default`).
    Default,
}

impl Default for Priority {
    /// The rule every listener has.
    fn default() -> Self {
        Priority::Default
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Priority::Number(n) => write!(f, "{n}"),
            Priority::Default => f.write_str("default"),
        }
    }
}

/// One condition, by field. Both AWS's legacy `Values` and the `*Config` forms are read into
/// the same variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `path-pattern`: case-sensitive, `*` and `?` wildcards, against the path only.
    PathPattern(Vec<String>),
    /// `host-header`: case-insensitive, `*` and `?` wildcards.
    HostHeader(Vec<String>),
    /// `http-request-method`: exact and case-sensitive.
    HttpRequestMethod(Vec<String>),
    /// `query-string`: (key, value) pairs, the key optional (any key); case-insensitive,
    /// wildcards, `\*` and `\?` for the literal characters.
    QueryString(Vec<(Option<String>, String)>),
    /// `http-header`: the name case-insensitive, the values case-insensitive with wildcards.
    HttpHeader { name: String, values: Vec<String> },
    /// `source-ip`: the connection's source address in one of the networks. A value that is
    /// not a CIDR is left out (AWS only accepts CIDRs, so it never sends one).
    SourceIp(Vec<Cidr>),
    /// `path-pattern` with `RegexValues`: regular expressions, not wildcards.
    PathRegex(Vec<String>),
    /// `host-header` with `RegexValues`.
    HostRegex(Vec<String>),
    /// `http-header` with `RegexValues`.
    HttpHeaderRegex { name: String, patterns: Vec<String> },
    /// A field this version of hopwatch does not know, by its name.
    Other(String),
}

impl std::fmt::Display for Condition {
    /// As AWS names the field, then the values: `path-pattern /prod/*, /v1/*`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::PathPattern(v) => write!(f, "path-pattern {}", v.join(", ")),
            Condition::HostHeader(v) => write!(f, "host-header {}", v.join(", ")),
            Condition::HttpRequestMethod(v) => write!(f, "http-request-method {}", v.join(", ")),
            Condition::QueryString(pairs) => {
                let pairs: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| match k {
                        Some(k) => format!("{k}={v}"),
                        None => format!("(any key)={v}"),
                    })
                    .collect();
                write!(f, "query-string {}", pairs.join(", "))
            }
            Condition::HttpHeader { name, values } => {
                write!(f, "http-header {name}: {}", values.join(", "))
            }
            Condition::SourceIp(nets) => {
                let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
                write!(f, "source-ip {}", nets.join(", "))
            }
            Condition::PathRegex(v) => write!(f, "path-pattern regex {}", v.join(", ")),
            Condition::HostRegex(v) => write!(f, "host-header regex {}", v.join(", ")),
            Condition::HttpHeaderRegex { name, patterns } => {
                write!(f, "http-header {name} regex {}", patterns.join(", "))
            }
            Condition::Other(field) => write!(f, "{field}"),
        }
    }
}

/// One action of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `forward`: (target group ARN, weight) pairs; the weight is `None` when the action names
    /// a single group by `TargetGroupArn`. A group of weight 0 receives no request.
    Forward(Vec<(String, Option<i32>)>),
    /// `fixed-response`: the status code AWS answers with (`404`).
    FixedResponse {
        status: String,
        content_type: Option<String>,
    },
    /// `redirect`: `301` or `302`, and the target URL with AWS's `#{…}` keywords left in.
    Redirect { status: String, target: String },
    /// `authenticate-oidc`, `authenticate-cognito`, `jwt-validation`: `oidc`, `cognito`,
    /// `jwt-validation`. Not terminal: a request that passes goes on to the next action.
    Authenticate { kind: String },
    /// An action type this version of hopwatch does not know, by its name.
    Other(String),
}

impl Action {
    /// Whether AWS stops at this action: `forward`, `fixed-response` and `redirect` are the
    /// last action of a rule; authentication goes on to the next.
    pub fn terminal(&self) -> bool {
        matches!(
            self,
            Action::Forward(_) | Action::FixedResponse { .. } | Action::Redirect { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_rules_come_before_the_default() {
        let mut p = vec![
            Priority::Default,
            Priority::Number(20),
            Priority::Number(3),
            Priority::Number(u32::MAX),
        ];
        p.sort();
        assert_eq!(
            p,
            vec![
                Priority::Number(3),
                Priority::Number(20),
                Priority::Number(u32::MAX),
                Priority::Default
            ]
        );
        assert_eq!(Priority::default(), Priority::Default);
        assert_eq!(Priority::Number(7).to_string(), "7");
    }
}

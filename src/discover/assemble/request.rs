//! The request a chain probes, and the one the gateway forwards behind it: paths with their
//! parameters filled, the stage prefix API Gateway adds for private integrations, parameter
//! mapping, stage variables. Pure functions, each with its AWS source.
//!
//! - "For private integrations, API Gateway includes the stage portion of the API endpoint in
//!   the request to your backend resources. For example, a request to the test stage of an API
//!   includes test/ in the request to your private integration" — HTTP APIs
//!   (apigateway/latest/developerguide/http-api-develop-integrations-private.html) and REST APIs
//!   through a VPC link v2 (…/private-integration.html). Parameter mapping can overwrite the
//!   path (HTTP API `overwrite:path`; REST `$context.requestOverride.path`). For REST v1 links
//!   AWS documents no prefix: the integration URI's path is sent.
//! - A greedy `{proxy+}` matches every child path; a resource tree whose root has no method
//!   answers 403 Missing Authentication Token at the root
//!   (…/api-gateway-set-up-simple-proxy.html).
//! - Stage variables stand in an integration's URI and VPC link id as `${stageVariables.x}`
//!   (…/aws-api-gateway-stage-variables-reference.html).

use std::collections::BTreeMap;

/// One parameter of a path template: `{id}` or the greedy `{proxy+}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub greedy: bool,
}

/// The parameters of a route or resource path (`/orders/{id}`, `/{proxy+}`), in order.
pub fn params(template: &str) -> Vec<Param> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let inner = &rest[open + 1..open + close];
        let (name, greedy) = match inner.strip_suffix('+') {
            Some(n) => (n, true),
            None => (inner, false),
        };
        out.push(Param {
            name: name.to_string(),
            greedy,
        });
        rest = &rest[open + close + 1..];
    }
    out
}

/// `template` with every `{name}` and `{name+}` replaced by its value; the first name without
/// one is the error.
pub fn fill(template: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        let inner = &rest[open + 1..open + close];
        let name = inner.trim_end_matches('+');
        match values.get(name) {
            Some(v) => out.push_str(v.trim_start_matches('/')),
            None => return Err(name.to_string()),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The child path a greedy parameter takes so that the backend receives `health`, the target
/// group's health-check path, where the integration's path template allows it: template
/// `/api/{proxy}` and health `/api/health` give `health`. `None` when the template cannot
/// produce it.
pub fn greedy_from_health(backend_template: &str, greedy: &str, health: &str) -> Option<String> {
    let marker_plain = format!("{{{greedy}}}");
    let marker_plus = format!("{{{greedy}+}}");
    let (prefix, suffix) = backend_template
        .split_once(&marker_plain)
        .or_else(|| backend_template.split_once(&marker_plus))?;
    if params(prefix)
        .iter()
        .chain(params(suffix).iter())
        .next()
        .is_some()
    {
        return None;
    }
    let child = health.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!child.is_empty()).then(|| child.to_string())
}

/// The child path a greedy parameter takes when nothing better is known: what most services
/// answer, and never the root of a proxy-only API.
pub const DEFAULT_CHILD: &str = "health";

/// `${stageVariables.name}` in `text`, resolved from the stage's variables; the first variable
/// the stage does not define is the error.
pub fn stage_variables(text: &str, variables: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    const OPEN: &str = "${stageVariables.";
    while let Some(at) = rest.find(OPEN) {
        let Some(close) = rest[at..].find('}') else {
            break;
        };
        out.push_str(&rest[..at]);
        let name = &rest[at + OPEN.len()..at + close];
        match variables.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(name.to_string()),
        }
        rest = &rest[at + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What a REST integration's path becomes for one request: the URI's path template with each
/// `{x}` taken from the parameter mapping `integration.request.path.x` (a method path
/// parameter `method.request.path.y`, or a literal `'value'`), else from the method's own
/// parameter of that name.
pub fn rest_backend_path(
    uri_path: &str,
    method_values: &BTreeMap<String, String>,
    request_parameters: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut values = BTreeMap::new();
    for p in params(uri_path) {
        let mapped = request_parameters.get(&format!("integration.request.path.{}", p.name));
        let value = match mapped.map(String::as_str) {
            Some(m) if m.starts_with('\'') && m.ends_with('\'') && m.len() >= 2 => {
                Some(m[1..m.len() - 1].to_string())
            }
            Some(m) => m
                .strip_prefix("method.request.path.")
                .and_then(|n| method_values.get(n))
                .cloned(),
            None => method_values.get(&p.name).cloned(),
        };
        if let Some(v) = value {
            values.insert(p.name.clone(), v);
        }
    }
    fill(uri_path, &values)
}

/// Where the stage prefix goes: the path a private integration of an HTTP API or a REST v2
/// link receives for a request to `request_path` on `stage`. An `overwrite:path` mapping
/// replaces it (`$request.path` is the path without the stage; `${request.path.name}` a path
/// parameter's value; anything else literally); a `$default` stage adds no prefix. The bool
/// says whether the stage prefix was added.
pub fn prefixed_path(
    stage: &str,
    request_path: &str,
    request_parameters: &BTreeMap<String, String>,
    values: &BTreeMap<String, String>,
) -> (String, bool) {
    let overwrite = request_parameters
        .get("overwrite:path")
        .or_else(|| request_parameters.get("$context.requestOverride.path"));
    if let Some(o) = overwrite {
        let mut path = o.replace("$request.path", request_path);
        for (k, v) in values {
            path = path
                .replace(&format!("${{request.path.{k}}}"), v)
                .replace(&format!("$request.path.{k}"), v);
        }
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        return (path, false);
    }
    if stage == "$default" {
        return (request_path.to_string(), false);
    }
    (format!("/{stage}{request_path}"), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn templates_are_read_and_filled() {
        assert_eq!(
            params("/orders/{id}/items/{proxy+}"),
            [
                Param {
                    name: "id".into(),
                    greedy: false
                },
                Param {
                    name: "proxy".into(),
                    greedy: true
                }
            ]
        );
        let values = map(&[("id", "42"), ("proxy", "a/b")]);
        assert_eq!(
            fill("/orders/{id}/items/{proxy+}", &values).as_deref(),
            Ok("/orders/42/items/a/b")
        );
        assert_eq!(fill("/orders/{nope}", &values), Err("nope".to_string()));
        assert_eq!(fill("/plain", &values).as_deref(), Ok("/plain"));
    }

    #[test]
    fn a_greedy_child_reaches_the_health_check_where_the_mapping_allows() {
        assert_eq!(
            greedy_from_health("/api/{proxy}", "proxy", "/api/health").as_deref(),
            Some("health")
        );
        assert_eq!(
            greedy_from_health("/{proxy}", "proxy", "/status/ok").as_deref(),
            Some("status/ok")
        );
        assert_eq!(greedy_from_health("/api/{proxy}", "proxy", "/health"), None);
        assert_eq!(greedy_from_health("/api/{proxy}", "proxy", "/api/"), None);
    }

    #[test]
    fn the_backend_receives_the_mapped_path() {
        let method = map(&[("proxy", "health")]);
        let mapping = map(&[(
            "integration.request.path.proxy",
            "method.request.path.proxy",
        )]);
        assert_eq!(
            rest_backend_path("/api/{proxy}", &method, &mapping).as_deref(),
            Ok("/api/health")
        );
        // No mapping: the method's parameter of the same name.
        assert_eq!(
            rest_backend_path("/api/{proxy}", &method, &BTreeMap::new()).as_deref(),
            Ok("/api/health")
        );
        // A literal.
        let literal = map(&[("integration.request.path.v", "'v2'")]);
        assert_eq!(
            rest_backend_path("/{v}/orders", &method, &literal).as_deref(),
            Ok("/v2/orders")
        );
        assert!(rest_backend_path("/{other}", &method, &BTreeMap::new()).is_err());
    }

    #[test]
    fn private_integrations_get_the_stage_unless_mapped() {
        let none = BTreeMap::new();
        assert_eq!(
            prefixed_path("prod", "/orders", &none, &none),
            ("/prod/orders".to_string(), true)
        );
        assert_eq!(
            prefixed_path("$default", "/orders", &none, &none),
            ("/orders".to_string(), false)
        );
        let overwrite = map(&[("overwrite:path", "$request.path")]);
        assert_eq!(
            prefixed_path("prod", "/orders", &overwrite, &none),
            ("/orders".to_string(), false)
        );
        let param = map(&[("overwrite:path", "/v1/${request.path.id}")]);
        assert_eq!(
            prefixed_path("prod", "/o/7", &param, &map(&[("id", "7")])),
            ("/v1/7".to_string(), false)
        );
    }

    #[test]
    fn stage_variables_are_resolved() {
        let vars = map(&[("backend", "nlb.example"), ("link", "abc123")]);
        assert_eq!(
            stage_variables("http://${stageVariables.backend}/items", &vars).as_deref(),
            Ok("http://nlb.example/items")
        );
        assert_eq!(
            stage_variables("${stageVariables.link}", &vars).as_deref(),
            Ok("abc123")
        );
        assert_eq!(
            stage_variables("${stageVariables.gone}", &vars),
            Err("gone".to_string())
        );
    }
}

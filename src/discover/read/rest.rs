//! API Gateway's REST APIs (`apigateway`): the APIs, their stages, their resources with the
//! methods and integrations embedded, and the VPC links v1. Pages continue with `position`.

use std::collections::BTreeMap;

use aws_sdk_apigateway::types::{ConnectionType, EndpointType};

use super::super::call::{from_sdk, CallError, Service};
use super::super::model::aws::{AccessLog, DomainMapping, Link, RestApi, RestMethod, Stage};
use super::{epoch, Reader};

const API: Service = Service::ApiGateway;

/// The next page of a listing: its `position`, unless the page came back empty (a position
/// with nothing in it would page forever).
fn next<T>(items: &[T], position: Option<&str>) -> Option<String> {
    position.filter(|_| !items.is_empty()).map(str::to_string)
}

/// Every REST API of the region.
pub async fn apis(r: &Reader<'_>) -> Result<Vec<RestApi>, CallError> {
    let found = r
        .budget
        .paged(API, "GetRestApis", |position| async move {
            let page =
                r.c.rest
                    .get_rest_apis()
                    .set_position(position)
                    .limit(500)
                    .send()
                    .await
                    .map_err(|e| from_sdk(API, "GetRestApis", &e))?;
            Ok((page.items().to_vec(), next(page.items(), page.position())))
        })
        .await?;
    Ok(found
        .iter()
        .filter_map(|a| {
            let endpoint = a.endpoint_configuration();
            Some(RestApi {
                id: a.id()?.to_string(),
                name: a.name().unwrap_or_default().to_string(),
                private: endpoint.is_some_and(|e| e.types().contains(&EndpointType::Private)),
                vpc_endpoint_ids: endpoint
                    .map(|e| e.vpc_endpoint_ids().to_vec())
                    .unwrap_or_default(),
                default_endpoint_disabled: a.disable_execute_api_endpoint(),
            })
        })
        .collect())
}

/// Every VPC link v1.
pub async fn links(r: &Reader<'_>) -> Result<Vec<Link>, CallError> {
    let found = r
        .budget
        .paged(API, "GetVpcLinks", |position| async move {
            let page =
                r.c.rest
                    .get_vpc_links()
                    .set_position(position)
                    .limit(500)
                    .send()
                    .await
                    .map_err(|e| from_sdk(API, "GetVpcLinks", &e))?;
            Ok((page.items().to_vec(), next(page.items(), page.position())))
        })
        .await?;
    Ok(found
        .iter()
        .filter_map(|l| {
            Some(Link {
                id: l.id()?.to_string(),
                name: l.name().unwrap_or_default().to_string(),
                status: l
                    .status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                message: l.status_message().map(str::to_string),
                target_arns: l.target_arns().to_vec(),
                ..Link::default()
            })
        })
        .collect())
}

/// The stages of one API: one call, the whole of what change detection reads.
pub async fn stages(r: &Reader<'_>, api: &str) -> Result<Vec<Stage>, CallError> {
    let out = r
        .budget
        .call(API, "GetStages", || async {
            r.c.rest
                .get_stages()
                .rest_api_id(api)
                .send()
                .await
                .map_err(|e| from_sdk(API, "GetStages", &e))
        })
        .await?;
    Ok(out
        .item()
        .iter()
        .filter_map(|s| {
            // Execution logging is on for every method when `*/*` logs at INFO or ERROR
            // (set-up-logging.html: "CloudWatch logs" per stage, loggingLevel).
            let execution_logging = s
                .method_settings()
                .and_then(|m| m.get("*/*"))
                .and_then(|m| m.logging_level())
                .is_some_and(|l| l != "OFF");
            Some(Stage {
                name: s.stage_name()?.to_string(),
                deployment_id: s.deployment_id().map(str::to_string),
                last_updated: epoch(s.last_updated_date()),
                access_log: s.access_log_settings().and_then(|a| {
                    Some(AccessLog {
                        destination_arn: a.destination_arn()?.to_string(),
                        format: a.format().map(str::to_string),
                    })
                }),
                execution_logging,
                variables: s
                    .variables()
                    .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// Every method of one API whose integration goes through a VPC link: every resource with its
/// methods embedded, in one paged call (`GetResources`, `embed=methods`).
pub async fn methods(r: &Reader<'_>, api: &str) -> Result<Vec<RestMethod>, CallError> {
    let resources = r
        .budget
        .paged(API, "GetResources", |position| async move {
            let page =
                r.c.rest
                    .get_resources()
                    .rest_api_id(api)
                    .embed("methods")
                    .set_position(position)
                    .limit(500)
                    .send()
                    .await
                    .map_err(|e| from_sdk(API, "GetResources", &e))?;
            Ok((page.items().to_vec(), next(page.items(), page.position())))
        })
        .await?;
    let mut out = Vec::new();
    for resource in &resources {
        let path = resource.path().unwrap_or("/").to_string();
        let mut methods: Vec<_> = resource.resource_methods().into_iter().flatten().collect();
        methods.sort_by(|a, b| a.0.cmp(b.0));
        for (verb, m) in methods {
            let Some(i) = m.method_integration() else {
                continue;
            };
            if i.connection_type() != Some(&ConnectionType::VpcLink) {
                continue;
            }
            out.push(RestMethod {
                path: path.clone(),
                method: verb.clone(),
                uri: i.uri().map(str::to_string),
                connection_id: i.connection_id().map(str::to_string),
                integration_target: i.integration_target().map(str::to_string),
                timeout_ms: Some(i64::from(i.timeout_in_millis())).filter(|t| *t > 0),
                insecure_skip_verification: i
                    .tls_config()
                    .is_some_and(|t| t.insecure_skip_verification()),
                request_parameters: i
                    .request_parameters()
                    .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_else(BTreeMap::new),
                api_key_required: m.api_key_required().unwrap_or(false),
                authorization: m
                    .authorization_type()
                    .filter(|a| *a != "NONE")
                    .map(str::to_string),
                authorization_scopes: m.authorization_scopes().to_vec(),
            });
        }
    }
    Ok(out)
}

/// Every custom domain's base path mappings: what a caller uses when an API's default
/// endpoint is disabled.
pub async fn domains(r: &Reader<'_>) -> Result<Vec<DomainMapping>, CallError> {
    let names = r
        .budget
        .paged(API, "GetDomainNames", |position| async move {
            let page =
                r.c.rest
                    .get_domain_names()
                    .set_position(position)
                    .limit(500)
                    .send()
                    .await
                    .map_err(|e| from_sdk(API, "GetDomainNames", &e))?;
            Ok((page.items().to_vec(), next(page.items(), page.position())))
        })
        .await?;
    let mut out = Vec::new();
    for domain in names.iter().filter_map(|d| d.domain_name()) {
        let mappings = r
            .budget
            .paged(API, "GetBasePathMappings", |position| async move {
                let page =
                    r.c.rest
                        .get_base_path_mappings()
                        .domain_name(domain)
                        .set_position(position)
                        .limit(500)
                        .send()
                        .await
                        .map_err(|e| from_sdk(API, "GetBasePathMappings", &e))?;
                Ok((page.items().to_vec(), next(page.items(), page.position())))
            })
            .await?;
        for m in &mappings {
            out.push(DomainMapping {
                domain: domain.to_string(),
                // "(none)" is the empty base path (apigateway/latest/api/API_BasePathMapping.html).
                base_path: m
                    .base_path()
                    .filter(|p| *p != "(none)")
                    .unwrap_or_default()
                    .to_string(),
                api_id: m.rest_api_id().unwrap_or_default().to_string(),
                stage: m.stage().unwrap_or_default().to_string(),
            });
        }
    }
    Ok(out)
}

/// What a stage's deployment serves: `GetExport` of the stage as OpenAPI 3 JSON with the
/// `integrations` extension (apigateway/latest/developerguide/api-gateway-export-api.html).
/// `Ok(None)`: the export holds no integration (an implementation that leaves the extension
/// out), so the working copy is what can be read. The export fails for models that are not
/// `application/json`; the caller falls back then too.
pub async fn export(
    r: &Reader<'_>,
    api: &str,
    stage: &str,
) -> Result<Option<Vec<RestMethod>>, CallError> {
    let out = r
        .budget
        .call(API, "GetExport", || async {
            r.c.rest
                .get_export()
                .rest_api_id(api)
                .stage_name(stage)
                .export_type("oas30")
                .parameters("extensions", "integrations")
                .accepts("application/json")
                .send()
                .await
                .map_err(|e| from_sdk(API, "GetExport", &e))
        })
        .await?;
    let body = out.body().map(|b| b.as_ref()).unwrap_or_default();
    Ok(exported_methods(body))
}

/// The methods of an exported definition whose integration goes through a VPC link; `None`
/// when the document carries no `x-amazon-apigateway-integration` at all.
pub fn exported_methods(body: &[u8]) -> Option<Vec<RestMethod>> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let paths = doc.get("paths")?.as_object()?;
    let mut any = false;
    let mut out = Vec::new();
    for (path, item) in paths {
        let Some(methods) = item.as_object() else {
            continue;
        };
        for (verb, op) in methods {
            let Some(i) = op.get("x-amazon-apigateway-integration") else {
                continue;
            };
            any = true;
            if i.get("connectionType").and_then(|c| c.as_str()) != Some("VPC_LINK") {
                continue;
            }
            let text =
                |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
            let verb = match verb.as_str() {
                "x-amazon-apigateway-any-method" => "ANY".to_string(),
                v => v.to_ascii_uppercase(),
            };
            let (authorization, authorization_scopes, api_key_required) = security(&doc, op);
            out.push(RestMethod {
                path: path.clone(),
                method: verb,
                uri: text(i.get("uri")),
                connection_id: text(i.get("connectionId")),
                integration_target: text(i.get("integrationTarget")),
                timeout_ms: i.get("timeoutInMillis").and_then(|t| t.as_i64()),
                insecure_skip_verification: i
                    .get("tlsConfig")
                    .and_then(|t| t.get("insecureSkipVerification"))
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
                request_parameters: i
                    .get("requestParameters")
                    .and_then(|p| p.as_object())
                    .map(|p| {
                        p.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default(),
                api_key_required,
                authorization,
                authorization_scopes,
            });
        }
    }
    any.then_some(out)
}

/// How an exported operation is authorized, in `GetResources`' words: (`AWS_IAM`,
/// `COGNITO_USER_POOLS` or `CUSTOM`; the scopes its requirement lists; whether an API key is
/// required). The export names schemes under `components.securitySchemes`, marked by
/// `x-amazon-apigateway-authtype` (`awsSigv4`, `cognito_user_pools`, `custom`), and the API
/// key scheme `api_key` (api-gateway-swagger-extensions-authtype.html,
/// api-gateway-swagger-extensions-api-key-source.html).
fn security(
    doc: &serde_json::Value,
    op: &serde_json::Value,
) -> (Option<String>, Vec<String>, bool) {
    let schemes = doc.pointer("/components/securitySchemes");
    let (mut authorization, mut scopes, mut api_key) = (None, Vec::new(), false);
    for requirement in op
        .get("security")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_object())
    {
        for (name, wanted) in requirement {
            let authtype = schemes
                .and_then(|s| s.get(name))
                .and_then(|s| s.get("x-amazon-apigateway-authtype"))
                .and_then(|t| t.as_str())
                .map(str::to_ascii_lowercase);
            match authtype.as_deref() {
                Some("awssigv4") => authorization = Some("AWS_IAM".to_string()),
                Some("cognito_user_pools") => {
                    authorization = Some("COGNITO_USER_POOLS".to_string());
                    scopes.extend(
                        wanted
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|v| v.as_str().map(str::to_string)),
                    );
                }
                Some(_) => authorization = Some("CUSTOM".to_string()),
                None if name == "api_key" => api_key = true,
                None => {}
            }
        }
    }
    (authorization, scopes, api_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage export as API Gateway writes it (OpenAPI 3 with the integrations extension):
    /// IAM, a Cognito authorizer with scopes, an API key, and a method with no VPC link.
    #[test]
    fn an_export_says_what_serves_and_how_it_is_authorized() {
        let doc = serde_json::json!({
            "openapi": "3.0.1",
            "paths": {
                "/orders": {
                    "get": {
                        "security": [{"sigv4": []}],
                        "x-amazon-apigateway-integration": {
                            "type": "http_proxy", "connectionType": "VPC_LINK", "connectionId": "vl1",
                            "uri": "http://nlb/orders", "httpMethod": "GET", "timeoutInMillis": 12000
                        }
                    },
                    "post": {
                        "security": [{"pool": ["orders/write"]}, {"api_key": []}],
                        "x-amazon-apigateway-integration": {
                            "type": "http_proxy", "connectionType": "VPC_LINK", "connectionId": "vl1",
                            "uri": "http://nlb/orders", "httpMethod": "POST",
                            "tlsConfig": {"insecureSkipVerification": true}
                        }
                    }
                },
                "/public": {
                    "get": {"x-amazon-apigateway-integration": {"type": "http", "uri": "https://example.com/"}}
                }
            },
            "components": {"securitySchemes": {
                "sigv4": {"type": "apiKey", "name": "Authorization", "in": "header", "x-amazon-apigateway-authtype": "awsSigv4"},
                "pool": {"type": "apiKey", "name": "Authorization", "in": "header", "x-amazon-apigateway-authtype": "cognito_user_pools"},
                "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}
            }}
        });
        let methods = exported_methods(doc.to_string().as_bytes()).expect("integrations");
        assert_eq!(methods.len(), 2, "only VPC-link methods: {methods:?}");
        let get = methods.iter().find(|m| m.method == "GET").expect("GET");
        assert_eq!(get.authorization.as_deref(), Some("AWS_IAM"));
        assert_eq!(get.timeout_ms, Some(12_000));
        assert!(!get.api_key_required);
        let post = methods.iter().find(|m| m.method == "POST").expect("POST");
        assert_eq!(post.authorization.as_deref(), Some("COGNITO_USER_POOLS"));
        assert_eq!(post.authorization_scopes, ["orders/write"]);
        assert!(post.api_key_required && post.insecure_skip_verification);
        // An export without the extension: nothing said, the working copy is read.
        assert_eq!(exported_methods(br#"{"paths": {"/x": {"get": {}}}}"#), None);
    }
}

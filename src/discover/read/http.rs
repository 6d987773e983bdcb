//! API Gateway's HTTP APIs (`apigatewayv2`): the APIs, their stages, routes and
//! integrations, and the VPC links v2. Pages continue with `nextToken`. They count against the
//! same account quota as REST calls (the same [`Service::ApiGateway`] bucket).

use aws_sdk_apigatewayv2::types::ConnectionType;

use super::super::call::{from_sdk, CallError, Service};
use super::super::model::aws::{
    AccessLog, DomainMapping, HttpApi, HttpIntegration, HttpRoute, JwtAuthorizer, Link, Stage,
};
use super::{epoch, Reader};

const API: Service = Service::ApiGateway;

/// Every HTTP API of the region (WebSocket APIs are left out).
pub async fn apis(r: &Reader<'_>) -> Result<Vec<HttpApi>, CallError> {
    let found = r
        .budget
        .paged(API, "GetApis", |token| async move {
            let page =
                r.c.http
                    .get_apis()
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| from_sdk(API, "GetApis", &e))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        })
        .await?;
    let region = &r.c.region;
    Ok(found
        .iter()
        .filter(|a| a.protocol_type().map(|p| p.as_str()) == Some("HTTP"))
        .filter_map(|a| {
            let id = a.api_id()?.to_string();
            Some(HttpApi {
                endpoint: a
                    .api_endpoint()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("https://{id}.execute-api.{region}.amazonaws.com")),
                name: a.name().unwrap_or(&id).to_string(),
                default_endpoint_disabled: a.disable_execute_api_endpoint().unwrap_or(false),
                id,
            })
        })
        .collect())
}

/// Every VPC link v2, in one listing (not one call per link).
pub async fn links(r: &Reader<'_>) -> Result<Vec<Link>, CallError> {
    let found = r
        .budget
        .paged(API, "GetVpcLinks", |token| async move {
            let page =
                r.c.http
                    .get_vpc_links()
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| from_sdk(API, "GetVpcLinks", &e))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        })
        .await?;
    Ok(found
        .iter()
        .filter_map(|l| {
            Some(Link {
                id: l.vpc_link_id()?.to_string(),
                name: l.name().unwrap_or_default().to_string(),
                status: l
                    .vpc_link_status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                message: l.vpc_link_status_message().map(str::to_string),
                subnets: l.subnet_ids().to_vec(),
                security_groups: l.security_group_ids().to_vec(),
                target_arns: Vec::new(),
            })
        })
        .collect())
}

/// The stages of one API.
pub async fn stages(r: &Reader<'_>, api: &str) -> Result<Vec<Stage>, CallError> {
    let found = r
        .budget
        .paged(API, "GetStages", |token| async move {
            let page =
                r.c.http
                    .get_stages()
                    .api_id(api)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| from_sdk(API, "GetStages", &e))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        })
        .await?;
    Ok(found
        .iter()
        .filter_map(|s| {
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
                // HTTP APIs have no execution logs (http-api-vs-rest.html).
                execution_logging: false,
                variables: s
                    .stage_variables()
                    .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// The routes of one API.
pub async fn routes(r: &Reader<'_>, api: &str) -> Result<Vec<HttpRoute>, CallError> {
    let found = r
        .budget
        .paged(API, "GetRoutes", |token| async move {
            let page =
                r.c.http
                    .get_routes()
                    .api_id(api)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| from_sdk(API, "GetRoutes", &e))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        })
        .await?;
    Ok(found
        .iter()
        .map(|route| HttpRoute {
            key: route.route_key().unwrap_or("$default").to_string(),
            integration_id: route
                .target()
                .and_then(|t| t.strip_prefix("integrations/"))
                .map(str::to_string),
            api_key_required: route.api_key_required().unwrap_or(false),
            authorization: route
                .authorization_type()
                .map(|a| a.as_str().to_string())
                .filter(|a| a != "NONE"),
            authorization_scopes: route.authorization_scopes().to_vec(),
            authorizer_id: route.authorizer_id().map(str::to_string),
        })
        .collect())
}

/// One JWT authorizer of an API (`GetAuthorizer`): issuer and audience, what a token the
/// agent fetches must carry. `Ok(None)`: not a JWT authorizer.
pub async fn authorizer(
    r: &Reader<'_>,
    api: &str,
    id: &str,
) -> Result<Option<JwtAuthorizer>, CallError> {
    let a = r
        .budget
        .call(API, "GetAuthorizer", || async {
            r.c.http
                .get_authorizer()
                .api_id(api)
                .authorizer_id(id)
                .send()
                .await
                .map_err(|e| from_sdk(API, "GetAuthorizer", &e))
        })
        .await?;
    Ok(a.jwt_configuration().map(|jwt| JwtAuthorizer {
        id: id.to_string(),
        name: a.name().unwrap_or_default().to_string(),
        issuer: jwt.issuer().map(str::to_string),
        audience: jwt.audience().to_vec(),
    }))
}

/// The integrations of one API that go through a VPC link.
pub async fn integrations(r: &Reader<'_>, api: &str) -> Result<Vec<HttpIntegration>, CallError> {
    let found = r
        .budget
        .paged(API, "GetIntegrations", |token| async move {
            let page =
                r.c.http
                    .get_integrations()
                    .api_id(api)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| from_sdk(API, "GetIntegrations", &e))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        })
        .await?;
    Ok(found
        .iter()
        .filter(|i| i.connection_type() == Some(&ConnectionType::VpcLink))
        .filter_map(|i| {
            Some(HttpIntegration {
                id: i.integration_id()?.to_string(),
                uri: i.integration_uri().unwrap_or_default().to_string(),
                connection_id: i.connection_id().map(str::to_string),
                timeout_ms: i.timeout_in_millis().map(i64::from),
                server_name: i
                    .tls_config()
                    .and_then(|t| t.server_name_to_verify())
                    .map(str::to_string),
                request_parameters: i
                    .request_parameters()
                    .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// Every custom domain's API mappings (HTTP APIs).
pub async fn domains(r: &Reader<'_>) -> Result<Vec<DomainMapping>, CallError> {
    let names = r
        .budget
        .paged(API, "GetDomainNames", |token| async move {
            let page =
                r.c.http
                    .get_domain_names()
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| from_sdk(API, "GetDomainNames", &e))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        })
        .await?;
    let mut out = Vec::new();
    for domain in names.iter().filter_map(|d| d.domain_name()) {
        let mappings = r
            .budget
            .paged(API, "GetApiMappings", |token| async move {
                let page =
                    r.c.http
                        .get_api_mappings()
                        .domain_name(domain)
                        .set_next_token(token)
                        .send()
                        .await
                        .map_err(|e| from_sdk(API, "GetApiMappings", &e))?;
                Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
            })
            .await?;
        for m in &mappings {
            out.push(DomainMapping {
                domain: domain.to_string(),
                base_path: m.api_mapping_key().unwrap_or_default().to_string(),
                api_id: m.api_id().unwrap_or_default().to_string(),
                stage: m.stage().unwrap_or_default().to_string(),
            });
        }
    }
    Ok(out)
}

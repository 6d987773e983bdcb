//! Cloud Map (`servicediscovery`): the service an HTTP API integration names, its namespace's
//! HTTP name (what API Gateway passes to `DiscoverInstances`), and its registered instances.

use super::super::call::{from_sdk, CallError, Service};
use super::super::model::aws::CloudMapService;
use super::Reader;

const SD: Service = Service::CloudMap;

/// A service, its namespace's name and its instances. `namespaces` caches names by id: many
/// services share a namespace, and each is read once per walk.
pub async fn service(
    r: &Reader<'_>,
    id: &str,
    namespaces: &mut std::collections::HashMap<String, String>,
) -> Result<CloudMapService, CallError> {
    let got = r
        .budget
        .call(SD, "GetService", || async {
            r.c.cloudmap
                .get_service()
                .id(id)
                .send()
                .await
                .map_err(|e| from_sdk(SD, "GetService", &e))
        })
        .await?;
    let service = got
        .service
        .ok_or_else(|| CallError::other(SD, "GetService", format!("service {id}: empty answer")))?;
    let name = service.name().unwrap_or(id).to_string();
    let ns_id = service.namespace_id().unwrap_or_default().to_string();
    let namespace = match namespaces.get(&ns_id) {
        Some(n) => n.clone(),
        None => {
            let got = r
                .budget
                .call(SD, "GetNamespace", || async {
                    r.c.cloudmap
                        .get_namespace()
                        .id(&ns_id)
                        .send()
                        .await
                        .map_err(|e| from_sdk(SD, "GetNamespace", &e))
                })
                .await?;
            let ns = got.namespace.ok_or_else(|| {
                CallError::other(
                    SD,
                    "GetNamespace",
                    format!("namespace {ns_id}: empty answer"),
                )
            })?;
            let n = ns
                .properties()
                .and_then(|p| p.http_properties())
                .and_then(|h| h.http_name())
                .or(ns.name())
                .unwrap_or_default()
                .to_string();
            namespaces.insert(ns_id.clone(), n.clone());
            n
        }
    };
    let instances = r
        .budget
        .paged(SD, "ListInstances", |token| async move {
            let page =
                r.c.cloudmap
                    .list_instances()
                    .service_id(id)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| from_sdk(SD, "ListInstances", &e))?;
            Ok((
                page.instances().to_vec(),
                page.next_token().map(str::to_string),
            ))
        })
        .await?;
    let mut addresses: Vec<String> = instances
        .iter()
        .filter_map(|i| {
            let a = i.attributes()?;
            let ip = a.get("AWS_INSTANCE_IPV4")?;
            let port = a
                .get("AWS_INSTANCE_PORT")
                .map(String::as_str)
                .unwrap_or("80");
            Some(format!("{ip}:{port}"))
        })
        .collect();
    addresses.sort();
    Ok(CloudMapService {
        id: id.to_string(),
        name,
        namespace,
        instances: addresses,
    })
}

//! The `cloudmap://NAMESPACE/SERVICE` hop: what API Gateway does for an HTTP API integration
//! with AWS Cloud Map. It calls `DiscoverInstances` (HTTP namespaces have no DNS at all) and
//! connects to an instance it returns; the hop passes when at least one comes back, and its
//! `per_address` probes are HTTP probes of each instance's `AWS_INSTANCE_IPV4` and
//! `AWS_INSTANCE_PORT`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use tokio::sync::OnceCell;

/// Where the Cloud Map client goes: the SDK's default chain, or a region and one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// `DiscoverInstances` adds the host prefix `data-` to the service endpoint (its data plane is
/// `data-servicediscovery.REGION.amazonaws.com`). An endpoint given by hand (a VPC interface
/// endpoint's name, a test server) is used as given, as AWS's standard for custom endpoints
/// says; this interceptor takes the prefix back off when the client has one.
#[derive(Debug)]
pub struct AsGiven;

impl Intercept for AsGiven {
    fn name(&self) -> &'static str {
        "hopwatch: custom endpoint as given"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let uri = request.uri().to_string();
        if let Some(rest) = uri
            .strip_prefix("http://data-")
            .map(|r| format!("http://{r}"))
            .or_else(|| {
                uri.strip_prefix("https://data-")
                    .map(|r| format!("https://{r}"))
            })
        {
            request.set_uri(rest)?;
        }
        Ok(())
    }
}

/// A Cloud Map client, made on first use (most configs have no cloudmap hop).
#[derive(Debug, Default)]
pub struct CloudMap {
    endpoint: Endpoint,
    client: OnceCell<aws_sdk_servicediscovery::Client>,
}

/// What one `DiscoverInstances` call gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovered {
    /// The instances' addresses (those with `AWS_INSTANCE_IPV4`; port `AWS_INSTANCE_PORT`, else
    /// the URL's).
    Instances(Vec<SocketAddr>),
    /// The call failed: the HTTP status when Cloud Map answered, and why.
    Failed(Option<u16>, String, Failure),
}

/// How a Cloud Map call failed, for the outcome class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Cloud Map answered with an error (namespace or service not found, access denied).
    Answered,
    /// No answer in time.
    Timeout,
    /// No connection.
    Unreachable,
}

impl CloudMap {
    pub fn new(endpoint: Endpoint) -> Self {
        CloudMap {
            endpoint,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &aws_sdk_servicediscovery::Client {
        self.client
            .get_or_init(|| async {
                // The probe is the retry: a failed call is a failed round, as for any hop.
                let sdk = crate::aws::loader(
                    self.endpoint.region.as_deref(),
                    self.endpoint.endpoint_url.as_deref(),
                )
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .load()
                .await;
                let mut config = aws_sdk_servicediscovery::config::Builder::from(&sdk);
                if self.endpoint.endpoint_url.is_some() {
                    config = config.interceptor(AsGiven);
                }
                aws_sdk_servicediscovery::Client::from_conf(config.build())
            })
            .await
    }

    /// `DiscoverInstances` for the service `name` names (its default health filter: healthy
    /// instances; its query as `QueryParameters`), within `timeout`.
    pub async fn discover(
        &self,
        name: &crate::config::CloudMapName,
        default_port: u16,
        timeout: Duration,
    ) -> Discovered {
        let call = async {
            let mut request = self
                .client()
                .await
                .discover_instances()
                .namespace_name(&name.namespace)
                .service_name(&name.service);
            for (k, v) in &name.query {
                request = request.query_parameters(k, v);
            }
            request.send().await
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Discovered::Failed(
                None,
                format!("DiscoverInstances gave no answer within {timeout:?}"),
                Failure::Timeout,
            ),
            Ok(Ok(out)) => {
                let mut addrs: Vec<SocketAddr> = out
                    .instances()
                    .iter()
                    .filter_map(|i| {
                        let a = i.attributes()?;
                        let ip: IpAddr = a.get("AWS_INSTANCE_IPV4")?.parse().ok()?;
                        let port = a
                            .get("AWS_INSTANCE_PORT")
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(default_port);
                        Some(SocketAddr::new(ip, port))
                    })
                    .collect();
                addrs.sort();
                addrs.dedup();
                Discovered::Instances(addrs)
            }
            Ok(Err(e)) => {
                use aws_smithy_types::error::metadata::ProvideErrorMetadata;
                let status = e.raw_response().map(|r| r.status().as_u16());
                let why = match (e.code(), e.message()) {
                    (Some(c), Some(m)) => format!("DiscoverInstances: {c}: {m}"),
                    (Some(c), None) => format!("DiscoverInstances: {c}"),
                    _ => format!(
                        "DiscoverInstances: {}",
                        aws_smithy_types::error::display::DisplayErrorContext(&e)
                    ),
                };
                let failure = match (&e, status) {
                    (_, Some(_)) => Failure::Answered,
                    (aws_sdk_servicediscovery::error::SdkError::TimeoutError(_), _) => {
                        Failure::Timeout
                    }
                    _ => Failure::Unreachable,
                };
                Discovered::Failed(status, why, failure)
            }
        }
    }
}

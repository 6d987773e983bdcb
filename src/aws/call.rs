//! One AWS API call, spoken directly on the SDK's own runtime, for services whose generated
//! crate costs more to build than hopwatch uses of it (EC2's Query API in
//! `discover::ec2`, CloudWatch Logs' JSON API in `gatewaylog::logs`).
//!
//! What is shared here is everything that does not depend on the protocol: the credentials of
//! the loaded `SdkConfig`, the orchestrator's `Operation` with its HTTP client, retry (standard
//! mode), timeouts, sleep and time source, SigV4 signing of each attempt (`aws-sigv4`), and
//! the shape of a failed call (HTTP status, error code, message). What each protocol brings
//! is its body and headers, and a reader for the answer that finds the error code where that
//! protocol puts it (EC2: `<Errors><Error><Code>`; JSON 1.1: `__type`).
//!
//! SigV4: docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html (signed here with
//! `aws-sigv4`, the crate the SDK signs with).

use std::fmt;
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_smithy_runtime::client::orchestrator::operation::Operation;
use aws_smithy_runtime::client::retries::classifiers::{
    HttpStatusCodeClassifier, TransientErrorClassifier,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, InterceptorContext,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

/// A service's public endpoint in `region`, or `endpoint_url` when one is given (a test
/// server, a VPC interface endpoint). The China partition has its own domain
/// (docs.aws.amazon.com/general/latest/gr/rande.html: `amazonaws.com.cn` in `cn-` Regions).
pub fn endpoint(service: &str, region: &str, endpoint_url: Option<&str>) -> String {
    match endpoint_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None if region.starts_with("cn-") => format!("https://{service}.{region}.amazonaws.com.cn"),
        None => format!("https://{service}.{region}.amazonaws.com"),
    }
}

/// What a service answered a failed call with, as its protocol's reader found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// The HTTP status of the answer.
    pub status: u16,
    /// The service's error code (`UnauthorizedOperation`, `ThrottlingException`, …), where
    /// the answer had one.
    pub code: Option<String>,
    /// What went wrong, for a person.
    pub message: String,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ServiceError {}

/// A failed call, by what failed. Each variant's text is the whole message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The service answered, with an error (or with something its reader could not read).
    #[error("{0}")]
    Service(ServiceError),
    /// No credentials to sign with.
    #[error("{0}")]
    Credentials(String),
    /// No answer in time: the connect timeout or the operation timeout of the `SdkConfig`.
    #[error("{0}")]
    Timeout(String),
    /// No connection: refused, reset, a name that does not resolve, a failed TLS handshake.
    #[error("{0}")]
    Unreachable(String),
    /// Anything else (a request that could not be built, an answer that could not be received).
    #[error("{0}")]
    Other(String),
}

impl CallError {
    /// The service's error code, when the service answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Service(e) => e.code.as_deref(),
            _ => None,
        }
    }
}

/// One request: where it goes (`POST /`), its headers beyond those signing adds, and its body.
#[derive(Debug, Clone)]
pub struct Request {
    /// The operation's name, for the SDK's logs and metrics (`DescribeInstances`,
    /// `FilterLogEvents`).
    pub operation: String,
    /// Protocol headers (`content-type`, `x-amz-target`).
    pub headers: Vec<(&'static str, String)>,
    /// The body, already serialized.
    pub body: String,
}

/// A client for one service, made from the loaded SDK configuration.
#[derive(Clone)]
pub struct Client {
    service: &'static str,
    endpoint: String,
    region: String,
    credentials: Option<SharedCredentialsProvider>,
    sdk: SdkConfig,
    throttling: &'static [&'static str],
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.service)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of `service` (also its SigV4 signing name: `ec2`, `logs`) in `region`, at
    /// `endpoint` (see [`endpoint`]), with `sdk`'s credentials, HTTP client, retry, timeouts,
    /// sleep and time source.
    pub fn new(sdk: &SdkConfig, service: &'static str, region: &str, endpoint: String) -> Client {
        Client {
            service,
            endpoint,
            region: region.to_string(),
            credentials: sdk.credentials_provider(),
            sdk: sdk.clone(),
            throttling: &[],
        }
    }

    /// Error codes that mean "throttled", retried with the standard mode's throttling backoff.
    /// A protocol that answers throttling with a 5xx needs none: those are retried as server
    /// errors already.
    pub fn throttling_codes(mut self, codes: &'static [&'static str]) -> Client {
        self.throttling = codes;
        self
    }

    /// The endpoint calls go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The region calls are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// One call: `request` sent (retried as the `SdkConfig` says), its answer read by `read`,
    /// which returns the protocol's [`ServiceError`] for a failed answer.
    pub async fn call<O>(
        &self,
        request: Request,
        read: fn(&HttpResponse) -> Result<O, ServiceError>,
    ) -> Result<O, CallError>
    where
        O: fmt::Debug + Send + Sync + 'static,
    {
        let credentials = match &self.credentials {
            Some(provider) => provider.provide_credentials().await.map_err(|e| {
                CallError::Credentials(format!("no credentials: {}", DisplayErrorContext(e)))
            })?,
            None => {
                return Err(CallError::Credentials(
                    "no credentials provider configured".to_string(),
                ))
            }
        };
        let Request {
            operation,
            headers,
            body,
        } = request;

        let mut builder = Operation::builder()
            .service_name(self.service)
            .operation_name(operation)
            .endpoint_url(&self.endpoint)
            .no_auth()
            .interceptor(Sign {
                credentials,
                region: self.region.clone(),
                service: self.service,
            })
            .timeout_config(
                self.sdk
                    .timeout_config()
                    .cloned()
                    .unwrap_or_else(|| TimeoutConfig::builder().build()),
            );
        if let Some(http) = self.sdk.http_client() {
            builder = builder.http_client(http);
        }
        match self.sdk.sleep_impl() {
            Some(sleep) => {
                builder = builder
                    .standard_retry(
                        &self
                            .sdk
                            .retry_config()
                            .cloned()
                            .unwrap_or_else(RetryConfig::standard),
                    )
                    // Connection errors and timeouts; 500/502/503/504 (how EC2 answers
                    // `RequestLimitExceeded` and every service its own faults).
                    .retry_classifier(TransientErrorClassifier::<ServiceError>::new())
                    .retry_classifier(HttpStatusCodeClassifier::default());
                if !self.throttling.is_empty() {
                    builder = builder.retry_classifier(Throttling(self.throttling));
                }
                builder = builder.sleep_impl(sleep);
            }
            None => builder = builder.no_retry(),
        }
        if let Some(time) = self.sdk.time_source() {
            builder = builder.time_source(time);
        }
        let operation = builder
            .serializer(move |body: String| {
                let mut request = http::Request::builder().method("POST").uri("/");
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                Ok(request.body(SdkBody::from(body))?.try_into()?)
            })
            .deserializer(move |response: &HttpResponse| {
                read(response).map_err(OrchestratorError::operation)
            })
            .build();
        operation.invoke(body).await.map_err(classify)
    }
}

/// What failed, from the orchestrator's error.
fn classify(error: SdkError<ServiceError, HttpResponse>) -> CallError {
    let text = DisplayErrorContext(&error).to_string();
    match error {
        SdkError::ServiceError(service) => CallError::Service(service.into_err()),
        SdkError::TimeoutError(_) => CallError::Timeout(text),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => CallError::Timeout(text),
        SdkError::DispatchFailure(failure) if failure.is_user() => CallError::Other(text),
        // The request never got an answer: no connection (refused, reset, DNS, TLS).
        SdkError::DispatchFailure(_) => CallError::Unreachable(text),
        _ => CallError::Other(text),
    }
}

/// Retries answers whose error code means "throttled", as the SDK's own classifier does for
/// the codes it knows (docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html).
#[derive(Debug)]
struct Throttling(&'static [&'static str]);

impl ClassifyRetry for Throttling {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        error
            .as_operation_error()
            .and_then(|e| e.downcast_ref::<ServiceError>())
            .and_then(|e| e.code.as_deref())
            .filter(|code| self.0.contains(code))
            .map(|_| RetryAction::throttling_error())
            .unwrap_or_default()
    }

    fn name(&self) -> &'static str {
        "hopwatch: throttling error codes"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::modeled_as_retryable_classifier()
    }
}

/// Signs each attempt as it leaves, with the time of that attempt (a retry after a backoff
/// gets a fresh signature).
#[derive(Debug)]
struct Sign {
    credentials: Credentials,
    region: String,
    service: &'static str,
}

impl Intercept for Sign {
    fn name(&self) -> &'static str {
        "hopwatch: SigV4"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let request = context.request_mut();
        let identity = self.credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let body = request.body().bytes().unwrap_or_default();
        let uri = request.uri().to_string();
        let signable = SignableRequest::new(
            request.method(),
            uri,
            request.headers().iter(),
            SignableBody::Bytes(body),
        )?;
        let (headers, _) = sign(signable, &params)?.into_parts().0.into_parts();
        for header in headers {
            request
                .headers_mut()
                .insert(header.name().to_string(), header.value().to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_by_partition_and_override() {
        assert_eq!(
            endpoint("logs", "eu-west-1", None),
            "https://logs.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint("ec2", "cn-north-1", None),
            "https://ec2.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            endpoint("logs", "eu-west-1", Some("http://127.0.0.1:4566/")),
            "http://127.0.0.1:4566"
        );
    }

    #[test]
    fn a_service_error_says_its_code() {
        let e = ServiceError {
            status: 400,
            code: Some("ThrottlingException".into()),
            message: "Rate exceeded".into(),
        };
        assert_eq!(e.to_string(), "ThrottlingException: Rate exceeded");
        assert_eq!(CallError::Service(e).code(), Some("ThrottlingException"));
        assert_eq!(CallError::Timeout("t".into()).code(), None);
    }
}

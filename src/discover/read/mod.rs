//! One reader per service: the calls discovery makes, each through the [`Budget`], each
//! answer turned into the plain facts of `model::aws` and `model::net`. Readers decide
//! nothing about chains; `assemble` does.

pub mod cloudmap;
pub mod ec2;
pub mod elb;
pub mod http;
pub mod rest;
pub mod rules;

use std::time::Duration;

use super::call::Budget;

/// The SDK clients, made once per agent (or per `discover` run).
#[derive(Clone)]
pub struct Clients {
    pub rest: aws_sdk_apigateway::Client,
    pub http: aws_sdk_apigatewayv2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub cloudmap: aws_sdk_servicediscovery::Client,
    pub ec2: super::ec2::Ec2,
    pub region: String,
}

/// How long one attempt of a call may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

impl Clients {
    /// Clients from the SDK's default chain (env, profile, ECS task role, IMDS). They make one
    /// attempt per call: the [`Budget`] retries, so every attempt is paced and counted.
    pub async fn new(region: Option<&str>, endpoint_url: Option<&str>) -> Clients {
        use aws_config::retry::RetryConfig;
        use aws_config::timeout::TimeoutConfig;
        let sdk = crate::aws::loader(region, endpoint_url)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "unknown-region".to_string());
        let mut cloudmap = aws_sdk_servicediscovery::config::Builder::from(&sdk);
        if endpoint_url.is_some() {
            cloudmap = cloudmap.interceptor(crate::probe::cloudmap::AsGiven);
        }
        Clients {
            rest: aws_sdk_apigateway::Client::new(&sdk),
            http: aws_sdk_apigatewayv2::Client::new(&sdk),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
            cloudmap: aws_sdk_servicediscovery::Client::from_conf(cloudmap.build()),
            ec2: super::ec2::Ec2::new(&sdk, &region, endpoint_url),
            region,
        }
    }
}

/// What every reader reads with.
pub struct Reader<'a> {
    pub c: &'a Clients,
    pub budget: &'a Budget,
}

/// An SDK timestamp as epoch seconds.
pub(crate) fn epoch(t: Option<&aws_smithy_types::DateTime>) -> Option<i64> {
    t.map(|t| t.secs())
}

//! The config file as written: serde structs with unknown keys rejected and spans kept, so that
//! validation can point at the line and column of every problem.
//!
//! Nothing here is checked beyond TOML types; `validate` turns these into the runtime types.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Agent-wide settings; every key has a default.
    #[serde(default)]
    pub agent: Option<Spanned<RawAgent>>,
    /// One `[[chain]]` table per private integration.
    #[serde(default, rename = "chain")]
    pub chains: Vec<Spanned<RawChain>>,
    /// Publishing to CloudWatch; absent means off.
    pub cloudwatch: Option<Spanned<RawCloudWatch>>,
    /// Learning chains and their facts from AWS while running; absent means off.
    pub discovery: Option<Spanned<RawDiscovery>>,
    /// How the agent reads API Gateway's own logs of a failed gateway probe; the lookups run
    /// for gateway hops with `access_log_group` or `execution_log_group`, with these defaults
    /// when the table is absent.
    pub gateway_logs: Option<Spanned<RawGatewayLogs>>,
}

/// `[gateway_logs]`: where and how often the agent asks CloudWatch Logs what API Gateway wrote
/// of a failed probe's request (`FilterLogEvents`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGatewayLogs {
    /// The AWS region of the log groups; default: the SDK's chain.
    pub region: Option<Spanned<String>>,
    /// Another CloudWatch Logs endpoint than AWS's: a VPC interface endpoint, or a test server.
    pub endpoint_url: Option<Spanned<String>>,
    /// At most one lookup per chain in this time (default `"1m"`, at least `"10s"`): each
    /// lookup is a few `FilterLogEvents` calls, paid for and throttled per account.
    pub min_interval: Option<Spanned<String>>,
    /// How long a lookup keeps retrying while the record is not in the log yet (default
    /// `"2m"`, `"0s"` to `"15m"`): API Gateway delivers its logs late, by seconds to minutes.
    pub retry_for: Option<Spanned<String>>,
    /// Bound on each `FilterLogEvents` call (default `"5s"`, `"100ms"` to `"1m"`).
    pub timeout: Option<Spanned<String>>,
}

/// `[discovery]`: walk the region on a timer, run the chains it finds (beside the hand-written
/// ones), and keep their facts (VPC link status, target health) for the reasons and metrics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    /// The AWS region; default: the SDK's chain.
    pub region: Option<Spanned<String>>,
    /// One endpoint for every AWS service (VPC interface endpoints, or a test server).
    pub endpoint_url: Option<Spanned<String>>,
    /// Only these API ids; default: every REST and HTTP API with a VPC-link integration.
    pub apis: Option<Vec<Spanned<String>>>,
    /// Only these stages; default: every stage.
    pub stages: Option<Vec<Spanned<String>>>,
    /// The path probed on every discovered chain, over each route's own (its parameters filled,
    /// a greedy `{proxy+}` given a child path).
    pub path: Option<Spanned<String>>,
    /// Methods a route that changes state may be probed with, opted into: `["POST", "PUT"]`.
    /// Such a chain is written with `method` and a `body` to edit; without the opt-in it is
    /// written commented out. Default: none (routes are probed with GET).
    pub methods: Option<Vec<Spanned<String>>>,
    /// Values of path parameters (`{id}` in `/orders/{id}`, `proxy` for a greedy `{proxy+}`).
    pub path_params: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Time between walks (default `"5m"`, at least `"1s"`). A walk of an unchanged estate
    /// makes one API Gateway call per API and a few more.
    pub refresh: Option<Spanned<String>>,
    /// Most API Gateway calls per second, REST and HTTP APIs together (default 5, from 0.1 to
    /// 10): the account's quota is 10 per second for everything, deployments included. With
    /// shards, each agent spends its share.
    pub max_calls_per_second: Option<Spanned<f64>>,
}

/// `[cloudwatch]`: publishing to CloudWatch, besides `/metrics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloudWatch {
    /// `"api"` (default): `PutMetricData` through the AWS SDK; `"emf"`: Embedded Metric Format
    /// lines for CloudWatch Logs.
    pub mode: Option<Spanned<String>>,
    /// The metric namespace (default `"Hopwatch"`): 1 to 255 characters, not starting with `AWS/`.
    pub namespace: Option<Spanned<String>>,
    /// The AWS region; default: the SDK's chain (`AWS_REGION`, the profile, ECS, IMDS).
    pub region: Option<Spanned<String>>,
    /// Another endpoint than AWS's: a VPC interface endpoint, or LocalStack in tests.
    pub endpoint_url: Option<Spanned<String>>,
    /// `1` (high resolution, per second) or `60` (default).
    pub storage_resolution: Option<Spanned<i64>>,
    /// Length of a period (default `"60s"`, `1s`–`1h`): what is measured in it is sent as one
    /// datum per metric.
    pub flush_interval: Option<Spanned<String>>,
    /// Extra dimensions on every datum (at most 27). Values may use `${ENV}`, or
    /// `ecs:availability_zone`, `ecs:cluster`, `ecs:task_arn` from ECS task metadata.
    pub dimensions: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// EMF mode: `"stdout"` (default) or a file path to append to.
    pub emf_output: Option<Spanned<String>>,
    /// API mode: datums kept while CloudWatch can't be reached (default 100,000; 1,000 to
    /// 10,000,000); when full the oldest go, counted.
    pub max_buffered_datums: Option<Spanned<i64>>,
    /// Add a `Vantage` dimension, the agent's vantage, to every datum and EMF line (default
    /// false: series from agents in several zones stay apart only with it).
    pub vantage_dimension: Option<Spanned<bool>>,
    /// `"chain"` (default): a healthy chain publishes three metrics (`ChainUp`, `Latency` and
    /// `ProbeFailures` under `Chain`), a hop its own only in the periods it fails or is blamed
    /// (EMF lines keep every hop's figures as searchable properties); `"hop"`: every hop's
    /// metrics in every period.
    pub detail: Option<Spanned<String>>,
}

/// `[agent]`: settings of the whole agent, and the defaults of every chain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// Address of the `/metrics`, `/-/healthy` and `/-/ready` server.
    pub listen: Option<Spanned<String>>,
    /// Default round interval of every chain.
    pub interval: Option<Spanned<String>>,
    /// Default timeout of every probe.
    pub timeout: Option<Spanned<String>>,
    /// Global cap on probes in flight at once, across all chains.
    pub max_in_flight: Option<Spanned<i64>>,
    /// Failed rounds in a row before a hop is considered down.
    pub down_after: Option<Spanned<i64>>,
    /// Passing rounds in a row before a down hop is considered up again.
    pub up_after: Option<Spanned<i64>>,
    /// Where this agent probes from (the `vantage` label); default: the ECS task's
    /// availability zone, else the host name.
    pub vantage: Option<Spanned<String>>,
    /// `"N/M"`: run only the chains that hash to shard `N` of `M` (from 0; a StatefulSet pod
    /// name ending in its ordinal works as `N`). `--shard` and `HOPWATCH_SHARD` override it.
    pub shard: Option<Spanned<String>>,
    /// `"standard"` (default): the per-hop series the shipped alerts, rules and dashboards
    /// read, at most 12 for a healthy hop; `"full"`: every series (latency buckets, phases,
    /// four quantiles, the last HTTP status). Applies at once on reload.
    pub detail: Option<Spanned<String>>,
}

/// `[[chain]]`: one private integration, probed hop by hop.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChain {
    /// Unique name; the `chain` label.
    pub name: Spanned<String>,
    /// The topology: `rest-nlb`, `rest-nlb-alb`, `rest-alb`, `http-alb`, `http-nlb`,
    /// `http-cloudmap` or `custom`. It implies the roles of the hops.
    pub kind: Spanned<String>,
    /// Time between rounds (default: `[agent] interval`).
    pub interval: Option<Spanned<String>>,
    /// Default timeout of its hops (default: `[agent] timeout`); below `interval`.
    pub timeout: Option<Spanned<String>>,
    /// Keep one connection per hop open between rounds (default false: connection set-up is
    /// part of what users pay for).
    pub reuse_connections: Option<bool>,
    /// Failed rounds in a row before a hop of this chain is down (default: `[agent]`'s).
    pub down_after: Option<Spanned<i64>>,
    /// Passing rounds in a row before a down hop is up again (default: `[agent]`'s).
    pub up_after: Option<Spanned<i64>>,
    /// The hops, outermost first, target last.
    #[serde(default, rename = "hop")]
    pub hops: Vec<Spanned<RawHop>>,
}

/// `[[chain.hop]]`: one hop's own entry point, probed directly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHop {
    /// Unique in the chain; the `hop` label.
    pub name: Spanned<String>,
    /// `gateway`, `nlb`, `alb`, `cloudmap` or `target`: implied by the chain's kind, required
    /// for `custom`.
    pub role: Option<Spanned<String>>,
    /// The `http://` or `https://` URL of the hop's own entry point.
    pub url: Spanned<String>,
    /// Upper-case HTTP method (default `"GET"`).
    pub method: Option<Spanned<String>>,
    /// A request body, sent as written (a POST or PUT route that must not be probed empty).
    pub body: Option<Spanned<String>>,
    /// `Content-Type` of `body` (default `"application/json"`).
    pub body_content_type: Option<Spanned<String>>,
    /// Request headers. Values may reference environment variables (`"${API_KEY}"`); such
    /// values are secrets, never logged, printed or exported.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// Codes (`200`) and classes (`"3xx"`) that pass (default `["2xx"]`).
    pub expect_status: Option<Spanned<Vec<Spanned<StatusEntry>>>>,
    /// A regular expression the body must match.
    pub expect_body: Option<Spanned<String>>,
    /// Covers the whole probe, DNS to last byte (default: the chain's); below the chain interval.
    pub timeout: Option<Spanned<String>>,
    /// Body bytes read at most (default `"64KiB"`, up to `"16MiB"`); more is `too_large`.
    pub max_body: Option<Spanned<String>>,
    /// SNI and certificate name, when it differs from the URL host.
    pub tls_server_name: Option<Spanned<String>>,
    /// Extra PEM CA bundle trusted for this hop, relative to the config file's folder.
    pub ca_file: Option<Spanned<String>>,
    /// The load balancer's health-check URL of this hop, probed in the same round.
    pub health_url: Option<Spanned<String>>,
    /// Addresses the target may see as its TCP peer when entered through this hop: CIDRs or
    /// names of hops of the chain (every address that hop's host resolves to).
    pub expect_source: Option<Vec<Spanned<String>>>,
    /// The same for the last `X-Forwarded-For` entry (appended by the nearest ALB).
    pub expect_forwarded: Option<Vec<Spanned<String>>>,
    /// Also probe every address the host resolves to (one per load balancer node or
    /// instance), with the original Host header and TLS name.
    pub per_address: Option<bool>,
    /// PEM client certificate (chain) presented when the hop requires mutual TLS (an API
    /// Gateway custom domain or an ALB listener in verify mode); relative to the config file.
    pub client_cert: Option<Spanned<String>>,
    /// The PEM private key of `client_cert`; relative to the config file.
    pub client_key: Option<Spanned<String>>,
    /// `"v1"` or `"v2"`: write a PROXY protocol header (the agent's own source and
    /// destination) before the request, as a target behind an NLB with proxy protocol v2
    /// expects.
    pub send_proxy_protocol: Option<Spanned<String>>,
    /// nlb hops: whether the NLB's target group preserves client IP addresses
    /// (`preserve_client_ip.enabled`). Unset: unknown.
    pub preserve_client_ip: Option<Spanned<bool>>,
    /// alb hops: the ALB's `routing.http.xff_header_processing.mode`: `"append"` (AWS's
    /// default), `"preserve"` or `"remove"`.
    pub xff_mode: Option<Spanned<String>>,
    /// The gateway hop of a `rest-nlb` (or `custom`) chain: `"v1"` (PrivateLink, the default of
    /// `rest-nlb`) or `"v2"` VPC link.
    pub vpc_link: Option<Spanned<String>>,
    /// gateway hops: how long API Gateway waits for the integration before it answers on its
    /// own (the integration's `timeoutInMillis`). Default: 29s for REST APIs (regional and
    /// private ones may raise it), 30s for HTTP APIs; `discover` writes the integration's own.
    pub integration_timeout: Option<Spanned<String>>,
    /// gateway hops: the stage's access log group (a name, or the ARN of
    /// `accessLogSettings.destinationArn`), where the agent looks up a failed probe's request.
    pub access_log_group: Option<Spanned<String>>,
    /// gateway hops: the stage's access log format (`accessLogSettings.format`), so the fields
    /// are read under the owner's own keys; default: keys named like the `$context` variables.
    pub access_log_format: Option<Spanned<String>>,
    /// gateway hops of REST APIs: the stage's execution log group,
    /// `API-Gateway-Execution-Logs_{restApiId}/{stage}`, when execution logging is on.
    pub execution_log_group: Option<Spanned<String>>,
    /// How the probe authenticates, as the API's callers do: `{ sigv4 = { ... } }` (AWS_IAM
    /// routes) or `{ oauth2 = { ... } }` (JWT and Cognito authorizers). Exactly one of the two.
    pub auth: Option<Spanned<RawAuth>>,
}

/// `auth` of a hop: one way of authenticating its probes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Sign every probe with AWS Signature Version 4 (an `AWS_IAM` method or route).
    pub sigv4: Option<Spanned<RawSigV4>>,
    /// Send an OAuth 2.0 access token got with the client credentials grant (RFC 6749 §4.4):
    /// a JWT authorizer of an HTTP API, or a Cognito authorizer with scopes of a REST API.
    pub oauth2: Option<Spanned<RawOAuth2>>,
}

/// `auth.sigv4`: AWS Signature Version 4, credentials from the SDK's default chain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigV4 {
    /// The region the API is in, part of the signature's scope: `"eu-west-1"`.
    pub region: Spanned<String>,
    /// The signing name (default `"execute-api"`, API Gateway's).
    pub service: Option<Spanned<String>>,
    /// A role to assume (STS AssumeRole) with the default chain's credentials, and sign as;
    /// the session is renewed before it expires. Default: sign with the default chain's own.
    pub role_arn: Option<Spanned<String>>,
    /// The external id the role's trust policy requires (`sts:ExternalId`); needs `role_arn`.
    pub external_id: Option<Spanned<String>>,
}

/// `auth.oauth2`: the client credentials grant; the token is cached, shared by every hop with
/// the same settings and refreshed ahead of its expiry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    /// The token endpoint: `https://DOMAIN.auth.REGION.amazoncognito.com/oauth2/token` for
    /// Cognito. `https://` (http:// only to a loopback address).
    pub token_url: Spanned<String>,
    /// The client's id (a Cognito app client's id).
    pub client_id: Spanned<String>,
    /// The client's secret. A secret: write `"${ENV_VAR}"` and keep it out of the file; it is
    /// never logged, printed or exported.
    pub client_secret: Spanned<String>,
    /// Scopes to ask for (`["orders/read"]`, a Cognito resource server's `IDENTIFIER/SCOPE`);
    /// default: none, the server's default scopes.
    pub scopes: Option<Vec<Spanned<String>>>,
    /// An `audience` parameter for servers that take one (Auth0, Okta); Cognito ignores it.
    pub audience: Option<Spanned<String>>,
    /// How the client authenticates to the token endpoint: `"basic"` (default; HTTP Basic,
    /// RFC 6749 §2.3.1) or `"body"` (`client_id` and `client_secret` in the form).
    pub client_auth: Option<Spanned<String>>,
}

/// One entry of `expect_status`: `200` or `"2xx"`.
#[derive(Debug)]
pub enum StatusEntry {
    Code(i64),
    Class(String),
}

// Written by hand rather than `#[serde(untagged)]`, whose error ("data did not match any
// variant") would tell the user nothing.
impl<'de> Deserialize<'de> for StatusEntry {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StatusEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a status code such as 200 or a class such as \"2xx\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StatusEntry, E> {
                Ok(StatusEntry::Code(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StatusEntry, E> {
                Ok(StatusEntry::Class(v.to_string()))
            }
        }
        de.deserialize_any(Visitor)
    }
}

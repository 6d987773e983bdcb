//! Configuration: the TOML file, loaded in two steps.
//!
//! 1. `raw`: serde structs that reject unknown keys and keep the span of every value;
//! 2. `validate`: checks every rule, collects *all* problems with file, line, column and key,
//!    and only then returns a [`Config`], the checked runtime type the rest of the agent uses.

pub mod duration;
mod expect;
pub mod pem;
pub mod published;
pub mod raw;
pub mod shard;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

pub use expect::{Cidr, Rule};
pub use shard::Shard;
pub use validate::{check_chain, load_str, log_group_name, Problem};

/// A small closed set of names, parsed from and printed as the config spells them.
macro_rules! closed_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The name used in the config and in output.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// Parses the config name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
        impl fmt::Display for $name {
            // `pad`, so widths and alignment in format strings apply (the `check` table).
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.pad(self.as_str()) }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

/// Default `[agent] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// Default round interval when neither the chain nor `[agent]` sets one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default probe timeout when neither the hop, the chain nor `[agent]` sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default global cap on probes in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Default bound on the response body a probe reads.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// A config that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file was read; these are all the problems found in it, in file order.
    #[error("{}", render_problems(.0))]
    Invalid(Vec<Problem>),
}

fn render_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates a config file. The file name in error messages is the path as given.
/// `env:NAME` reads the TOML from environment variable `NAME` instead (an ECS task injects
/// an SSM parameter or a secret that way; the image has no shell to write a file).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read(path)?;
    load_str(&path.display().to_string(), &text, &|name| {
        std::env::var(name).ok()
    })
}

/// The text of a config: the file at `path`, or the environment variable `NAME` of `env:NAME`.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    let shown = path.display().to_string();
    let text = match shown.strip_prefix("env:") {
        Some(var) => std::env::var(var).map_err(|_| ConfigError::Read {
            path: shown.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("environment variable {var} is not set"),
            ),
        })?,
        None => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?,
    };
    Ok(text)
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub agent: Agent,
    pub chains: Vec<Arc<Chain>>,
    /// `[cloudwatch]`, when present.
    pub cloudwatch: Option<CloudWatch>,
    /// `[discovery]`, when present.
    pub discovery: Option<Discovery>,
    /// `[gateway_logs]`, or its defaults.
    pub gateway_logs: GatewayLogLookup,
    /// What loading found worth saying that does not make the config invalid (a gateway hop
    /// giving up before the gateway does), in file order.
    pub warnings: Vec<Problem>,
    /// A hash of every chain as loaded, before sharding (see [`Config::config_hash`]).
    pub chains_hash: u64,
    /// Chains in the config before sharding.
    pub chains_total: usize,
}

impl Config {
    /// Keeps only the chains `shard` owns, and records it as this agent's shard. Every command
    /// that runs chains (`run`, its reloads, `check`) goes through here, after `--shard`,
    /// `HOPWATCH_SHARD` or `[agent] shard` decided which one.
    pub fn take_shard(&mut self, shard: Shard) {
        self.agent.shard = shard;
        self.chains.retain(|c| shard.owns(&c.name));
    }

    /// What `hopwatch_config_hash` exports: the chains of the whole config, before sharding,
    /// so every agent of a group shows the same value whatever its shard and vantage, and
    /// agents that disagree (a config not rolled out everywhere) are told apart: their shards
    /// leave chains judged by nobody. 52 bits: exact as a Prometheus float.
    pub fn config_hash(&self) -> u64 {
        self.chains_hash & ((1 << 52) - 1)
    }
}

/// What the command line says of an agent's place in a group (`--shard`, `--vantage`), over
/// the config's `[agent]`.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub shard: Option<Shard>,
    pub vantage: Option<String>,
}

impl Placement {
    /// The config as this agent runs it: its shard's chains only, its vantage.
    pub fn apply(&self, mut config: Config) -> Config {
        if let Some(vantage) = &self.vantage {
            config.agent.vantage = Some(vantage.clone());
        }
        config.take_shard(self.shard.unwrap_or(config.agent.shard));
        config
    }
}

/// The hash of a set of chains, in name order (secret header values only by their
/// placeholder: the hash is exported).
pub fn chains_hash(chains: &[Arc<Chain>]) -> u64 {
    let mut sorted: Vec<&Arc<Chain>> = chains.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    shard::fnv1a(format!("{sorted:?}").as_bytes())
}

/// `[discovery]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub apis: Vec<String>,
    pub stages: Vec<String>,
    pub path: Option<String>,
    /// Non-idempotent methods routes may be probed with (opted into).
    pub methods: Vec<String>,
    /// Values of path parameters, by name.
    pub path_params: std::collections::BTreeMap<String, String>,
    pub refresh: Duration,
    /// Most API Gateway calls per second, for the whole group of agents.
    pub max_calls_per_second: f64,
}

/// `[gateway_logs]`, checked: how the agent looks up API Gateway's own logs of a failed probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayLogLookup {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// At most one lookup per chain in this time.
    pub min_interval: Duration,
    /// How long a lookup retries while the record has not arrived.
    pub retry_for: Duration,
    /// Bound on each `FilterLogEvents` call.
    pub timeout: Duration,
}

impl Default for GatewayLogLookup {
    fn default() -> Self {
        GatewayLogLookup {
            region: None,
            endpoint_url: None,
            min_interval: Duration::from_secs(60),
            retry_for: Duration::from_secs(120),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Methods a route may be probed with only when the user opts in: they change state.
pub const OPT_IN_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// Default `[discovery] refresh`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// Default `[discovery] max_calls_per_second`: half the account's API Gateway quota of 10 per
/// second, which deployments share (docs.aws.amazon.com/apigateway/latest/developerguide/
/// limits.html).
pub const DEFAULT_MAX_CALLS_PER_SECOND: f64 = 5.0;

/// How CloudWatch gets the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudWatchMode {
    /// `PutMetricData` through the AWS SDK.
    Api,
    /// Embedded Metric Format: JSON lines that CloudWatch Logs turns into metrics.
    Emf,
}

/// Where EMF lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmfOutput {
    Stdout,
    File(PathBuf),
}

/// `[cloudwatch]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudWatch {
    pub mode: CloudWatchMode,
    pub namespace: String,
    /// `None`: the SDK's default chain (env, profile, ECS, IMDS).
    pub region: Option<String>,
    /// For LocalStack or a VPC endpoint.
    pub endpoint_url: Option<String>,
    /// 1 (high resolution) or 60 seconds.
    pub storage_resolution: u8,
    pub flush_interval: Duration,
    /// Extra dimensions on every datum, beside `Chain` and `Hop`.
    pub dimensions: Vec<(String, String)>,
    pub emf_output: EmfOutput,
    /// Datums kept while CloudWatch can't be reached; beyond it the oldest are dropped (counted).
    pub max_buffered_datums: usize,
    /// Add a `Vantage` dimension (the agent's vantage) to every datum.
    pub vantage_dimension: bool,
    /// What a healthy chain publishes: its own three metrics, or every hop's.
    pub detail: CloudWatchDetail,
}

closed_enum!(
    /// `[cloudwatch] detail`: which metrics a period publishes. A CloudWatch metric is paid for
    /// in every hour it receives data, so per-hop metrics of a healthy hop are the cost to cut.
    CloudWatchDetail {
        /// Per chain `ChainUp`, `Latency` (the outermost hop: the path users take) and
        /// `ProbeFailures` (every hop's); a hop's own metrics only in the periods it failed,
        /// was down, was blamed, failed its health check or saw an unexpected source.
        Chain = "chain",
        /// Every hop's metrics in every period, as before `detail` existed.
        Hop = "hop",
    }
);

#[allow(clippy::derivable_impls)] // the macro's enums have no #[default] to mark
impl Default for CloudWatchDetail {
    fn default() -> Self {
        CloudWatchDetail::Chain
    }
}

closed_enum!(
    /// `[agent] detail`: which per-hop series `/metrics` exposes.
    Detail {
        /// What the shipped alerts, recording rules and dashboards read: at most 12 series for
        /// a healthy hop.
        Standard = "standard",
        /// Every series: the latency histogram's buckets, the phases, four quantiles, the
        /// last HTTP status and the 0 of every 0/1 gauge.
        Full = "full",
    }
);

#[allow(clippy::derivable_impls)] // the macro's enums have no #[default] to mark
impl Default for Detail {
    fn default() -> Self {
        Detail::Standard
    }
}

/// Dimension values read from ECS task metadata v4 at start: `"ecs:availability_zone"`.
pub const ECS_FIELDS: [&str; 3] = ["availability_zone", "cluster", "task_arn"];

/// CloudWatch allows 30 dimensions per datum; `Chain` and `Hop` (and `Result` on counts) use 3.
pub const MAX_EXTRA_DIMENSIONS: usize = 27;

/// Rounds needed to change a hop's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub down_after: u32,
    pub up_after: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            down_after: 2,
            up_after: 2,
        }
    }
}

/// Agent-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub listen: SocketAddr,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_in_flight: usize,
    /// Default debouncing of hop state for every chain.
    pub thresholds: Thresholds,
    /// Where this agent probes from; `None`: the ECS task's availability zone, else the host
    /// name (decided at start).
    pub vantage: Option<String>,
    /// The chains this agent runs of its group's ([`Shard::WHOLE`]: all).
    pub shard: Shard,
    /// Which per-hop series `/metrics` exposes.
    pub detail: Detail,
}

/// One private integration: an ordered list of hops, outermost first, target last.
///
/// Equality compares every setting by value (patterns by their text, header values byte by
/// byte and by secrecy): a reload restarts a chain exactly when it differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub kind: Kind,
    pub interval: Duration,
    pub reuse_connections: bool,
    /// Rounds that must agree before a hop changes state.
    pub thresholds: Thresholds,
    pub hops: Vec<Hop>,
}

/// One hop's own entry point, probed directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub name: String,
    pub role: Role,
    pub url: HopUrl,
    pub method: Method,
    pub headers: Vec<Header>,
    /// A request body and its `Content-Type`; `None`: no body.
    pub body: Option<(bytes::Bytes, HeaderValue)>,
    pub expect_status: StatusSet,
    pub expect_body: Option<Pattern>,
    pub timeout: Duration,
    pub max_body: usize,
    /// TLS server name when it differs from the URL host (set for per-address probes later).
    pub tls_server_name: Option<String>,
    /// Extra PEM CA bundle trusted for this hop (private CAs are common on internal ALBs).
    pub ca_file: Option<PathBuf>,
    /// The load balancer's health check of this hop (its own port), probed in the same round.
    pub health: Option<Box<Hop>>,
    /// Addresses the target may see as its TCP peer when entered through this hop.
    pub expect_source: Vec<Rule>,
    /// Addresses the last `X-Forwarded-For` entry may hold when entered through this hop.
    pub expect_forwarded: Vec<Rule>,
    /// Also probe every address the host resolves to (one per load balancer node or Cloud Map
    /// instance), keeping the Host header and TLS server name.
    pub per_address: bool,
    /// Client certificate and key for mutual TLS.
    pub client_auth: Option<ClientAuth>,
    /// Write a PROXY protocol header before the request.
    pub send_proxy_protocol: Option<ProxyVersion>,
    /// What this hop is known to do to the source address the next one sees.
    pub facts: HopFacts,
    /// Gateway hops: how long API Gateway waits for the integration before answering on its
    /// own (504 on REST, 503 on HTTP APIs); `None` when unknown (`custom` without the key).
    pub integration_timeout: Option<Duration>,
    /// Gateway hops: where API Gateway logs its requests; `None` when no group is configured.
    pub logs: Option<GatewayLogs>,
    /// How its probes authenticate; `None`: they send only the configured headers.
    pub auth: Option<Auth>,
}

/// How a hop's probes authenticate, as the API's callers do. Plain settings: the credentials
/// themselves are got by the agent at run time (`crate::auth`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Auth {
    /// AWS Signature Version 4, as an `AWS_IAM` method or route requires.
    SigV4(SigV4),
    /// An OAuth 2.0 access token from the client credentials grant (RFC 6749 §4.4), as a JWT
    /// or Cognito authorizer requires.
    OAuth2(OAuth2),
}

/// Default `auth.sigv4.service`: API Gateway's signing name.
pub const DEFAULT_SIGV4_SERVICE: &str = "execute-api";

/// `auth.sigv4`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SigV4 {
    /// The signing region (`eu-west-1`).
    pub region: String,
    /// The signing name (`execute-api`).
    pub service: String,
    /// The role assumed with the default chain's credentials, when set.
    pub role_arn: Option<String>,
    /// The external id sent with AssumeRole; only with `role_arn`.
    pub external_id: Option<String>,
}

impl SigV4 {
    /// What the AWS credentials depend on (the signing name does not): hops that differ only
    /// in their service share one credentials cache.
    pub fn credentials_key(&self) -> (String, Option<String>, Option<String>) {
        (
            self.region.clone(),
            self.role_arn.clone(),
            self.external_id.clone(),
        )
    }
}

/// `auth.oauth2`, checked. Equal settings share one token (the agent caches one per value).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OAuth2 {
    pub token_url: HopUrl,
    pub client_id: String,
    pub client_secret: Secret,
    /// Sorted and without duplicates (a scope list is a set, RFC 6749 §3.3), so hops that list
    /// the same scopes in another order share a token.
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub client_auth: TokenClientAuth,
}

closed_enum!(
    /// How an OAuth 2.0 client authenticates to the token endpoint (RFC 6749 §2.3.1).
    TokenClientAuth {
        /// HTTP Basic with the form-urlencoded id and secret (what the RFC says servers must
        /// support; Cognito takes both).
        Basic = "basic",
        /// `client_id` and `client_secret` as form parameters of the request body.
        Body = "body",
    }
);

/// A secret value from the config (an OAuth 2.0 client secret, a token). Compared by value, so
/// a reload sees a changed one, but never shown: `Debug` prints `<redacted>`, and there is no
/// `Display`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value, to send where it belongs and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a stage's API Gateway logs go, so a failed probe's request can be looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayLogs {
    /// The access log group's name (an ARN as configured is reduced to its name).
    pub access_log_group: Option<String>,
    /// The access log format (`accessLogSettings.format`), when known.
    pub access_log_format: Option<String>,
    /// The execution log group's name (REST only).
    pub execution_log_group: Option<String>,
}

/// A client certificate (chain) and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientAuth {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Facts of a hop that decide which source address the hop behind it sees (brief §2). Each is
/// `None` or AWS's documented default when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HopFacts {
    /// nlb: the target group's `preserve_client_ip.enabled`; `None` when unknown.
    pub preserve_client_ip: Option<bool>,
    /// alb: `routing.http.xff_header_processing.mode`.
    pub xff_mode: XffMode,
    /// gateway: the VPC link's generation; `None` when unknown (`custom`).
    pub vpc_link: Option<VpcLink>,
}

closed_enum!(
    /// PROXY protocol version a probe writes.
    ProxyVersion {
        V1 = "v1",
        V2 = "v2",
    }
);

closed_enum!(
    /// What an ALB does with `X-Forwarded-For` (`routing.http.xff_header_processing.mode`).
    XffMode {
        /// Appends the client's address (AWS's default).
        Append = "append",
        /// Passes the header on unchanged.
        Preserve = "preserve",
        /// Removes it.
        Remove = "remove",
    }
);

#[allow(clippy::derivable_impls)] // the macro's enums have no #[default] to mark
impl Default for XffMode {
    fn default() -> Self {
        XffMode::Append
    }
}

closed_enum!(
    /// A VPC link's generation.
    VpcLink {
        /// PrivateLink to an NLB: what is behind the NLB sees the NLB's addresses, never the
        /// caller's (client IP preservation has no effect on PrivateLink traffic).
        V1 = "v1",
        /// ENIs in the customer's subnets (HTTP APIs; REST APIs since 2025).
        V2 = "v2",
    }
);

impl Hop {
    /// A plain `GET` expecting 2xx, with every other setting at its default. For requests the
    /// agent makes on its own behalf (ECS task metadata) and for built-in chains.
    pub fn get(name: &str, role: Role, url: &str, timeout: Duration) -> Result<Hop, String> {
        let url = HopUrl::parse(url).map_err(|why| format!("url ({url:?}) {why}"))?;
        Ok(Hop::plain(name, role, url, timeout))
    }

    /// A plain `GET` of an already parsed URL, expecting 2xx, everything else at its default.
    pub fn plain(name: &str, role: Role, url: HopUrl, timeout: Duration) -> Hop {
        Hop {
            name: name.to_string(),
            role,
            url,
            method: Method::GET,
            headers: Vec::new(),
            body: None,
            expect_status: StatusSet::success(),
            expect_body: None,
            timeout,
            max_body: DEFAULT_MAX_BODY,
            tls_server_name: None,
            ca_file: None,
            health: None,
            expect_source: Vec::new(),
            expect_forwarded: Vec::new(),
            per_address: false,
            client_auth: None,
            send_proxy_protocol: None,
            facts: HopFacts::default(),
            integration_timeout: None,
            logs: None,
            auth: None,
        }
    }
}

/// A request header. Values that came from the environment are secret: they are marked
/// sensitive for hyper and never rendered by `Debug`.
#[derive(Clone)]
pub struct Header {
    pub name: HeaderName,
    pub value: HeaderValue,
}

/// Two headers are the same when name, value bytes and secrecy are: a value read from another
/// environment variable is another value, though both print as `<redacted>`.
impl PartialEq for Header {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.value.as_bytes() == other.value.as_bytes()
            && self.value.is_sensitive() == other.value.is_sensitive()
    }
}

impl Eq for Header {}

/// A compiled `expect_body`. Equal when the pattern text is: compiled regexes have no equality.
#[derive(Clone)]
pub struct Pattern(regex_lite::Regex);

impl Pattern {
    /// Compiles `text`, or says why it is no regular expression.
    pub fn new(text: &str) -> Result<Pattern, regex_lite::Error> {
        regex_lite::Regex::new(text).map(Pattern)
    }

    /// Whether `text` matches anywhere.
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_sensitive() {
            write!(f, "{}: <redacted>", self.name)
        } else {
            write!(f, "{}: {:?}", self.name, self.value)
        }
    }
}

/// A parsed hop URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HopUrl {
    /// The URL as written, for output.
    pub text: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `Host` header value: host, plus the port when it is not the scheme's default.
    pub authority: String,
    pub path_and_query: String,
    /// `cloudmap://NAMESPACE/SERVICE[/path][?key=value&...]`: found through Cloud Map's
    /// `DiscoverInstances` rather than DNS (HTTP namespaces have none).
    pub cloudmap: Option<CloudMapName>,
}

/// A Cloud Map service as a `cloudmap://` URL names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CloudMapName {
    pub namespace: String,
    pub service: String,
    /// Attributes instances must have, sent as `DiscoverInstances` `QueryParameters`: what an
    /// HTTP API integration URI's query string (`…/srv-x?stage=prod`) asks API Gateway to
    /// filter on (http-api-develop-integrations-private.html).
    pub query: Vec<(String, String)>,
}

impl HopUrl {
    /// Parses an absolute `http://`, `https://` or `cloudmap://` URL; the error completes
    /// "url (...) ".
    pub fn parse(text: &str) -> Result<HopUrl, &'static str> {
        if let Some(rest) = text.strip_prefix("cloudmap://") {
            let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
            let mut parts = rest.splitn(3, '/');
            let namespace = parts.next().unwrap_or("");
            let service = parts.next().unwrap_or("");
            if namespace.is_empty() || service.is_empty() {
                return Err("must name a namespace and a service: cloudmap://NAMESPACE/SERVICE");
            }
            let path = format!("/{}", parts.next().unwrap_or(""));
            let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if query.iter().any(|(k, _)| k.is_empty()) {
                return Err(
                    "has a query parameter without a name (cloudmap://NS/SERVICE?attribute=value)",
                );
            }
            return Ok(HopUrl {
                text: text.to_string(),
                tls: false,
                host: namespace.to_string(),
                port: 80,
                authority: namespace.to_string(),
                path_and_query: path,
                cloudmap: Some(CloudMapName {
                    namespace: namespace.to_string(),
                    service: service.to_string(),
                    query,
                }),
            });
        }
        // `http:///x` has an empty authority, which `Uri` refuses as a whole.
        if let Some(rest) = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"))
        {
            if rest.is_empty() || rest.starts_with('/') {
                return Err("has no host");
            }
        }
        let uri: http::Uri = text.parse().map_err(|_| "is not a valid URL")?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err("must start with http:// or https://"),
            None => return Err("must be absolute, starting with http:// or https://"),
        };
        let authority = uri.authority().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("must not carry user info; send credentials in headers");
        }
        if authority.host().is_empty() {
            return Err("has no host");
        }
        let default_port = if tls { 443 } else { 80 };
        // `Uri` accepts any digits as a port and `Authority::port` is None when they don't fit
        // in 16 bits: read them ourselves, so 99999 is an error rather than the default port.
        let port_text = authority
            .as_str()
            .rsplit_once(':')
            .map(|(_, p)| p)
            .filter(|p| !p.contains(']'));
        let port = match port_text {
            None | Some("") => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(0) => return Err("has port 0"),
                Ok(n) => n,
                Err(_) => return Err("has a port above 65535"),
            },
        };
        let host = authority.host().to_string();
        let authority = if port == default_port {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        Ok(HopUrl {
            text: text.to_string(),
            tls,
            host,
            port,
            authority,
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            cloudmap: None,
        })
    }

    /// The host when it is an IP literal, so no DNS lookup is needed.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
}

/// The set of status codes a hop must answer with to pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    /// 200–299, the default.
    pub fn success() -> Self {
        StatusSet(vec![(200, 299)])
    }
    /// Builds a set from inclusive ranges.
    pub fn from_ranges(ranges: Vec<(u16, u16)>) -> Self {
        StatusSet(ranges)
    }
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

closed_enum!(
    /// The topology of a chain (brief §1, T1–T6), or `custom`.
    Kind {
        /// T1: REST API → VPC link v1 → NLB → targets.
        RestNlb = "rest-nlb",
        /// T2: REST API → VPC link v1 → NLB → ALB → targets.
        RestNlbAlb = "rest-nlb-alb",
        /// T3: REST API → VPC link v2 → ALB → targets.
        RestAlb = "rest-alb",
        /// T4: HTTP API → VPC link → ALB → targets.
        HttpAlb = "http-alb",
        /// T5: HTTP API → VPC link → NLB → targets.
        HttpNlb = "http-nlb",
        /// T6: HTTP API → VPC link → Cloud Map → instances.
        HttpCloudmap = "http-cloudmap",
        /// Any ordered list of hops with explicit roles.
        Custom = "custom",
    }
);

closed_enum!(
    /// What a hop is.
    Role {
        Gateway = "gateway",
        Nlb = "nlb",
        Alb = "alb",
        Cloudmap = "cloudmap",
        Target = "target",
    }
);

impl Kind {
    /// The roles of the hops, outermost first, that this kind implies; `None` for `custom`.
    pub fn shape(self) -> Option<&'static [Role]> {
        use Role::*;
        Some(match self {
            Kind::RestNlb | Kind::HttpNlb => &[Gateway, Nlb, Target],
            Kind::RestNlbAlb => &[Gateway, Nlb, Alb, Target],
            Kind::RestAlb | Kind::HttpAlb => &[Gateway, Alb, Target],
            Kind::HttpCloudmap => &[Gateway, Cloudmap, Target],
            Kind::Custom => return None,
        })
    }

    /// Source expectations the brief makes certain for this kind, by hop position:
    /// `(hop, expect_source hops, expect_forwarded hops)`, given the hops' facts. Behind an ALB
    /// the target always sees an ALB node; over PrivateLink (VPC link v1) whatever comes
    /// through the gateway reaches the next hop from an NLB node, and an ALB appending
    /// `X-Forwarded-For` names that node last.
    pub fn default_expectations(self, hops: &[Hop]) -> Vec<(usize, Vec<usize>, Vec<usize>)> {
        let fact = |i: usize| hops.get(i).map(|h| h.facts).unwrap_or_default();
        match self {
            Kind::RestNlbAlb => {
                let appends = fact(2).xff_mode == XffMode::Append;
                let forwarded = if appends { vec![1] } else { Vec::new() };
                vec![
                    (0, vec![2], forwarded),
                    (1, vec![2], vec![]),
                    (2, vec![2], vec![]),
                ]
            }
            Kind::RestAlb | Kind::HttpAlb => vec![(0, vec![1], vec![]), (1, vec![1], vec![])],
            Kind::RestNlb => {
                // Over a v2 link the NLB's targets see the link's ENIs unless it rewrites the
                // source itself (client IP preservation off).
                let v1 = fact(0).vpc_link != Some(VpcLink::V2);
                let nlb_rewrites = fact(1).preserve_client_ip == Some(false);
                if v1 || nlb_rewrites {
                    vec![(0, vec![1], vec![])]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    /// How long the gateway itself waits for the integration before answering 504: HTTP APIs
    /// 30 s, fixed; REST APIs 29 s by default (regional and private ones can raise it). Sources:
    /// docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html and
    /// api-gateway-execution-service-limits-table.html.
    pub fn integration_timeout(self) -> Option<Duration> {
        match self {
            Kind::HttpAlb | Kind::HttpNlb | Kind::HttpCloudmap => Some(Duration::from_secs(30)),
            Kind::RestNlb | Kind::RestNlbAlb | Kind::RestAlb => Some(Duration::from_secs(29)),
            Kind::Custom => None,
        }
    }

    /// Whether this is an HTTP API (its gateway answers differ from a REST API's).
    pub fn http_api(self) -> bool {
        matches!(self, Kind::HttpAlb | Kind::HttpNlb | Kind::HttpCloudmap)
    }

    /// The VPC link generation a kind implies; `None` when the gateway hop says (`rest-nlb`
    /// may use either) or nobody knows (`custom`).
    pub fn implied_link(self) -> Option<VpcLink> {
        match self {
            Kind::RestNlbAlb => Some(VpcLink::V1),
            Kind::RestAlb | Kind::HttpAlb | Kind::HttpNlb | Kind::HttpCloudmap => Some(VpcLink::V2),
            Kind::RestNlb | Kind::Custom => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HopUrl;

    #[test]
    fn ports_are_read_exactly() {
        let port = |t: &str| HopUrl::parse(t).map(|u| (u.port, u.authority));
        assert_eq!(port("http://a.lab/"), Ok((80, "a.lab".into())));
        assert_eq!(port("https://a.lab/"), Ok((443, "a.lab".into())));
        assert_eq!(port("http://a.lab:8080/x"), Ok((8080, "a.lab:8080".into())));
        assert_eq!(port("http://[::1]/"), Ok((80, "[::1]".into())));
        assert_eq!(port("http://[::1]:9000/"), Ok((9000, "[::1]:9000".into())));
        assert_eq!(
            port("http://a.lab:65535/"),
            Ok((65535, "a.lab:65535".into()))
        );
        assert_eq!(port("http://a.lab:65536/"), Err("has a port above 65535"));
        assert_eq!(port("http://a.lab:99999/"), Err("has a port above 65535"));
        assert_eq!(port("http://a.lab:0/"), Err("has port 0"));
        assert_eq!(port("http:///x"), Err("has no host"));
        assert_eq!(port("https://"), Err("has no host"));
    }
}

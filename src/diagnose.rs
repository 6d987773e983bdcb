//! Naming the broken hop. Pure functions over one round's pass/fail pattern and the evidence
//! each failure left (status, `Server`, `x-amzn-ErrorType`), plus the per-hop debouncing that
//! keeps one lost packet from paging anyone.
//!
//! Hops are ordered outermost (index 0, the path users take) to target (last).
//! - The chain is **up** when hop 0 passes.
//! - When it is down, the **broken hop** is the one just outside the outermost passing hop:
//!   everything from that hop inward works, so the fault is in the hop before it or in the rule
//!   between the two. When nothing passes, the target is blamed.
//! - A hop that fails while a hop outside it passes is a **blind spot**: users get through it,
//!   but the agent cannot reach it directly (usually a security group that doesn't allow the
//!   agent). It is never an outage.

use crate::config::Kind;
use crate::config::{Chain, Header, Hop, Role, Thresholds, VpcLink};
use crate::facts::{
    ChainFacts, Direction, EdgeVerdict, GatewayWords, LinkStatus, LogSource, Purpose,
};
use crate::probe::{Evidence, Outcome, ProbeResult};

/// Where a round's pattern of passes and failures puts the fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Hop 0 passes.
    pub up: bool,
    /// Index of the blamed hop; `None` when the chain is up.
    pub broken: Option<usize>,
    /// Indices of failing hops with a passing hop outside them.
    pub blind_spots: Vec<usize>,
}

/// Locates the fault from each hop's pass (`true`) or fail, outermost first.
pub fn locate(pass: &[bool]) -> Location {
    let up = pass.first().copied().unwrap_or(false);
    let outermost_pass = pass.iter().position(|p| *p);
    let broken = match (up, outermost_pass) {
        (true, _) => None,
        (false, Some(k)) => Some(k - 1),
        (false, None) => pass.len().checked_sub(1),
    };
    let blind_spots = match outermost_pass {
        Some(k) => (k + 1..pass.len()).filter(|i| !pass[*i]).collect(),
        None => Vec::new(),
    };
    Location {
        up,
        broken,
        blind_spots,
    }
}

/// Why a chain is down, as a small closed set: the `code` label of
/// `hopwatch_chain_broken_reason_info`, `reason_code` in `check --json`, `ReasonCode` in EMF.
/// Alerts and dashboards group by it; the reason table of docs/reason-codes.md says what each
/// means and the usual fix (`tests/docs.rs` fails on a code it lacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The agent cannot reach the API endpoint itself (execute-api VPC endpoint, DNS, its
    /// security group).
    GatewayUnreachable,
    /// API Gateway refused the request on its own: 403 (WAF, API key, resource policy, IAM,
    /// signature), 401 (authorizer said Unauthorized), other 4xx.
    GatewayRefused,
    /// No such route: 404 (HTTP API), or "Missing Authentication Token" (a REST API's answer
    /// for a missing path, method or stage).
    GatewayNoRoute,
    /// 429: throttling or an exhausted usage-plan quota.
    GatewayThrottled,
    /// 500 from the authorizer: it failed or is misconfigured.
    GatewayAuthorizerFailed,
    /// The gateway cannot use its integration (500): the VPC link or its endpoint service.
    LinkFailed,
    /// The integration did not answer in time (504 "Endpoint request timed out", or the
    /// gateway still waiting when the agent gave up).
    IntegrationTimeout,
    /// The integration failed (502, 503, 504 without a timeout).
    IntegrationFailure,
    /// The gateway passed on the integration's own error answer (HTTP_PROXY passes status,
    /// headers and body through) to the request it forwarded, while the hops behind answer
    /// the agent on their own paths: the application fails on the path the gateway sends.
    BackendStatus,
    /// A security group or NACL drops the traffic (a connect that never completes).
    SgDrop,
    /// A hop accepted the connection but gets no answer from the hop behind it, which answers
    /// the agent directly: the rule between them.
    UpstreamUnreachable,
    /// Nothing accepts on the hop's port: listener removed, load balancer deleted.
    NoListener,
    /// The load balancer has no (healthy) target to send to.
    NoHealthyTargets,
    /// The target reset or closed the connection.
    TargetReset,
    /// Nothing listens at the target.
    TargetDown,
    /// The target answers wrongly (status, body) or hangs.
    TargetError,
    /// A name does not resolve.
    Dns,
    /// TLS failed: name, expiry, trust, or a client certificate that is missing or refused.
    Tls,
    /// Cloud Map's `DiscoverInstances` returned no instance: none registered, or none healthy.
    CloudmapNoInstances,
    /// Cloud Map's `DiscoverInstances` failed (namespace or service not found, access denied).
    CloudmapError,
    /// The agent could not get the credentials a hop's `auth` needs (no AWS credentials, a
    /// failed AssumeRole, a token endpoint that refused or failed), so it did not send the
    /// probe: the agent's own failure, which says nothing of the chain.
    AgentCredentials,
    /// None of the above.
    Unknown,
}

impl ReasonCode {
    /// Every code, in the order of the table in docs/reason-codes.md.
    pub const ALL: [ReasonCode; 22] = [
        ReasonCode::GatewayUnreachable,
        ReasonCode::GatewayRefused,
        ReasonCode::GatewayNoRoute,
        ReasonCode::GatewayThrottled,
        ReasonCode::GatewayAuthorizerFailed,
        ReasonCode::LinkFailed,
        ReasonCode::IntegrationTimeout,
        ReasonCode::IntegrationFailure,
        ReasonCode::BackendStatus,
        ReasonCode::SgDrop,
        ReasonCode::UpstreamUnreachable,
        ReasonCode::NoListener,
        ReasonCode::NoHealthyTargets,
        ReasonCode::TargetReset,
        ReasonCode::TargetDown,
        ReasonCode::TargetError,
        ReasonCode::Dns,
        ReasonCode::Tls,
        ReasonCode::CloudmapNoInstances,
        ReasonCode::CloudmapError,
        ReasonCode::AgentCredentials,
        ReasonCode::Unknown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::GatewayUnreachable => "gateway_unreachable",
            ReasonCode::GatewayRefused => "gateway_refused",
            ReasonCode::GatewayNoRoute => "gateway_no_route",
            ReasonCode::GatewayThrottled => "gateway_throttled",
            ReasonCode::GatewayAuthorizerFailed => "gateway_authorizer_failed",
            ReasonCode::LinkFailed => "link_failed",
            ReasonCode::IntegrationTimeout => "integration_timeout",
            ReasonCode::IntegrationFailure => "integration_failure",
            ReasonCode::BackendStatus => "backend_status",
            ReasonCode::SgDrop => "sg_drop",
            ReasonCode::UpstreamUnreachable => "upstream_unreachable",
            ReasonCode::NoListener => "no_listener",
            ReasonCode::NoHealthyTargets => "no_healthy_targets",
            ReasonCode::TargetReset => "target_reset",
            ReasonCode::TargetDown => "target_down",
            ReasonCode::TargetError => "target_error",
            ReasonCode::Dns => "dns",
            ReasonCode::Tls => "tls",
            ReasonCode::CloudmapNoInstances => "cloudmap_no_instances",
            ReasonCode::CloudmapError => "cloudmap_error",
            ReasonCode::AgentCredentials => "agent_credentials",
            ReasonCode::Unknown => "unknown",
        }
    }

    /// The gateway answered on its own: nothing behind it was asked, so the blame stays there.
    pub fn gateway_own(self) -> bool {
        matches!(
            self,
            ReasonCode::GatewayRefused
                | ReasonCode::GatewayNoRoute
                | ReasonCode::GatewayThrottled
                | ReasonCode::GatewayAuthorizerFailed
        )
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// `text` from a hop's answer, unless it holds (part of) a secret header value sent to that
/// hop: a misbehaving server that reflects an API key into an error header must not get it
/// printed, logged and exported as a reason.
fn quoted<'t>(text: &'t str, sent: &[Header]) -> &'t str {
    let secret = sent
        .iter()
        .filter(|h| h.value.is_sensitive())
        .filter_map(|h| std::str::from_utf8(h.value.as_bytes()).ok())
        .filter(|v| !v.is_empty())
        .any(|v| text.contains(v) || (!text.is_empty() && v.contains(text)));
    if secret {
        "<redacted>"
    } else {
        text
    }
}

/// What one of API Gateway's own answers means: its reason code and, in words, why. Read
/// from `x-amzn-ErrorType` (first value) first, then the status and the `message` of its JSON
/// body, REST and HTTP APIs alike. Only for answers the evidence says are the gateway's own
/// ([`read_answer`]): the same status passed through from the application means nothing of
/// the gateway. Sources: the gateway response types and their default statuses
/// (docs.aws.amazon.com/apigateway/latest/developerguide/supported-gateway-response-types.html),
/// the 403 error types (repost.aws/knowledge-center/api-gateway-troubleshoot-403-forbidden),
/// 429 (repost.aws/knowledge-center/api-gateway-429-limit), 5xx (…/api-gateway-5xx-error), and
/// the 403 of an execute-api VPC endpoint with private DNS (…/api-gateway-vpc-connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAnswer {
    pub code: ReasonCode,
    /// What it means, for the reason text.
    pub meaning: &'static str,
}

/// Reads one of API Gateway's own answers; `None` for a status that is no error (2xx/3xx
/// outside the hop's `expect_status`).
pub fn gateway_answer(
    status: u16,
    error_type: Option<&str>,
    message: Option<&str>,
) -> Option<GatewayAnswer> {
    use ReasonCode::*;
    let answer = |code, meaning| Some(GatewayAnswer { code, meaning });
    let message = message.unwrap_or("").to_ascii_lowercase();
    match error_type.unwrap_or("") {
        "TooManyRequestsException" => return answer(GatewayThrottled, THROTTLED),
        "LimitExceededException" => return answer(GatewayThrottled, QUOTA),
        "ForbiddenException" => return answer(GatewayRefused, FORBIDDEN),
        "AccessDeniedException" => return answer(GatewayRefused, ACCESS_DENIED),
        "InvalidSignatureException" | "IncompleteSignatureException" => {
            return answer(GatewayRefused, SIGNATURE)
        }
        "UnauthorizedException" => return answer(GatewayRefused, UNAUTHORIZED),
        "MissingAuthenticationTokenException" => return answer(GatewayNoRoute, MISSING_TOKEN),
        "NotFoundException" => return answer(GatewayNoRoute, NOT_FOUND),
        "BadRequestException" => return answer(GatewayRefused, BAD_REQUEST),
        t if t.contains("Authorizer") => return answer(GatewayAuthorizerFailed, AUTHORIZER),
        _ => {}
    }
    match status {
        429 if message.contains("limit") => answer(GatewayThrottled, QUOTA),
        429 => answer(GatewayThrottled, THROTTLED),
        401 => answer(GatewayRefused, UNAUTHORIZED),
        403 if message.contains("missing authentication token") => {
            answer(GatewayNoRoute, MISSING_TOKEN)
        }
        403 if message.contains("forbidden") => answer(GatewayRefused, FORBIDDEN),
        403 => answer(
            GatewayRefused,
            "the gateway refuses the call (IAM, resource policy, authorizer or WAF)",
        ),
        404 => answer(GatewayNoRoute, NOT_FOUND),
        400..=499 => answer(GatewayRefused, "the gateway refuses the request"),
        500 if message.contains("authorizer") => answer(GatewayAuthorizerFailed, AUTHORIZER),
        500 => answer(
            LinkFailed,
            "API Gateway cannot use its integration (API_CONFIGURATION_ERROR)",
        ),
        504 if message.contains("timed out") => answer(IntegrationTimeout, TIMED_OUT),
        502 => answer(
            IntegrationFailure,
            "the integration's answer could not be used",
        ),
        503 => answer(IntegrationFailure, "the integration is unavailable"),
        501..=599 => answer(
            IntegrationFailure,
            "the connection to the integration failed (INTEGRATION_FAILURE)",
        ),
        _ => None,
    }
}

const THROTTLED: &str =
    "throttled: a stage, route, method, usage-plan or account rate limit is exceeded";
const QUOTA: &str = "the usage plan's quota for this API key is used up";
const FORBIDDEN: &str = "Forbidden: an AWS WAF rule, a missing or invalid API key, or the resource policy (API Gateway gives the same answer for all three); also what an execute-api VPC endpoint with private DNS answers for an API that is not private";
const ACCESS_DENIED: &str =
    "access denied: an authorizer, IAM or the resource policy denies the call";
const SIGNATURE: &str = "the request's SigV4 signature is invalid or expired";
const UNAUTHORIZED: &str =
    "the authorizer answered Unauthorized: the token the probe sends is missing, expired or invalid";
const MISSING_TOKEN: &str = "Missing Authentication Token: the path, method or stage does not exist (a REST API answers so for a missing resource), or the method requires IAM (SigV4) signing";
const NOT_FOUND: &str = "Not Found: no route matches the method and path";
const BAD_REQUEST: &str = "the request fails the API's request validation";
const AUTHORIZER: &str =
    "the authorizer failed or is misconfigured (AUTHORIZER_FAILURE, AUTHORIZER_CONFIGURATION_ERROR)";
const TIMED_OUT: &str = "the integration did not answer within the integration timeout";

/// Which API Gateway a chain's gateway hop is: REST and HTTP APIs mark their own answers
/// differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// A REST API: its own answers carry `x-amzn-ErrorType`.
    Rest,
    /// An HTTP API: its own answers carry a fixed `{"message": …}` body and no error type.
    Http,
    /// Not known (`custom`): either kind of evidence counts.
    Either,
}

impl Api {
    /// The API a chain kind implies.
    pub fn of(kind: Kind) -> Api {
        match kind {
            Kind::Custom => Api::Either,
            k if k.http_api() => Api::Http,
            _ => Api::Rest,
        }
    }
}

/// Whose a failed answer of the gateway hop is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// API Gateway's own answer, what it means, and what says it is the gateway's.
    Gateway {
        answer: GatewayAnswer,
        by: &'static str,
    },
    /// The integration's answer, passed through by the gateway (HTTP_PROXY), and what says so.
    Backend { by: &'static str },
}

/// The default bodies of an HTTP API's own answers, by status (`{"message":"Not Found"}`).
/// An HTTP API sends no `x-amzn-ErrorType`; these bodies, exact, are its only mark. Sources:
/// docs.aws.amazon.com/apigateway/latest/developerguide/http-api-troubleshooting-*.html and
/// field reports for the 503 at the integration timeout (cortexlabs/cortex#1225,
/// serverless/serverless#11222); shared/BRIEF.md §3.
const HTTP_API_OWN: &[(u16, &str)] = &[
    (400, "Bad Request"),
    (401, "Unauthorized"),
    (403, "Forbidden"),
    (404, "Not Found"),
    (413, "Request Entity Too Large"),
    (429, "Too Many Requests"),
    (500, "Internal Server Error"),
    (503, "Service Unavailable"),
];

/// What `$context.error.responseType` in the gateway's access log means. Source: the gateway
/// response types (supported-gateway-response-types.html).
fn response_type_answer(response_type: &str) -> Option<GatewayAnswer> {
    use ReasonCode::*;
    let answer = |code, meaning| Some(GatewayAnswer { code, meaning });
    match response_type {
        "THROTTLED" => answer(GatewayThrottled, THROTTLED),
        "QUOTA_EXCEEDED" => answer(GatewayThrottled, QUOTA),
        "WAF_FILTERED" => answer(GatewayRefused, "AWS WAF blocked the request (WAF_FILTERED)"),
        "ACCESS_DENIED" => answer(GatewayRefused, ACCESS_DENIED),
        "INVALID_API_KEY" => answer(
            GatewayRefused,
            "the API key is missing or invalid (INVALID_API_KEY)",
        ),
        "INVALID_SIGNATURE" | "EXPIRED_TOKEN" => answer(GatewayRefused, SIGNATURE),
        "UNAUTHORIZED" => answer(GatewayRefused, UNAUTHORIZED),
        "BAD_REQUEST_PARAMETERS" | "BAD_REQUEST_BODY" => answer(GatewayRefused, BAD_REQUEST),
        "REQUEST_TOO_LARGE" | "UNSUPPORTED_MEDIA_TYPE" | "DEFAULT_4XX" => {
            answer(GatewayRefused, "the gateway refuses the request")
        }
        "MISSING_AUTHENTICATION_TOKEN" => answer(GatewayNoRoute, MISSING_TOKEN),
        "RESOURCE_NOT_FOUND" => answer(GatewayNoRoute, NOT_FOUND),
        "AUTHORIZER_FAILURE" | "AUTHORIZER_CONFIGURATION_ERROR" => {
            answer(GatewayAuthorizerFailed, AUTHORIZER)
        }
        "INTEGRATION_TIMEOUT" => answer(IntegrationTimeout, TIMED_OUT),
        "INTEGRATION_FAILURE" => answer(
            IntegrationFailure,
            "the connection to the integration failed (INTEGRATION_FAILURE)",
        ),
        "API_CONFIGURATION_ERROR" => answer(
            LinkFailed,
            "API Gateway cannot use its integration (API_CONFIGURATION_ERROR)",
        ),
        "DEFAULT_5XX" => answer(IntegrationFailure, "the gateway failed (DEFAULT_5XX)"),
        _ => None,
    }
}

/// What a REST execution log's `Execution failed due to …` line means.
fn execution_answer(error: &str) -> GatewayAnswer {
    let lower = error.to_ascii_lowercase();
    if lower.contains("timeout") || lower.contains("timed out") {
        GatewayAnswer {
            code: ReasonCode::IntegrationTimeout,
            meaning: TIMED_OUT,
        }
    } else if lower.contains("configuration error") {
        GatewayAnswer {
            code: ReasonCode::LinkFailed,
            meaning: "API Gateway cannot use its integration (API_CONFIGURATION_ERROR)",
        }
    } else {
        GatewayAnswer {
            code: ReasonCode::IntegrationFailure,
            meaning: "the connection to the integration failed (INTEGRATION_FAILURE)",
        }
    }
}

/// Decides whose a failed gateway answer is. Every VPC-link integration is `HTTP_PROXY`: API
/// Gateway "passes the entire request and response between the frontend and the backend"
/// (…/api-gateway-set-up-simple-proxy.html), so a 401, 404, 429 or 500 may be the
/// application's. The gateway's own answers are told apart by evidence, in this order:
/// 1. the gateway's log of that request (`words`): `error.responseType` names the gateway's own
///    answer, an `Execution failed due to …` line its integration's failure, and an
///    `integration.status` equal to the answer with no error says the integration answered it;
/// 2. REST: `x-amzn-ErrorType` (customized gateway responses keep it when their status is
///    remapped), unless the answer carries the backend's renamed headers (`x-amzn-Remapped-*`);
/// 3. HTTP API: exactly a default `{"message": …}` body for its status (JSON or no content type)
///    with no `x-amzn-ErrorType` and no `x-amzn-Remapped-*`; `apigw-requestid` is on every
///    HTTP API answer, passed through or not, so it proves nothing.
///
/// Anything else is the backend's answer, passed through. Steps 2 and 3 are an inference from
/// AWS's documented responses, not a rule AWS states: a backend can send `x-amzn-ErrorType` or
/// a body like the gateway's own, and only the log (step 1) tells those apart.
///
/// `at_timeout`: the answer came when the integration timeout ran out; an HTTP API answers 503
/// `Service Unavailable` then (not 504), which is its integration timeout.
pub fn read_answer(
    api: Api,
    status: u16,
    evidence: &Evidence,
    at_timeout: bool,
    words: Option<&GatewayWords>,
) -> Answered {
    if let Some(w) = words {
        if let Some(answer) = w.response_type.as_deref().and_then(response_type_answer) {
            return Answered::Gateway {
                answer,
                by: "the gateway's access log (error.responseType)",
            };
        }
        if let (Some(LogSource::ExecutionLog), Some(error)) = (w.source, &w.integration_error) {
            return Answered::Gateway {
                answer: execution_answer(error),
                by: "the gateway's execution log",
            };
        }
        let integration_answered = w
            .integration_status
            .as_deref()
            .is_some_and(|s| s.trim() == status.to_string());
        if integration_answered && w.integration_error.is_none() {
            return Answered::Backend {
                by: "the gateway's access log: the integration answered it",
            };
        }
    }
    let message = evidence.message.as_deref();
    // API Gateway puts its request id on every answer, its own and those it passes through
    // (x-amzn-RequestId on REST; apigw-requestid on HTTP APIs, observed on every answer in
    // field reports, not a documented rule): one with neither id never went through an
    // integration. Read it by its status, as the gateway's (LocalStack answers an undeployed
    // stage so; AWS with 403 Missing Authentication Token).
    let no_id = evidence.request_id.is_none() && evidence.extended_request_id.is_none();
    if no_id {
        if let Some(answer) = gateway_answer(status, evidence.error_type.as_deref(), message) {
            return Answered::Gateway {
                answer,
                by: "no request id: API Gateway marks every answer it passes through with one",
            };
        }
    }
    if api != Api::Http && evidence.error_type.is_some() {
        if evidence.remapped {
            return Answered::Backend {
                by: "x-amzn-Remapped-* headers: the backend's own headers, renamed by the gateway",
            };
        }
        if let Some(answer) = gateway_answer(status, evidence.error_type.as_deref(), message) {
            return Answered::Gateway {
                answer,
                by: "x-amzn-ErrorType",
            };
        }
    }
    let json = evidence
        .content_type
        .as_deref()
        .is_none_or(|t| t.trim_start().starts_with("application/json"));
    let default_body = HTTP_API_OWN
        .iter()
        .any(|(s, text)| *s == status && message == Some(text));
    if api != Api::Rest
        && evidence.error_type.is_none()
        && !evidence.remapped
        && evidence.message_only
        && json
        && default_body
    {
        if status == 503 && at_timeout {
            return Answered::Gateway {
                answer: GatewayAnswer {
                    code: ReasonCode::IntegrationTimeout,
                    meaning: "the integration did not answer within the integration timeout (an HTTP API answers 503 Service Unavailable then)",
                },
                by: "an HTTP API's default body, at the integration timeout",
            };
        }
        if let Some(answer) = gateway_answer(status, None, message) {
            return Answered::Gateway {
                answer,
                by: "an HTTP API's default body",
            };
        }
    }
    Answered::Backend {
        by: match api {
            Api::Rest => "no x-amzn-ErrorType, which the REST API's own answers carry",
            Api::Http => "not an HTTP API's default body",
            Api::Either => "neither x-amzn-ErrorType nor a gateway's default body",
        },
    }
}

/// A chain and one round of its results, read by the diagnosis.
struct Round<'a> {
    chain: &'a Chain,
    results: &'a [ProbeResult],
    /// What API Gateway logged of the gateway probe's request, when a lookup found it.
    words: Option<&'a GatewayWords>,
}

impl Round<'_> {
    /// Whose the gateway hop's failed answer is; `None` when hop 0 is no gateway or got no
    /// HTTP answer.
    fn answered(&self) -> Option<Answered> {
        let (g, r) = (self.chain.hops.first()?, self.results.first()?);
        if g.role != Role::Gateway || r.outcome != Outcome::HttpStatus {
            return None;
        }
        let status = r.status?;
        // "About" the timeout: the gateway's clock starts after the agent's connect, so a
        // little earlier on the agent's clock is still the timeout.
        let at_timeout = g
            .integration_timeout
            .is_some_and(|t| r.total >= t.mul_f64(0.9));
        Some(read_answer(
            Api::of(self.chain.kind),
            status,
            &r.evidence,
            at_timeout,
            self.words,
        ))
    }

    fn hop(&self, i: usize) -> &Hop {
        &self.chain.hops[i]
    }
    fn result(&self, i: usize) -> &ProbeResult {
        &self.results[i]
    }

    /// What hop `i` answered, in a few words: `504 with x-amzn-ErrorType X ("message")`,
    /// `connect timeout`.
    fn failure(&self, i: usize) -> String {
        let (hop, r) = (self.hop(i), self.result(i));
        match (r.outcome, r.status) {
            (Outcome::HttpStatus, Some(status)) => {
                let mut text = status.to_string();
                if let Some(kind) = &r.evidence.error_type {
                    text.push_str(&format!(
                        " with x-amzn-ErrorType {}",
                        quoted(kind, &hop.headers)
                    ));
                } else if r.evidence.server.as_deref() == Some("awselb/2.0") {
                    text.push_str(" from the ALB (Server: awselb/2.0)");
                }
                if hop.role == Role::Gateway {
                    if let Some(message) = &r.evidence.message {
                        text.push_str(&format!(" ({:?})", quoted(message, &hop.headers)));
                    }
                }
                text
            }
            (Outcome::Timeout, _) => "no answer in time after connecting".to_string(),
            (outcome, _) => outcome.as_str().replace('_', " "),
        }
    }

    /// The hop behind hop `i`, when there is one.
    fn behind(&self, i: usize) -> Option<&Hop> {
        self.chain.hops.get(i + 1)
    }
}

/// The security group of a hop, as the reasons name it: `target-sg`, `alb-sg`.
fn sg(hop: &Hop) -> String {
    format!("{}-sg", hop.name)
}

/// Why TLS failed, when the alert says: a client certificate missing or refused (mutual TLS on
/// an API Gateway custom domain or an ALB listener in verify mode).
fn tls_hint(hop: &Hop, r: &ProbeResult) -> String {
    let alert = r.evidence.tls_alert.as_deref();
    let asked = matches!(alert, Some("CertificateRequired"));
    let refused = matches!(
        alert,
        Some(
            "BadCertificate"
                | "UnknownCA"
                | "CertificateUnknown"
                | "CertificateExpired"
                | "CertificateRevoked"
                | "AccessDenied"
                | "DecryptError"
                | "HandshakeFailure"
        )
    );
    match (hop.client_auth.is_some(), asked || refused) {
        (false, true) => format!(
            "a client certificate is required (mutual TLS; the server sent {}): set client_cert and client_key on this hop",
            alert.unwrap_or("")
        ),
        (true, true) => format!(
            "the server refused the client certificate ({}): is it signed by a CA in the server's trust store, and still valid?",
            alert.unwrap_or("")
        ),
        _ => "TLS handshake or certificate failure: a wrong name (tls_server_name), an expired or untrusted certificate (ca_file)".to_string(),
    }
}

/// What the gateway's traffic passes through, by link generation (brief §1, §2).
fn link_text(round: &Round<'_>, next: usize) -> String {
    let gateway = round.hop(0);
    let n = round.hop(next);
    match (gateway.facts.vpc_link, round.chain.kind.http_api()) {
        (Some(VpcLink::V1), _) => "VPC link or endpoint service: the link FAILED, the endpoint connection rejected, or the NLB's security group refusing PrivateLink traffic".to_string(),
        (Some(VpcLink::V2), true) => format!(
            "VPC link (INACTIVE after 60 idle days, or httpapi-sg without an outbound rule), or {} lacking the link's security group on port {}",
            sg(n),
            n.url.port
        ),
        (Some(VpcLink::V2), false) => format!(
            "VPC link v2 (INACTIVE after 60 idle days) or its security group, or {} lacking the link's security group on port {}",
            sg(n),
            n.url.port
        ),
        (None, _) => "integration or VPC link".to_string(),
    }
}

/// The gateway's integration fails while the hop behind it answers the agent. Over PrivateLink
/// the hop behind the NLB sees the NLB's own addresses, never the caller's; a probe of the NLB
/// from the agent keeps the agent's address when the target group preserves client IPs. A
/// security group that allows the agent but not the NLB then fails only the gateway
/// (docs.aws.amazon.com/elasticloadbalancing/latest/network/edit-target-group-attributes.html).
fn integration(round: &Round<'_>, code: ReasonCode, what: String) -> (ReasonCode, String) {
    let next = 1;
    let (g, n) = (round.hop(0), round.hop(next));
    let head = format!("{}: {what} while {} answers the agent", g.name, n.name);
    let behind_nlb = (n.role == Role::Nlb && g.facts.vpc_link == Some(VpcLink::V1))
        .then(|| round.behind(next))
        .flatten();
    if let Some(behind) = behind_nlb {
        let lacks = format!(
            "the NLB's addresses or VPC CIDR on port {} (or the NLB's own security group, where it has one, does not allow the VPC link)",
            behind.url.port
        );
        match n.facts.preserve_client_ip {
            Some(true) => {
                return (
                    ReasonCode::SgDrop,
                    format!("{head}; over PrivateLink {} sees the NLB's own addresses while the agent's probe through {} keeps the agent's address (client IP preservation is on): {} probably allows the agent but lacks {lacks}; if it does allow them, the VPC link itself", behind.name, n.name, sg(behind)),
                )
            }
            None => {
                return (
                    code,
                    format!("{head}; {}; or, if {} preserves client IPs (instance targets do by default), {} may allow the agent but lack {lacks}", link_text(round, next), n.name, sg(behind)),
                )
            }
            Some(false) => {}
        }
    }
    (code, format!("{head}; {}", link_text(round, next)))
}

/// Why hop 0, the gateway, fails while hop `1` answers (`next`) or nothing does.
fn gateway_reason(round: &Round<'_>, next_passes: bool) -> (ReasonCode, String) {
    let (g, r) = (round.hop(0), round.result(0));
    let what = round.failure(0);
    let unreachable = |code| {
        (
            code,
            format!(
                "{}: {what}; the agent cannot reach the API endpoint itself (execute-api VPC endpoint, its DNS or security group)",
                g.name
            ),
        )
    };
    match r.outcome {
        Outcome::HttpStatus => match round.answered() {
            Some(Answered::Gateway { answer: a, .. }) if a.code.gateway_own() => (
                a.code,
                format!(
                    "{}: {what}: {}; the gateway answered on its own, so nothing behind it was asked",
                    g.name, a.meaning
                ),
            ),
            Some(Answered::Gateway { answer: a, .. }) if next_passes => {
                integration(round, a.code, format!("{what}: {}", a.meaning))
            }
            Some(Answered::Gateway { answer: a, .. }) => {
                (a.code, format!("{}: {what}: {}", g.name, a.meaning))
            }
            Some(Answered::Backend { by }) => backend_reason(round, next_passes, by),
            None => (ReasonCode::Unknown, format!("{}: {what}", g.name)),
        },
        Outcome::Timeout => {
            let limit = g.integration_timeout;
            let waits = match limit {
                Some(limit) if g.timeout <= limit => format!(
                    "; the gateway itself waits up to {} before its own {} (a gateway hop timeout above that would show it)",
                    crate::config::duration::format_duration(limit),
                    if round.chain.kind.http_api() { "503" } else { "504" }
                ),
                _ => String::new(),
            };
            let what = format!(
                "accepted the request but gave no answer within the agent's {} timeout{waits}",
                crate::config::duration::format_duration(g.timeout)
            );
            if next_passes {
                integration(round, ReasonCode::IntegrationTimeout, what)
            } else {
                (
                    ReasonCode::IntegrationTimeout,
                    format!("{}: {what}", g.name),
                )
            }
        }
        Outcome::Dns => unreachable(ReasonCode::Dns),
        Outcome::ConnectTimeout | Outcome::ConnectRefused | Outcome::Reset => {
            unreachable(ReasonCode::GatewayUnreachable)
        }
        Outcome::Tls => (
            ReasonCode::Tls,
            format!("{}: {what}; {}", g.name, tls_hint(g, r)),
        ),
        _ => (ReasonCode::Unknown, format!("{}: {what}", g.name)),
    }
}

/// The gateway passed the integration's own error answer through. It is neither the gateway's
/// refusal nor the link's failure: the application answered, on the path the gateway sends.
fn backend_reason(round: &Round<'_>, next_passes: bool, by: &str) -> (ReasonCode, String) {
    let (g, r) = (round.hop(0), round.result(0));
    let status = r.status.unwrap_or(0);
    let path = &g.url.path_and_query;
    // "For private integrations, API Gateway includes the stage portion of the API endpoint in
    // the request to your backend resources" (HTTP APIs and REST v2 links; developerguide/
    // http-api-develop-integrations-private.html, private-integration.html); for v1 links AWS
    // documents no prefix: the integration URI's path is sent.
    let sent = match g.facts.vpc_link {
        Some(VpcLink::V2) => format!(
            "{} {path}, the stage included, as API Gateway sends it to private integrations unless parameter mapping overwrites the path",
            g.method
        ),
        _ => format!(
            "{} {path} mapped onto the integration URI's path",
            g.method
        ),
    };
    let message = r
        .evidence
        .message
        .as_deref()
        .map(|m| format!(" ({:?})", quoted(m, &g.headers)))
        .unwrap_or_default();
    let head = format!(
        "{}: the integration answered {status}{message} to the request the gateway forwarded ({sent}); passed through, as an HTTP_PROXY integration passes the backend's answers ({by}): not the gateway's refusal, not the VPC link",
        g.name
    );
    match round.chain.hops.get(1).filter(|_| next_passes) {
        Some(n) => (
            ReasonCode::BackendStatus,
            format!(
                "{head}; {} answers the agent on {}: the application fails only on the path the gateway sends",
                n.name, n.url.path_and_query
            ),
        ),
        None => (ReasonCode::BackendStatus, head),
    }
}

/// Why hop `b` is blamed: it fails and the hop behind it answers the agent directly.
fn hop_reason(round: &Round<'_>, b: usize) -> (ReasonCode, String) {
    let (hop, r) = (round.hop(b), round.result(b));
    let Some(n) = round.behind(b) else {
        return (
            ReasonCode::Unknown,
            format!("{}: {}", hop.name, round.failure(b)),
        );
    };
    let what = round.failure(b);
    let (bn, nn) = (&hop.name, &n.name);
    let between = format!("{bn} -> {nn}: {what} while {nn} answers directly");
    use ReasonCode::*;
    if hop.role == Role::Cloudmap && hop.url.cloudmap.is_some() {
        return cloudmap_reason(hop, r, &format!(" while {nn} answers directly"));
    }
    match (hop.role, r.outcome) {
        (_, Outcome::Dns) if hop.role == Role::Cloudmap => (
            Dns,
            format!("{bn}: DNS lookup failed while {nn} answers directly; the Cloud Map namespace or its VPC association"),
        ),
        (_, Outcome::Dns) => (Dns, format!("{bn}: {what} while {nn} answers directly; its name does not resolve")),
        (_, Outcome::Tls) => (Tls, format!("{bn}: {what} while {nn} answers directly; {}", tls_hint(hop, r))),
        // An NLB passes connections through: a connect it never completes, or one it holds
        // without an answer, is a drop behind it (or at its own security group).
        (Role::Nlb, Outcome::ConnectTimeout | Outcome::Timeout) => {
            let who = match hop.facts.preserve_client_ip {
                Some(true) => "the agent's address (the NLB preserves client IPs, so the target sees the caller)",
                Some(false) => "the NLB addresses or VPC CIDR",
                None => "the NLB addresses or VPC CIDR (or the agent's address, if the NLB preserves client IPs)",
            };
            (
                SgDrop,
                format!(
                    "{between}; {} probably lacks {who} on port {}, or the NLB's own security group does not allow the agent on port {}",
                    sg(n),
                    n.url.port,
                    hop.url.port
                ),
            )
        }
        (Role::Nlb, Outcome::ConnectRefused | Outcome::Reset) => (
            NoHealthyTargets,
            format!(
                "{between}; the NLB has no healthy target or its target group uses another port than {}",
                n.url.port
            ),
        ),
        (Role::Alb, Outcome::HttpStatus) => match r.status {
            Some(502) => (TargetReset, format!("{between}; the target reset or closed the connection, or the target group's protocol or TLS does not match")),
            Some(503) => (NoHealthyTargets, format!("{between}; the target group has no registered targets")),
            Some(504) => (
                UpstreamUnreachable,
                format!(
                    "{between}; the ALB cannot reach the target in time (it waits 10 s to connect, then its idle timeout, 60 s by default); {} probably lacks alb-sg on port {}",
                    sg(n),
                    n.url.port
                ),
            ),
            _ if r.evidence.server.as_deref() == Some("awselb/2.0") => (
                Unknown,
                format!("{between}; the listener rules or an attached AWS WAF answer this path themselves"),
            ),
            _ => (TargetError, format!("{between}; the ALB passes on the target's own answer")),
        },
        // Accepted, then no answer: the hop is waiting on what is behind it.
        (_, Outcome::Timeout) => (
            UpstreamUnreachable,
            format!(
                "{bn} -> {nn}: {bn} accepted the connection but gave no answer in time while {nn} answers directly; {bn} cannot get an answer from {nn}: {} probably lacks {}'s addresses{} on port {}",
                sg(n),
                bn,
                if hop.role == Role::Alb { " (alb-sg)" } else { "" },
                n.url.port
            ),
        ),
        (_, Outcome::ConnectTimeout) => (
            SgDrop,
            format!(
                "{between}; a security group or NACL drops traffic to {bn} on port {}",
                hop.url.port
            ),
        ),
        (_, Outcome::ConnectRefused | Outcome::Reset) => (
            NoListener,
            format!(
                "{bn}: {what} while {nn} answers directly; nothing accepts on {bn}'s port {}: listener removed or load balancer deleted",
                hop.url.port
            ),
        ),
        (_, Outcome::HttpStatus | Outcome::BodyMismatch) => (TargetError, between),
        _ => (Unknown, between),
    }
}

/// A `cloudmap://` hop failing: what Cloud Map's `DiscoverInstances` said.
fn cloudmap_reason(hop: &Hop, r: &ProbeResult, context: &str) -> (ReasonCode, String) {
    let detail = r.detail.as_deref().unwrap_or("");
    if r.outcome == Outcome::NoInstances {
        (
            ReasonCode::CloudmapNoInstances,
            format!(
                "{}: {detail}{context}; API Gateway finds no instance either: none is registered, or none is healthy",
                hop.name
            ),
        )
    } else {
        (
            ReasonCode::CloudmapError,
            format!(
                "{}: {detail}{context}; API Gateway cannot find the service either (namespace or service name, the agent's IAM permission servicediscovery:DiscoverInstances)",
                hop.name
            ),
        )
    }
}

/// Why the last hop fails when no hop answers at all, not even the target directly.
fn last_reason(round: &Round<'_>, b: usize) -> (ReasonCode, String) {
    let (hop, r) = (round.hop(b), round.result(b));
    if hop.role == Role::Cloudmap && hop.url.cloudmap.is_some() {
        return cloudmap_reason(hop, r, " and no hop answers");
    }
    let what = round.failure(b);
    let port = hop.url.port;
    use ReasonCode::*;
    let (code, hint) = match r.outcome {
        Outcome::ConnectTimeout => (SgDrop, format!("dropped on the way: a security group or NACL does not allow the agent on port {port}, or the host is down")),
        Outcome::ConnectRefused => (TargetDown, format!("nothing listening on port {port}: the target is down or on another port")),
        Outcome::Reset => (TargetReset, proxy_hint(round.chain, b).unwrap_or_else(|| "the target resets or closes the connection".to_string())),
        Outcome::Timeout => (TargetError, "the target accepts the connection but does not answer: it hangs".to_string()),
        Outcome::Dns => (Dns, "its name does not resolve".to_string()),
        Outcome::Tls => (Tls, tls_hint(hop, r)),
        _ => (TargetError, "the target itself answers wrongly".to_string()),
    };
    (
        code,
        format!("{}: {what} and no hop answers; {hint}", hop.name),
    )
}

/// A target behind an NLB with proxy protocol v2 closes connections that start without a
/// PROXY header: the agent's direct probe then fails where the NLB's traffic passes.
fn proxy_hint(chain: &Chain, b: usize) -> Option<String> {
    let hop = &chain.hops[b];
    let behind_nlb = b > 0 && chain.hops[b - 1].role == Role::Nlb;
    (behind_nlb && hop.send_proxy_protocol.is_none()).then(|| {
        "a target behind an NLB with proxy protocol v2 closes connections without a PROXY header: set send_proxy_protocol = \"v2\" on this hop".to_string()
    })
}

/// Debounced state of one hop: flips only after `threshold` rounds that agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopState {
    /// Current state; `None` until the first round.
    pub up: Option<bool>,
    /// Consecutive rounds disagreeing with `up`.
    streak: u32,
}

impl HopState {
    /// A hop not yet probed.
    pub const fn new() -> Self {
        HopState {
            up: None,
            streak: 0,
        }
    }

    /// Feeds one round's raw result; returns `Some((from, to))` when the state changed. The
    /// first round sets the state at once: there is nothing to debounce against yet.
    pub fn observe(&mut self, pass: bool, t: Thresholds) -> Option<(Option<bool>, bool)> {
        match self.up {
            None => {
                self.up = Some(pass);
                Some((None, pass))
            }
            Some(current) if current == pass => {
                self.streak = 0;
                None
            }
            Some(current) => {
                self.streak += 1;
                let needed = if pass { t.up_after } else { t.down_after };
                if self.streak >= needed.max(1) {
                    self.up = Some(pass);
                    self.streak = 0;
                    Some((Some(current), pass))
                } else {
                    None
                }
            }
        }
    }
}

impl Default for HopState {
    fn default() -> Self {
        Self::new()
    }
}

/// A chain's verdict for one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub up: bool,
    /// Index of the blamed hop when down.
    pub broken: Option<usize>,
    pub blind_spots: Vec<usize>,
    /// Why the broken hop is blamed; `None` when up.
    pub reason: Option<String>,
    /// The reason as a code; `None` when up.
    pub code: Option<ReasonCode>,
    /// Where the rules (`explain`, from discovery) and the probes disagree: a hop the agent
    /// passes through whose edge the gateway's traffic is not allowed on. Empty without facts.
    pub contradictions: Vec<String>,
}

/// Judges a round from each hop's pass or fail (raw, or debounced by [`ChainTracker`]) with the
/// round's results as evidence. `pass` and `results` are index-aligned with `chain.hops`.
///
/// When the gateway answers on its own (throttled, refused, no such route, authorizer failure)
/// the blame stays with it whatever the hops behind it do: users are stopped there.
pub fn judge(chain: &Chain, pass: &[bool], results: &[ProbeResult]) -> Verdict {
    judge_with(chain, pass, results, None, None)
}

/// [`judge`], with what AWS says of the chain: discovery's facts (a VPC link that is not
/// AVAILABLE is the reason of a gateway integration failure, a blamed load balancer's own view
/// of its targets is quoted) and the gateway's own log of the failed request (`words`: quoted,
/// and its `error.responseType` outranks what the probe alone suggests).
pub fn judge_with(
    chain: &Chain,
    pass: &[bool],
    results: &[ProbeResult],
    facts: Option<&ChainFacts>,
    words: Option<&GatewayWords>,
) -> Verdict {
    let mut verdict = judge_alone(chain, pass, results, words);
    if let (Some(w), Some(0)) = (words, verdict.broken) {
        if let Some(text) = verdict.reason.as_mut() {
            let sent = chain.hops.first().map_or(&[][..], |h| &h.headers[..]);
            text.push_str(&quote_words(w, sent));
        }
    }
    if let (Some(facts), Some(b)) = (facts, verdict.broken) {
        let (code, text) = with_facts(chain, b, verdict.code, verdict.reason.take(), facts);
        verdict.code = code;
        verdict.reason = text;
    }
    if let Some(facts) = facts {
        verdict.contradictions = contradictions(chain, pass, facts);
    }
    verdict
}

/// The traffic checks of the edges `hop` sends on (`explain`'s rows), those not allowed.
fn blocked_edges<'a>(facts: &'a ChainFacts, hop: &str) -> Vec<&'a EdgeVerdict> {
    facts
        .path
        .iter()
        // Only what the rules say blocks it: an edge whose rules could not be read is unknown,
        // never the cause.
        .filter(|e| e.from == hop && e.purpose == Purpose::Traffic && e.state.blocks())
        .collect()
}

/// One blocked check, as a reason quotes it.
fn quote(e: &EdgeVerdict) -> String {
    let what = match e.direction {
        Direction::Ingress => format!(
            "{} has no inbound rule for {} on {}",
            e.to, e.source, e.port
        ),
        Direction::Egress => format!(
            "{}'s security group has no outbound rule to {} on {}",
            e.from, e.to, e.port
        ),
        Direction::Nacl => format!(
            "a network ACL between {} and {} blocks port {}: {}",
            e.from,
            e.to,
            e.port,
            e.rule.as_deref().unwrap_or("denied")
        ),
    };
    match &e.fix {
        Some(fix) => format!("{what}: add it with `{fix}`"),
        None => what,
    }
}

/// Hops whose own probe passes while the rules block the gateway's traffic on an edge they
/// send on: the agent's path is allowed where the gateway's is not.
fn contradictions(chain: &Chain, pass: &[bool], facts: &ChainFacts) -> Vec<String> {
    let mut out = Vec::new();
    for (i, hop) in chain.hops.iter().enumerate() {
        // The agent got through `hop` to what is behind it only if the hop behind passed too.
        if !pass.get(i).copied().unwrap_or(false) {
            continue;
        }
        for e in blocked_edges(facts, &hop.name) {
            out.push(format!(
                "{} passes the agent's probe, but the rules block the gateway's traffic: {}; the agent's path is allowed where the gateway's is not, the failure users will see next",
                hop.name,
                quote(e)
            ));
        }
    }
    out
}

/// What the link's status and the load balancers' view of their targets add to a reason.
fn with_facts(
    chain: &Chain,
    broken: usize,
    code: Option<ReasonCode>,
    text: Option<String>,
    facts: &ChainFacts,
) -> (Option<ReasonCode>, Option<String>) {
    if code == Some(ReasonCode::AgentCredentials) {
        // Nothing was sent: what AWS says of the chain explains nothing of it.
        return (code, text);
    }
    let mut code = code;
    let mut text = text.unwrap_or_default();
    let gateway_integration = broken == 0
        && chain.hops.first().is_some_and(|h| h.role == Role::Gateway)
        && !code.is_some_and(ReasonCode::gateway_own);
    if let Some(link) = facts
        .link
        .as_ref()
        .filter(|l| l.status != LinkStatus::Available)
    {
        if gateway_integration {
            let why = match link.status {
                LinkStatus::Inactive => "no traffic went through it for 60 days, so API Gateway deleted its network interfaces; the next request re-provisions them, which takes minutes",
                LinkStatus::Failed => "API Gateway could not create or keep it (its status message says why)",
                LinkStatus::Pending => "it is still being created",
                LinkStatus::Deleting => "it is being deleted",
                LinkStatus::Available => "",
            };
            let message = link
                .message
                .as_deref()
                .map(|m| format!(" (\"{m}\")"))
                .unwrap_or_default();
            code = Some(ReasonCode::LinkFailed);
            text = format!(
                "{}: VPC link {} is {}{message}: {why}; the probe: {text}",
                chain.hops[0].name,
                link.id,
                link.status.as_str()
            );
        }
    }
    // The load balancer's own view of the hops it sends to, for the blamed hop and the one
    // behind it.
    let mut seen = Vec::new();
    for i in [broken, broken + 1] {
        let Some(targets) = facts.targets.get(&i) else {
            continue;
        };
        let bad: Vec<String> = targets
            .iter()
            .filter(|t| t.state != "healthy")
            .map(|t| {
                let mut s = format!("{} {}", t.target, t.state);
                if let Some(r) = &t.reason {
                    s.push_str(&format!(" ({r}"));
                    if let Some(d) = &t.description {
                        s.push_str(&format!(": {d}"));
                    }
                    s.push(')');
                }
                s
            })
            .collect();
        if !bad.is_empty() {
            let hop = chain.hops.get(i).map_or("", |h| h.name.as_str());
            seen.push(format!(
                "the load balancer reports {hop} {}",
                bad.join(", ")
            ));
        }
    }
    if !seen.is_empty() {
        text = format!("{text}; {}", seen.join("; "));
    }
    // What the security groups and NACLs say of the edges the blamed hop sends on.
    if let Some(hop) = chain
        .hops
        .get(broken)
        .filter(|_| !code.is_some_and(ReasonCode::gateway_own))
    {
        let blocked = blocked_edges(facts, &hop.name);
        let judged = facts
            .path
            .iter()
            .any(|e| e.from == hop.name && e.purpose == Purpose::Traffic);
        if !blocked.is_empty() {
            let quoted: Vec<String> = blocked.iter().map(|e| quote(e)).collect();
            text = format!("{text}; the rules say: {}", quoted.join("; "));
        } else if judged && code == Some(ReasonCode::SgDrop) {
            text = format!(
                "{text}; yet every security group and NACL rule on {}'s edges allows this traffic: look at what they do not cover (a route table, a host firewall, an NLB's own security group for the agent)",
                hop.name
            );
        }
    }
    (code, Some(text))
}

/// API Gateway's own words on a request, as a reason quotes them.
fn quote_words(w: &GatewayWords, sent: &[Header]) -> String {
    let source = match w.source {
        Some(LogSource::ExecutionLog) => "execution log",
        _ => "access log",
    };
    let mut parts = Vec::new();
    if let Some(t) = &w.response_type {
        parts.push(format!("responseType {}", quoted(t, sent)));
    }
    if let Some(e) = &w.integration_error {
        parts.push(format!("integration error {:?}", quoted(e, sent)));
    }
    if let Some(s) = &w.integration_status {
        parts.push(format!("integration status {}", quoted(s, sent)));
    }
    if let Some(m) = &w.message {
        parts.push(format!("message {:?}", quoted(m, sent)));
    }
    if parts.is_empty() {
        parts.push("no error fields in the record".to_string());
    }
    format!(
        "; API Gateway's {source} of request {}: {}",
        quoted(&w.request_id, sent),
        parts.join(", ")
    )
}

fn judge_alone(
    chain: &Chain,
    pass: &[bool],
    results: &[ProbeResult],
    words: Option<&GatewayWords>,
) -> Verdict {
    let location = locate(pass);
    let round = Round {
        chain,
        results,
        words,
    };
    let gateway_first = !location.up
        && chain.hops.first().is_some_and(|h| h.role == Role::Gateway)
        && results.len() == chain.hops.len();
    let own = gateway_first
        && matches!(round.answered(), Some(Answered::Gateway { answer, .. }) if answer.code.gateway_own());
    let broken = if own { Some(0) } else { location.broken };
    let judged = broken.filter(|b| *b < results.len()).map(|b| {
        let next_passes = b + 1 < pass.len() && pass[b + 1];
        if results[b].outcome == Outcome::AgentCredentials {
            // Never read as the gateway's refusal or the link's failure: nothing was sent.
            agent_reason(chain, b, &results[b])
        } else if chain.hops[b].role == Role::Gateway && b == 0 {
            gateway_reason(&round, next_passes)
        } else if next_passes {
            hop_reason(&round, b)
        } else {
            last_reason(&round, b)
        }
    });
    Verdict {
        up: location.up,
        broken,
        blind_spots: location.blind_spots,
        code: judged.as_ref().map(|j| j.0),
        reason: judged.map(|j| j.1),
        contradictions: Vec::new(),
    }
}

/// A hop the agent did not probe, for want of its credentials.
fn agent_reason(chain: &Chain, b: usize, r: &ProbeResult) -> (ReasonCode, String) {
    let hop = &chain.hops[b];
    let method = match &hop.auth {
        Some(crate::config::Auth::SigV4(_)) => "auth.sigv4",
        Some(crate::config::Auth::OAuth2(_)) => "auth.oauth2",
        None => "auth",
    };
    (
        ReasonCode::AgentCredentials,
        format!(
            "{}: {}; the agent has no credentials for {method}, so it sent nothing: the agent's own failure, which says nothing of the chain (fix the agent's credentials, role or client)",
            hop.name,
            r.detail.as_deref().unwrap_or("not sent")
        ),
    )
}

/// Why a blind spot is one: users pass through it, the agent can't reach it.
pub fn blind_spot_reason(chain: &Chain, hop: usize, result: &ProbeResult) -> String {
    let outer = chain.hops[..hop]
        .iter()
        .rev()
        .map(|h| h.name.as_str())
        .next()
        .unwrap_or("the gateway");
    let this = &chain.hops[hop];
    if result.outcome == Outcome::AgentCredentials {
        return agent_reason(chain, hop, result).1;
    }
    let why = match result.outcome {
        Outcome::Tls => tls_hint(this, result),
        Outcome::Reset => proxy_hint(chain, hop).unwrap_or_else(|| {
            format!(
                "its security group probably does not allow the agent on port {}",
                this.url.port
            )
        }),
        _ => format!(
            "its security group probably does not allow the agent on port {}",
            this.url.port
        ),
    };
    format!(
        "{}: {} from the agent while traffic through {outer} is served; blind spot: {why}",
        this.name,
        result.outcome.as_str().replace('_', " "),
    )
}

/// One hop's state change, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub hop: usize,
    /// `None` on the first round.
    pub from: Option<bool>,
    pub to: bool,
}

/// Debounced hop states of one chain across rounds.
#[derive(Debug, Clone)]
pub struct ChainTracker {
    states: Vec<HopState>,
    thresholds: Thresholds,
}

impl ChainTracker {
    pub fn new(chain: &Chain) -> Self {
        ChainTracker {
            states: vec![HopState::new(); chain.hops.len()],
            thresholds: chain.thresholds,
        }
    }

    /// Feeds a round; returns the debounced pass/fail per hop, the verdict on them, and the
    /// hops whose state changed.
    pub fn update(
        &mut self,
        chain: &Chain,
        results: &[ProbeResult],
        facts: Option<&ChainFacts>,
        words: Option<&GatewayWords>,
    ) -> (Vec<bool>, Verdict, Vec<Change>) {
        let mut changes = Vec::new();
        let mut pass = Vec::with_capacity(results.len());
        for (i, (state, result)) in self.states.iter_mut().zip(results).enumerate() {
            if let Some((from, to)) = state.observe(result.outcome.is_ok(), self.thresholds) {
                changes.push(Change { hop: i, from, to });
            }
            pass.push(state.up.unwrap_or(false));
        }
        let verdict = judge_with(chain, &pass, results, facts, words);
        (pass, verdict, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Evidence;

    /// Patterns written out by hand, `P` pass and `F` fail, outermost first:
    /// (pattern, up, broken, blind spots).
    const TABLE: &[(&str, bool, Option<usize>, &[usize])] = &[
        // two hops
        ("PP", true, None, &[]),
        ("PF", true, None, &[1]),
        ("FP", false, Some(0), &[]),
        ("FF", false, Some(1), &[]),
        // three hops
        ("PPP", true, None, &[]),
        ("PPF", true, None, &[2]),
        ("PFP", true, None, &[1]),
        ("PFF", true, None, &[1, 2]),
        ("FPP", false, Some(0), &[]),
        ("FPF", false, Some(0), &[2]),
        ("FFP", false, Some(1), &[]),
        ("FFF", false, Some(2), &[]),
        // four hops
        ("PPPP", true, None, &[]),
        ("PPPF", true, None, &[3]),
        ("PPFP", true, None, &[2]),
        ("PPFF", true, None, &[2, 3]),
        ("PFPP", true, None, &[1]),
        ("PFPF", true, None, &[1, 3]),
        ("PFFP", true, None, &[1, 2]),
        ("PFFF", true, None, &[1, 2, 3]),
        ("FPPP", false, Some(0), &[]),
        ("FPPF", false, Some(0), &[3]),
        ("FPFP", false, Some(0), &[2]),
        ("FPFF", false, Some(0), &[2, 3]),
        ("FFPP", false, Some(1), &[]),
        ("FFPF", false, Some(1), &[3]),
        ("FFFP", false, Some(2), &[]),
        ("FFFF", false, Some(3), &[]),
    ];

    #[test]
    fn every_pattern_of_two_three_and_four_hops() {
        for n in 2..=4 {
            let rows = TABLE.iter().filter(|r| r.0.len() == n).count();
            assert_eq!(rows, 1 << n, "the table covers every {n}-hop pattern");
        }
        for (pattern, up, broken, blind) in TABLE {
            let pass: Vec<bool> = pattern.chars().map(|c| c == 'P').collect();
            let got = locate(&pass);
            assert_eq!(
                got,
                Location {
                    up: *up,
                    broken: *broken,
                    blind_spots: blind.to_vec()
                },
                "pattern {pattern}"
            );
        }
    }

    fn chain(kind: &str, hops: &[(&str, &str)], extra: &str) -> Chain {
        let mut text = format!("[[chain]]\nname = \"c\"\nkind = \"{kind}\"\n");
        for (name, url) in hops {
            text.push_str(&format!(
                "[[chain.hop]]\nname = \"{name}\"\nurl = \"{url}\"\n"
            ));
            // `hop:key = value` lines of `extra` go to that hop.
            for line in extra.lines() {
                if let Some(more) = line.strip_prefix(&format!("{name}:")) {
                    text.push_str(more);
                    text.push('\n');
                }
            }
        }
        let env = |n: &str| (n == "KEY").then(|| "k3y-0123456789:abcdef".to_string());
        match crate::config::load_str("c.toml", &text, &env) {
            Ok(c) => (*c.chains[0]).clone(),
            Err(e) => panic!("{e}"),
        }
    }

    fn t1(extra: &str) -> Chain {
        chain(
            "rest-nlb",
            &[
                ("gateway", "https://api.lab/orders"),
                ("nlb", "http://nlb.lab/"),
                ("target", "http://t.lab/"),
            ],
            extra,
        )
    }

    fn t2() -> Chain {
        chain(
            "rest-nlb-alb",
            &[
                ("gateway", "https://api.lab/orders"),
                ("nlb", "http://nlb.lab/"),
                ("alb", "http://alb.lab/"),
                ("target", "http://t.lab/"),
            ],
            "",
        )
    }

    fn t4() -> Chain {
        chain(
            "http-alb",
            &[
                ("gateway", "https://api.lab/"),
                ("alb", "http://alb.lab/"),
                ("target", "http://t.lab/"),
            ],
            "",
        )
    }

    fn r(outcome: Outcome) -> ProbeResult {
        ProbeResult {
            outcome,
            status: (outcome == Outcome::Ok).then_some(200),
            total: std::time::Duration::ZERO,
            phases: Default::default(),
            started_at: std::time::SystemTime::UNIX_EPOCH,
            remote: None,
            evidence: Evidence::default(),
            body: Default::default(),
            detail: None,
            trace_id: String::new(),
            cert_not_after: None,
        }
    }

    fn answer(
        status: u16,
        error_type: Option<&str>,
        message: Option<&str>,
        server: Option<&str>,
    ) -> ProbeResult {
        ProbeResult {
            status: Some(status),
            // Shaped like API Gateway's own: a JSON body holding only the message.
            evidence: Evidence {
                error_type: error_type.map(str::to_string),
                message: message.map(str::to_string),
                message_only: message.is_some(),
                content_type: Some(JSON.to_string()),
                server: server.map(str::to_string),
                ..Evidence::default()
            },
            ..r(Outcome::HttpStatus)
        }
    }

    fn judged(chain: &Chain, results: Vec<ProbeResult>) -> Verdict {
        let pass: Vec<bool> = results.iter().map(|r| r.outcome.is_ok()).collect();
        judge(chain, &pass, &results)
    }

    fn not_sent(why: &str) -> ProbeResult {
        ProbeResult {
            detail: Some(format!("not sent: {why}")),
            ..r(Outcome::AgentCredentials)
        }
    }

    /// A probe the agent could not authenticate is the agent's failure: `agent_credentials`
    /// wherever the pattern puts it (the gateway with everything behind passing, the last hop
    /// with nothing passing, an inner hop as a blind spot), never the gateway's refusal, the
    /// link's failure or the target's, whatever discovery says of the link. A real fault
    /// behind an unprobed gateway is still found.
    #[test]
    fn a_probe_not_sent_for_want_of_credentials_blames_the_agent() {
        let mut chain = t2();
        chain.hops[0].auth = Some(crate::config::Auth::SigV4(crate::config::SigV4 {
            region: "eu-west-1".into(),
            service: "execute-api".into(),
            role_arn: None,
            external_id: None,
        }));
        let refused = "the token endpoint https://idp/token refused the client: 401 invalid_client";
        let ok = || r(Outcome::Ok);
        let v = judged(&chain, vec![not_sent(refused), ok(), ok(), ok()]);
        assert_eq!(
            (v.up, v.broken, v.code),
            (false, Some(0), Some(ReasonCode::AgentCredentials))
        );
        let text = v.reason.unwrap_or_default();
        assert!(
            text.starts_with("gateway: not sent: the token endpoint"),
            "{text}"
        );
        assert!(
            text.contains("auth.sigv4") && text.contains("agent's own failure"),
            "{text}"
        );

        // An INACTIVE link read by discovery does not turn it into link_failed.
        let facts = ChainFacts {
            link: Some(crate::facts::LinkFact {
                id: "vpcl-1".into(),
                status: LinkStatus::Inactive,
                message: None,
            }),
            ..ChainFacts::default()
        };
        let results = vec![not_sent(refused), ok(), ok(), ok()];
        let pass: Vec<bool> = results.iter().map(|r| r.outcome.is_ok()).collect();
        let v = judge_with(&chain, &pass, &results, Some(&facts), None);
        assert_eq!(v.code, Some(ReasonCode::AgentCredentials));

        // Every hop unprobed: the last one is blamed, for the agent's credentials.
        let all: Vec<ProbeResult> = (0..4).map(|_| not_sent("no AWS credentials")).collect();
        assert_eq!(judged(&chain, all).code, Some(ReasonCode::AgentCredentials));

        // The gateway unprobed and the NLB dropping while the ALB answers: the NLB's fault is
        // real evidence, and it is what is blamed.
        let v = judged(
            &chain,
            vec![not_sent(refused), r(Outcome::ConnectTimeout), ok(), ok()],
        );
        assert_eq!((v.broken, v.code), (Some(1), Some(ReasonCode::SgDrop)));

        // An inner hop unprobed while the gateway passes: a blind spot, said to be the agent's.
        let results = vec![ok(), not_sent(refused), ok(), ok()];
        let v = judged(&chain, results.clone());
        assert!(v.up && v.blind_spots == [1]);
        let why = blind_spot_reason(&chain, 1, &results[1]);
        assert!(why.contains("agent's own failure"), "{why}");
    }

    #[test]
    fn a_secret_handed_back_in_an_error_header_is_not_quoted() {
        let chain = t1("gateway:headers = { x-api-key = \"${KEY}\", x-team = \"InternalServerErrorException\" }");
        let reason_for = |error_type: &str| {
            let results = vec![
                answer(500, Some(error_type), None, None),
                r(Outcome::Ok),
                r(Outcome::Ok),
            ];
            judged(&chain, results).reason.unwrap_or_default()
        };
        // The whole value, a part of it (the probe keeps what precedes a ':'), or more.
        for reflected in [
            "k3y-0123456789:abcdef",
            "k3y-0123456789",
            "Bad key k3y-0123456789:abcdef!",
        ] {
            let text = reason_for(reflected);
            assert!(text.contains("x-amzn-ErrorType <redacted>"), "{text}");
            assert!(!text.contains("0123456789"), "{text}");
        }
        // Only secret values are compared: a plain header's value may be quoted.
        assert!(reason_for("InternalServerErrorException").contains("InternalServerErrorException"));
    }

    /// Evidence as a probe reads it from headers and a body.
    fn seen(error_type: Option<&str>, body: &str, content_type: &str, remapped: bool) -> Evidence {
        let doc: Option<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_str(body).ok();
        let message = doc.as_ref().and_then(|d| {
            d.get("message")
                .or_else(|| d.get("Message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        });
        Evidence {
            error_type: error_type.map(str::to_string),
            message_only: message.is_some() && doc.as_ref().is_some_and(|d| d.len() == 1),
            message,
            content_type: (!content_type.is_empty()).then(|| content_type.to_string()),
            remapped,
            // Every answer through API Gateway carries its request id.
            request_id: Some("3b0a9c9e-5f6b-4a7e-9d41-0c1f2e3d4a5b".to_string()),
            ..Evidence::default()
        }
    }

    const JSON: &str = "application/json";

    /// Whose each answer is, and what the gateway's own mean: every documented gateway response
    /// (supported-gateway-response-types.html; an HTTP API's default bodies), its pass-through
    /// twin (the same status from the application, which HTTP_PROXY passes on), a customized
    /// response whose status was remapped, and a backend that sets x-amzn-ErrorType itself.
    /// `None` in the last column: the backend's answer.
    #[test]
    fn whose_answer_it_is() {
        use ReasonCode::*;
        type Row<'a> = (
            &'a str,
            Api,
            u16,
            Option<&'a str>,
            &'a str,
            &'a str,
            bool,
            Option<ReasonCode>,
        );
        let table: &[Row] = &[
            // REST: the gateway's own answers carry x-amzn-ErrorType.
            (
                "throttled",
                Api::Rest,
                429,
                Some("TooManyRequestsException"),
                r#"{"message":"Too Many Requests"}"#,
                JSON,
                false,
                Some(GatewayThrottled),
            ),
            (
                "quota",
                Api::Rest,
                429,
                Some("LimitExceededException"),
                r#"{"message":"Limit Exceeded"}"#,
                JSON,
                false,
                Some(GatewayThrottled),
            ),
            (
                "waf / api key / policy",
                Api::Rest,
                403,
                Some("ForbiddenException"),
                r#"{"message":"Forbidden"}"#,
                JSON,
                false,
                Some(GatewayRefused),
            ),
            (
                "iam or authorizer deny",
                Api::Rest,
                403,
                Some("AccessDeniedException"),
                r#"{"Message":"User is not authorized to access this resource with an explicit deny"}"#,
                JSON,
                false,
                Some(GatewayRefused),
            ),
            (
                "bad signature",
                Api::Rest,
                403,
                Some("InvalidSignatureException"),
                r#"{"message":"Signature expired"}"#,
                JSON,
                false,
                Some(GatewayRefused),
            ),
            (
                "incomplete signature",
                Api::Rest,
                403,
                Some("IncompleteSignatureException"),
                r#"{"message":"Authorization header requires 'Credential' parameter"}"#,
                JSON,
                false,
                Some(GatewayRefused),
            ),
            (
                "missing path or method",
                Api::Rest,
                403,
                Some("MissingAuthenticationTokenException"),
                r#"{"message":"Missing Authentication Token"}"#,
                JSON,
                false,
                Some(GatewayNoRoute),
            ),
            (
                "authorizer unauthorized",
                Api::Rest,
                401,
                Some("UnauthorizedException"),
                r#"{"message":"Unauthorized"}"#,
                JSON,
                false,
                Some(GatewayRefused),
            ),
            (
                "resource not found",
                Api::Rest,
                404,
                Some("NotFoundException"),
                r#"{"message":"Not Found"}"#,
                JSON,
                false,
                Some(GatewayNoRoute),
            ),
            (
                "request validation",
                Api::Rest,
                400,
                Some("BadRequestException"),
                r#"{"message":"Invalid request body"}"#,
                JSON,
                false,
                Some(GatewayRefused),
            ),
            (
                "authorizer misconfigured",
                Api::Rest,
                500,
                Some("AuthorizerConfigurationException"),
                r#"{"message":null}"#,
                JSON,
                false,
                Some(GatewayAuthorizerFailed),
            ),
            (
                "authorizer failed",
                Api::Rest,
                500,
                Some("AuthorizerFailureException"),
                r#"{"message":null}"#,
                JSON,
                false,
                Some(GatewayAuthorizerFailed),
            ),
            (
                "integration unusable",
                Api::Rest,
                500,
                Some("InternalServerErrorException"),
                r#"{"message":"Internal server error"}"#,
                JSON,
                false,
                Some(LinkFailed),
            ),
            (
                "integration timeout",
                Api::Rest,
                504,
                Some("InternalServerErrorException"),
                r#"{"message":"Endpoint request timed out"}"#,
                JSON,
                false,
                Some(IntegrationTimeout),
            ),
            (
                "integration failure",
                Api::Rest,
                504,
                Some("InternalServerErrorException"),
                r#"{"message":"Network error communicating with endpoint"}"#,
                JSON,
                false,
                Some(IntegrationFailure),
            ),
            (
                "bad integration answer",
                Api::Rest,
                502,
                Some("InternalServerErrorException"),
                r#"{"message":"Internal server error"}"#,
                JSON,
                false,
                Some(IntegrationFailure),
            ),
            // Customized gateway responses keep x-amzn-ErrorType whatever status they map to.
            (
                "throttling remapped to 503",
                Api::Rest,
                503,
                Some("TooManyRequestsException"),
                r#"{"error":"slow down"}"#,
                JSON,
                false,
                Some(GatewayThrottled),
            ),
            (
                "missing token remapped to 404",
                Api::Rest,
                404,
                Some("MissingAuthenticationTokenException"),
                r#"{"error":"no such thing"}"#,
                JSON,
                false,
                Some(GatewayNoRoute),
            ),
            // Their pass-through twins: the application's answers carry no error type.
            (
                "app 429",
                Api::Rest,
                429,
                None,
                r#"{"message":"Too Many Requests"}"#,
                JSON,
                true,
                None,
            ),
            (
                "app 401",
                Api::Rest,
                401,
                None,
                r#"{"message":"Unauthorized"}"#,
                JSON,
                true,
                None,
            ),
            (
                "app 403",
                Api::Rest,
                403,
                None,
                r#"{"message":"Forbidden"}"#,
                JSON,
                true,
                None,
            ),
            (
                "app 403 bare",
                Api::Rest,
                403,
                None,
                "denied",
                "text/plain",
                false,
                None,
            ),
            (
                "app 404",
                Api::Rest,
                404,
                None,
                r#"{"message":"Missing Authentication Token"}"#,
                JSON,
                true,
                None,
            ),
            (
                "app 500",
                Api::Rest,
                500,
                None,
                r#"{"message":"Internal server error"}"#,
                JSON,
                true,
                None,
            ),
            (
                "app 504",
                Api::Rest,
                504,
                None,
                "<html>upstream timed out</html>",
                "text/html",
                true,
                None,
            ),
            // A backend that sends x-amzn-ErrorType itself: its other headers give it away.
            (
                "app sets the error type",
                Api::Rest,
                429,
                Some("TooManyRequestsException"),
                r#"{"message":"Too Many Requests"}"#,
                JSON,
                true,
                None,
            ),
            // HTTP APIs: an exact default body, no error type, no backend headers.
            (
                "http no route",
                Api::Http,
                404,
                None,
                r#"{"message":"Not Found"}"#,
                JSON,
                false,
                Some(GatewayNoRoute),
            ),
            (
                "http jwt refused",
                Api::Http,
                401,
                None,
                r#"{"message":"Unauthorized"}"#,
                JSON,
                false,
                Some(GatewayRefused),
            ),
            (
                "http forbidden",
                Api::Http,
                403,
                None,
                r#"{"message":"Forbidden"}"#,
                JSON,
                false,
                Some(GatewayRefused),
            ),
            (
                "http throttled",
                Api::Http,
                429,
                None,
                r#"{"message":"Too Many Requests"}"#,
                JSON,
                false,
                Some(GatewayThrottled),
            ),
            (
                "http too large",
                Api::Http,
                413,
                None,
                r#"{"message":"Request Entity Too Large"}"#,
                JSON,
                false,
                Some(GatewayRefused),
            ),
            (
                "http integration error",
                Api::Http,
                500,
                None,
                r#"{"message":"Internal Server Error"}"#,
                JSON,
                false,
                Some(LinkFailed),
            ),
            (
                "http unavailable",
                Api::Http,
                503,
                None,
                r#"{"message":"Service Unavailable"}"#,
                JSON,
                false,
                Some(IntegrationFailure),
            ),
            (
                "http default body, no content type",
                Api::Http,
                404,
                None,
                r#"{"message":"Not Found"}"#,
                "",
                false,
                Some(GatewayNoRoute),
            ),
            // Their pass-through twins.
            (
                "http app 404 with more keys",
                Api::Http,
                404,
                None,
                r#"{"message":"Not Found","path":"/prod/orders"}"#,
                JSON,
                false,
                None,
            ),
            (
                "http app 404 html",
                Api::Http,
                404,
                None,
                r#"{"message":"Not Found"}"#,
                "text/html",
                false,
                None,
            ),
            (
                "http app 404 remapped",
                Api::Http,
                404,
                None,
                r#"{"message":"Not Found"}"#,
                JSON,
                true,
                None,
            ),
            (
                "http app 429 text",
                Api::Http,
                429,
                None,
                "slow down",
                "text/plain",
                false,
                None,
            ),
            (
                "http app 500",
                Api::Http,
                500,
                None,
                r#"{"error":"boom"}"#,
                JSON,
                false,
                None,
            ),
            (
                "http app 401 other words",
                Api::Http,
                401,
                None,
                r#"{"message":"token expired"}"#,
                JSON,
                false,
                None,
            ),
            // HTTP APIs send no x-amzn-ErrorType: only a backend does.
            (
                "http app sets the error type",
                Api::Http,
                500,
                Some("InternalServerErrorException"),
                r#"{"message":"Internal Server Error"}"#,
                JSON,
                false,
                None,
            ),
            // A custom chain takes either evidence.
            (
                "custom, REST evidence",
                Api::Either,
                403,
                Some("ForbiddenException"),
                r#"{"message":"Forbidden"}"#,
                JSON,
                false,
                Some(GatewayRefused),
            ),
            (
                "custom, HTTP evidence",
                Api::Either,
                404,
                None,
                r#"{"message":"Not Found"}"#,
                JSON,
                false,
                Some(GatewayNoRoute),
            ),
            (
                "custom, neither",
                Api::Either,
                404,
                None,
                r#"{"detail":"no order"}"#,
                JSON,
                false,
                None,
            ),
        ];
        for (name, api, status, kind, body, content_type, remapped, want) in table {
            let got = match read_answer(
                *api,
                *status,
                &seen(*kind, body, content_type, *remapped),
                false,
                None,
            ) {
                Answered::Gateway { answer, .. } => Some(answer.code),
                Answered::Backend { .. } => None,
            };
            assert_eq!(got, *want, "{name}: {status} {kind:?} {body}");
        }
    }

    /// An answer without any request id never went through an integration: it is read as the
    /// gateway's, by its status (a hop with the gateway role is API Gateway, whatever the kind).
    #[test]
    fn an_answer_without_a_request_id_is_the_gateways() {
        let mut e = seen(
            None,
            r#"{"message":"The API id 'x' does not correspond to a deployed API Gateway API"}"#,
            JSON,
            false,
        );
        e.request_id = None;
        let code = |api, e: &Evidence| match read_answer(api, 404, e, false, None) {
            Answered::Gateway { answer, .. } => Some(answer.code),
            Answered::Backend { .. } => None,
        };
        assert_eq!(code(Api::Rest, &e), Some(ReasonCode::GatewayNoRoute));
        assert_eq!(code(Api::Http, &e), Some(ReasonCode::GatewayNoRoute));
        assert_eq!(code(Api::Either, &e), Some(ReasonCode::GatewayNoRoute));
        e.request_id = Some("r-1".into());
        assert_eq!(
            code(Api::Rest, &e),
            None,
            "with its id, the application's answer"
        );
    }

    /// The gateway's log decides where it was read: AWS's words outrank the headers.
    #[test]
    fn the_gateway_log_decides() {
        let words = |response_type: Option<&str>, status: Option<&str>| GatewayWords {
            request_id: "r-1".into(),
            source: Some(LogSource::AccessLog),
            response_type: response_type.map(str::to_string),
            integration_status: status.map(str::to_string),
            ..GatewayWords::default()
        };
        let code = |a: Answered| match a {
            Answered::Gateway { answer, .. } => Some(answer.code),
            Answered::Backend { .. } => None,
        };
        // A backend that sets x-amzn-ErrorType: the log says the integration answered 429.
        let spoof = seen(
            Some("TooManyRequestsException"),
            r#"{"message":"Too Many Requests"}"#,
            JSON,
            false,
        );
        assert_eq!(
            code(read_answer(Api::Rest, 429, &spoof, false, None)),
            Some(ReasonCode::GatewayThrottled),
            "without the log, the inference is fooled"
        );
        assert_eq!(
            code(read_answer(
                Api::Rest,
                429,
                &spoof,
                false,
                Some(&words(None, Some("429")))
            )),
            None
        );
        // A 504 with no error type would read as the application's; the log says timeout.
        let bare = seen(None, "", "", false);
        assert_eq!(
            code(read_answer(
                Api::Rest,
                504,
                &bare,
                false,
                Some(&words(Some("INTEGRATION_TIMEOUT"), None))
            )),
            Some(ReasonCode::IntegrationTimeout)
        );
        assert_eq!(
            code(read_answer(
                Api::Http,
                500,
                &bare,
                false,
                Some(&words(Some("AUTHORIZER_FAILURE"), None))
            )),
            Some(ReasonCode::GatewayAuthorizerFailed)
        );
        // An execution log's "Execution failed due to …" line is the gateway's own failure.
        let exec = GatewayWords {
            source: Some(LogSource::ExecutionLog),
            integration_error: Some("Execution failed due to configuration error: There was an internal error while executing your request".into()),
            ..words(None, None)
        };
        assert_eq!(
            code(read_answer(Api::Rest, 500, &bare, false, Some(&exec))),
            Some(ReasonCode::LinkFailed)
        );
    }

    #[test]
    fn an_http_api_503_at_its_integration_timeout_is_the_timeout() {
        let unavailable = seen(None, r#"{"message":"Service Unavailable"}"#, JSON, false);
        let code = |at_timeout| match read_answer(Api::Http, 503, &unavailable, at_timeout, None) {
            Answered::Gateway { answer, .. } => Some(answer.code),
            Answered::Backend { .. } => None,
        };
        assert_eq!(code(true), Some(ReasonCode::IntegrationTimeout));
        assert_eq!(code(false), Some(ReasonCode::IntegrationFailure));
        // Judged by the hop's integration_timeout against how long the answer took.
        let chain = chain(
            "http-alb",
            &[
                ("gateway", "https://api.lab/prod/orders"),
                ("alb", "http://alb.lab/"),
                ("target", "http://t.lab/"),
            ],
            "gateway:integration_timeout = \"2s\"",
        );
        let at = |ms: u64| {
            let mut g = answer(503, None, Some("Service Unavailable"), None);
            g.evidence = unavailable.clone();
            g.total = std::time::Duration::from_millis(ms);
            judged(&chain, vec![g, r(Outcome::Ok), r(Outcome::Ok)]).code
        };
        assert_eq!(at(1950), Some(ReasonCode::IntegrationTimeout));
        assert_eq!(at(40), Some(ReasonCode::IntegrationFailure));
    }

    /// An application's error, passed through, is never the gateway's nor the link's: blamed on
    /// the deepest hop that answers the same way, or `backend_status` when only the gateway's
    /// request (the path it sends) gets it.
    #[test]
    fn a_passed_through_answer_is_never_the_gateway_nor_the_link() {
        let ok = || r(Outcome::Ok);
        for status in [401, 403, 404, 429, 500, 502, 503, 504] {
            let app = || {
                let mut a = answer(status, None, None, None);
                a.evidence = seen(None, r#"{"error":"from the app"}"#, JSON, true);
                a
            };
            // Everyone gets it: the target is blamed.
            let v = judged(&t2(), vec![app(), app(), app(), app()]);
            assert_eq!(
                (v.broken, v.code),
                (Some(3), Some(ReasonCode::TargetError)),
                "{status}: {v:?}"
            );
            // Only the gateway's forwarded request gets it.
            let v = judged(&t2(), vec![app(), ok(), ok(), ok()]);
            assert_eq!(
                (v.broken, v.code),
                (Some(0), Some(ReasonCode::BackendStatus)),
                "{status}: {v:?}"
            );
            let text = v.reason.unwrap_or_default();
            assert!(
                text.contains(&format!("the integration answered {status}")),
                "{text}"
            );
            assert!(text.contains("nlb answers the agent on /"), "{text}");
            // Whatever the others do, never a gateway or link code.
            for behind in [r(Outcome::ConnectTimeout), app(), ok()] {
                let v = judged(&t4(), vec![app(), behind, ok()]);
                let code = v.code.unwrap_or(ReasonCode::Unknown);
                assert!(
                    !code.gateway_own()
                        && !matches!(
                            code,
                            ReasonCode::LinkFailed
                                | ReasonCode::IntegrationFailure
                                | ReasonCode::IntegrationTimeout
                        ),
                    "{status}: {code} {v:?}"
                );
            }
        }
        // An HTTP API stage sends its stage in the path: the reason names it.
        let v = judged(
            &t4(),
            vec![
                {
                    let mut a = answer(500, None, None, None);
                    a.evidence = seen(None, r#"{"error":"boom"}"#, JSON, false);
                    a
                },
                ok(),
                ok(),
            ],
        );
        assert_eq!(v.code, Some(ReasonCode::BackendStatus));
        assert!(v.reason.unwrap_or_default().contains("the stage included"));
    }

    /// The gateway's own refusals keep the blame whatever is behind, and never name the link.
    #[test]
    fn gateway_own_answers_never_name_the_link() {
        let rows: &[(u16, Option<&str>, &str, ReasonCode)] = &[
            (
                429,
                Some("TooManyRequestsException"),
                r#"{"message":"Too Many Requests"}"#,
                ReasonCode::GatewayThrottled,
            ),
            (
                403,
                Some("ForbiddenException"),
                r#"{"message":"Forbidden"}"#,
                ReasonCode::GatewayRefused,
            ),
            (
                403,
                Some("MissingAuthenticationTokenException"),
                r#"{"message":"Missing Authentication Token"}"#,
                ReasonCode::GatewayNoRoute,
            ),
            (
                401,
                Some("UnauthorizedException"),
                r#"{"message":"Unauthorized"}"#,
                ReasonCode::GatewayRefused,
            ),
            (
                500,
                Some("AuthorizerConfigurationException"),
                r#"{"message":null}"#,
                ReasonCode::GatewayAuthorizerFailed,
            ),
        ];
        for (status, kind, body, code) in rows {
            let mut g = answer(*status, None, None, None);
            g.evidence = seen(*kind, body, JSON, false);
            let v = judged(
                &t2(),
                vec![g, r(Outcome::Ok), r(Outcome::Ok), r(Outcome::Ok)],
            );
            assert_eq!((v.broken, v.code), (Some(0), Some(*code)));
            let text = v.reason.unwrap_or_default();
            assert!(!text.contains("VPC link"), "{text}");
            assert!(text.contains("the gateway answered on its own"), "{text}");
        }
        assert_eq!(
            gateway_answer(302, None, None),
            None,
            "a redirect is no gateway error"
        );
    }

    #[test]
    fn a_gateway_answering_on_its_own_keeps_the_blame_whatever_is_behind_it() {
        // Throttled at the gateway while the NLB fails too: users are stopped at the gateway.
        let v = judged(
            &t2(),
            vec![
                answer(429, Some("TooManyRequestsException"), None, None),
                r(Outcome::ConnectTimeout),
                r(Outcome::Ok),
                r(Outcome::Ok),
            ],
        );
        assert_eq!(
            (v.broken, v.code),
            (Some(0), Some(ReasonCode::GatewayThrottled))
        );
        // An integration error with the NLB failing too: the blame moves inward, as before.
        let v = judged(
            &t2(),
            vec![
                answer(500, None, None, None),
                r(Outcome::ConnectTimeout),
                r(Outcome::Ok),
                r(Outcome::Ok),
            ],
        );
        assert_eq!((v.broken, v.code), (Some(1), Some(ReasonCode::SgDrop)));
    }

    #[test]
    fn reasons_follow_the_brief() {
        let ok = || r(Outcome::Ok);
        let v = judged(
            &t2(),
            vec![
                answer(500, Some("InternalServerErrorException"), None, None),
                ok(),
                ok(),
                ok(),
            ],
        );
        assert_eq!(v.code, Some(ReasonCode::LinkFailed));
        assert!(v.reason.as_deref().unwrap_or("").starts_with(
            "gateway: 500 with x-amzn-ErrorType InternalServerErrorException: API Gateway cannot use its integration (API_CONFIGURATION_ERROR) while nlb answers the agent; VPC link or endpoint service"
        ), "{v:?}");

        let v = judged(
            &t2(),
            vec![
                r(Outcome::ConnectTimeout),
                r(Outcome::ConnectTimeout),
                ok(),
                ok(),
            ],
        );
        assert_eq!(v.code, Some(ReasonCode::SgDrop));
        assert!(
            v.reason
                .as_deref()
                .unwrap_or("")
                .contains("alb-sg probably lacks the NLB addresses or VPC CIDR"),
            "{v:?}"
        );

        let awselb = Some("awselb/2.0");
        let v = judged(
            &t4(),
            vec![
                answer(504, None, None, None),
                answer(504, None, None, awselb),
                ok(),
            ],
        );
        assert_eq!(v.code, Some(ReasonCode::UpstreamUnreachable));
        assert!(
            v.reason
                .as_deref()
                .unwrap_or("")
                .contains("target-sg probably lacks alb-sg on port 80"),
            "{v:?}"
        );

        // The ALB accepted and waits on a dropped target: not a drop in front of the ALB.
        let v = judged(&t4(), vec![r(Outcome::Timeout), r(Outcome::Timeout), ok()]);
        assert_eq!(
            (v.broken, v.code),
            (Some(1), Some(ReasonCode::UpstreamUnreachable))
        );
        let text = v.reason.unwrap_or_default();
        assert!(
            text.contains("target-sg probably lacks alb's addresses (alb-sg) on port 80"),
            "{text}"
        );
        assert!(!text.contains("drops traffic to alb"), "{text}");
        // A connect that never completes is the drop in front of the ALB.
        let v = judged(
            &t4(),
            vec![r(Outcome::Timeout), r(Outcome::ConnectTimeout), ok()],
        );
        assert_eq!(v.code, Some(ReasonCode::SgDrop));
        assert!(v
            .reason
            .unwrap_or_default()
            .contains("drops traffic to alb on port 80"));

        let v = judged(
            &t1(""),
            vec![
                r(Outcome::ConnectRefused),
                r(Outcome::ConnectRefused),
                r(Outcome::ConnectRefused),
            ],
        );
        assert_eq!(v.code, Some(ReasonCode::TargetDown));
        assert!(v
            .reason
            .unwrap_or_default()
            .contains("nothing listening on port 80"));

        let t5 = chain(
            "http-nlb",
            &[
                ("gateway", "https://api.lab/"),
                ("nlb", "http://nlb.lab/"),
                ("target", "http://t.lab/"),
            ],
            "",
        );
        let v = judged(
            &t5,
            vec![
                answer(503, None, Some("Service Unavailable"), None),
                ok(),
                ok(),
            ],
        );
        assert_eq!(v.code, Some(ReasonCode::IntegrationFailure));
        assert!(v
            .reason
            .unwrap_or_default()
            .contains("VPC link (INACTIVE after 60 idle days"));
    }

    /// Over PrivateLink the NLB's targets see the NLB; the agent's probe of an NLB that
    /// preserves client IPs arrives from the agent (brief §2).
    #[test]
    fn client_ip_preservation_decides_who_is_blamed() {
        let timed_out = || {
            answer(
                504,
                Some("InternalServerErrorException"),
                Some("Endpoint request timed out"),
                None,
            )
        };
        let ok = || r(Outcome::Ok);
        let v = judged(
            &t1("nlb:preserve_client_ip = true"),
            vec![timed_out(), ok(), ok()],
        );
        assert_eq!((v.broken, v.code), (Some(0), Some(ReasonCode::SgDrop)));
        let text = v.reason.unwrap_or_default();
        assert!(text.contains("target-sg probably allows the agent but lacks the NLB's addresses or VPC CIDR on port 80"), "{text}");
        let v = judged(&t1(""), vec![timed_out(), ok(), ok()]);
        assert_eq!(v.code, Some(ReasonCode::IntegrationTimeout));
        let text = v.reason.unwrap_or_default();
        assert!(
            text.contains("VPC link or endpoint service")
                && text.contains("target-sg may allow the agent"),
            "{text}"
        );
        let v = judged(
            &t1("nlb:preserve_client_ip = false"),
            vec![timed_out(), ok(), ok()],
        );
        assert_eq!(v.code, Some(ReasonCode::IntegrationTimeout));
        assert!(!v.reason.unwrap_or_default().contains("may allow"));
        // A v2 link: the NLB's targets see the link's ENIs, not the NLB: no PrivateLink rule.
        let v = judged(
            &t1("gateway:vpc_link = \"v2\"\nnlb:preserve_client_ip = true"),
            vec![timed_out(), ok(), ok()],
        );
        assert_eq!(v.code, Some(ReasonCode::IntegrationTimeout));
    }

    #[test]
    fn a_gateway_still_waiting_is_an_integration_timeout() {
        let v = judged(
            &t4(),
            vec![r(Outcome::Timeout), r(Outcome::Ok), r(Outcome::Ok)],
        );
        assert_eq!(v.code, Some(ReasonCode::IntegrationTimeout));
        let text = v.reason.unwrap_or_default();
        assert!(
            text.contains("the gateway itself waits up to 30s before its own 503"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_client_certificate_is_said() {
        let mut refused = r(Outcome::Tls);
        refused.evidence.tls_alert = Some("CertificateRequired".into());
        let v = judged(&t4(), vec![refused.clone(), r(Outcome::Ok), r(Outcome::Ok)]);
        assert_eq!(v.code, Some(ReasonCode::Tls));
        assert!(v
            .reason
            .unwrap_or_default()
            .contains("a client certificate is required"));
        let spot = blind_spot_reason(&t4(), 1, &refused);
        assert!(spot.contains("set client_cert and client_key"), "{spot}");
    }

    #[test]
    fn one_lost_round_does_not_flip_a_hop() {
        let t = Thresholds::default();
        let mut s = HopState::new();
        assert_eq!(s.observe(true, t), Some((None, true)));
        assert_eq!(s.observe(false, t), None, "one failure is not enough");
        assert_eq!(s.observe(true, t), None);
        assert_eq!(s.observe(false, t), None);
        assert_eq!(s.observe(false, t), Some((Some(true), false)));
        assert_eq!(s.up, Some(false));
        assert_eq!(s.observe(true, t), None);
        assert_eq!(s.observe(true, t), Some((Some(false), true)));
        let eager = Thresholds {
            down_after: 1,
            up_after: 3,
        };
        assert_eq!(s.observe(false, eager), Some((Some(true), false)));
        assert_eq!(s.observe(true, eager), None);
        assert_eq!(s.observe(true, eager), None);
        assert_eq!(s.observe(true, eager), Some((Some(false), true)));
    }
}

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

use crate::config::{Chain, Header, Hop, Role, Thresholds, VpcLink};
use crate::facts::{ChainFacts, Direction, EdgeVerdict, LinkStatus, Purpose};
use crate::probe::{Outcome, ProbeResult};

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
/// Alerts and dashboards group by it; the README's reason table says what each means and the
/// usual fix.
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
    /// None of the above.
    Unknown,
}

impl ReasonCode {
    /// Every code, in the order of the README's table.
    pub const ALL: [ReasonCode; 20] = [
        ReasonCode::GatewayUnreachable,
        ReasonCode::GatewayRefused,
        ReasonCode::GatewayNoRoute,
        ReasonCode::GatewayThrottled,
        ReasonCode::GatewayAuthorizerFailed,
        ReasonCode::LinkFailed,
        ReasonCode::IntegrationTimeout,
        ReasonCode::IntegrationFailure,
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

/// What API Gateway's answer says, from its status, `x-amzn-ErrorType` (first value) and the
/// `message` of its JSON body, REST and HTTP APIs alike. Sources: the gateway response types
/// and their default statuses (docs.aws.amazon.com/apigateway/latest/developerguide/
/// supported-gateway-response-types.html), the 403 error types
/// (repost.aws/knowledge-center/api-gateway-troubleshoot-403-forbidden), 429
/// (repost.aws/knowledge-center/api-gateway-429-limit), 5xx (…/api-gateway-5xx-error), and
/// the 403 of an execute-api VPC endpoint with private DNS (…/api-gateway-vpc-connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAnswer {
    pub code: ReasonCode,
    /// What it means, for the reason text.
    pub meaning: &'static str,
}

/// Reads one API Gateway answer; `None` for a status that is no error (2xx/3xx outside the
/// hop's `expect_status`).
pub fn gateway_answer(
    status: u16,
    error_type: Option<&str>,
    message: Option<&str>,
) -> Option<GatewayAnswer> {
    use ReasonCode::*;
    let answer = |code, meaning| Some(GatewayAnswer { code, meaning });
    let message = message.unwrap_or("").to_ascii_lowercase();
    match error_type.unwrap_or("") {
        "TooManyRequestsException" => {
            return answer(
                GatewayThrottled,
                "throttled: a stage, route, method, usage-plan or account rate limit is exceeded",
            )
        }
        "LimitExceededException" => {
            return answer(
                GatewayThrottled,
                "the usage plan's quota for this API key is used up",
            )
        }
        "ForbiddenException" => return answer(GatewayRefused, FORBIDDEN),
        "AccessDeniedException" => {
            return answer(
                GatewayRefused,
                "access denied: an authorizer, IAM or the resource policy denies the call",
            )
        }
        "InvalidSignatureException" | "IncompleteSignatureException" => {
            return answer(
                GatewayRefused,
                "the request's SigV4 signature is invalid or expired",
            )
        }
        "UnauthorizedException" => return answer(GatewayRefused, UNAUTHORIZED),
        "MissingAuthenticationTokenException" => return answer(GatewayNoRoute, MISSING_TOKEN),
        "NotFoundException" => return answer(GatewayNoRoute, NOT_FOUND),
        "BadRequestException" => {
            return answer(
                GatewayRefused,
                "the request fails the API's request validation",
            )
        }
        t if t.contains("Authorizer") => return answer(GatewayAuthorizerFailed, AUTHORIZER),
        _ => {}
    }
    match status {
        429 if message.contains("limit") => answer(
            GatewayThrottled,
            "the usage plan's quota for this API key is used up",
        ),
        429 => answer(
            GatewayThrottled,
            "throttled: a stage, route, method, usage-plan or account rate limit is exceeded",
        ),
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
        504 if message.contains("timed out") => answer(
            IntegrationTimeout,
            "the integration did not answer within the integration timeout",
        ),
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

const FORBIDDEN: &str = "Forbidden: an AWS WAF rule, a missing or invalid API key, or the resource policy (API Gateway gives the same answer for all three); also what an execute-api VPC endpoint with private DNS answers for an API that is not private";
const UNAUTHORIZED: &str =
    "the authorizer answered Unauthorized: the token the probe sends is missing, expired or invalid";
const MISSING_TOKEN: &str = "Missing Authentication Token: the path, method or stage does not exist (a REST API answers so for a missing resource), or the method requires IAM (SigV4) signing";
const NOT_FOUND: &str = "Not Found: no route matches the method and path";
const AUTHORIZER: &str =
    "the authorizer failed or is misconfigured (AUTHORIZER_FAILURE, AUTHORIZER_CONFIGURATION_ERROR)";

/// A chain and one round of its results, read by the diagnosis.
struct Round<'a> {
    chain: &'a Chain,
    results: &'a [ProbeResult],
}

impl Round<'_> {
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
        Outcome::HttpStatus => {
            let answer = r.status.and_then(|status| {
                gateway_answer(
                    status,
                    r.evidence.error_type.as_deref(),
                    r.evidence.message.as_deref(),
                )
            });
            match answer {
                Some(a) if a.code.gateway_own() => (
                    a.code,
                    format!(
                        "{}: {what}: {}; the gateway answered on its own, so nothing behind it was asked",
                        g.name, a.meaning
                    ),
                ),
                Some(a) if next_passes => integration(round, a.code, format!("{what}: {}", a.meaning)),
                Some(a) => (a.code, format!("{}: {what}: {}", g.name, a.meaning)),
                None => (ReasonCode::Unknown, format!("{}: {what}", g.name)),
            }
        }
        Outcome::Timeout => {
            let limit = round.chain.kind.integration_timeout();
            let waits = match limit {
                Some(limit) if g.timeout <= limit => format!(
                    "; the gateway itself waits up to {} before its own 504 (a gateway hop timeout above that would show it)",
                    crate::config::duration::format_duration(limit)
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
    judge_with(chain, pass, results, None)
}

/// [`judge`], with what AWS says of the chain (discovery): a VPC link that is not AVAILABLE is
/// the reason of a gateway integration failure, and a blamed load balancer's own view of its
/// targets is quoted.
pub fn judge_with(
    chain: &Chain,
    pass: &[bool],
    results: &[ProbeResult],
    facts: Option<&ChainFacts>,
) -> Verdict {
    let mut verdict = judge_alone(chain, pass, results);
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
        .filter(|e| e.from == hop && e.purpose == Purpose::Traffic && !e.allowed)
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

fn judge_alone(chain: &Chain, pass: &[bool], results: &[ProbeResult]) -> Verdict {
    let location = locate(pass);
    let round = Round { chain, results };
    let gateway_first = !location.up
        && chain.hops.first().is_some_and(|h| h.role == Role::Gateway)
        && results.len() == chain.hops.len();
    let own = gateway_first
        && results[0].outcome == Outcome::HttpStatus
        && results[0]
            .status
            .and_then(|s| {
                gateway_answer(
                    s,
                    results[0].evidence.error_type.as_deref(),
                    results[0].evidence.message.as_deref(),
                )
            })
            .is_some_and(|a| a.code.gateway_own());
    let broken = if own { Some(0) } else { location.broken };
    let judged = broken.filter(|b| *b < results.len()).map(|b| {
        let next_passes = b + 1 < pass.len() && pass[b + 1];
        if chain.hops[b].role == Role::Gateway && b == 0 {
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

/// Why a blind spot is one: users pass through it, the agent can't reach it.
pub fn blind_spot_reason(chain: &Chain, hop: usize, result: &ProbeResult) -> String {
    let outer = chain.hops[..hop]
        .iter()
        .rev()
        .map(|h| h.name.as_str())
        .next()
        .unwrap_or("the gateway");
    let this = &chain.hops[hop];
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
    ) -> (Vec<bool>, Verdict, Vec<Change>) {
        let mut changes = Vec::new();
        let mut pass = Vec::with_capacity(results.len());
        for (i, (state, result)) in self.states.iter_mut().zip(results).enumerate() {
            if let Some((from, to)) = state.observe(result.outcome.is_ok(), self.thresholds) {
                changes.push(Change { hop: i, from, to });
            }
            pass.push(state.up.unwrap_or(false));
        }
        let verdict = judge_with(chain, &pass, results, facts);
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
            evidence: Evidence {
                error_type: error_type.map(str::to_string),
                message: message.map(str::to_string),
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

    /// Every gateway answer of the brief (§3) pinned to its code.
    #[test]
    fn gateway_answers_pin_their_codes() {
        use ReasonCode::*;
        let table: &[(u16, Option<&str>, Option<&str>, ReasonCode)] = &[
            (
                429,
                Some("TooManyRequestsException"),
                Some("Too Many Requests"),
                GatewayThrottled,
            ),
            (
                429,
                Some("LimitExceededException"),
                Some("Limit Exceeded"),
                GatewayThrottled,
            ),
            (429, None, Some("Too Many Requests"), GatewayThrottled),
            (
                403,
                Some("ForbiddenException"),
                Some("Forbidden"),
                GatewayRefused,
            ),
            (403, None, Some("Forbidden"), GatewayRefused),
            (
                403,
                Some("AccessDeniedException"),
                Some("User is not authorized to access this resource with an explicit deny"),
                GatewayRefused,
            ),
            (
                403,
                Some("InvalidSignatureException"),
                Some("Signature expired"),
                GatewayRefused,
            ),
            (
                403,
                Some("MissingAuthenticationTokenException"),
                Some("Missing Authentication Token"),
                GatewayNoRoute,
            ),
            (
                403,
                None,
                Some("Missing Authentication Token"),
                GatewayNoRoute,
            ),
            (
                401,
                Some("UnauthorizedException"),
                Some("Unauthorized"),
                GatewayRefused,
            ),
            (401, None, Some("Unauthorized"), GatewayRefused),
            (404, None, Some("Not Found"), GatewayNoRoute),
            (
                500,
                Some("AuthorizerConfigurationException"),
                None,
                GatewayAuthorizerFailed,
            ),
            (
                500,
                Some("AuthorizerFailureException"),
                None,
                GatewayAuthorizerFailed,
            ),
            (
                500,
                Some("InternalServerErrorException"),
                Some("Internal server error"),
                LinkFailed,
            ),
            (500, None, Some("Internal Server Error"), LinkFailed),
            (502, None, Some("Internal server error"), IntegrationFailure),
            (503, None, Some("Service Unavailable"), IntegrationFailure),
            (
                504,
                Some("InternalServerErrorException"),
                Some("Endpoint request timed out"),
                IntegrationTimeout,
            ),
            (
                504,
                None,
                Some("Network error communicating with endpoint"),
                IntegrationFailure,
            ),
        ];
        for (status, kind, message, code) in table {
            let got = gateway_answer(*status, *kind, *message).map(|a| a.code);
            assert_eq!(got, Some(*code), "{status} {kind:?} {message:?}");
        }
        assert_eq!(
            gateway_answer(302, None, None),
            None,
            "a redirect is no gateway error"
        );
        // When the gateway answers on its own, nothing says the link is at fault.
        let chain = t2();
        for (status, kind, message, code) in table.iter().filter(|row| row.3.gateway_own()) {
            let v = judged(
                &chain,
                vec![
                    answer(*status, *kind, *message, None),
                    r(Outcome::Ok),
                    r(Outcome::Ok),
                    r(Outcome::Ok),
                ],
            );
            assert_eq!(v.code, Some(*code));
            assert_eq!(v.broken, Some(0));
            let text = v.reason.unwrap_or_default();
            assert!(!text.contains("VPC link"), "{text}");
            assert!(text.contains("the gateway answered on its own"), "{text}");
        }
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
            text.contains("the gateway itself waits up to 30s before its own 504"),
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

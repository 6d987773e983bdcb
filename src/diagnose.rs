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

use crate::config::{Chain, Header, Kind, Role, Thresholds};
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

/// What the diagnosis needs to know of one hop's probe.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub name: &'a str,
    pub role: Role,
    /// Port of the hop's URL: the port a security-group rule must open to reach it.
    pub port: u16,
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub evidence: &'a Evidence,
    /// The headers sent to the hop: the secret ones among them are never quoted back from
    /// its answer.
    pub sent: &'a [Header],
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

fn failure(o: &Observed<'_>) -> String {
    match (o.outcome, o.status) {
        (Outcome::HttpStatus, Some(status)) => {
            let mut text = status.to_string();
            if let Some(kind) = &o.evidence.error_type {
                text.push_str(&format!(" with x-amzn-ErrorType {}", quoted(kind, o.sent)));
            } else if o.evidence.server.as_deref() == Some("awselb/2.0") {
                text.push_str(" from the ALB (Server: awselb/2.0)");
            }
            text
        }
        (outcome, _) => outcome.as_str().replace('_', " "),
    }
}

/// The link a gateway failure points at, by kind (brief §1).
fn link(kind: Kind) -> &'static str {
    match kind {
        Kind::RestNlb | Kind::RestNlbAlb => "VPC link or endpoint service",
        Kind::RestAlb => "VPC link v2 or its security group",
        Kind::HttpAlb | Kind::HttpNlb | Kind::HttpCloudmap => {
            "VPC link (INACTIVE after 60 idle days, or httpapi-sg)"
        }
        Kind::Custom => "integration or VPC link",
    }
}

fn is_drop(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::ConnectTimeout | Outcome::Timeout)
}

fn is_refusal(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::ConnectRefused | Outcome::Reset)
}

/// A short reason for blaming `broken`, from its evidence, its inner neighbour `next` (which
/// passes, when present) and the chain kind. Uses the failure signatures of the brief (§3).
pub fn reason(kind: Kind, broken: &Observed<'_>, next: Option<&Observed<'_>>) -> String {
    let what = failure(broken);
    let Some(next) = next else {
        // Nothing answers, not even the target directly.
        let hint = if is_drop(broken.outcome) {
            format!("dropped on the way: a security group or NACL does not allow the agent on port {}, or the host is down", broken.port)
        } else if is_refusal(broken.outcome) {
            format!(
                "nothing listening on port {}: the target is down or on another port",
                broken.port
            )
        } else if broken.outcome == Outcome::Dns {
            "its name does not resolve".to_string()
        } else {
            "the target itself answers wrongly".to_string()
        };
        return format!("{}: {what} and no hop answers; {hint}", broken.name);
    };
    let (b, n) = (broken.name, next.name);
    match broken.role {
        Role::Gateway => {
            let answers = format!("{b}: {what} while {n} answers");
            match broken.outcome {
                Outcome::HttpStatus => format!("{answers}; {}", link(kind)),
                Outcome::Dns | Outcome::ConnectTimeout | Outcome::ConnectRefused | Outcome::Tls => format!(
                    "{answers}; the agent cannot reach the API endpoint itself (execute-api VPC endpoint, its DNS or security group)"
                ),
                _ => format!("{answers}; {}", link(kind)),
            }
        }
        Role::Nlb if is_drop(broken.outcome) => format!(
            "{b} -> {n}: {what} while {n} answers directly; {n}-sg probably lacks the NLB addresses or VPC CIDR on port {}",
            next.port
        ),
        Role::Nlb if is_refusal(broken.outcome) => format!(
            "{b} -> {n}: {what} while {n} answers directly; the NLB has no healthy target or its target group uses another port than {}",
            next.port
        ),
        Role::Alb if broken.outcome == Outcome::HttpStatus => {
            let hint = match broken.status {
                Some(502) => "the target reset or closed the connection, or the target group's protocol or TLS does not match".to_string(),
                Some(503) => "the target group has no registered targets".to_string(),
                Some(504) => format!("the ALB cannot reach the target in time; {n}-sg probably lacks alb-sg on port {}", next.port),
                _ => "the listener rules answer this path themselves".to_string(),
            };
            format!("{b} -> {n}: {what} while {n} answers directly; {hint}")
        }
        Role::Alb | Role::Target if is_refusal(broken.outcome) => format!(
            "{b}: {what} while {n} answers directly; nothing accepts on {b}'s port {}: listener removed or load balancer deleted",
            broken.port
        ),
        Role::Cloudmap if broken.outcome == Outcome::Dns => format!(
            "{b}: DNS lookup failed while {n} answers directly; the Cloud Map namespace or its VPC association"
        ),
        _ if is_drop(broken.outcome) => format!(
            "{b} -> {n}: {what} while {n} answers directly; a security group or NACL drops traffic to {b} on port {}",
            broken.port
        ),
        _ => format!("{b} -> {n}: {what} while {n} answers directly"),
    }
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
}

fn observed<'a>(chain: &'a Chain, results: &'a [ProbeResult], i: usize) -> Observed<'a> {
    let hop = &chain.hops[i];
    let r = &results[i];
    Observed {
        name: &hop.name,
        role: hop.role,
        port: hop.url.port,
        outcome: r.outcome,
        status: r.status,
        evidence: &r.evidence,
        sent: &hop.headers,
    }
}

/// Judges a round from each hop's pass or fail (raw, or debounced by [`ChainTracker`]) with the
/// round's results as evidence. `pass` and `results` are index-aligned with `chain.hops`.
pub fn judge(chain: &Chain, pass: &[bool], results: &[ProbeResult]) -> Verdict {
    let location = locate(pass);
    let reason = location.broken.map(|b| {
        let next = (b + 1 < pass.len() && pass[b + 1]).then(|| observed(chain, results, b + 1));
        reason(chain.kind, &observed(chain, results, b), next.as_ref())
    });
    Verdict {
        up: location.up,
        broken: location.broken,
        blind_spots: location.blind_spots,
        reason,
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
    format!(
        "{}: {} from the agent while traffic through {outer} is served; blind spot: its security group probably does not allow the agent on port {}",
        chain.hops[hop].name,
        result.outcome.as_str().replace('_', " "),
        chain.hops[hop].url.port
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
    ) -> (Vec<bool>, Verdict, Vec<Change>) {
        let mut changes = Vec::new();
        let mut pass = Vec::with_capacity(results.len());
        for (i, (state, result)) in self.states.iter_mut().zip(results).enumerate() {
            if let Some((from, to)) = state.observe(result.outcome.is_ok(), self.thresholds) {
                changes.push(Change { hop: i, from, to });
            }
            pass.push(state.up.unwrap_or(false));
        }
        let verdict = judge(chain, &pass, results);
        (pass, verdict, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn obs<'a>(
        name: &'a str,
        role: Role,
        port: u16,
        outcome: Outcome,
        status: Option<u16>,
        e: &'a Evidence,
    ) -> Observed<'a> {
        Observed {
            name,
            role,
            port,
            outcome,
            status,
            evidence: e,
            sent: &[],
        }
    }

    #[test]
    fn a_secret_handed_back_in_an_error_header_is_not_quoted() {
        let secret = |text: &str| {
            let mut value = http::HeaderValue::from_str(text).expect("value");
            value.set_sensitive(true);
            Header {
                name: http::HeaderName::from_static("x-api-key"),
                value,
            }
        };
        let plain = Header {
            name: http::HeaderName::from_static("x-team"),
            value: http::HeaderValue::from_static("InternalServerErrorException"),
        };
        let sent = [plain, secret("k3y-0123456789:abcdef")];
        let reason_for = |error_type: &str| {
            let evidence = Evidence {
                error_type: Some(error_type.into()),
                ..Evidence::default()
            };
            let gw = Observed {
                sent: &sent,
                ..obs(
                    "gateway",
                    Role::Gateway,
                    443,
                    Outcome::HttpStatus,
                    Some(500),
                    &evidence,
                )
            };
            reason(Kind::RestNlb, &gw, None)
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

    #[test]
    fn reasons_follow_the_brief() {
        let none = Evidence::default();
        let apigw = Evidence {
            error_type: Some("InternalServerErrorException".into()),
            ..Evidence::default()
        };
        let awselb = Evidence {
            server: Some("awselb/2.0".into()),
            ..Evidence::default()
        };
        let nlb = obs("nlb", Role::Nlb, 80, Outcome::Ok, Some(200), &none);
        let alb = obs("alb", Role::Alb, 80, Outcome::Ok, Some(200), &none);
        let target = obs("target", Role::Target, 8080, Outcome::Ok, Some(200), &none);

        let gw = obs(
            "gateway",
            Role::Gateway,
            443,
            Outcome::HttpStatus,
            Some(500),
            &apigw,
        );
        assert_eq!(
            reason(Kind::RestNlbAlb, &gw, Some(&nlb)),
            "gateway: 500 with x-amzn-ErrorType InternalServerErrorException while nlb answers; VPC link or endpoint service"
        );
        let dropped = obs("nlb", Role::Nlb, 80, Outcome::ConnectTimeout, None, &none);
        assert_eq!(
            reason(Kind::RestNlbAlb, &dropped, Some(&alb)),
            "nlb -> alb: connect timeout while alb answers directly; alb-sg probably lacks the NLB addresses or VPC CIDR on port 80"
        );
        let alb_504 = obs(
            "alb",
            Role::Alb,
            80,
            Outcome::HttpStatus,
            Some(504),
            &awselb,
        );
        assert_eq!(
            reason(Kind::HttpAlb, &alb_504, Some(&target)),
            "alb -> target: 504 from the ALB (Server: awselb/2.0) while target answers directly; the ALB cannot reach the target in time; target-sg probably lacks alb-sg on port 8080"
        );
        let gone = obs(
            "target",
            Role::Target,
            8080,
            Outcome::ConnectRefused,
            None,
            &none,
        );
        assert_eq!(
            reason(Kind::RestNlb, &gone, None),
            "target: connect refused and no hop answers; nothing listening on port 8080: the target is down or on another port"
        );
        let http_gw = obs(
            "gateway",
            Role::Gateway,
            443,
            Outcome::HttpStatus,
            Some(503),
            &none,
        );
        assert!(reason(Kind::HttpNlb, &http_gw, Some(&nlb))
            .ends_with("VPC link (INACTIVE after 60 idle days, or httpapi-sg)"));
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

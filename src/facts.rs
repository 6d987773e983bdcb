//! What AWS says of a chain, learned by discovery: plain data, each fact with where it came
//! from. Discovery (a command) writes it; the record stage hands it to the diagnosis and to every
//! sink with each round, so the reasons and the exports read one copy.

use std::collections::BTreeMap;

/// The facts of one chain at one discovery refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainFacts {
    /// The VPC link the gateway's integration goes through.
    pub link: Option<LinkFact>,
    /// By hop index: what the load balancer of that hop says of its targets
    /// (`DescribeTargetHealth`).
    pub targets: BTreeMap<usize, Vec<TargetHealth>>,
    /// Every edge and port of the path the gateway's traffic takes, judged from the security
    /// groups and network ACLs (`hopwatch explain`); empty when they were not read.
    pub path: Vec<EdgeVerdict>,
}

/// One check of one edge of a chain's path: a security group's inbound or outbound rules, or
/// the network ACLs of the subnets on both sides, for one port and purpose.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EdgeVerdict {
    /// The hop the flow leaves (`gateway` for the VPC link's side).
    pub from: String,
    /// The hop it enters.
    pub to: String,
    pub port: u16,
    pub purpose: Purpose,
    pub direction: Direction,
    /// What the destination sees the flow come from, in words with the addresses or groups.
    pub source: String,
    /// `allowed`, `missing` (no security group rule allows it), `denied` (a NACL entry), or
    /// `unknown` (what the verdict needs could not be read).
    pub state: EdgeState,
    /// The state is `allowed` (kept for readers of the first JSON).
    pub allowed: bool,
    /// The rule that allows it, or the NACL entry that denies it.
    pub rule: Option<String>,
    /// The command that adds the missing rule; never for an unknown edge.
    pub fix: Option<String>,
    /// An unknown edge: what could not be read, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
    /// Judged on rules read by an earlier walk, because this one could not read them: which,
    /// when, and why not now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
}

/// What the rules say of one edge. Only `missing` and `denied` are faults; `unknown` is a fact
/// that could not be read (throttled, denied, an outage), never a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeState {
    Allowed,
    Missing,
    Denied,
    Unknown,
}

impl EdgeState {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeState::Allowed => "allowed",
            EdgeState::Missing => "missing",
            EdgeState::Denied => "denied",
            EdgeState::Unknown => "unknown",
        }
    }

    /// A rule blocks the flow: missing or denied.
    pub fn blocks(self) -> bool {
        matches!(self, EdgeState::Missing | EdgeState::Denied)
    }
}

impl EdgeVerdict {
    /// `allowed`, `missing`, `denied` or `unknown`.
    pub fn verdict(&self) -> &'static str {
        self.state.as_str()
    }
}

/// Why a flow crosses an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Requests, on the listener's or target group's port.
    Traffic,
    /// The load balancer's health checks, on the health-check port.
    HealthCheck,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Traffic => "traffic",
            Purpose::HealthCheck => "health_check",
        }
    }
}

/// Which rules a check read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The destination's security groups, inbound.
    Ingress,
    /// The source's security groups, outbound.
    Egress,
    /// The network ACLs of both subnets, both ways (stateless: the answer's ephemeral ports
    /// too).
    Nacl,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
            Direction::Nacl => "nacl",
        }
    }
}

/// A VPC link's state as API Gateway reports it (`GetVpcLink`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFact {
    /// `abc123` (v1) or `vpcl-…`-style id (v2).
    pub id: String,
    /// `AVAILABLE`, `PENDING`, `FAILED`, `INACTIVE` (v2 only, after 60 unused days), `DELETING`.
    pub status: LinkStatus,
    /// API Gateway's own words on the status, when it gives some.
    pub message: Option<String>,
}

/// A VPC link status. INACTIVE: "If no traffic is sent over the VPC link for 60 days, it becomes
/// INACTIVE … API Gateway deletes all of the VPC link's network interfaces"
/// (docs.aws.amazon.com/apigateway/latest/developerguide/http-api-vpc-links.html).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkStatus {
    Available,
    Pending,
    Failed,
    Inactive,
    Deleting,
}

impl LinkStatus {
    /// Every status, in the order `hopwatch_vpc_link_status` lists them.
    pub const ALL: [LinkStatus; 5] = [
        LinkStatus::Available,
        LinkStatus::Pending,
        LinkStatus::Failed,
        LinkStatus::Inactive,
        LinkStatus::Deleting,
    ];

    /// As API Gateway spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkStatus::Available => "AVAILABLE",
            LinkStatus::Pending => "PENDING",
            LinkStatus::Failed => "FAILED",
            LinkStatus::Inactive => "INACTIVE",
            LinkStatus::Deleting => "DELETING",
        }
    }

    /// Reads API Gateway's spelling.
    pub fn parse(text: &str) -> Option<LinkStatus> {
        LinkStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One target as its load balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    /// `10.0.4.10:80`, an instance id with its port, or an ALB's name for an `alb` target.
    pub target: String,
    /// `healthy`, `unhealthy`, `initial`, `unused`, `draining`, `unavailable`.
    pub state: String,
    /// The load balancer's reason code: `Target.Timeout`, `Target.FailedHealthChecks`, …
    pub reason: Option<String>,
    /// Its description, when it gives one.
    pub description: Option<String>,
}

/// How discovery is doing, read by the exporters: when a walk last completed without an error,
/// the calls that failed by service, how long walks take, every call made, and the found chains
/// that failed validation.
#[derive(Debug, Default)]
pub struct DiscoveryStats {
    /// Unix time of the last walk without a failed call, as `f64` bits; 0 before the first.
    last_success: std::sync::atomic::AtomicU64,
    errors: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Walks: (seconds in all, how many, how many did not finish in time).
    walks: std::sync::Mutex<(f64, u64, u64)>,
    /// Walk durations not yet handed to an exporter's histogram.
    pending: std::sync::Mutex<Vec<f64>>,
    /// Calls by (service, operation, result), since the agent started.
    calls: std::sync::Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    rejected: std::sync::atomic::AtomicU64,
}

/// The services discovery calls, each counted from 0.
pub const DISCOVERY_SERVICES: [&str; 5] = [
    "apigateway",
    "elasticloadbalancing",
    "servicediscovery",
    "ec2",
    "sts",
];

impl DiscoveryStats {
    /// Counts one failed call of `service`.
    pub fn failed(&self, service: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(service.to_string()).or_default() += 1;
    }

    /// A walk completed without a failed call, now.
    pub fn succeeded(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_success
            .store(now.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    /// One walk ended after `took`; `finished` false when its deadline cut it off.
    pub fn walked(&self, took: std::time::Duration, finished: bool) {
        let mut w = self.walks.lock().unwrap_or_else(|e| e.into_inner());
        w.0 += took.as_secs_f64();
        w.1 += 1;
        if !finished {
            w.2 += 1;
        }
        drop(w);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: without a reader (no exporter) only the last walks are kept.
        if pending.len() < 1024 {
            pending.push(took.as_secs_f64());
        }
    }

    /// The walk durations since the last call, for a histogram that observes each once.
    pub fn take_durations(&self) -> Vec<f64> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Walks so far: (seconds in all, count, cut off by their deadline).
    pub fn walks(&self) -> (f64, u64, u64) {
        *self.walks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call made so far, by (service, operation, result): the budget's count.
    pub fn set_calls(&self, calls: BTreeMap<(&'static str, &'static str, &'static str), u64>) {
        *self.calls.lock().unwrap_or_else(|e| e.into_inner()) = calls;
    }

    /// Calls made so far, by (service, operation, result).
    pub fn calls(&self) -> BTreeMap<(&'static str, &'static str, &'static str), u64> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A found chain failed validation and was left out.
    pub fn rejected(&self) {
        self.rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Found chains left out so far.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Unix time of the last clean walk; 0 before the first.
    pub fn last_success(&self) -> f64 {
        f64::from_bits(self.last_success.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Failed calls by service, every known service included (at 0).
    pub fn errors(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = DISCOVERY_SERVICES
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        for (s, n) in errors.iter() {
            out.insert(s.clone(), *n);
        }
        out
    }
}

/// Which of a stage's logs AWS's words came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// The stage's access log (`accessLogSettings.destinationArn`), in the owner's format.
    AccessLog,
    /// A REST stage's execution log (`API-Gateway-Execution-Logs_{api}/{stage}`).
    ExecutionLog,
}

/// What API Gateway wrote in its own logs of one request the agent sent: the gateway's own
/// words on why it failed. `check --json` prints it as a chain's `gateway_log`; the reason
/// quotes it, and its `response_type` outranks what the probe alone suggested.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GatewayWords {
    /// The id the log line carries: `$context.requestId` (`x-amzn-RequestId`,
    /// `apigw-requestid`) or `$context.extendedRequestId` (`x-amz-apigw-id`).
    pub request_id: String,
    /// Where it was found; `None` only for an empty value.
    pub source: Option<LogSource>,
    /// `$context.error.responseType`: `INTEGRATION_TIMEOUT`, `AUTHORIZER_FAILURE`, ...
    pub response_type: Option<String>,
    /// `$context.integrationErrorMessage` or `$context.integration.error`, or the text of an
    /// execution log's `Execution failed due to …` line.
    pub integration_error: Option<String>,
    /// `$context.integration.status` (or `$context.integrationStatus`): the status the
    /// integration answered the gateway with, as logged.
    pub integration_status: Option<String>,
    /// `$context.error.message`.
    pub message: Option<String>,
    /// `$context.status`: the status the gateway answered the caller with.
    pub status: Option<u16>,
}

/// Where the record stage reads what the gateway logged of each chain's failed requests: the
/// gateway log lookups (`gatewaylog::Lookups`) fill it in the background; a round never
/// waits on a lookup, and a lookup never waits on a round.
pub trait WordsSource: Send + Sync + std::fmt::Debug {
    /// The newest words found for `chain`'s failed gateway request.
    fn words(&self, chain: &str) -> Option<GatewayWords>;
    /// `chain`'s gateway answers again: the failure its words spoke of is over.
    fn recovered(&self, chain: &str);
}

/// How a requested gateway log lookup ended: the label values of
/// `hopwatch_gateway_log_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupResult {
    /// The record was found.
    Found,
    /// Still absent after `retry_for`.
    NotFound,
    /// A lookup failed (throttled, denied, no such group, no answer).
    Error,
    /// Not run: the chain had a lookup less than `min_interval` before.
    Skipped,
}

impl LookupResult {
    /// Every result, in the order of [`LookupCounts::snapshot`].
    pub const ALL: [LookupResult; 4] = [
        LookupResult::Found,
        LookupResult::NotFound,
        LookupResult::Error,
        LookupResult::Skipped,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LookupResult::Found => "found",
            LookupResult::NotFound => "not_found",
            LookupResult::Error => "error",
            LookupResult::Skipped => "skipped",
        }
    }

    fn index(self) -> usize {
        match self {
            LookupResult::Found => 0,
            LookupResult::NotFound => 1,
            LookupResult::Error => 2,
            LookupResult::Skipped => 3,
        }
    }
}

/// Gateway log lookups by result since the agent started: plain counters an exporter reads.
#[derive(Debug, Default)]
pub struct LookupCounts {
    counts: [std::sync::atomic::AtomicU64; 4],
}

impl LookupCounts {
    /// Counts one lookup that ended in `result`.
    pub fn count(&self, result: LookupResult) {
        self.counts[result.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Lookups that ended in `result`.
    pub fn get(&self, result: LookupResult) -> u64 {
        self.counts[result.index()].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every result's label value and count, each result present (at 0 before the first).
    pub fn snapshot(&self) -> [(&'static str, u64); 4] {
        LookupResult::ALL.map(|r| (r.as_str(), self.get(r)))
    }
}

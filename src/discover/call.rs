//! Every control-plane call discovery makes goes through one [`Budget`]: a client-side rate per
//! service, a retry policy that backs off when AWS throttles, one way of reading a failure, one
//! paging loop, and a count of every call by service, operation and result.
//!
//! Why a budget: API Gateway allows a whole account 10 management calls per second (burst 40)
//! and `GetResources` 5 per 2 seconds, fixed quotas shared with the account's deployments
//! (CloudFormation, Terraform, CI): a monitor that walks too fast makes deployments fail with
//! `TooManyRequestsException` (docs.aws.amazon.com/apigateway/latest/developerguide/
//! limits.html). REST and HTTP API management calls count against the same quota, so they
//! share one bucket here. EC2 and Cloud Map answer `RequestLimitExceeded` when throttled, ELB
//! `Throttling` (docs.aws.amazon.com/AWSEC2/latest/APIReference/throttling.html,
//! docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/CommonErrors.html,
//! docs.aws.amazon.com/cloud-map/latest/api/CommonErrors.html).
//!
//! The SDK clients discovery makes do not retry on their own (one attempt each): every attempt,
//! retries included, takes a token here, so the rate API Gateway sees is the rate configured.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so paused time in tests moves it.
use tokio::time::Instant;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::model::WalkError;

/// A service discovery calls, each with its own bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// API Gateway, REST and HTTP APIs both: one account quota.
    ApiGateway,
    Elb,
    CloudMap,
    Ec2,
}

impl Service {
    /// Every service, in the order metrics list them.
    pub const ALL: [Service; 4] = [
        Service::ApiGateway,
        Service::Elb,
        Service::CloudMap,
        Service::Ec2,
    ];

    /// The service as IAM names it: the `service` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::ApiGateway => "apigateway",
            Service::Elb => "elasticloadbalancing",
            Service::CloudMap => "servicediscovery",
            Service::Ec2 => "ec2",
        }
    }
}

/// What a failed call means for the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The service throttled the call, after every retry.
    Throttled,
    /// The role may not make it.
    AccessDenied,
    /// The object it names does not exist: absent, not unknown.
    NotFound,
    /// Anything else: an outage, a timeout, an answer that could not be read, paging cut short.
    Other,
}

/// One failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub service: Service,
    pub operation: &'static str,
    pub kind: Kind,
    /// The service's error code and message, or what went wrong.
    pub message: String,
}

impl CallError {
    /// An error of our own making (paging cut short), for `operation`.
    pub fn other(service: Service, operation: &'static str, message: String) -> Self {
        CallError {
            service,
            operation,
            kind: Kind::Other,
            message,
        }
    }

    /// Whether the object named is gone.
    pub fn not_found(&self) -> bool {
        self.kind == Kind::NotFound
    }

    /// As the estate notes it.
    pub fn noted(&self) -> WalkError {
        WalkError {
            service: self.service.as_str(),
            action: self.operation,
            message: self.message.clone(),
            access_denied: self.kind == Kind::AccessDenied,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.service.as_str(),
            self.operation,
            self.message
        )
    }
}

/// The kind of a failure from the service's error code and the HTTP status. The one mapping
/// for every service, SDK or hand-spoken (EC2).
pub fn kind_of(code: Option<&str>, status: Option<u16>) -> Kind {
    let code = code.unwrap_or("");
    let throttled = matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "LimitExceededException"
            | "SlowDown"
    ) || status == Some(429);
    if throttled {
        return Kind::Throttled;
    }
    if matches!(
        code,
        "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "UnauthorizedException"
    ) {
        return Kind::AccessDenied;
    }
    // NotFoundException (API Gateway), LoadBalancerNotFound, TargetGroupNotFound,
    // ListenerNotFound (ELB), ServiceNotFound, NamespaceNotFound (Cloud Map),
    // InvalidGroup.NotFound, InvalidInstanceID.NotFound (EC2).
    if code.contains("NotFound") {
        return Kind::NotFound;
    }
    Kind::Other
}

/// A failed SDK call of `service`.
pub fn from_sdk<E>(
    service: Service,
    operation: &'static str,
    err: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::http::Response,
    >,
) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    let kind = match err {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            kind_of(err.code(), err.raw_response().map(|r| r.status().as_u16()))
        }
        // No answer: a timeout, a connection that failed, a request that could not be built.
        _ => Kind::Other,
    };
    let message = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_smithy_types::error::display::DisplayErrorContext(err).to_string(),
    };
    CallError {
        service,
        operation,
        kind,
        message,
    }
}

/// A failed call spoken directly on the SDK runtime (EC2).
pub fn from_aws(
    service: Service,
    operation: &'static str,
    err: &crate::aws::call::CallError,
) -> CallError {
    let status = match err {
        crate::aws::call::CallError::Service(e) => Some(e.status),
        _ => None,
    };
    CallError {
        service,
        operation,
        kind: kind_of(err.code(), status),
        message: err.to_string(),
    }
}

/// Results a call is counted under: the `result` label of
/// `hopwatch_discovery_calls_total`.
pub fn result_label(outcome: Result<(), Kind>) -> &'static str {
    match outcome {
        Ok(()) => "ok",
        Err(Kind::Throttled) => "throttled",
        Err(Kind::AccessDenied) => "denied",
        Err(Kind::NotFound) => "not_found",
        Err(Kind::Other) => "error",
    }
}

/// A token bucket, paused after a throttled answer.
#[derive(Debug)]
struct Bucket {
    /// Tokens per second.
    rate: f64,
    /// Most tokens held at once.
    burst: f64,
    tokens: f64,
    last: Instant,
    /// No call before this: AWS said to slow down.
    paused_until: Instant,
    /// The next pause after a throttled answer (doubles, up to [`MAX_BACKOFF`]).
    backoff: Duration,
}

/// Calls are spaced this much wider than the configured rate.
const SPACING: f64 = 1.1;

/// The first pause after a throttled answer.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Attempts of one call while it is throttled or fails on the way (a timeout, a 5xx).
const ATTEMPTS: u32 = 3;

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        // No burst: calls are spread evenly, so no second (sliding, not just on the clock's
        // seconds) ever holds more than `rate` of them, the first second of a walk included.
        // Spaced a tenth wider than the rate: a call that reaches AWS late (network, a busy
        // host) must not put one more in the second AWS counts (measured: 6 in one second at
        // a rate of 5 without it, 200 APIs, tests/discovery_budget.rs).
        let burst = 1.0;
        let rate = rate / SPACING;
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: now,
            paused_until: now,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Takes a token if one is there; else how long until one is.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if now < self.paused_until {
            return Err(self.paused_until - now);
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    fn throttled(&mut self, now: Instant) {
        self.paused_until = now + self.backoff;
        self.tokens = 0.0;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn succeeded(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }
}

/// How fast discovery may call each service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// API Gateway, REST and HTTP APIs together (`[discovery] max_calls_per_second`).
    pub apigateway: f64,
    /// `GetResources` alone, within API Gateway's rate (AWS allows 5 per 2 s).
    pub get_resources: f64,
    /// ELB, Cloud Map and EC2, each.
    pub others: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            apigateway: 5.0,
            get_resources: 2.0,
            others: 10.0,
        }
    }
}

impl Rates {
    /// This agent's share when `shards` agents walk the same account.
    pub fn share(self, shards: u32) -> Rates {
        let n = f64::from(shards.max(1));
        Rates {
            apigateway: self.apigateway / n,
            get_resources: self.get_resources / n,
            others: self.others / n,
        }
    }
}

/// The calls discovery may make, and what it made.
#[derive(Debug)]
pub struct Budget {
    buckets: Mutex<BTreeMap<Bucketed, Bucket>>,
    rates: Rates,
    /// Calls by (service, operation, result).
    counts: Mutex<BTreeMap<(Service, &'static str, &'static str), u64>>,
    /// Services that still throttled a call after every retry, this walk: not asked again
    /// until the next walk (what they would have said is taken from the last walk, or unknown).
    gave_up: Mutex<std::collections::BTreeSet<Service>>,
}

/// What a bucket is for: a whole service, or `GetResources` within API Gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Bucketed {
    Service(Service),
    GetResources,
}

impl Budget {
    /// A budget spending at most `rates`.
    pub fn new(rates: Rates) -> Self {
        Budget {
            buckets: Mutex::new(BTreeMap::new()),
            rates,
            counts: Mutex::new(BTreeMap::new()),
            gave_up: Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    /// A walk starts: every service may be asked again.
    pub fn new_walk(&self) {
        self.gave_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The rates it spends.
    pub fn rates(&self) -> Rates {
        self.rates
    }

    fn rate(&self, b: Bucketed) -> f64 {
        match b {
            Bucketed::Service(Service::ApiGateway) => self.rates.apigateway,
            Bucketed::GetResources => self.rates.get_resources,
            Bucketed::Service(_) => self.rates.others,
        }
    }

    fn bucketed(service: Service, operation: &str) -> Vec<Bucketed> {
        let mut out = vec![Bucketed::Service(service)];
        if service == Service::ApiGateway && operation == "GetResources" {
            out.push(Bucketed::GetResources);
        }
        out
    }

    /// Waits until a call of `operation` may go.
    async fn acquire(&self, service: Service, operation: &str) {
        for b in Self::bucketed(service, operation) {
            loop {
                let wait = {
                    let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
                    let now = Instant::now();
                    let rate = self.rate(b);
                    buckets
                        .entry(b)
                        .or_insert_with(|| Bucket::new(rate, now))
                        .take(now)
                };
                match wait {
                    Ok(()) => break,
                    Err(d) => tokio::time::sleep(d).await,
                }
            }
        }
    }

    fn settle(&self, service: Service, operation: &'static str, outcome: Result<(), Kind>) {
        {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            for b in Self::bucketed(service, operation) {
                if let Some(bucket) = buckets.get_mut(&b) {
                    match outcome {
                        Err(Kind::Throttled) => bucket.throttled(now),
                        _ => bucket.succeeded(),
                    }
                }
            }
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts
            .entry((service, operation, result_label(outcome)))
            .or_default() += 1;
    }

    /// Makes one call through the budget: a token per attempt, retried while AWS throttles
    /// (after the pause the bucket takes) or the call fails on the way (a timeout, no answer),
    /// at most [`ATTEMPTS`] times. Access denied and not found are answers, never retried. A
    /// service that still throttles after every retry is not asked again this walk: the rest
    /// of its calls fail at once as throttled, without spending the account's quota.
    pub async fn call<T, F, Fut>(
        &self,
        service: Service,
        operation: &'static str,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        if self
            .gave_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&service)
        {
            return Err(CallError {
                service,
                operation,
                kind: Kind::Throttled,
                message: format!(
                    "not asked: {} throttled this walk's calls; asked again at the next walk",
                    service.as_str()
                ),
            });
        }
        let mut tries = 0;
        loop {
            tries += 1;
            self.acquire(service, operation).await;
            let result = attempt().await;
            let outcome = result.as_ref().map(|_| ()).map_err(|e| e.kind);
            self.settle(service, operation, outcome);
            match result {
                Err(e) if matches!(e.kind, Kind::Throttled | Kind::Other) && tries < ATTEMPTS => {
                    tracing::debug!(service = service.as_str(), operation, error = %e.message, tries, "discovery: retrying a call");
                }
                Err(e) if e.kind == Kind::Throttled => {
                    self.gave_up
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(service);
                    return Err(e);
                }
                done => return done,
            }
        }
    }

    /// Every item of a paged call: `page` sends the request for one page (`None`: the first)
    /// and gives its items and the next page's token. Paging cut short by [`MAX_PAGES`] is an
    /// error, never a silent partial list.
    pub async fn paged<T, F, Fut>(
        &self,
        service: Service,
        operation: &'static str,
        mut page: F,
    ) -> Result<Vec<T>, CallError>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), CallError>>,
    {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let (found, next) = self
                .call(service, operation, || page(token.clone()))
                .await?;
            items.extend(found);
            match next.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(items),
            }
        }
        Err(CallError::other(
            service,
            operation,
            format!(
                "more than {MAX_PAGES} pages: the list was cut short, so it is not known whole"
            ),
        ))
    }

    /// Calls made so far, by (service, operation, result).
    pub fn counts(&self) -> BTreeMap<(Service, &'static str, &'static str), u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Calls made so far to `service`.
    pub fn calls_to(&self, service: Service) -> u64 {
        self.counts()
            .iter()
            .filter(|((s, _, _), _)| *s == service)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Pages followed at most, in any listing: past it the list is not known whole.
pub const MAX_PAGES: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_what_the_walk_does() {
        for (code, status, kind) in [
            (Some("TooManyRequestsException"), Some(429), Kind::Throttled),
            (Some("Throttling"), Some(400), Kind::Throttled),
            (Some("RequestLimitExceeded"), Some(503), Kind::Throttled),
            (None, Some(429), Kind::Throttled),
            (Some("UnauthorizedOperation"), Some(403), Kind::AccessDenied),
            (Some("AccessDeniedException"), Some(403), Kind::AccessDenied),
            (Some("NotFoundException"), Some(404), Kind::NotFound),
            (Some("InvalidGroup.NotFound"), Some(400), Kind::NotFound),
            (Some("LoadBalancerNotFound"), Some(400), Kind::NotFound),
            (Some("InternalFailure"), Some(500), Kind::Other),
            (None, None, Kind::Other),
        ] {
            assert_eq!(kind_of(code, status), kind, "{code:?}");
        }
    }

    #[test]
    fn a_bucket_spends_its_rate_and_pauses_when_throttled() {
        let t0 = Instant::now();
        let mut b = Bucket::new(5.0, t0);
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).expect_err("no burst");
        assert!(
            wait.abs_diff(Duration::from_millis(220)) < Duration::from_micros(1),
            "{wait:?}"
        );
        assert!(
            b.take(t0 + Duration::from_millis(200)).is_err(),
            "a tenth wider than the rate"
        );
        assert!(b.take(t0 + Duration::from_millis(221)).is_ok());
        b.throttled(t0 + Duration::from_millis(221));
        let paused = b.take(t0 + Duration::from_millis(321)).expect_err("paused");
        assert_eq!(paused, Duration::from_millis(400));
        b.throttled(t0 + Duration::from_millis(800));
        assert_eq!(b.backoff, Duration::from_secs(2), "doubles");
        for _ in 0..10 {
            b.throttled(t0);
        }
        assert_eq!(b.backoff, MAX_BACKOFF, "up to a bound");
        b.succeeded();
        assert_eq!(b.backoff, FIRST_BACKOFF);
    }

    #[tokio::test]
    async fn paging_cut_short_is_an_error_and_counted() {
        let budget = Budget::new(Rates {
            apigateway: 1000.0,
            get_resources: 1000.0,
            others: 1000.0,
        });
        let endless = budget
            .paged(Service::Elb, "DescribeLoadBalancers", |_| async {
                Ok((vec![1], Some("more".to_string())))
            })
            .await;
        assert!(endless.is_err_and(|e| e.message.contains("cut short")));
        let two = budget
            .paged(Service::Elb, "DescribeListeners", |t| async move {
                Ok(match t {
                    None => (vec![1, 2], Some("p2".to_string())),
                    Some(_) => (vec![3], None),
                })
            })
            .await;
        assert_eq!(two, Ok(vec![1, 2, 3]));
        let counts = budget.counts();
        assert_eq!(counts[&(Service::Elb, "DescribeListeners", "ok")], 2);
        assert_eq!(
            counts[&(Service::Elb, "DescribeLoadBalancers", "ok")],
            MAX_PAGES as u64
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_calls_are_retried_then_given_up() {
        let budget = Budget::new(Rates {
            apigateway: 1000.0,
            get_resources: 1000.0,
            others: 1000.0,
        });
        let denied = budget
            .call(Service::Ec2, "DescribeSecurityGroups", || async {
                Err::<(), _>(CallError {
                    service: Service::Ec2,
                    operation: "DescribeSecurityGroups",
                    kind: Kind::AccessDenied,
                    message: "no".into(),
                })
            })
            .await;
        assert!(denied.is_err());
        let throttled = budget
            .call(Service::Ec2, "DescribeSubnets", || async {
                Err::<(), _>(CallError {
                    service: Service::Ec2,
                    operation: "DescribeSubnets",
                    kind: Kind::Throttled,
                    message: "RequestLimitExceeded".into(),
                })
            })
            .await;
        assert!(throttled.is_err_and(|e| e.kind == Kind::Throttled));
        let counts = budget.counts();
        assert_eq!(
            counts[&(Service::Ec2, "DescribeSecurityGroups", "denied")],
            1,
            "an answer is not retried"
        );
        assert_eq!(
            counts[&(Service::Ec2, "DescribeSubnets", "throttled")],
            u64::from(ATTEMPTS)
        );
        // Given up for the rest of the walk: not asked, not counted, throttled at once.
        let skipped = budget
            .call(Service::Ec2, "DescribeNetworkAcls", || async {
                Ok::<(), CallError>(())
            })
            .await;
        assert!(
            skipped.is_err_and(|e| e.kind == Kind::Throttled && e.message.contains("not asked"))
        );
        assert!(!budget
            .counts()
            .contains_key(&(Service::Ec2, "DescribeNetworkAcls", "ok")));
        budget.new_walk();
        assert!(budget
            .call(Service::Ec2, "DescribeNetworkAcls", || async {
                Ok::<(), CallError>(())
            })
            .await
            .is_ok());
    }
}

//! CloudWatch Logs' `FilterLogEvents`, spoken directly.
//!
//! Why not `aws-sdk-cloudwatchlogs`: for the reason `discover::ec2` gives for EC2 (a generated
//! crate whose cold build costs minutes on two cores, for one operation). The call goes through
//! [`crate::aws::call`], the SDK's own runtime (HTTP client, standard retry, timeouts,
//! credentials, SigV4 with the signing name `logs`); what is CloudWatch Logs' is here.
//!
//! The protocol is AWS JSON 1.1 (smithy.io/2.0/aws/protocols/aws-json-1_1-protocol.html): a
//! `POST /` with `X-Amz-Target: Logs_20140328.FilterLogEvents`, `Content-Type:
//! application/x-amz-json-1.1` and the request as a JSON object; the answer is a JSON object
//! (`events[]` of `message`, `timestamp`, `logStreamName`, …, and `nextToken`); an error
//! is a non-2xx answer whose code is in the `X-Amzn-ErrorType` header or the body's `code` or
//! `__type` (`ThrottlingException`, `ResourceNotFoundException`, `AccessDeniedException`),
//! read as the SDK's own parser reads it (aws-smithy-json, `protocol/error.rs`). Fields:
//! docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_FilterLogEvents.html.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::aws::call::{self, CallError, Client, Request, ServiceError};
use crate::config::GatewayLogLookup;

/// The operation's `X-Amz-Target`: the service's JSON target prefix and the operation.
const TARGET: &str = "Logs_20140328.FilterLogEvents";

/// AWS JSON 1.1's content type.
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Codes CloudWatch Logs throttles with (a 400, so the 5xx rule does not catch them):
/// `ThrottlingException` (API_FilterLogEvents.html, CommonErrors.html), and the other spellings
/// repost.aws/knowledge-center/cloudwatch-logs-throttling reports (`RequestLimitExceeded`,
/// `RateExceeded`).
pub const THROTTLING: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "RateExceeded",
];

/// `FilterLogEvents` is limited to 5 transactions per second per account and Region, a quota
/// that cannot be raised (repost.aws/knowledge-center/cloudwatch-logs-throttling). One agent
/// keeps its own calls this far apart (4 a second), so that its lookups leave room for people
/// and other tools searching the same account.
pub const MIN_GAP: Duration = Duration::from_millis(250);

/// One `FilterLogEvents` request: the fields hopwatch sends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// The log group searched.
    pub log_group_name: String,
    /// The filter pattern (FilterAndPatternSyntax.html), e.g. `"\"abc-123\""`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_pattern: Option<String>,
    /// Events at or after this time, milliseconds since the Unix epoch.
    pub start_time: i64,
    /// Events at or before this time, milliseconds since the Unix epoch.
    pub end_time: i64,
    /// The previous page's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// At most this many events in the page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One page of the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// The matching events of this page; may be empty while `next_token` says there is more
    /// (API_FilterLogEvents.html: "Partially full or empty pages don't necessarily mean that
    /// pagination is finished").
    #[serde(default)]
    pub events: Vec<Event>,
    /// More to search: pass it back to continue.
    #[serde(default)]
    pub next_token: Option<String>,
}

/// One log event (`FilteredLogEvent`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The line as written.
    #[serde(default)]
    pub message: String,
    /// When it was written, milliseconds since the Unix epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// The stream it is in.
    #[serde(default)]
    pub log_stream_name: String,
}

/// A future of one page, boxed so that a [`Search`] can be a trait object (a test's scripted
/// pages, or [`Logs`]).
pub type PageFuture<'a> = Pin<Box<dyn Future<Output = Result<Page, CallError>> + Send + 'a>>;

/// Something that answers `FilterLogEvents`: [`Logs`], or a test's script.
pub trait Search: Send + Sync {
    /// One page of `filter`.
    fn filter<'a>(&'a self, filter: &'a Filter) -> PageFuture<'a>;
}

/// The CloudWatch Logs client: `FilterLogEvents` only, each call bounded by the configured
/// timeout and spaced [`MIN_GAP`] from the last.
#[derive(Debug, Clone)]
pub struct Logs {
    /// `Err`: why no call can be made (no region).
    client: Result<Client, String>,
    timeout: Duration,
    gap: Duration,
    next_slot: Arc<Mutex<Instant>>,
    calls: Arc<AtomicU64>,
}

impl Logs {
    /// The SDK configuration a lookup loads: `[gateway_logs]`'s region and endpoint, the
    /// standard retry mode, and its timeout as the bound of each call, retries included.
    /// Retries are few and quick (3 attempts, backoff from 200 ms rather than the SDK's 1 s):
    /// within a timeout of a few seconds a refused connection must still be reported as such,
    /// not as a timeout, and a lookup is retried by its own schedule anyway.
    pub fn loader(lookup: &GatewayLogLookup) -> aws_config::ConfigLoader {
        use aws_config::retry::RetryConfig;
        use aws_config::timeout::TimeoutConfig;
        crate::aws::loader(lookup.region.as_deref(), lookup.endpoint_url.as_deref())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(lookup.timeout.min(Duration::from_secs(3)))
                    .operation_timeout(lookup.timeout)
                    .build(),
            )
    }

    /// The client for `[gateway_logs]`: its SDK configuration loaded (credentials from the
    /// default chain).
    pub async fn connect(lookup: &GatewayLogLookup) -> Logs {
        Logs::new(&Logs::loader(lookup).load().await, lookup.timeout)
    }

    /// The client for `sdk`'s region and endpoint (its `endpoint_url`, else the region's
    /// public endpoint, docs.aws.amazon.com/general/latest/gr/cwl_region.html), each call
    /// given at most `timeout` (credentials included).
    pub fn new(sdk: &SdkConfig, timeout: Duration) -> Logs {
        let client = match sdk.region() {
            Some(region) => {
                let region = region.to_string();
                let endpoint = call::endpoint("logs", &region, sdk.endpoint_url());
                Ok(Client::new(sdk, "logs", &region, endpoint).throttling_codes(THROTTLING))
            }
            None => Err(
                "no region for CloudWatch Logs: set [gateway_logs] region, or AWS_REGION"
                    .to_string(),
            ),
        };
        Logs {
            client,
            timeout,
            gap: MIN_GAP,
            next_slot: Arc::new(Mutex::new(Instant::now())),
            calls: Arc::default(),
        }
    }

    /// Calls at most one per `gap` (tests that need no pacing pass zero).
    pub fn with_gap(mut self, gap: Duration) -> Logs {
        self.gap = gap;
        self
    }

    /// Calls answered (successfully or not) since this client was made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// One page of `filter`.
    pub async fn filter_page(&self, filter: &Filter) -> Result<Page, CallError> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| CallError::Other(e.clone()))?;
        let body = serde_json::to_string(filter)
            .map_err(|e| CallError::Other(format!("cannot write the request: {e}")))?;
        let request = Request {
            operation: "FilterLogEvents".to_string(),
            headers: vec![
                ("content-type", CONTENT_TYPE.to_string()),
                ("x-amz-target", TARGET.to_string()),
            ],
            body,
        };
        self.wait_for_slot().await;
        let result = tokio::time::timeout(self.timeout, client.call(request, read_page)).await;
        self.calls.fetch_add(1, Ordering::Relaxed);
        result.unwrap_or_else(|_| {
            Err(CallError::Timeout(format!(
                "FilterLogEvents gave no answer within {:?}",
                self.timeout
            )))
        })
    }

    /// Waits for this call's turn: at most one call per `gap`.
    async fn wait_for_slot(&self) {
        let at = {
            let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + self.gap;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

impl Search for Logs {
    fn filter<'a>(&'a self, filter: &'a Filter) -> PageFuture<'a> {
        Box::pin(self.filter_page(filter))
    }
}

/// A [`Logs`] made on its first search: an agent whose chains name no log group never loads
/// the SDK's configuration (its region chain may ask the instance metadata service).
pub struct LazyLogs {
    lookup: GatewayLogLookup,
    logs: tokio::sync::OnceCell<Logs>,
}

impl LazyLogs {
    /// The client `[gateway_logs]` describes, made when first needed.
    pub fn new(lookup: GatewayLogLookup) -> LazyLogs {
        LazyLogs {
            lookup,
            logs: tokio::sync::OnceCell::new(),
        }
    }
}

impl Search for LazyLogs {
    fn filter<'a>(&'a self, filter: &'a Filter) -> PageFuture<'a> {
        Box::pin(async move {
            let logs = self.logs.get_or_init(|| Logs::connect(&self.lookup)).await;
            logs.filter_page(filter).await
        })
    }
}

/// The page of a successful answer; the code and message of a failed one.
fn read_page(response: &HttpResponse) -> Result<Page, ServiceError> {
    let status = response.status().as_u16();
    let body = response.body().bytes().unwrap_or_default();
    if response.status().is_success() {
        return serde_json::from_slice(body).map_err(|e| ServiceError {
            status,
            code: None,
            message: format!("unreadable answer: {e}"),
        });
    }
    Err(read_error(
        status,
        response.headers().get("x-amzn-errortype"),
        body,
    ))
}

/// A JSON 1.1 error answer: the code from the `X-Amzn-ErrorType` header, else the body's
/// `code`, else its `__type`, with any `namespace#` prefix and `:…` suffix removed; the
/// message from `message`, `Message` or `errorMessage`.
pub fn read_error(status: u16, error_type: Option<&str>, body: &[u8]) -> ServiceError {
    let json: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(body).ok();
    let field = |names: &[&str]| -> Option<String> {
        let json = json.as_ref()?;
        names
            .iter()
            .find_map(|n| json.get(*n).and_then(|v| v.as_str()))
            .map(str::to_string)
    };
    let code = error_type
        .map(str::to_string)
        .or_else(|| field(&["code"]))
        .or_else(|| field(&["__type"]))
        .map(|c| sanitize(&c).to_string())
        .filter(|c| !c.is_empty());
    let message =
        field(&["message", "Message", "errorMessage"]).unwrap_or_else(|| format!("HTTP {status}"));
    ServiceError {
        status,
        code,
        message,
    }
}

/// `com.amazonaws.logs#ThrottlingException:http://…` → `ThrottlingException`.
fn sanitize(code: &str) -> &str {
    let code = code.split(':').next().unwrap_or(code);
    code.rsplit('#').next().unwrap_or(code).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_the_documented_json() {
        let filter = Filter {
            log_group_name: "API-Gateway-Execution-Logs_a1b2c3/prod".into(),
            filter_pattern: Some("\"abc-123\"".into()),
            start_time: 1_700_000_000_000,
            end_time: 1_700_000_600_000,
            next_token: None,
            limit: Some(100),
        };
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&filter).expect("json")).expect("parse");
        assert_eq!(
            json,
            serde_json::json!({
                "logGroupName": "API-Gateway-Execution-Logs_a1b2c3/prod",
                "filterPattern": "\"abc-123\"",
                "startTime": 1_700_000_000_000_i64,
                "endTime": 1_700_000_600_000_i64,
                "limit": 100,
            })
        );
        let next = Filter {
            next_token: Some("t-1".into()),
            filter_pattern: None,
            limit: None,
            ..filter
        };
        let json = serde_json::to_string(&next).expect("json");
        assert!(json.contains("\"nextToken\":\"t-1\""), "{json}");
        assert!(!json.contains("filterPattern"), "{json}");
    }

    #[test]
    fn pages_read_as_documented() {
        let answer = r#"{"events":[{"logStreamName":"s-1","timestamp":1700000000123,"message":"(abc) Method completed with status: 504","ingestionTime":1700000001000,"eventId":"e-1"}],"searchedLogStreams":[],"nextToken":"t-2"}"#;
        let page: Page = serde_json::from_str(answer).expect("page");
        assert_eq!(
            page,
            Page {
                events: vec![Event {
                    message: "(abc) Method completed with status: 504".into(),
                    timestamp: 1_700_000_000_123,
                    log_stream_name: "s-1".into(),
                }],
                next_token: Some("t-2".into()),
            }
        );
        let empty: Page = serde_json::from_str(r#"{"events":[],"nextToken":"t-3"}"#).expect("p");
        assert!(empty.events.is_empty());
        assert_eq!(empty.next_token.as_deref(), Some("t-3"));
        let last: Page = serde_json::from_str("{}").expect("page");
        assert_eq!(last, Page::default());
    }

    #[test]
    fn errors_read_as_the_sdk_reads_them() {
        // (status, X-Amzn-ErrorType, body, code, message)
        type Row<'a> = (u16, Option<&'a str>, &'a str, Option<&'a str>, &'a str);
        let table: &[Row] = &[
            (
                400,
                None,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
                Some("ThrottlingException"),
                "Rate exceeded",
            ),
            (
                400,
                None,
                r#"{"__type":"com.amazonaws.logs#ResourceNotFoundException","message":"The specified log group does not exist."}"#,
                Some("ResourceNotFoundException"),
                "The specified log group does not exist.",
            ),
            (
                400,
                Some("AccessDeniedException:http://internal.amazon.com/coral/"),
                r#"{"Message":"User: arn:aws:sts::1:assumed-role/r/i is not authorized to perform: logs:FilterLogEvents"}"#,
                Some("AccessDeniedException"),
                "User: arn:aws:sts::1:assumed-role/r/i is not authorized to perform: logs:FilterLogEvents",
            ),
            (
                400,
                None,
                r#"{"code":"InvalidParameterException","__type":"Other","errorMessage":"bad"}"#,
                Some("InvalidParameterException"),
                "bad",
            ),
            (503, None, "<html>busy</html>", None, "HTTP 503"),
        ];
        for (status, header, body, code, message) in table {
            let e = read_error(*status, *header, body.as_bytes());
            assert_eq!(e.code.as_deref(), *code, "{body}");
            assert_eq!(e.message, *message, "{body}");
            assert_eq!(e.status, *status);
        }
    }
}

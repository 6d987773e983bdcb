//! The lookup and its schedule against a scripted `FilterLogEvents` (paging, empty pages,
//! errors, lateness); the parsers' tables are beside them (`access.rs`, `execution.rs`); the
//! real client against LocalStack is tests/gateway_log.rs.

use std::collections::HashMap;
use std::future::pending;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::aws::call::ServiceError;
use crate::config::GatewayLogLookup;
use crate::facts::LogSource;

/// CloudWatch Logs as a script: each group's lines, answered after `empty_pages` empty pages
/// with a token (as AWS may), the pattern honoured or ignored (as LocalStack does).
#[derive(Default)]
struct Script {
    groups: Mutex<HashMap<String, Vec<String>>>,
    empty_pages: usize,
    endless: bool,
    honour_pattern: bool,
    fail: Mutex<Option<CallError>>,
    hang: bool,
    calls: AtomicUsize,
    filters: Mutex<Vec<Filter>>,
}

impl Script {
    fn put(&self, group: &str, line: &str) {
        self.groups
            .lock()
            .expect("lock")
            .entry(group.to_string())
            .or_default()
            .push(line.to_string());
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn answer(&self, filter: &Filter) -> Result<Page, CallError> {
        self.filters.lock().expect("lock").push(filter.clone());
        if let Some(e) = self.fail.lock().expect("lock").clone() {
            return Err(e);
        }
        let empties_seen = match filter.next_token.as_deref() {
            None => 0,
            Some(t) => t.trim_start_matches('e').parse::<usize>().unwrap_or(0),
        };
        if self.endless || empties_seen < self.empty_pages {
            return Ok(Page {
                events: Vec::new(),
                next_token: Some(format!("e{}", empties_seen + 1)),
            });
        }
        let terms: Vec<String> = filter
            .filter_pattern
            .as_deref()
            .unwrap_or_default()
            .split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        let groups = self.groups.lock().expect("lock");
        let Some(lines) = groups.get(&filter.log_group_name) else {
            return Err(CallError::Service(ServiceError {
                status: 400,
                code: Some("ResourceNotFoundException".into()),
                message: "The specified log group does not exist.".into(),
            }));
        };
        let events = lines
            .iter()
            .filter(|l| !self.honour_pattern || terms.iter().any(|t| l.contains(t.as_str())))
            .map(|l| Event {
                message: l.clone(),
                timestamp: filter.start_time,
                log_stream_name: "s".into(),
            })
            .collect();
        Ok(Page {
            events,
            next_token: None,
        })
    }
}

impl Search for Script {
    fn filter<'a>(&'a self, filter: &'a Filter) -> PageFuture<'a> {
        Box::pin(async move {
            if self.hang {
                pending::<()>().await;
            }
            let answer = self.answer(filter);
            self.calls.fetch_add(1, Ordering::SeqCst);
            answer
        })
    }
}

fn groups(access: Option<&str>, format: Option<&str>, execution: Option<&str>) -> GatewayLogs {
    GatewayLogs {
        access_log_group: access.map(str::to_string),
        access_log_format: format.map(str::to_string),
        execution_log_group: execution.map(str::to_string),
    }
}

const ACCESS: &str = "/aws/apigateway/access";
const EXECUTION: &str = "API-Gateway-Execution-Logs_a1b2c3/prod";

fn access_line(id: &str, extended: &str, status: u16) -> String {
    format!(
        r#"{{"requestId":"{id}","extendedRequestId":"{extended}","status":"{status}","error.responseType":"INTEGRATION_FAILURE","integrationErrorMessage":"-"}}"#
    )
}

#[tokio::test]
async fn the_access_log_is_read_first_and_only_a_matching_record_counts() {
    let script = Script::default();
    // LocalStack answers every event of the window whatever the pattern: the other request's
    // line comes first and must not be taken for ours.
    script.put(ACCESS, &access_line("other-1", "O1=", 200));
    script.put(ACCESS, "not json at all");
    script.put(ACCESS, &access_line("r-1", "X1=", 504));
    script.put(EXECUTION, "(r-1) Method completed with status: 504");
    let logs = groups(Some(ACCESS), None, Some(EXECUTION));
    let found = find(&script, &logs, &["r-1", "X1="], SystemTime::now())
        .await
        .expect("no error")
        .expect("found");
    assert_eq!(found.request_id, "r-1");
    assert_eq!(found.source, Some(LogSource::AccessLog));
    assert_eq!(found.status, Some(504));
    assert_eq!(found.response_type.as_deref(), Some("INTEGRATION_FAILURE"));
    assert_eq!(found.integration_error, None);
    let filters = script.filters.lock().expect("lock").clone();
    assert_eq!(filters.len(), 1, "the execution log is not searched");
    assert_eq!(
        filters[0].filter_pattern.as_deref(),
        Some(r#"?"r-1" ?"X1=""#)
    );
    assert_eq!(filters[0].end_time - filters[0].start_time, 600_000);

    // By the extended id alone.
    let found = find(&script, &logs, &["X1="], SystemTime::now())
        .await
        .expect("no error")
        .expect("found");
    assert_eq!(found.request_id, "r-1");
    // Another request's id: nothing, though lines came back.
    let none = find(&script, &logs, &["r-2"], SystemTime::now())
        .await
        .expect("no error");
    assert_eq!(none, None);
}

#[tokio::test]
async fn the_execution_log_answers_when_the_access_log_cannot() {
    let script = Script {
        honour_pattern: true,
        ..Script::default()
    };
    for line in [
        "(r-1) Extended Request Id: X1=",
        "(r-1) Starting execution for request: r-1",
        "(r-1) Execution failed due to a timeout error",
        "(r-1) Method completed with status: 504",
    ] {
        script.put(EXECUTION, line);
    }
    script.put(
        ACCESS,
        "1.2.3.4 - - [28/Aug/2019:15:10:34 +0000] \"GET / HTTP/1.1\" 504 41 r-1",
    );
    let clf = "$context.identity.sourceIp - - [$context.requestTime] \"$context.httpMethod $context.resourcePath $context.protocol\" $context.status $context.responseLength $context.requestId";
    let logs = groups(Some(ACCESS), Some(clf), Some(EXECUTION));
    let want = GatewayWords {
        request_id: "r-1".into(),
        source: Some(LogSource::ExecutionLog),
        integration_error: Some("Execution failed due to a timeout error".into()),
        status: Some(504),
        ..GatewayWords::default()
    };
    let found = find(&script, &logs, &["r-1"], SystemTime::now())
        .await
        .expect("no error");
    assert_eq!(found.as_ref(), Some(&want));
    assert_eq!(script.calls(), 1, "a CLF access log is not searched");

    // By the extended id: the pattern matches only the `Extended Request Id` line, so a
    // second search by the request id it names reads the rest.
    let before = script.calls();
    let found = find(&script, &logs, &["X1="], SystemTime::now())
        .await
        .expect("no error");
    assert_eq!(found.as_ref(), Some(&want));
    assert_eq!(script.calls() - before, 2);
    let filters = script.filters.lock().expect("lock").clone();
    assert_eq!(
        filters
            .last()
            .and_then(|f| f.filter_pattern.clone())
            .as_deref(),
        Some("\"r-1\"")
    );
}

#[tokio::test]
async fn empty_pages_with_a_token_are_followed_within_a_bound() {
    let script = Script {
        empty_pages: 5,
        ..Script::default()
    };
    script.put(ACCESS, &access_line("r-1", "X1=", 502));
    let logs = groups(Some(ACCESS), None, None);
    let found = find(&script, &logs, &["r-1"], SystemTime::now())
        .await
        .expect("no error");
    assert!(found.is_some());
    assert_eq!(script.calls(), 6);

    let endless = Script {
        endless: true,
        ..Script::default()
    };
    let err = find(&endless, &logs, &["r-1"], SystemTime::now())
        .await
        .expect_err("too many pages");
    assert_eq!(
        err,
        LookupError::TooManyPages {
            group: ACCESS.into(),
            pages: MAX_PAGES
        }
    );
    assert_eq!(endless.calls(), MAX_PAGES);
}

#[tokio::test]
async fn failures_are_typed() {
    let service = |code: &str| {
        CallError::Service(ServiceError {
            status: 400,
            code: Some(code.into()),
            message: "said".into(),
        })
    };
    let table: Vec<(CallError, &str, String)> = vec![
        (
            service("ThrottlingException"),
            "throttled",
            "FilterLogEvents on /aws/apigateway/access was throttled: ThrottlingException: said"
                .into(),
        ),
        (
            service("AccessDeniedException"),
            "access_denied",
            "access denied: the agent needs logs:FilterLogEvents on log group /aws/apigateway/access (AccessDeniedException: said)".into(),
        ),
        (
            service("ResourceNotFoundException"),
            "group_not_found",
            "log group /aws/apigateway/access does not exist (ResourceNotFoundException: said)"
                .into(),
        ),
        (
            CallError::Timeout("no answer".into()),
            "timeout",
            "FilterLogEvents on /aws/apigateway/access gave no answer in time: no answer".into(),
        ),
        (
            CallError::Unreachable("refused".into()),
            "unreachable",
            "CloudWatch Logs unreachable (FilterLogEvents on /aws/apigateway/access): refused"
                .into(),
        ),
        (
            service("InvalidParameterException"),
            "other",
            "FilterLogEvents on /aws/apigateway/access failed: InvalidParameterException: said"
                .into(),
        ),
    ];
    let logs = groups(Some(ACCESS), None, None);
    for (call, class, text) in table {
        let script = Script::default();
        *script.fail.lock().expect("lock") = Some(call);
        let err = find(&script, &logs, &["r-1"], SystemTime::now())
            .await
            .expect_err("fails");
        assert_eq!(err.class(), class);
        assert_eq!(err.to_string(), text);
    }
    let script = Script::default();
    assert_eq!(
        find(&script, &logs, &["bad\"id", ""], SystemTime::now()).await,
        Err(LookupError::Nothing("no usable request id"))
    );
    assert_eq!(
        find(
            &script,
            &groups(None, None, None),
            &["r-1"],
            SystemTime::now()
        )
        .await,
        Err(LookupError::Nothing("no log group configured"))
    );
    // Only a CLF access log: nothing can be read, which is not "absent".
    let clf = groups(
        Some(ACCESS),
        Some("$context.requestId $context.status"),
        None,
    );
    let err = find(&script, &clf, &["r-1"], SystemTime::now())
        .await
        .expect_err("unreadable");
    assert_eq!(err.class(), "nothing");
    assert!(unsearchable(&clf).is_some_and(|why| err.to_string().ends_with(why)));
    assert_eq!(script.calls(), 0);
}

/// A search that fails on one group and answers on the other.
struct OneGroupFails(Script);

impl Search for OneGroupFails {
    fn filter<'a>(&'a self, filter: &'a Filter) -> PageFuture<'a> {
        if filter.log_group_name == ACCESS {
            return Box::pin(async { Err(CallError::Timeout("slow".into())) });
        }
        self.0.filter(filter)
    }
}

#[tokio::test]
async fn a_failing_group_does_not_hide_the_other_ones_record() {
    let script = Script::default();
    script.put(EXECUTION, "(r-1) Method completed with status: 504");
    let search = OneGroupFails(script);
    let both = groups(Some(ACCESS), None, Some(EXECUTION));
    let found = find(&search, &both, &["r-1"], SystemTime::now())
        .await
        .expect("found in the execution log");
    assert_eq!(found.map(|w| w.status), Some(Some(504)));
    // Absent from the execution log: the access log's failure is the answer, not "absent".
    let err = find(&search, &both, &["r-2"], SystemTime::now())
        .await
        .expect_err("the access log failed");
    assert_eq!(err.class(), "timeout");
}

#[test]
fn ids_and_patterns() {
    assert!(usable_id("17cb49b2-c061-11e9-bc30-f118c8b08d5f"));
    assert!(usable_id("eZmXuH7yoAMFR3g="));
    assert!(!usable_id(""));
    assert!(!usable_id("a\"b"));
    assert!(!usable_id("a b"));
    assert!(!usable_id(&"a".repeat(129)));
    assert_eq!(pattern(&["a-1"]), "\"a-1\"");
    assert_eq!(pattern(&["a-1", "B="]), "?\"a-1\" ?\"B=\"");
}

fn lookup_config(retry_for: Duration) -> GatewayLogLookup {
    GatewayLogLookup {
        min_interval: Duration::from_secs(60),
        retry_for,
        timeout: Duration::from_secs(1),
        ..GatewayLogLookup::default()
    }
}

const FAST: Backoff = Backoff {
    first: Duration::from_millis(10),
    max: Duration::from_millis(40),
};

/// Waits until `cond` holds, or panics after 10 s naming `what`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_late_record_is_found_by_retrying_and_a_second_request_is_skipped() {
    let script = Arc::new(Script::default());
    script.put(ACCESS, &access_line("other", "O=", 200));
    let lookups = Lookups::with_backoff(
        script.clone(),
        &lookup_config(Duration::from_secs(30)),
        FAST,
    );
    let logs = groups(Some(ACCESS), None, None);
    let around = SystemTime::now();
    assert_eq!(
        lookups.request("c", &logs, &["r-1"], around),
        Requested::Started
    );
    eventually("two tries without the record", || script.calls() >= 2).await;
    assert_eq!(lookups.words("c"), None);
    assert_eq!(
        lookups.request("c", &logs, &["r-2"], around),
        Requested::Skipped
    );
    script.put(ACCESS, &access_line("r-1", "X1=", 504));
    eventually("the words", || lookups.words("c").is_some()).await;
    let (words, at) = lookups.words("c").expect("words");
    assert_eq!(words.request_id, "r-1");
    assert_eq!(at, around);
    let counts = lookups.counts();
    assert_eq!(
        counts.snapshot(),
        [("found", 1), ("not_found", 0), ("error", 0), ("skipped", 1)]
    );
    let latest = lookups.latest("c").expect("latest");
    assert_eq!(
        latest.result.map(|w| w.map(|w| w.request_id)),
        Ok(Some("r-1".into()))
    );
    assert_eq!(lookups.words("other chain"), None);
}

#[tokio::test]
async fn an_absent_record_is_given_up_after_retry_for_and_errors_are_not_retried() {
    let script = Arc::new(Script::default());
    script.put(ACCESS, &access_line("other", "O=", 200));
    let lookups = Lookups::with_backoff(
        script.clone(),
        &lookup_config(Duration::from_millis(200)),
        FAST,
    );
    let logs = groups(Some(ACCESS), None, None);
    let started = Instant::now();
    assert_eq!(
        lookups.request("c", &logs, &["r-1"], SystemTime::now()),
        Requested::Started
    );
    eventually("not found", || {
        lookups.counts().get(LookupResult::NotFound) == 1
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(script.calls() >= 3, "retried: {} calls", script.calls());
    assert_eq!(lookups.latest("c").map(|l| l.result), Some(Ok(None)));
    assert_eq!(lookups.words("c"), None);

    let failing = Arc::new(Script::default());
    *failing.fail.lock().expect("lock") = Some(CallError::Unreachable("refused".into()));
    let lookups = Lookups::with_backoff(
        failing.clone(),
        &lookup_config(Duration::from_secs(30)),
        FAST,
    );
    lookups.request("c", &logs, &["r-1"], SystemTime::now());
    eventually("the error", || {
        lookups.counts().get(LookupResult::Error) == 1
    })
    .await;
    assert_eq!(failing.calls(), 1);
    let latest = lookups.latest("c").expect("latest");
    assert_eq!(latest.result.map_err(|e| e.class()), Err("unreachable"));
}

#[tokio::test]
async fn nothing_to_look_up_is_not_started_and_forget_stops_a_lookup() {
    let script = Arc::new(Script::default());
    script.put(ACCESS, &access_line("other", "O=", 200));
    let lookups = Lookups::with_backoff(
        script.clone(),
        &lookup_config(Duration::from_secs(30)),
        FAST,
    );
    let logs = groups(Some(ACCESS), None, None);
    assert_eq!(
        lookups.request("c", &groups(None, None, None), &["r-1"], SystemTime::now()),
        Requested::Nothing
    );
    assert_eq!(
        lookups.request("c", &logs, &["not an id"], SystemTime::now()),
        Requested::Nothing
    );
    assert_eq!(
        lookups.request(
            "c",
            &groups(Some(ACCESS), Some("$context.requestId"), None),
            &["r-1"],
            SystemTime::now()
        ),
        Requested::Nothing
    );
    assert_eq!(
        lookups.request("c", &logs, &["r-1"], SystemTime::now()),
        Requested::Started
    );
    eventually("a try", || script.calls() >= 1).await;
    lookups.forget("c");
    script.put(ACCESS, &access_line("r-1", "X1=", 504));
    // Forgotten: a new request starts at once (no min_interval left), and the stopped lookup
    // never publishes.
    let calls = script.calls();
    assert_eq!(
        lookups.request("c", &logs, &["r-9"], SystemTime::now()),
        Requested::Started
    );
    eventually("the new lookup's tries", || script.calls() >= calls + 3).await;
    assert_eq!(lookups.words("c"), None);
    assert_eq!(lookups.counts().get(LookupResult::Found), 0);
}

#[tokio::test]
async fn the_one_shot_lookup_keeps_its_deadline() {
    let logs = groups(Some(ACCESS), None, None);
    let script = Script::default();
    script.put(ACCESS, &access_line("r-1", "X1=", 504));
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = look_up(&script, &logs, &["r-1"], SystemTime::now(), deadline, FAST)
        .await
        .expect("no error");
    assert_eq!(found.map(|w| w.status), Some(Some(504)));

    let started = Instant::now();
    let deadline = started + Duration::from_millis(150);
    let absent = look_up(&script, &logs, &["r-2"], SystemTime::now(), deadline, FAST).await;
    assert_eq!(absent, Ok(None));
    assert!(started.elapsed() < Duration::from_secs(2));

    let hanging = Script {
        hang: true,
        ..Script::default()
    };
    let started = Instant::now();
    let deadline = started + Duration::from_millis(150);
    let err = look_up(&hanging, &logs, &["r-1"], SystemTime::now(), deadline, FAST)
        .await
        .expect_err("cut by the deadline");
    assert_eq!(err.class(), "timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
}

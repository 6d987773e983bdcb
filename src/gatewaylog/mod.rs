//! What API Gateway logged of one request the agent sent, looked up in CloudWatch Logs.
//!
//! A failed probe through a gateway carries the request's ids (`x-amzn-RequestId` or
//! `apigw-requestid`, and `x-amz-apigw-id`); the stage's access log and, on REST, its execution
//! log hold a line (or lines) of that request with the gateway's own words on why it failed
//! (brief §3). [`find`] reads them with `FilterLogEvents` ([`logs`]), parses them ([`access`],
//! [`execution`]) into [`GatewayWords`], and [`Lookups`] schedules lookups for the agent:
//! at most one per chain per `min_interval`, retried while the record is late, never blocking
//! a round.
//!
//! A record is only ever returned when the id it carries is one the caller looked up: the
//! filter pattern narrows the search, it does not decide it (and LocalStack ignores it:
//! tests/gateway_log.rs).

pub mod access;
pub mod execution;
pub mod logs;
mod schedule;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::aws::call::CallError;
use crate::config::GatewayLogs;
use crate::facts::GatewayWords;

pub use logs::{Event, Filter, LazyLogs, Logs, Page, PageFuture, Search};
pub use schedule::{
    look_up, Backoff, LookupCounts, LookupOutcome, LookupResult, Lookups, Requested,
};

/// How far before the probe's start a record is looked for: the gateway logs a request when
/// it ends, and an event's timestamp is the writer's (API_InputLogEvent.html), so the window is
/// wide on both sides.
pub const BEFORE: Duration = Duration::from_secs(5 * 60);

/// How far after the probe's start a record is looked for (an integration may run up to
/// 29 s on REST, 30 s on HTTP APIs, before the gateway logs it).
pub const AFTER: Duration = Duration::from_secs(5 * 60);

/// Pages followed per log group and lookup. `FilterLogEvents` scans a group in time slices and
/// may answer empty pages with a `nextToken` before it reaches the events (API_FilterLogEvents
/// .html); a busy group over a ten-minute window takes a few. More than this is an error, not
/// an absent record.
pub const MAX_PAGES: usize = 30;

/// Events asked per page: an access log has one line per request, an execution log a few
/// dozen.
const PAGE_LIMIT: u32 = 100;

/// Why a lookup could not say whether the gateway logged the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Nothing to search: no log group configured, or no id a filter pattern can hold.
    #[error("nothing to look up: {0}")]
    Nothing(&'static str),
    /// CloudWatch Logs throttled the calls, after the SDK's retries (FilterLogEvents: 5 per
    /// second per account and Region).
    #[error("FilterLogEvents on {group} was throttled: {message}")]
    Throttled { group: String, message: String },
    /// The agent's role may not read the group.
    #[error(
        "access denied: the agent needs logs:FilterLogEvents on log group {group} ({message})"
    )]
    AccessDenied { group: String, message: String },
    /// The group does not exist (a wrong name, or logging never turned on for the stage).
    #[error("log group {group} does not exist ({message})")]
    GroupNotFound { group: String, message: String },
    /// No answer in time.
    #[error("FilterLogEvents on {group} gave no answer in time: {message}")]
    Timeout { group: String, message: String },
    /// CloudWatch Logs could not be reached.
    #[error("CloudWatch Logs unreachable (FilterLogEvents on {group}): {message}")]
    Unreachable { group: String, message: String },
    /// The group still had pages to search after [`MAX_PAGES`].
    #[error("FilterLogEvents on {group} still had more to search after {pages} pages")]
    TooManyPages { group: String, pages: usize },
    /// Anything else CloudWatch Logs or the SDK said.
    #[error("FilterLogEvents on {group} failed: {message}")]
    Other { group: String, message: String },
}

impl LookupError {
    /// A small closed name of the kind of failure, for logs and metrics (never the text).
    pub fn class(&self) -> &'static str {
        match self {
            LookupError::Nothing(_) => "nothing",
            LookupError::Throttled { .. } => "throttled",
            LookupError::AccessDenied { .. } => "access_denied",
            LookupError::GroupNotFound { .. } => "group_not_found",
            LookupError::Timeout { .. } => "timeout",
            LookupError::Unreachable { .. } => "unreachable",
            LookupError::TooManyPages { .. } => "too_many_pages",
            LookupError::Other { .. } => "other",
        }
    }

    fn of_call(group: &str, error: CallError) -> LookupError {
        let group = group.to_string();
        match error {
            CallError::Service(e) => {
                let code = e.code.clone().unwrap_or_default();
                let message = e.to_string();
                if logs::THROTTLING.contains(&code.as_str()) {
                    LookupError::Throttled { group, message }
                } else if matches!(
                    code.as_str(),
                    "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation"
                ) {
                    LookupError::AccessDenied { group, message }
                } else if code == "ResourceNotFoundException" {
                    LookupError::GroupNotFound { group, message }
                } else {
                    LookupError::Other { group, message }
                }
            }
            CallError::Timeout(message) => LookupError::Timeout { group, message },
            CallError::Unreachable(message) => LookupError::Unreachable { group, message },
            CallError::Credentials(message) | CallError::Other(message) => {
                LookupError::Other { group, message }
            }
        }
    }
}

/// Whether `id` can stand in a quoted filter-pattern term and be a request id: request ids
/// are UUIDs, extended ids base64 (`eZmXuH7yoAMFR3g=`); nothing else is looked up (a header
/// a backend set to anything must not become a pattern).
pub fn usable_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '+' | '/' | '.'))
}

/// The filter pattern that matches a line holding any of `ids`: `"a"` for one,
/// `?"a" ?"b"` for several (FilterAndPatternSyntax.html: quoted terms match exactly, `?term`
/// matches either term).
pub fn pattern(ids: &[&str]) -> String {
    match ids {
        [one] => format!("\"{one}\""),
        many => many
            .iter()
            .map(|id| format!("?\"{id}\""))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Milliseconds since the Unix epoch (0 for a time before it).
fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Why no configured group of `groups` can be searched for a request, if none can: no group,
/// or only an access log whose lines cannot be read (not JSON, or no id as a value of its own).
pub fn unsearchable(groups: &GatewayLogs) -> Option<&'static str> {
    if groups.execution_log_group.is_some() {
        return None;
    }
    match &groups.access_log_group {
        None => Some("no log group configured"),
        Some(_) if access::Format::new(groups.access_log_format.as_deref()).has_id() => None,
        Some(_) => Some(
            "the access log format is not JSON with $context.requestId or \
             $context.extendedRequestId as a value of its own, and only such lines are read",
        ),
    }
}

/// What the gateway logged of the request `ids` names (its request id and/or its extended id),
/// sent at `around`: the access log first, then the execution log; the first record found
/// answers. `Ok(None)`: every configured group was searched to its end and holds no line of
/// that request (yet: logs arrive late; [`Lookups`] retries). A group that fails does not
/// hide a record in the other; the failure is returned only when no record was found.
pub async fn find(
    search: &dyn Search,
    groups: &GatewayLogs,
    ids: &[&str],
    around: SystemTime,
) -> Result<Option<GatewayWords>, LookupError> {
    let ids: Vec<&str> = ids.iter().copied().filter(|id| usable_id(id)).collect();
    if ids.is_empty() {
        return Err(LookupError::Nothing("no usable request id"));
    }
    if let Some(why) = unsearchable(groups) {
        return Err(LookupError::Nothing(why));
    }
    let window = (
        millis(around.checked_sub(BEFORE).unwrap_or(UNIX_EPOCH)),
        millis(around.checked_add(AFTER).unwrap_or(around)),
    );
    let mut failed = None;
    if let Some(group) = &groups.access_log_group {
        let format = access::Format::new(groups.access_log_format.as_deref());
        if format.has_id() {
            match in_access_log(search, group, &format, &ids, window).await {
                Ok(Some(words)) => return Ok(Some(words)),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
    }
    if let Some(group) = &groups.execution_log_group {
        match in_execution_log(search, group, &ids, window).await {
            Ok(Some(words)) => return Ok(Some(words)),
            Ok(None) => {}
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// The first access log line of the request.
async fn in_access_log(
    search: &dyn Search,
    group: &str,
    format: &access::Format,
    ids: &[&str],
    window: (i64, i64),
) -> Result<Option<GatewayWords>, LookupError> {
    let mut found = None;
    scan(search, group, &pattern(ids), window, |event| {
        found = access::read(&event.message, format)
            .filter(|record| record.is_of(ids))
            .map(|record| record.words);
        found.is_some()
    })
    .await?;
    Ok(found)
}

/// The request's execution log lines, read together.
async fn in_execution_log(
    search: &dyn Search,
    group: &str,
    ids: &[&str],
    window: (i64, i64),
) -> Result<Option<GatewayWords>, LookupError> {
    let mut lines = Vec::new();
    scan(search, group, &pattern(ids), window, |event| {
        lines.push(event.message.clone());
        false
    })
    .await?;
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let Some(request) = execution::request_of(&refs, ids).map(str::to_string) else {
        return Ok(None);
    };
    if !ids.contains(&request.as_str()) && usable_id(&request) {
        // Found by its extended id: only the `Extended Request Id:` line matched; the
        // request's other lines carry its request id.
        scan(search, group, &pattern(&[&request]), window, |event| {
            lines.push(event.message.clone());
            false
        })
        .await?;
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    Ok(execution::read(&refs, &request))
}

/// Every page of `pattern` in `group` over `window`, each event handed to `each` until it says
/// stop; empty pages with a token followed, at most [`MAX_PAGES`].
async fn scan(
    search: &dyn Search,
    group: &str,
    pattern: &str,
    window: (i64, i64),
    mut each: impl FnMut(&Event) -> bool,
) -> Result<(), LookupError> {
    let mut filter = Filter {
        log_group_name: group.to_string(),
        filter_pattern: Some(pattern.to_string()),
        start_time: window.0,
        end_time: window.1,
        next_token: None,
        limit: Some(PAGE_LIMIT),
    };
    for _ in 0..MAX_PAGES {
        let page = search
            .filter(&filter)
            .await
            .map_err(|e| LookupError::of_call(group, e))?;
        for event in &page.events {
            if each(event) {
                return Ok(());
            }
        }
        match page.next_token.filter(|t| !t.is_empty()) {
            Some(token) => filter.next_token = Some(token),
            None => return Ok(()),
        }
    }
    Err(LookupError::TooManyPages {
        group: group.to_string(),
        pages: MAX_PAGES,
    })
}

#[cfg(test)]
mod tests;

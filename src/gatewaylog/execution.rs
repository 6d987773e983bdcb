//! Reading a REST stage's execution log (`API-Gateway-Execution-Logs_{restApiId}/{stage}`).
//!
//! Every line of a request's execution log starts with its request id in parentheses:
//! `(17cb49b2-…) Starting execution for request: 17cb49b2-…` (aws.amazon.com/blogs/compute/
//! techniques-and-tools-for-better-serverless-api-logging-with-amazon-api-gateway-and-aws-lambda:
//! the request id "is always included in the first event in the request log"). The lines read
//! here:
//!
//! - `Extended Request Id: eZmXuH7yoAMFR3g=`: the `x-amz-apigw-id` of the request
//!   (repost.aws/knowledge-center/collect-api-gateway-extended-request-ids: extended request
//!   ids appear in the execution logs);
//! - `Execution failed due to …`: why the gateway gave up, e.g. `Execution failed due to
//!   configuration error: There was an internal error while executing your request` or
//!   `… Host name 'x' does not match the certificate subject provided by the peer (CN=y)`
//!   (repost.aws/knowledge-center/api-gateway-500-error-vpc), `Execution failed due to a
//!   timeout error` after `Endpoint request body after transformations:`
//!   (repost.aws/knowledge-center/api-gateway-504-errors);
//! - `Received response. Status: 502, Integration latency: 25 ms`: what the integration
//!   answered the gateway with;
//! - `Method completed with status: 504`: what the gateway answered the caller with
//!   (both repost.aws/knowledge-center/api-gateway-500-error-vpc's examples).
//!
//! `Endpoint response body before transformations: …` is the backend's own body, not the
//! gateway's words: it is not kept.

use crate::facts::{GatewayWords, LogSource};

/// `(id) text` → (`id`, `text`).
pub fn split(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix('(')?;
    let (id, text) = rest.split_once(')')?;
    if id.is_empty() || id.contains(char::is_whitespace) {
        return None;
    }
    Some((id, text.trim()))
}

/// The request id of the request `ids` names, among `lines`: an id that prefixes a line, or the
/// id of the line that says one of `ids` is its extended id. `None` when no line is of it.
pub fn request_of<'a>(lines: &[&'a str], ids: &[&str]) -> Option<&'a str> {
    let parsed: Vec<(&str, &str)> = lines.iter().copied().filter_map(split).collect();
    if let Some((id, _)) = parsed.iter().find(|(id, _)| ids.contains(id)) {
        return Some(id);
    }
    parsed.iter().find_map(|(id, text)| {
        let extended = text.strip_prefix("Extended Request Id:")?.trim();
        ids.contains(&extended).then_some(*id)
    })
}

/// What the lines of request `request_id` say. `None` when no line is of it.
pub fn read(lines: &[&str], request_id: &str) -> Option<GatewayWords> {
    let mut words = GatewayWords {
        request_id: request_id.to_string(),
        source: Some(LogSource::ExecutionLog),
        ..GatewayWords::default()
    };
    let mut any = false;
    for (id, text) in lines.iter().copied().filter_map(split) {
        if id != request_id {
            continue;
        }
        any = true;
        if text.starts_with("Execution failed due to") {
            // The last one: a retried request logs each failure, the last is why it ended.
            words.integration_error = Some(text.to_string());
        } else if let Some(status) = text.strip_prefix("Method completed with status:") {
            words.status = status.trim().parse().ok();
        } else if let Some(rest) = text.strip_prefix("Received response. Status:") {
            let status = rest.split(',').next().unwrap_or_default().trim();
            if !status.is_empty() {
                words.integration_status = Some(status.to_string());
            }
        }
    }
    any.then_some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VPC-link integration failing on a REST stage: the execution log's lines as CloudWatch
    /// Logs holds them (the texts of repost.aws/knowledge-center/api-gateway-500-error-vpc and
    /// …/api-gateway-504-errors, with the request id prefix every line has), and a second
    /// request's lines interleaved.
    const EXCERPT: &[&str] = &[
        "(abc-123) Extended Request Id: eZmXuH7yoAMFR3g=",
        "(abc-123) Verifying Usage Plan for request: abc-123. API Key:  API Stage: a1b2c3/prod",
        "(abc-123) API Key  authorized because method 'GET /' does not require API Key. Request will not contribute to throttle or quota limits",
        "(abc-123) Usage Plan check succeeded for API Key  and API Stage a1b2c3/prod",
        "(abc-123) Starting execution for request: abc-123",
        "(abc-123) HTTP Method: GET, Resource Path: /",
        "(def-456) Starting execution for request: def-456",
        "(abc-123) Endpoint request URI: http://nlb-1.elb.us-east-1.amazonaws.com/",
        "(abc-123) Endpoint request body after transformations: ",
        "(def-456) Received response. Status: 200, Integration latency: 12 ms",
        "(abc-123) Sending request to http://nlb-1.elb.us-east-1.amazonaws.com/",
        "(abc-123) Execution failed due to configuration error: Unable to establish connection to the VPC link",
        "(abc-123) Method completed with status: 500",
        "(def-456) Method completed with status: 200",
    ];

    #[test]
    fn lines_split_into_id_and_text() {
        let table: &[(&str, Option<(&str, &str)>)] = &[
            (
                "(abc-123) Method completed with status: 504",
                Some(("abc-123", "Method completed with status: 504")),
            ),
            ("(abc-123)", Some(("abc-123", ""))),
            ("abc-123 Method completed", None),
            ("() text", None),
            ("(a b) text", None),
            ("(abc-123 no close", None),
        ];
        for (line, want) in table {
            assert_eq!(split(line), *want, "{line}");
        }
    }

    #[test]
    fn the_request_is_found_by_either_id() {
        assert_eq!(request_of(EXCERPT, &["abc-123"]), Some("abc-123"));
        assert_eq!(request_of(EXCERPT, &["eZmXuH7yoAMFR3g="]), Some("abc-123"));
        assert_eq!(request_of(EXCERPT, &["nope", "def-456"]), Some("def-456"));
        assert_eq!(request_of(EXCERPT, &["nope"]), None);
        assert_eq!(request_of(&[], &["abc-123"]), None);
    }

    #[test]
    fn a_failed_request_says_why() {
        let table: &[(&[&str], &str, Option<GatewayWords>)] = &[
            (
                EXCERPT,
                "abc-123",
                Some(GatewayWords {
                    request_id: "abc-123".into(),
                    source: Some(LogSource::ExecutionLog),
                    integration_error: Some(
                        "Execution failed due to configuration error: Unable to establish connection to the VPC link"
                            .into(),
                    ),
                    status: Some(500),
                    ..GatewayWords::default()
                }),
            ),
            (
                EXCERPT,
                "def-456",
                Some(GatewayWords {
                    request_id: "def-456".into(),
                    source: Some(LogSource::ExecutionLog),
                    integration_status: Some("200".into()),
                    status: Some(200),
                    ..GatewayWords::default()
                }),
            ),
            (
                &[
                    "(t-1) Endpoint request body after transformations: ",
                    "(t-1) Execution failed due to a timeout error",
                    "(t-1) Method completed with status: 504",
                ],
                "t-1",
                Some(GatewayWords {
                    request_id: "t-1".into(),
                    source: Some(LogSource::ExecutionLog),
                    integration_error: Some("Execution failed due to a timeout error".into()),
                    status: Some(504),
                    ..GatewayWords::default()
                }),
            ),
            (
                &[
                    "(c-1) Received response. Status: 502, Integration latency: 25 ms",
                    "(c-1) Endpoint response body before transformations: {\"message\":\"bad\"}",
                    "(c-1) Method completed with status: soon",
                ],
                "c-1",
                Some(GatewayWords {
                    request_id: "c-1".into(),
                    source: Some(LogSource::ExecutionLog),
                    integration_status: Some("502".into()),
                    ..GatewayWords::default()
                }),
            ),
            (EXCERPT, "zzz", None),
        ];
        for (lines, id, want) in table {
            assert_eq!(read(lines, id), *want, "{id}");
        }
    }
}

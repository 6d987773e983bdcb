//! Reading one line of a stage's access log.
//!
//! The owner chooses the format (`accessLogSettings.format` on the stage): a line of text with
//! `$context` variables in it, which API Gateway fills in per request (set-up-logging.html,
//! "Access log formats"; the variables: api-gateway-variables-for-access-logging.html for REST,
//! http-api-logging-variables.html for HTTP APIs). **Only JSON formats are read here**: a line
//! that is not a JSON object (CLF, CSV, XML, or any free text) gives `None`, as does a line
//! whose id cannot be read.
//!
//! When the format string is known, each key path of it is mapped to the variable it holds,
//! so renamed keys (`{"rid":"$context.requestId","why":"$context.integrationErrorMessage"}`)
//! and nested objects are read where the owner put them. Without it, keys named like the
//! variables are read (`requestId`, `integration.error` or `{"integration":{"error":…}}`, …),
//! which is AWS's own example format (set-up-logging.html, the JSON example:
//! `{ "requestId":"$context.requestId", "extendedRequestId":"$context.extendedRequestId", …,
//! "status":"$context.status", … }`).
//!
//! API Gateway writes `-` for a variable with no value (the `"caller": "-"` of the example
//! answer in repost.aws/knowledge-center/api-gateway-errors-cloudwatch-logs): read as absent.

use serde_json::Value;

use crate::facts::{GatewayWords, LogSource};

/// The `$context` variables read from an access log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// `$context.requestId`: the `x-amzn-RequestId` (REST) or `apigw-requestid` (HTTP) header.
    RequestId,
    /// `$context.extendedRequestId`: the `x-amz-apigw-id` header.
    ExtendedRequestId,
    /// `$context.integrationErrorMessage`.
    IntegrationErrorMessage,
    /// `$context.integration.error`.
    IntegrationError,
    /// `$context.integration.status`.
    IntegrationStatus,
    /// `$context.integrationStatus` (the older name; for a Lambda proxy integration, Lambda's
    /// own status: repost.aws/knowledge-center/api-gateway-504-errors).
    IntegrationStatusLegacy,
    /// `$context.error.responseType`.
    ErrorResponseType,
    /// `$context.error.message`.
    ErrorMessage,
    /// `$context.status`.
    Status,
}

/// Every variable, with its name after `$context.`.
const VARIABLES: [(Variable, &str); 9] = [
    (Variable::RequestId, "requestId"),
    (Variable::ExtendedRequestId, "extendedRequestId"),
    (Variable::IntegrationErrorMessage, "integrationErrorMessage"),
    (Variable::IntegrationError, "integration.error"),
    (Variable::IntegrationStatus, "integration.status"),
    (Variable::IntegrationStatusLegacy, "integrationStatus"),
    (Variable::ErrorResponseType, "error.responseType"),
    (Variable::ErrorMessage, "error.message"),
    (Variable::Status, "status"),
];

impl Variable {
    /// The variable named `name` (after `$context.`), if it is one read here.
    pub fn named(name: &str) -> Option<Variable> {
        VARIABLES.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
    }
}

/// Where each variable is in a line: key paths from the root object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// `None`: the format is known and is not JSON; no line of it is read.
    paths: Option<Vec<(Vec<String>, Variable)>>,
}

impl Format {
    /// The places of the variables in the stage's format `format`, or the keys named like the
    /// variables when the format is not known.
    pub fn new(format: Option<&str>) -> Format {
        match format {
            Some(text) => Format {
                paths: mapped(text),
            },
            None => Format::by_name(),
        }
    }

    /// Keys named like the variables: `requestId`, `integration.error` as one key or as
    /// `integration` → `error`, …
    fn by_name() -> Format {
        let mut paths = Vec::new();
        for (variable, name) in VARIABLES {
            paths.push((vec![name.to_string()], variable));
            if name.contains('.') {
                paths.push((name.split('.').map(str::to_string).collect(), variable));
            }
        }
        Format { paths: Some(paths) }
    }

    /// Whether lines of this format can be read at all (a JSON format).
    pub fn is_json(&self) -> bool {
        self.paths.is_some()
    }

    /// Whether a line of this format can say which request it is of: a JSON format with
    /// `$context.requestId` or `$context.extendedRequestId` as a value of its own (AWS requires
    /// one of them in every format, set-up-access-logging.html, but one inside a longer string
    /// cannot be read back).
    pub fn has_id(&self) -> bool {
        self.paths.as_ref().is_some_and(|paths| {
            paths
                .iter()
                .any(|(_, v)| matches!(v, Variable::RequestId | Variable::ExtendedRequestId))
        })
    }
}

/// What one access log line says of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `$context.requestId`, when the line has it.
    pub request_id: Option<String>,
    /// `$context.extendedRequestId`, when the line has it.
    pub extended_request_id: Option<String>,
    /// The gateway's words; `request_id` is the request id, else the extended one.
    pub words: GatewayWords,
}

impl Record {
    /// Whether this line is of one of the requests `ids` names (either id).
    pub fn is_of(&self, ids: &[&str]) -> bool {
        [&self.request_id, &self.extended_request_id]
            .into_iter()
            .flatten()
            .any(|id| ids.contains(&id.as_str()))
    }
}

/// Reads `line` (one CloudWatch Logs event's message) in `format`. `None` when the line is
/// not a JSON object, or carries neither id.
pub fn read(line: &str, format: &Format) -> Option<Record> {
    let paths = format.paths.as_ref()?;
    let root: Value = serde_json::from_str(line.trim()).ok()?;
    if !root.is_object() {
        return None;
    }
    let get = |wanted: Variable| -> Option<String> {
        paths
            .iter()
            .filter(|(_, v)| *v == wanted)
            .find_map(|(path, _)| value_at(&root, path))
    };
    let request_id = get(Variable::RequestId);
    let extended_request_id = get(Variable::ExtendedRequestId);
    let id = request_id.clone().or_else(|| extended_request_id.clone())?;
    let words = GatewayWords {
        request_id: id,
        source: Some(LogSource::AccessLog),
        response_type: get(Variable::ErrorResponseType),
        integration_error: get(Variable::IntegrationErrorMessage)
            .or_else(|| get(Variable::IntegrationError)),
        integration_status: get(Variable::IntegrationStatus)
            .or_else(|| get(Variable::IntegrationStatusLegacy)),
        message: get(Variable::ErrorMessage),
        status: get(Variable::Status).and_then(|s| s.parse().ok()),
    };
    Some(Record {
        request_id,
        extended_request_id,
        words,
    })
}

/// The text at `path` under `root`: a string, or a number or boolean as written (a format
/// may leave a variable unquoted, `"status": $context.status`). `-` and empty are absent.
fn value_at(root: &Value, path: &[String]) -> Option<String> {
    let mut at = root;
    for key in path {
        at = at.as_object()?.get(key)?;
    }
    let text = match at {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!text.is_empty() && text != "-").then_some(text)
}

/// The key paths of a JSON format string that hold exactly one variable read here. `None`
/// when the format is not a JSON object.
fn mapped(format: &str) -> Option<Vec<(Vec<String>, Variable)>> {
    let root: Value = serde_json::from_str(&quote_bare_variables(format)).ok()?;
    if !root.is_object() {
        return None;
    }
    let mut out = Vec::new();
    walk(&root, &mut Vec::new(), &mut out);
    Some(out)
}

fn walk(value: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Variable)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                path.push(key.clone());
                walk(inner, path, out);
                path.pop();
            }
        }
        Value::String(text) => {
            // Only a value that is one variable and nothing else can be read back: in
            // `"x":"$context.requestId $context.status"` nothing says where one ends.
            if let Some(variable) = single_variable(text.trim()).and_then(Variable::named) {
                out.push((path.clone(), variable));
            }
        }
        _ => {}
    }
}

/// `$context.NAME` or `${context.NAME}` (VTL's formal notation; AWS's examples use the first,
/// and the second is read in case an owner wrote it) → `NAME`, when `text` is nothing else.
fn single_variable(text: &str) -> Option<&str> {
    let name = if let Some(inner) = text.strip_prefix("${context.") {
        inner.strip_suffix('}')?
    } else {
        text.strip_prefix("$context.")?
    };
    let is_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    is_name.then_some(name)
}

/// The format with every variable that stands outside a JSON string put in quotes, so that
/// `{"status": $context.status}` parses.
fn quote_bare_variables(format: &str) -> String {
    let mut out = String::with_capacity(format.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = format;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_string = true;
        } else if c == '$' {
            let len = bare_variable_len(rest);
            if len > 0 {
                out.push('"');
                out.push_str(&rest[..len]);
                out.push('"');
                rest = &rest[len..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The length of the variable reference `text` starts with (`$context.a.b`, `${context.a}`),
/// 0 when it starts with none.
fn bare_variable_len(text: &str) -> usize {
    if text.starts_with("${context.") {
        return text.find('}').map_or(0, |end| end + 1);
    }
    if !text.starts_with("$context.") {
        return 0;
    }
    let name_len = text["$context.".len()..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(text.len() - "$context.".len());
    // A trailing dot ends a sentence, not a name.
    let name = text["$context.".len().."$context.".len() + name_len].trim_end_matches('.');
    "$context.".len() + name.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's JSON example format (set-up-logging.html) with the error variables an owner adds
    /// to see why (repost.aws/knowledge-center/api-gateway-errors-cloudwatch-logs adds
    /// `$context.error.message`).
    const AWS_EXAMPLE: &str = r#"{ "requestId":"$context.requestId", "extendedRequestId":"$context.extendedRequestId","ip": "$context.identity.sourceIp", "caller":"$context.identity.caller", "user":"$context.identity.user", "requestTime":"$context.requestTime", "httpMethod":"$context.httpMethod", "resourcePath":"$context.resourcePath", "status":"$context.status", "protocol":"$context.protocol", "responseLength":"$context.responseLength" }"#;

    fn words(
        id: &str,
        response_type: Option<&str>,
        integration_error: Option<&str>,
        integration_status: Option<&str>,
        message: Option<&str>,
        status: Option<u16>,
    ) -> GatewayWords {
        GatewayWords {
            request_id: id.to_string(),
            source: Some(LogSource::AccessLog),
            response_type: response_type.map(str::to_string),
            integration_error: integration_error.map(str::to_string),
            integration_status: integration_status.map(str::to_string),
            message: message.map(str::to_string),
            status,
        }
    }

    #[test]
    fn lines_in_many_formats() {
        let renamed = r#"{"rid":"$context.requestId","xid":"$context.extendedRequestId","why":"$context.integrationErrorMessage","type":"$context.error.responseType","msg":"$context.error.message","code":$context.status,"upstream":"$context.integration.status"}"#;
        let nested = r#"{"ids":{"request":"${context.requestId}","extended":"$context.extendedRequestId"},"integration":{"error":"$context.integration.error","status":$context.integrationStatus},"gateway":{"status":"$context.status","error":{"type":"$context.error.responseType"}}}"#;
        let table: &[(&str, Option<&str>, &str, Option<Record>)] = &[
            (
                "AWS's example format, given",
                Some(AWS_EXAMPLE),
                r#"{ "requestId":"17cb49b2-c061-11e9-bc30-f118c8b08d5f", "extendedRequestId":"eZmXuH7yoAMFR3g=","ip": "1.2.3.4", "caller":"-", "user":"-", "requestTime":"28/Aug/2019:15:10:34 +0000", "httpMethod":"GET", "resourcePath":"/", "status":"504", "protocol":"HTTP/1.1", "responseLength":"41" }"#,
                Some(Record {
                    request_id: Some("17cb49b2-c061-11e9-bc30-f118c8b08d5f".into()),
                    extended_request_id: Some("eZmXuH7yoAMFR3g=".into()),
                    words: words(
                        "17cb49b2-c061-11e9-bc30-f118c8b08d5f",
                        None,
                        None,
                        None,
                        None,
                        Some(504),
                    ),
                }),
            ),
            (
                "keys named like the variables, no format given; - is absent",
                None,
                r#"{"requestId":"r-1","extendedRequestId":"-","integrationErrorMessage":"The connection timed out.","integration.status":"-","error.responseType":"INTEGRATION_TIMEOUT","error.message":"Endpoint request timed out","status":"504"}"#,
                Some(Record {
                    request_id: Some("r-1".into()),
                    extended_request_id: None,
                    words: words(
                        "r-1",
                        Some("INTEGRATION_TIMEOUT"),
                        Some("The connection timed out."),
                        None,
                        Some("Endpoint request timed out"),
                        Some(504),
                    ),
                }),
            ),
            (
                "nested keys named like the variables, no format given",
                None,
                r#"{"requestId":"r-2","integration":{"error":"dial tcp 10.0.1.5:443: i/o timeout","status":"-"},"error":{"responseType":"INTEGRATION_FAILURE","message":"Internal Server Error"},"status":500}"#,
                Some(Record {
                    request_id: Some("r-2".into()),
                    extended_request_id: None,
                    words: words(
                        "r-2",
                        Some("INTEGRATION_FAILURE"),
                        Some("dial tcp 10.0.1.5:443: i/o timeout"),
                        None,
                        Some("Internal Server Error"),
                        Some(500),
                    ),
                }),
            ),
            (
                "renamed keys, a bare number, the format given",
                Some(renamed),
                r#"{"rid":"r-3","xid":"X3=","why":"There was an internal error while executing your request","type":"API_CONFIGURATION_ERROR","msg":"Internal server error","code":500,"upstream":"-"}"#,
                Some(Record {
                    request_id: Some("r-3".into()),
                    extended_request_id: Some("X3=".into()),
                    words: words(
                        "r-3",
                        Some("API_CONFIGURATION_ERROR"),
                        Some("There was an internal error while executing your request"),
                        None,
                        Some("Internal server error"),
                        Some(500),
                    ),
                }),
            ),
            (
                "renamed keys read without the format: nothing to match",
                None,
                r#"{"rid":"r-3","why":"x","code":500}"#,
                None,
            ),
            (
                "nested renamed keys, ${context.x}, integrationStatus",
                Some(nested),
                r#"{"ids":{"request":"r-4","extended":"X4="},"integration":{"error":"-","status":502},"gateway":{"status":"502","error":{"type":"-"}}}"#,
                Some(Record {
                    request_id: Some("r-4".into()),
                    extended_request_id: Some("X4=".into()),
                    words: words("r-4", None, None, Some("502"), None, Some(502)),
                }),
            ),
            (
                "only the extended id logged",
                Some(r#"{"x":"$context.extendedRequestId","s":"$context.status"}"#),
                r#"{"x":"X5=","s":"403"}"#,
                Some(Record {
                    request_id: None,
                    extended_request_id: Some("X5=".into()),
                    words: words("X5=", None, None, None, None, Some(403)),
                }),
            ),
            (
                "a CLF format is not read",
                Some(
                    "$context.identity.sourceIp $context.identity.caller $context.identity.user [$context.requestTime] \"$context.httpMethod $context.resourcePath $context.protocol\" $context.status $context.responseLength $context.requestId $context.extendedRequestId",
                ),
                r#"1.2.3.4 - - [28/Aug/2019:15:10:34 +0000] "GET / HTTP/1.1" 504 41 r-6 X6="#,
                None,
            ),
            (
                "a CLF line with no format given is not read",
                None,
                r#"1.2.3.4 - - [28/Aug/2019:15:10:34 +0000] "GET / HTTP/1.1" 504 41 r-7 X7="#,
                None,
            ),
            (
                "a JSON line without any id",
                None,
                r#"{"status":"504","error.responseType":"INTEGRATION_TIMEOUT"}"#,
                None,
            ),
            ("not an object", None, r#"["requestId","r-8"]"#, None),
            (
                "an unreadable status is absent, the rest is read",
                None,
                r#"{"requestId":"r-9","status":"five hundred"}"#,
                Some(Record {
                    request_id: Some("r-9".into()),
                    extended_request_id: None,
                    words: words("r-9", None, None, None, None, None),
                }),
            ),
        ];
        for (name, format, line, want) in table {
            let got = read(line, &Format::new(*format));
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn a_record_is_of_either_id() {
        let record = read(
            r#"{"requestId":"r-1","extendedRequestId":"X1="}"#,
            &Format::new(None),
        )
        .expect("read");
        assert!(record.is_of(&["r-1"]));
        assert!(record.is_of(&["nope", "X1="]));
        assert!(!record.is_of(&["r-2"]));
        assert!(!record.is_of(&[]));
    }

    #[test]
    fn a_format_maps_key_paths_to_variables() {
        let format = Format::new(Some(
            r#"{"a":"$context.requestId","b":{"c":$context.status,"d":"${context.error.message}"},"e":"$context.requestId $context.status","f":"$context.identity.sourceIp","g":"text"}"#,
        ));
        let paths = format.paths.expect("json");
        let mut got: Vec<(String, Variable)> =
            paths.into_iter().map(|(p, v)| (p.join("/"), v)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("a".to_string(), Variable::RequestId),
                ("b/c".to_string(), Variable::Status),
                ("b/d".to_string(), Variable::ErrorMessage),
            ]
        );
        assert!(!Format::new(Some("$context.requestId $context.status")).is_json());
        assert!(!Format::new(Some("<request id=\"$context.requestId\"/>")).is_json());
        assert!(Format::new(None).is_json());
        assert!(Format::new(None).has_id());
        assert!(Format::new(Some(r#"{"x":"$context.extendedRequestId"}"#)).has_id());
        assert!(!Format::new(Some(r#"{"line":"$context.requestId $context.status"}"#)).has_id());
        assert!(!Format::new(Some("$context.requestId")).has_id());
    }

    #[test]
    fn bare_variables_are_quoted_outside_strings_only() {
        let table = [
            (r#"{"s": $context.status}"#, r#"{"s": "$context.status"}"#),
            (
                r#"{"s":"$context.status","t":${context.requestTime}}"#,
                r#"{"s":"$context.status","t":"${context.requestTime}"}"#,
            ),
            (
                r#"{"s":"a \" $context.x", "n":$context.a.b.}"#,
                r#"{"s":"a \" $context.x", "n":"$context.a.b".}"#,
            ),
            ("{\"s\": $notcontext}", "{\"s\": $notcontext}"),
        ];
        for (input, want) in table {
            assert_eq!(quote_bare_variables(input), want, "{input}");
        }
    }
}

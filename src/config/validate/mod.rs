//! Step two of loading: every rule checked, every problem collected, then the runtime types.
//!
//! One [`Checker`] walks the raw config; each scope has its own file (`agent`, `chain`, `hop`,
//! `cloudwatch`). A scope's part of the config is built only when it added no problem: problems
//! are counted, not threaded through as flags.

mod agent;
mod auth;
mod chain;
mod cloudwatch;
mod hop;

pub use hop::log_group_name;

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::duration::{format_duration, parse_duration};
use super::raw::RawConfig;
use super::*;

/// The shortest round interval accepted: below it a round would be mostly scheduling overhead.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;
const MAX_IN_FLIGHT_LIMIT: i64 = 100_000;

/// One problem in a config file, located at a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Where in the document: `agent`, `chain "orders"`, `chain "orders" hop "alb"`; empty at top level.
    pub scope: String,
    /// Starts with the key it is about.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.scope.is_empty() {
            write!(f, "{}: ", self.scope)?;
        }
        f.write_str(&self.message)
    }
}

/// Parses and validates `text`, read from `file`. `env` looks up `${NAME}` references in header
/// values (a parameter so tests don't touch the process environment).
pub fn load_str(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut checker = Checker::new(file, text);
    let raw = match parse(text) {
        Ok(raw) => raw,
        Err(err) => {
            let problem = checker.serde_problem(&err);
            return Err(ConfigError::Invalid(vec![problem]));
        }
    };
    let mut config = checker.config(raw, env);
    if checker.problems.is_empty() {
        checker.warnings.sort_by_key(|p| (p.line, p.column));
        config.warnings = checker.warnings;
        return Ok(config);
    }
    checker.problems.sort_by_key(|p| (p.line, p.column));
    Err(ConfigError::Invalid(checker.problems))
}

/// Checks one chain built as data, not read from a file (a chain discovery found), with
/// `agent`'s defaults: the checked chain, or every problem, located at `origin`. One bad
/// discovered chain is dropped this way, alone, and never rejects the file it is run beside.
pub fn check_chain(
    origin: &str,
    raw: super::raw::RawChain,
    agent: &Agent,
) -> Result<Chain, Vec<Problem>> {
    let mut checker = Checker::new(origin, "");
    let inherited = Inherited {
        thresholds: agent.thresholds,
        interval: agent.interval,
        timeout: agent.timeout,
        timeout_span: None,
        valid: true,
    };
    let chain = checker.chain(&Spanned::new(0..0, raw), &inherited, &|_| None);
    match chain {
        Some(chain) if checker.problems.is_empty() => Ok(chain),
        _ => Err(checker.problems),
    }
}

enum ParseError {
    Syntax(toml::de::Error),
    Schema(serde_path_to_error::Error<toml::de::Error>),
}

fn parse(text: &str) -> Result<RawConfig, ParseError> {
    let de = toml::de::Deserializer::parse(text).map_err(ParseError::Syntax)?;
    serde_path_to_error::deserialize(de).map_err(ParseError::Schema)
}

pub(super) struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

/// What a timeout must stay below, as a message names it.
enum Bound {
    /// The interval of the same table (`[agent]`, a chain): "interval (15s)".
    Interval(Duration),
    /// The chain's interval, seen from one of its hops: "the chain interval (15s)".
    ChainInterval(Duration),
}

/// Where the defaults of a chain come from, for messages.
pub(super) struct Inherited {
    thresholds: Thresholds,
    interval: Duration,
    timeout: Duration,
    timeout_span: Option<Range<usize>>,
    /// False when `[agent]` timing was itself reported as wrong: chains then don't repeat it.
    valid: bool,
}

impl<'a> Checker<'a> {
    fn new(file: &'a str, text: &'a str) -> Self {
        Checker {
            file,
            text,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    fn problem(&self, span: &Range<usize>, scope: &str, message: String) -> Problem {
        let (line, column) = self.position(span.start);
        Problem {
            file: self.file.to_string(),
            line,
            column,
            scope: scope.to_string(),
            message,
        }
    }

    fn report(&mut self, span: &Range<usize>, scope: &str, message: String) {
        let problem = self.problem(span, scope, message);
        self.problems.push(problem);
    }

    /// Something worth saying that does not make the config invalid.
    fn warn(&mut self, span: &Range<usize>, scope: &str, message: String) {
        let problem = self.problem(span, scope, message);
        self.warnings.push(problem);
    }

    /// Turns a serde failure into a located problem whose scope names chains and hops by name
    /// (looked up in a schema-free parse of the same text) rather than by index.
    fn serde_problem(&self, err: &ParseError) -> Problem {
        let (inner, path) = match err {
            ParseError::Syntax(e) => (e, None),
            ParseError::Schema(e) => (e.inner(), Some(e.path())),
        };
        let span = inner.span().unwrap_or(0..0);
        let message = inner
            .message()
            .replace("unknown field", "unknown key")
            .replace("missing field", "missing key");
        let Some(path) = path else {
            return self.problem(&span, "", format!("invalid TOML: {message}"));
        };
        let doc: Option<toml::Table> = toml::from_str(self.text).ok();
        let mut scope = Vec::new();
        let mut keys = Vec::new();
        let mut table: Option<&toml::Table> = doc.as_ref();
        let mut pending_array: Option<(&str, Option<&Vec<toml::Value>>)> = None;
        for segment in path.iter() {
            use serde_path_to_error::Segment;
            match segment {
                Segment::Map { key } if key.starts_with("$__serde_spanned") => {}
                Segment::Map { key }
                    if keys.is_empty() && matches!(key.as_str(), "chain" | "hop") =>
                {
                    let array = table.and_then(|t| t.get(key)).and_then(|v| v.as_array());
                    pending_array = Some((if key == "chain" { "chain" } else { "hop" }, array));
                }
                Segment::Map { key } if keys.is_empty() && key == "agent" && scope.is_empty() => {
                    scope.push("agent".to_string());
                }
                Segment::Seq { index } if pending_array.is_some() => {
                    let (label, array) = pending_array.take().unwrap_or(("chain", None));
                    let item = array.and_then(|a| a.get(*index)).and_then(|v| v.as_table());
                    match item.and_then(|t| t.get("name")).and_then(|v| v.as_str()) {
                        Some(name) => scope.push(format!("{label} {name:?}")),
                        None => scope.push(format!("{label} #{}", index + 1)),
                    }
                    table = item;
                }
                Segment::Map { key } => keys.push(key.clone()),
                Segment::Seq { index } => keys.push(format!("[{index}]")),
                Segment::Enum { variant } => keys.push(variant.clone()),
                Segment::Unknown => {}
            }
        }
        let names_its_key =
            message.starts_with("unknown key") || message.starts_with("missing key");
        // An unknown or missing key is named by serde alone; nested inside a hop's table
        // (`auth.sigv4`), the path says where.
        let nested = keys.first().is_some_and(|k| k == "auth");
        if names_its_key {
            // The path ends in the unknown key itself; the message names it already.
            let named = message.split('`').nth(1).unwrap_or("");
            keys.retain(|k| k != named);
        }
        let message = if keys.is_empty() || (names_its_key && !nested) {
            message
        } else {
            format!("{}: {message}", keys.join(".").replace(".[", "["))
        };
        self.problem(&span, &scope.join(" "), message)
    }

    fn duration(
        &mut self,
        value: &Option<Spanned<String>>,
        scope: &str,
        key: &str,
    ) -> Option<(Duration, Range<usize>)> {
        let value = value.as_ref()?;
        match parse_duration(value.get_ref()) {
            Some(d) => Some((d, value.span())),
            None => {
                self.report(
                    &value.span(),
                    scope,
                    format!(
                        "{key} ({:?}) is not a duration; write a number and a unit, such as \"250ms\", \"15s\" or \"1m\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn config(&mut self, raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Config {
        let before = self.problems.len();
        let agent = self.agent(raw.agent.as_ref().map(Spanned::get_ref));
        let agent_valid = self.problems.len() == before;
        // With [discovery], AWS says which chains there are: none need be written.
        if raw.chains.is_empty() && raw.discovery.is_none() {
            self.report(
                &(0..0),
                "",
                "no [[chain]] is configured; add one per private integration".to_string(),
            );
        }
        let inherited = Inherited {
            thresholds: agent.thresholds,
            interval: agent.interval,
            timeout: agent.timeout,
            timeout_span: raw
                .agent
                .as_ref()
                .and_then(|a| a.get_ref().timeout.as_ref())
                .map(Spanned::span),
            valid: agent_valid,
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut chains = Vec::new();
        for chain in &raw.chains {
            let name = chain.get_ref().name.get_ref();
            let (line, _) = self.position(chain.get_ref().name.span().start);
            if let Some(first) = seen.get(name.as_str()) {
                self.report(
                    &chain.get_ref().name.span(),
                    &format!("chain {name:?}"),
                    format!("name ({name:?}) is already used by the chain at line {first}"),
                );
            } else {
                seen.insert(name.clone(), line);
            }
            if let Some(chain) = self.chain(chain, &inherited, env) {
                chains.push(Arc::new(chain));
            }
        }
        let cloudwatch = raw
            .cloudwatch
            .as_ref()
            .and_then(|cw| self.cloudwatch(cw.get_ref(), env));
        let discovery = raw
            .discovery
            .as_ref()
            .and_then(|d| self.discovery(d.get_ref()));
        let gateway_logs = raw
            .gateway_logs
            .as_ref()
            .and_then(|g| self.gateway_logs(g.get_ref()))
            .unwrap_or_default();
        Config {
            agent,
            chains_hash: chains_hash(&chains),
            chains_total: chains.len(),
            chains,
            cloudwatch,
            discovery,
            gateway_logs,
            warnings: Vec::new(),
        }
    }

    /// An AWS endpoint override (`endpoint_url` of `[cloudwatch]`, `[discovery]`,
    /// `[gateway_logs]`): one rule for all of them.
    pub(super) fn endpoint_url(
        &mut self,
        raw: &Option<Spanned<String>>,
        scope: &str,
    ) -> Option<String> {
        let u = raw.as_ref()?;
        if HopUrl::parse(u.get_ref()).map_or(true, |h| h.cloudmap.is_some()) {
            self.report(
                &u.span(),
                scope,
                format!(
                    "endpoint_url ({:?}) must be an http:// or https:// URL",
                    u.get_ref()
                ),
            );
            return None;
        }
        Some(u.get_ref().clone())
    }

    /// A duration between `min` and `max`, or `default` when unset (or wrong, reported).
    fn bounded(
        &mut self,
        value: &Option<Spanned<String>>,
        scope: &str,
        key: &str,
        (min, max): (Duration, Duration),
        default: Duration,
    ) -> Duration {
        match self.duration(value, scope, key) {
            Some((d, _)) if (min..=max).contains(&d) => d,
            Some((d, span)) => {
                self.report(
                    &span,
                    scope,
                    format!(
                        "{key} ({}) must be between {} and {}",
                        format_duration(d),
                        format_duration(min),
                        format_duration(max)
                    ),
                );
                default
            }
            None => default,
        }
    }

    /// `[gateway_logs]`.
    fn gateway_logs(&mut self, raw: &super::raw::RawGatewayLogs) -> Option<GatewayLogLookup> {
        let scope = "gateway_logs";
        let before = self.problems.len();
        let defaults = GatewayLogLookup::default();
        let s = Duration::from_secs;
        let lookup = GatewayLogLookup {
            region: raw.region.as_ref().map(|r| r.get_ref().clone()),
            endpoint_url: self.endpoint_url(&raw.endpoint_url, scope),
            min_interval: self.bounded(
                &raw.min_interval,
                scope,
                "min_interval",
                (s(10), s(86_400)),
                defaults.min_interval,
            ),
            retry_for: self.bounded(
                &raw.retry_for,
                scope,
                "retry_for",
                (s(0), s(900)),
                defaults.retry_for,
            ),
            timeout: self.bounded(
                &raw.timeout,
                scope,
                "timeout",
                (Duration::from_millis(100), s(60)),
                defaults.timeout,
            ),
        };
        (self.problems.len() == before).then_some(lookup)
    }

    /// `[discovery]`.
    fn discovery(&mut self, raw: &super::raw::RawDiscovery) -> Option<Discovery> {
        let scope = "discovery";
        let before = self.problems.len();
        let mut refresh = DEFAULT_REFRESH;
        if let Some((d, span)) = self.duration(&raw.refresh, scope, "refresh") {
            if d < Duration::from_secs(1) {
                self.report(
                    &span,
                    scope,
                    format!("refresh ({}) must be at least 1s", format_duration(d)),
                );
            } else {
                refresh = d;
            }
        }
        let endpoint_url = self.endpoint_url(&raw.endpoint_url, scope);
        let mut max_calls_per_second = DEFAULT_MAX_CALLS_PER_SECOND;
        if let Some(v) = &raw.max_calls_per_second {
            // Above 10 is the whole account's quota, deployments included: never ours to take.
            if (0.1..=10.0).contains(v.get_ref()) {
                max_calls_per_second = *v.get_ref();
            } else {
                self.report(
                    &v.span(),
                    scope,
                    format!(
                        "max_calls_per_second ({}) must be between 0.1 and 10: API Gateway allows the whole account 10 management calls per second, shared with its deployments",
                        v.get_ref()
                    ),
                );
            }
        }
        let mut methods = Vec::new();
        for m in raw.methods.iter().flatten() {
            let text = m.get_ref();
            if OPT_IN_METHODS.contains(&text.as_str()) {
                methods.push(text.clone());
            } else {
                self.report(
                    &m.span(),
                    scope,
                    format!(
                        "methods entry ({text:?}) must be one of {}: GET and HEAD are probed anyway, and OPTIONS is answered by the gateway itself (CORS), so nothing behind it would be tested",
                        OPT_IN_METHODS.join(", ")
                    ),
                );
            }
        }
        let mut path_params = std::collections::BTreeMap::new();
        for (name, value) in raw.path_params.iter().flat_map(|p| p.get_ref().iter()) {
            let v = value.get_ref();
            if v.is_empty() || v.contains(['?', '#', ' ']) || v.contains("${") {
                self.report(
                    &value.span(),
                    scope,
                    format!("path_params.{name} ({v:?}) must be a non-empty path piece without spaces, '?', '#' or ${{...}}"),
                );
            } else {
                path_params.insert(name.clone(), v.clone());
            }
        }
        let list = |l: &Option<Vec<Spanned<String>>>| -> Vec<String> {
            l.iter().flatten().map(|s| s.get_ref().clone()).collect()
        };
        (self.problems.len() == before).then(|| Discovery {
            region: raw.region.as_ref().map(|r| r.get_ref().clone()),
            endpoint_url,
            apis: list(&raw.apis),
            stages: list(&raw.stages),
            path: raw.path.as_ref().map(|p| p.get_ref().clone()),
            methods,
            path_params,
            refresh,
            max_calls_per_second,
        })
    }

    /// Reads `down_after` / `up_after` over `base`; each must be between 1 and 100 rounds.
    fn thresholds(
        &mut self,
        down: &Option<Spanned<i64>>,
        up: &Option<Spanned<i64>>,
        base: Thresholds,
        scope: &str,
    ) -> Thresholds {
        let mut out = base;
        for (key, value, slot) in [
            ("down_after", down, &mut out.down_after),
            ("up_after", up, &mut out.up_after),
        ] {
            if let Some(v) = value {
                match u32::try_from(*v.get_ref()) {
                    Ok(n) if (1..=100).contains(&n) => *slot = n,
                    _ => self.report(
                        &v.span(),
                        scope,
                        format!("{key} ({}) must be between 1 and 100 rounds", v.get_ref()),
                    ),
                }
            }
        }
        out
    }

    fn interval_ok(&mut self, interval: Duration, span: &Range<usize>, scope: &str) -> bool {
        if interval < MIN_INTERVAL {
            self.report(
                span,
                scope,
                format!(
                    "interval ({}) must be at least {}",
                    format_duration(interval),
                    format_duration(MIN_INTERVAL)
                ),
            );
            return false;
        }
        true
    }

    /// Reports `timeout` (written at `span`) unless it is below `bound`; true when it is. The
    /// one check behind every "timeout must be less than ..." rule, whatever the scope.
    fn below(&mut self, timeout: Duration, bound: Bound, span: &Range<usize>, scope: &str) -> bool {
        let (limit, named) = match bound {
            Bound::Interval(d) => (d, format!("interval ({})", format_duration(d))),
            Bound::ChainInterval(d) => (d, format!("the chain interval ({})", format_duration(d))),
        };
        if timeout < limit {
            return true;
        }
        self.report(
            span,
            scope,
            format!(
                "timeout ({}) must be less than {named}",
                format_duration(timeout)
            ),
        );
        false
    }

    fn timeout_ok(&mut self, timeout: Duration, span: &Range<usize>, scope: &str) -> bool {
        if timeout.is_zero() {
            self.report(
                span,
                scope,
                "timeout (0s) must be greater than zero".to_string(),
            );
            return false;
        }
        true
    }
}

/// Replaces `${NAME}` with the environment variable's value. Returns whether any reference was
/// expanded, because such values are secrets. `$$` is a literal `$`.
fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(text.len());
    let mut secret = false;
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err("unclosed ${ in value; write $$ for a literal $".to_string());
            };
            let name = &after[..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "${{{name}}} is not a valid environment variable name"
                ));
            }
            match env(name) {
                Some(value) => out.push_str(&value),
                None => return Err(format!("environment variable {name} is not set")),
            }
            secret = true;
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok((out, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        let env = |n: &str| (n == "API_KEY").then(|| "s3cret".to_string());
        assert_eq!(expand_env("plain", &env), Ok(("plain".into(), false)));
        assert_eq!(
            expand_env("Bearer ${API_KEY}", &env),
            Ok(("Bearer s3cret".into(), true))
        );
        assert_eq!(expand_env("cost $$5", &env), Ok(("cost $5".into(), false)));
        assert!(expand_env("${MISSING}", &env)
            .unwrap_err()
            .contains("MISSING is not set"));
        assert!(expand_env("${API_KEY", &env).is_err());
    }
}

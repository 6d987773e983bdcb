//! Step two of loading: every rule checked, every problem collected, then the runtime types.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

use super::duration::{format_duration, parse_duration, parse_size};
use super::raw::{RawAgent, RawChain, RawConfig, RawHop, StatusEntry};
use super::*;
use crate::source::{Cidr, Rule};
use std::path::PathBuf;

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
    let config = checker.config(raw, env);
    if checker.problems.is_empty() {
        return Ok(config);
    }
    checker.problems.sort_by_key(|p| (p.line, p.column));
    Err(ConfigError::Invalid(checker.problems))
}

enum ParseError {
    Syntax(toml::de::Error),
    Schema(serde_path_to_error::Error<toml::de::Error>),
}

fn parse(text: &str) -> Result<RawConfig, ParseError> {
    let de = toml::de::Deserializer::parse(text).map_err(ParseError::Syntax)?;
    serde_path_to_error::deserialize(de).map_err(ParseError::Schema)
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
}

/// Where the defaults of a chain come from, for messages.
struct Inherited {
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
        let message = if names_its_key || keys.is_empty() {
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
        if raw.chains.is_empty() {
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
        Config {
            agent,
            chains,
            cloudwatch,
        }
    }

    fn agent(&mut self, raw: Option<&RawAgent>) -> Agent {
        let mut agent = Agent {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 9464))),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            thresholds: Thresholds::default(),
        };
        let Some(raw) = raw else { return agent };
        let scope = "agent";
        if let Some(listen) = &raw.listen {
            match listen.get_ref().parse() {
                Ok(addr) => agent.listen = addr,
                Err(_) => self.report(
                    &listen.span(),
                    scope,
                    format!(
                        "listen ({:?}) is not an address and port such as \"0.0.0.0:9464\"",
                        listen.get_ref()
                    ),
                ),
            }
        }
        let interval = self.duration(&raw.interval, scope, "interval");
        let timeout = self.duration(&raw.timeout, scope, "timeout");
        if let Some((interval, span)) = interval {
            if self.interval_ok(interval, &span, scope) {
                agent.interval = interval;
            }
        }
        if let Some((timeout, span)) = timeout {
            if self.timeout_ok(timeout, &span, scope) {
                agent.timeout = timeout;
                if timeout >= agent.interval {
                    self.report(
                        &span,
                        scope,
                        format!(
                            "timeout ({}) must be less than interval ({})",
                            format_duration(timeout),
                            format_duration(agent.interval)
                        ),
                    );
                }
            }
        }
        agent.thresholds = self.thresholds(&raw.down_after, &raw.up_after, agent.thresholds, scope);
        if let Some(max) = &raw.max_in_flight {
            let value = *max.get_ref();
            if (1..=MAX_IN_FLIGHT_LIMIT).contains(&value) {
                agent.max_in_flight = value as usize;
            } else {
                self.report(
                    &max.span(),
                    scope,
                    format!("max_in_flight ({value}) must be between 1 and {MAX_IN_FLIGHT_LIMIT}"),
                );
            }
        }
        agent
    }

    fn cloudwatch(
        &mut self,
        raw: &super::raw::RawCloudWatch,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<CloudWatch> {
        let scope = "cloudwatch";
        let before = self.problems.len();
        let mode = match raw.mode.as_ref() {
            None => CloudWatchMode::Api,
            Some(m) => match m.get_ref().as_str() {
                "api" => CloudWatchMode::Api,
                "emf" => CloudWatchMode::Emf,
                other => {
                    self.report(
                        &m.span(),
                        scope,
                        format!("mode ({other:?}) must be \"api\" or \"emf\""),
                    );
                    CloudWatchMode::Api
                }
            },
        };
        let namespace = raw
            .namespace
            .as_ref()
            .map_or("Hopwatch".to_string(), |n| n.get_ref().clone());
        if let Some(n) = &raw.namespace {
            // CloudWatch: 1-255 characters, not starting with "AWS/" (reserved).
            if n.get_ref().is_empty() || n.get_ref().len() > 255 || n.get_ref().starts_with("AWS/")
            {
                self.report(
                    &n.span(),
                    scope,
                    format!(
                        "namespace ({:?}) must be 1 to 255 characters and not start with \"AWS/\"",
                        n.get_ref()
                    ),
                );
            }
        }
        let storage_resolution = match &raw.storage_resolution {
            None => 60,
            Some(r) if *r.get_ref() == 1 || *r.get_ref() == 60 => *r.get_ref() as u8,
            Some(r) => {
                self.report(
                    &r.span(),
                    scope,
                    format!("storage_resolution ({}) must be 1 or 60", r.get_ref()),
                );
                60
            }
        };
        let mut flush_interval = Duration::from_secs(60);
        if let Some((d, span)) = self.duration(&raw.flush_interval, scope, "flush_interval") {
            if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
                self.report(
                    &span,
                    scope,
                    format!(
                        "flush_interval ({}) must be between 1s and 1h",
                        format_duration(d)
                    ),
                );
            } else {
                flush_interval = d;
            }
        }
        let mut dimensions = Vec::new();
        for (name, value) in &raw.dimensions {
            if matches!(name.as_str(), "Chain" | "Hop" | "Result") {
                self.report(
                    &value.span(),
                    scope,
                    format!("dimensions.{name}: {name} is set by hopwatch itself"),
                );
                continue;
            }
            if name.is_empty()
                || name.len() > 255
                || name.starts_with(':')
                || !name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            {
                self.report(
                    &value.span(),
                    scope,
                    format!("dimensions: name {name:?} must be 1 to 255 printable ASCII characters, not starting with ':'"),
                );
                continue;
            }
            if RESERVED_EMF_KEYS.contains(&name.as_str()) {
                self.report(
                    &value.span(),
                    scope,
                    format!(
                        "dimensions.{name}: {name} is a metric or property name of hopwatch's own"
                    ),
                );
                continue;
            }
            if let Some(field) = value.get_ref().strip_prefix("ecs:") {
                if !ECS_FIELDS.contains(&field) {
                    self.report(
                        &value.span(),
                        scope,
                        format!(
                            "dimensions.{name}: {:?} is not an ECS task metadata field (one of {})",
                            value.get_ref(),
                            ECS_FIELDS.map(|f| format!("ecs:{f}")).join(", ")
                        ),
                    );
                    continue;
                }
            }
            match expand_env(value.get_ref(), env) {
                Ok((v, _)) if !v.is_empty() && v.len() <= 1024 => {
                    dimensions.push((name.clone(), v))
                }
                Ok(_) => self.report(
                    &value.span(),
                    scope,
                    format!("dimensions.{name}: value must be 1 to 1024 characters"),
                ),
                Err(why) => self.report(&value.span(), scope, format!("dimensions.{name}: {why}")),
            }
        }
        if dimensions.len() > MAX_EXTRA_DIMENSIONS {
            self.report(&(0..0), scope, format!("dimensions: {} extra dimensions, at most {MAX_EXTRA_DIMENSIONS} fit beside Chain, Hop and Result", dimensions.len()));
        }
        let emf_output = match raw.emf_output.as_ref().map(|o| o.get_ref().as_str()) {
            None | Some("stdout") => EmfOutput::Stdout,
            Some(path) => EmfOutput::File(PathBuf::from(path)),
        };
        let max_buffered_datums = match &raw.max_buffered_datums {
            None => 100_000,
            Some(n) if (1_000..=10_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.report(
                    &n.span(),
                    scope,
                    format!(
                        "max_buffered_datums ({}) must be between 1000 and 10000000",
                        n.get_ref()
                    ),
                );
                100_000
            }
        };
        let endpoint_url = raw.endpoint_url.as_ref().map(|u| u.get_ref().clone());
        if let Some(u) = &raw.endpoint_url {
            if HopUrl::parse(u.get_ref()).is_err() {
                self.report(
                    &u.span(),
                    scope,
                    format!(
                        "endpoint_url ({:?}) must be an http:// or https:// URL",
                        u.get_ref()
                    ),
                );
            }
        }
        (self.problems.len() == before).then(|| CloudWatch {
            mode,
            namespace,
            region: raw.region.as_ref().map(|r| r.get_ref().clone()),
            endpoint_url,
            storage_resolution,
            flush_interval,
            dimensions,
            emf_output,
            max_buffered_datums,
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

    fn chain(
        &mut self,
        spanned: &Spanned<RawChain>,
        inherited: &Inherited,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Chain> {
        let raw = spanned.get_ref();
        let name = raw.name.get_ref().clone();
        let scope = format!("chain {name:?}");
        let mut ok = true;
        if name.trim().is_empty() {
            self.report(
                &raw.name.span(),
                &scope,
                "name must not be empty".to_string(),
            );
            ok = false;
        }
        let kind = Kind::parse(raw.kind.get_ref());
        if kind.is_none() {
            let all: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            self.report(
                &raw.kind.span(),
                &scope,
                format!(
                    "kind ({:?}) must be one of {}",
                    raw.kind.get_ref(),
                    all.join(", ")
                ),
            );
            ok = false;
        }

        let thresholds =
            self.thresholds(&raw.down_after, &raw.up_after, inherited.thresholds, &scope);
        let mut interval = inherited.interval;
        // A value already reported as wrong is not compared again: the next message would
        // quote a default the user never wrote.
        let mut interval_known = inherited.valid;
        if let Some((value, span)) = self.duration(&raw.interval, &scope, "interval") {
            if self.interval_ok(value, &span, &scope) {
                interval = value;
                interval_known = true;
            } else {
                ok = false;
                interval_known = false;
            }
        } else if raw.interval.is_some() {
            interval_known = false;
        }
        let mut timeout = inherited.timeout;
        let timeout_from_chain = raw.timeout.is_some();
        if let Some((value, span)) = self.duration(&raw.timeout, &scope, "timeout") {
            if self.timeout_ok(value, &span, &scope) {
                timeout = value;
                if interval_known && value >= interval {
                    self.report(
                        &span,
                        &scope,
                        format!(
                            "timeout ({}) must be less than interval ({})",
                            format_duration(value),
                            format_duration(interval)
                        ),
                    );
                    ok = false;
                }
            }
        }
        let hops_override_all =
            !raw.hops.is_empty() && raw.hops.iter().all(|h| h.get_ref().timeout.is_some());
        if inherited.valid
            && interval_known
            && !timeout_from_chain
            && !hops_override_all
            && timeout >= interval
        {
            // The inherited [agent] timeout does not fit this chain's interval.
            let span = raw
                .interval
                .as_ref()
                .map(Spanned::span)
                .or_else(|| inherited.timeout_span.clone())
                .unwrap_or_else(|| raw.name.span());
            self.report(
                &span,
                &scope,
                format!(
                    "interval ({}) must be greater than the timeout ({}) it inherits from [agent]",
                    format_duration(interval),
                    format_duration(timeout)
                ),
            );
            ok = false;
        }

        // The HTTP API's 30 s integration limit binds the timeout hops inherit too.
        if let Some(limit) = kind.and_then(Kind::gateway_hard_limit) {
            if !hops_override_all && timeout >= limit {
                let span = raw
                    .timeout
                    .as_ref()
                    .map(Spanned::span)
                    .or_else(|| inherited.timeout_span.clone())
                    .unwrap_or_else(|| raw.kind.span());
                self.report(
                    &span,
                    &scope,
                    format!(
                        "timeout ({}) must be less than the HTTP API integration limit ({}) of kind {}",
                        format_duration(timeout),
                        format_duration(limit),
                        raw.kind.get_ref()
                    ),
                );
                ok = false;
            }
        }

        if raw.hops.is_empty() {
            let expected = kind
                .and_then(Kind::shape)
                .map(|s| {
                    format!(
                        "; kind {:?} expects hops with roles {}",
                        raw.kind.get_ref(),
                        roles(s)
                    )
                })
                .unwrap_or_default();
            self.report(
                &spanned.span(),
                &scope,
                format!("has no [[chain.hop]]{expected}"),
            );
            return None;
        }

        let roles = kind.map(|kind| self.roles(raw, kind, &scope));
        let hop_names: Vec<String> = raw
            .hops
            .iter()
            .map(|h| h.get_ref().name.get_ref().clone())
            .collect();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut hops = Vec::new();
        for (index, hop) in raw.hops.iter().enumerate() {
            let hop_name = hop.get_ref().name.get_ref();
            let hop_scope = format!("{scope} hop {hop_name:?}");
            if hop_name.trim().is_empty() {
                self.report(
                    &hop.get_ref().name.span(),
                    &hop_scope,
                    "name must not be empty".to_string(),
                );
                ok = false;
            }
            let (line, _) = self.position(hop.get_ref().name.span().start);
            if let Some(first) = seen.get(hop_name.as_str()) {
                self.report(
                    &hop.get_ref().name.span(),
                    &hop_scope,
                    format!("name ({hop_name:?}) is already used by the hop at line {first}"),
                );
                ok = false;
            } else {
                seen.insert(hop_name, line);
            }
            let role = roles.as_ref().and_then(|r| r.get(index).copied().flatten());
            let limits = HopLimits {
                hop_names: &hop_names,
                interval: interval_known.then_some(interval),
                default_timeout: timeout,
                gateway_limit: kind.and_then(Kind::gateway_hard_limit),
                kind: raw.kind.get_ref(),
            };
            match self.hop(hop.get_ref(), &hop_scope, role, &limits, env) {
                Some(hop) => hops.push(hop),
                None => ok = false,
            }
        }
        let kind = kind?;
        if !ok || hops.len() != raw.hops.len() {
            return None;
        }
        for (index, source, forwarded) in kind.default_expectations() {
            let written = &raw.hops[*index].get_ref();
            let hop = &mut hops[*index];
            if written.expect_source.is_none() {
                hop.expect_source = source.iter().map(|i| Rule::Hop(*i)).collect();
            }
            if written.expect_forwarded.is_none() {
                hop.expect_forwarded = forwarded.iter().map(|i| Rule::Hop(*i)).collect();
            }
        }
        Some(Chain {
            name,
            kind,
            interval,
            reuse_connections: raw.reuse_connections.unwrap_or(false),
            thresholds,
            hops,
        })
    }

    /// Resolves each hop's role from the kind's shape and the explicit `role` keys, reporting
    /// every mismatch. Returns one entry per hop (`None` where no role could be settled).
    fn roles(&mut self, raw: &RawChain, kind: Kind, scope: &str) -> Vec<Option<Role>> {
        let mut out = Vec::with_capacity(raw.hops.len());
        let explicit: Vec<Option<(Option<Role>, Range<usize>)>> = raw
            .hops
            .iter()
            .map(|h| {
                h.get_ref()
                    .role
                    .as_ref()
                    .map(|r| (Role::parse(r.get_ref()), r.span()))
            })
            .collect();
        for (hop, parsed) in raw.hops.iter().zip(&explicit) {
            if let (Some(role), Some((None, span))) = (&hop.get_ref().role, parsed) {
                let all: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
                self.report(
                    span,
                    &format!("{scope} hop {:?}", hop.get_ref().name.get_ref()),
                    format!(
                        "role ({:?}) must be one of {}",
                        role.get_ref(),
                        all.join(", ")
                    ),
                );
            }
        }
        let Some(shape) = kind.shape() else {
            for (hop, parsed) in raw.hops.iter().zip(&explicit) {
                match parsed {
                    Some((role, _)) => out.push(*role),
                    None => {
                        self.report(
                            &hop.span(),
                            &format!("{scope} hop {:?}", hop.get_ref().name.get_ref()),
                            "role is required when kind is \"custom\" (one of gateway, nlb, alb, cloudmap, target)".to_string(),
                        );
                        out.push(None);
                    }
                }
            }
            return out;
        };
        if raw.hops.len() != shape.len() {
            self.report(
                &raw.kind.span(),
                scope,
                format!(
                    "kind ({}) expects {} hops with roles {} (outermost first), found {}",
                    kind,
                    shape.len(),
                    roles(shape),
                    raw.hops.len()
                ),
            );
            return vec![None; raw.hops.len()];
        }
        for ((hop, parsed), expected) in raw.hops.iter().zip(&explicit).zip(shape) {
            match parsed {
                Some((Some(role), span)) if role != expected => {
                    self.report(
                        span,
                        &format!("{scope} hop {:?}", hop.get_ref().name.get_ref()),
                        format!(
                            "role ({role}) does not fit kind {kind}, which expects roles {} (outermost first): this hop must be {expected}",
                            roles(shape)
                        ),
                    );
                    out.push(None);
                }
                Some((None, _)) => out.push(None),
                _ => out.push(Some(*expected)),
            }
        }
        out
    }

    fn hop(
        &mut self,
        raw: &RawHop,
        scope: &str,
        role: Option<Role>,
        limits: &HopLimits<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Hop> {
        let mut ok = role.is_some();
        let url = self.url("url", &raw.url, scope);
        ok &= url.is_some();

        let method = match &raw.method {
            None => Method::GET,
            Some(m) => match Method::from_bytes(m.get_ref().as_bytes()) {
                Ok(method) if m.get_ref().bytes().all(|b| b.is_ascii_uppercase()) => method,
                _ => {
                    self.report(
                        &m.span(),
                        scope,
                        format!("method ({:?}) must be an upper-case HTTP method such as \"GET\" or \"HEAD\"", m.get_ref()),
                    );
                    ok = false;
                    Method::GET
                }
            },
        };

        let mut headers = Vec::new();
        for (name, value) in &raw.headers {
            match self.header(name, value, scope, env) {
                Some(h) => headers.push(h),
                None => ok = false,
            }
        }

        let expect_status = match &raw.expect_status {
            None => StatusSet::success(),
            Some(list) => match self.status_set(list, scope) {
                Some(set) => set,
                None => {
                    ok = false;
                    StatusSet::success()
                }
            },
        };

        let expect_body = match &raw.expect_body {
            None => None,
            Some(pattern) => match regex_lite::Regex::new(pattern.get_ref()) {
                Ok(re) => Some(re),
                Err(err) => {
                    self.report(
                        &pattern.span(),
                        scope,
                        format!(
                            "expect_body ({:?}) is not a valid regular expression: {err}",
                            pattern.get_ref()
                        ),
                    );
                    ok = false;
                    None
                }
            },
        };

        let mut timeout = limits.default_timeout;
        if let Some((value, span)) = self.duration(&raw.timeout, scope, "timeout") {
            if !self.timeout_ok(value, &span, scope) {
                ok = false;
            } else if let Some(interval) = limits.interval.filter(|i| value >= *i) {
                self.report(
                    &span,
                    scope,
                    format!(
                        "timeout ({}) must be less than the chain interval ({})",
                        format_duration(value),
                        format_duration(interval)
                    ),
                );
                ok = false;
            } else {
                timeout = value;
            }
            if let Some(limit) = limits.gateway_limit {
                if value >= limit {
                    self.report(
                        &span,
                        scope,
                        format!(
                            "timeout ({}) must be less than the HTTP API integration limit ({}) of kind {}",
                            format_duration(value),
                            format_duration(limit),
                            limits.kind
                        ),
                    );
                    ok = false;
                }
            }
        } else if raw.timeout.is_some() {
            ok = false;
        }

        let max_body = match &raw.max_body {
            None => DEFAULT_MAX_BODY,
            Some(text) => {
                match parse_size(text.get_ref()) {
                    Some(n) if (1..=MAX_BODY_LIMIT).contains(&n) => n,
                    _ => {
                        self.report(
                        &text.span(),
                        scope,
                        format!("max_body ({:?}) must be a size between 1 and 16MiB, such as \"64KiB\"", text.get_ref()),
                    );
                        ok = false;
                        DEFAULT_MAX_BODY
                    }
                }
            }
        };

        let tls_server_name = match &raw.tls_server_name {
            None => None,
            Some(name) => {
                if rustls::pki_types::ServerName::try_from(name.get_ref().as_str()).is_err() {
                    self.report(
                        &name.span(),
                        scope,
                        format!(
                            "tls_server_name ({:?}) is not a DNS name or IP address",
                            name.get_ref()
                        ),
                    );
                    ok = false;
                }
                Some(name.get_ref().clone())
            }
        };

        let ca_file = match &raw.ca_file {
            None => None,
            Some(path) => {
                // Relative to the config file, so a config and its CA bundle move together.
                let resolved = std::path::Path::new(self.file)
                    .parent()
                    .unwrap_or(std::path::Path::new(""))
                    .join(path.get_ref());
                if let Err(reason) = crate::probe::tls::read_ca_file(&resolved) {
                    self.report(
                        &path.span(),
                        scope,
                        format!("ca_file ({:?}) {reason}", path.get_ref()),
                    );
                    ok = false;
                }
                Some(resolved)
            }
        };

        let mut rules = |key: &str, list: &Option<Vec<Spanned<String>>>| -> Vec<Rule> {
            let mut out = Vec::new();
            for entry in list.iter().flatten() {
                let text = entry.get_ref();
                if let Some(i) = limits.hop_names.iter().position(|n| n == text) {
                    out.push(Rule::Hop(i));
                } else if let Some(cidr) = Cidr::parse(text) {
                    out.push(Rule::Cidr(cidr));
                } else {
                    self.report(
                        &entry.span(),
                        scope,
                        format!(
                            "{key} entry ({text:?}) is neither a CIDR such as \"10.0.0.0/16\" nor a hop of this chain ({})",
                            limits.hop_names.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
            out
        };
        let expect_source = rules("expect_source", &raw.expect_source);
        let expect_forwarded = rules("expect_forwarded", &raw.expect_forwarded);

        // A health check is probed like the load balancer does it: plain GET, 2xx, same trust.
        let health = match &raw.health_url {
            None => None,
            Some(text) => match self.url("health_url", text, scope) {
                Some(url) => Some(Box::new(Hop {
                    max_body,
                    tls_server_name: tls_server_name.clone(),
                    ca_file: ca_file.clone(),
                    ..Hop::plain(
                        raw.name.get_ref(),
                        role.unwrap_or(Role::Target),
                        url,
                        timeout,
                    )
                })),
                None => {
                    ok = false;
                    None
                }
            },
        };

        if !ok {
            return None;
        }
        Some(Hop {
            name: raw.name.get_ref().clone(),
            role: role?,
            url: url?,
            method,
            headers,
            expect_status,
            expect_body,
            timeout,
            max_body,
            tls_server_name,
            ca_file,
            health,
            expect_source,
            expect_forwarded,
            per_address: raw.per_address.unwrap_or(false),
        })
    }

    /// Parses the URL under `key` (`url`, `health_url`), naming that key when it is wrong.
    fn url(&mut self, key: &str, raw: &Spanned<String>, scope: &str) -> Option<HopUrl> {
        // Only header values expand `${NAME}`, because only they are kept secret. A URL is
        // printed and exported as written: a reference there would be sent literally, and the
        // secret someone meant to put there belongs in a header.
        if raw.get_ref().contains("${") {
            self.report(
                &raw.span(),
                scope,
                format!(
                    "{key} ({:?}) contains ${{...}}, which is not expanded in URLs (they are printed and exported as written); send credentials in headers",
                    raw.get_ref()
                ),
            );
            return None;
        }
        match HopUrl::parse(raw.get_ref()) {
            Ok(url) => Some(url),
            Err(why) => {
                self.report(
                    &raw.span(),
                    scope,
                    format!("{key} ({:?}) {why}", raw.get_ref()),
                );
                None
            }
        }
    }

    fn header(
        &mut self,
        name: &str,
        value: &Spanned<String>,
        scope: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Header> {
        let header_name = match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                self.report(
                    &value.span(),
                    scope,
                    format!("headers: {name:?} is not a valid header name"),
                );
                return None;
            }
        };
        let (expanded, secret) = match expand_env(value.get_ref(), env) {
            Ok(v) => v,
            Err(why) => {
                self.report(&value.span(), scope, format!("headers.{name}: {why}"));
                return None;
            }
        };
        match HeaderValue::from_str(&expanded) {
            Ok(mut v) => {
                v.set_sensitive(secret);
                Some(Header {
                    name: header_name,
                    value: v,
                })
            }
            Err(_) => {
                // Never echo the value: it may hold a secret from the environment.
                self.report(
                    &value.span(),
                    scope,
                    format!("headers.{name}: value contains characters not allowed in a header"),
                );
                None
            }
        }
    }

    fn status_set(
        &mut self,
        list: &Spanned<Vec<Spanned<StatusEntry>>>,
        scope: &str,
    ) -> Option<StatusSet> {
        if list.get_ref().is_empty() {
            self.report(
                &list.span(),
                scope,
                "expect_status must list at least one status".to_string(),
            );
            return None;
        }
        let mut ranges = Vec::new();
        let mut ok = true;
        for entry in list.get_ref() {
            let range = match entry.get_ref() {
                StatusEntry::Code(code) if (100..=599).contains(code) => {
                    Some((*code as u16, *code as u16))
                }
                StatusEntry::Class(class) => match class.as_bytes() {
                    [d @ b'1'..=b'5', b'x', b'x'] => {
                        let base = u16::from(d - b'0') * 100;
                        Some((base, base + 99))
                    }
                    _ => None,
                },
                StatusEntry::Code(_) => None,
            };
            match range {
                Some(r) => ranges.push(r),
                None => {
                    let shown = match entry.get_ref() {
                        StatusEntry::Code(c) => c.to_string(),
                        StatusEntry::Class(c) => format!("{c:?}"),
                    };
                    self.report(
                        &entry.span(),
                        scope,
                        format!("expect_status entry ({shown}) must be a status code from 100 to 599 or a class such as \"2xx\""),
                    );
                    ok = false;
                }
            }
        }
        ok.then(|| StatusSet::from_ranges(ranges))
    }
}

struct HopLimits<'a> {
    hop_names: &'a [String],
    /// `None` when the chain's interval was itself wrong (already reported).
    interval: Option<Duration>,
    default_timeout: Duration,
    gateway_limit: Option<Duration>,
    kind: &'a str,
}

fn roles(shape: &[Role]) -> String {
    shape
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
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

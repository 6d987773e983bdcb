//! `[[chain.hop]]`: what is probed, how, and what its answer must be.

use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

use super::super::duration::{format_duration, parse_size};
use super::super::raw::{RawHop, StatusEntry};
use super::super::*;
use std::ops::Range;

use super::{expand_env, Bound, Checker, MAX_BODY_LIMIT};

impl Checker<'_> {
    pub(super) fn hop(
        &mut self,
        raw: &RawHop,
        scope: &str,
        role: Option<Role>,
        limits: &HopLimits<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Hop> {
        let before = self.problems.len();
        let url = self.url("url", &raw.url, scope);
        if url.as_ref().is_some_and(|u| u.cloudmap.is_some())
            && role.is_some_and(|r| r != Role::Cloudmap)
        {
            self.report(
                &raw.url.span(),
                scope,
                format!(
                    "url ({:?}) names a Cloud Map service: only a cloudmap hop is probed through DiscoverInstances",
                    raw.url.get_ref()
                ),
            );
        }

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
                    Method::GET
                }
            },
        };

        let mut headers = Vec::new();
        for (name, value) in &raw.headers {
            // On REST, a client sets the gateway's `$context.requestId` with this header, so the
            // agent's requests could not be told apart in the gateway's logs (set-up-logging.html).
            if role == Some(Role::Gateway) && name.eq_ignore_ascii_case("x-amzn-requestid") {
                self.report(
                    &value.span(),
                    scope,
                    format!("headers.{name}: the gateway takes it as the request id it logs ($context.requestId), which the agent looks its failed requests up by; hopwatch never sends it"),
                );
                continue;
            }
            if let Some(header) = self.header(name, value, scope, env) {
                headers.push(header);
            }
        }

        let body = match (&raw.body, &raw.body_content_type) {
            (None, None) => None,
            (None, Some(t)) => {
                self.report(
                    &t.span(),
                    scope,
                    "body_content_type is the type of body: set body too".to_string(),
                );
                None
            }
            (Some(b), _) if method == Method::GET || method == Method::HEAD => {
                // A GET with a body is undefined (RFC 9110 §9.3.1): proxies may drop it, and no
                // route is probed with one.
                self.report(
                    &b.span(),
                    scope,
                    format!("body is sent only with a method that takes one (POST, PUT, PATCH, DELETE), not {method}: set method"),
                );
                None
            }
            (Some(b), t) => {
                let text = t
                    .as_ref()
                    .map_or("application/json", |t| t.get_ref().as_str());
                match HeaderValue::from_str(text) {
                    Ok(v) if !text.is_empty() => {
                        Some((bytes::Bytes::from(b.get_ref().clone().into_bytes()), v))
                    }
                    _ => {
                        self.report(
                            &t.as_ref().map_or(b.span(), Spanned::span),
                            scope,
                            format!("body_content_type ({text:?}) is not a valid header value"),
                        );
                        None
                    }
                }
            }
        };

        let expect_status = raw
            .expect_status
            .as_ref()
            .and_then(|list| self.status_set(list, scope))
            .unwrap_or_else(StatusSet::success);

        let expect_body = match &raw.expect_body {
            None => None,
            Some(pattern) => match Pattern::new(pattern.get_ref()) {
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
                    None
                }
            },
        };

        let mut timeout = limits.default_timeout;
        if let Some((value, span)) = self.duration(&raw.timeout, scope, "timeout") {
            let fits = self.timeout_ok(value, &span, scope)
                && limits
                    .interval
                    .is_none_or(|i| self.below(value, Bound::ChainInterval(i), &span, scope));
            if fits {
                timeout = value;
            }
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
                }
                Some(name.get_ref().clone())
            }
        };

        let ca_file = match &raw.ca_file {
            None => None,
            Some(path) => {
                let resolved = self.beside_config(path.get_ref());
                if let Err(reason) = super::pem::read_ca_file(&resolved) {
                    self.report(
                        &path.span(),
                        scope,
                        format!("ca_file ({:?}) {reason}", path.get_ref()),
                    );
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
                }
            }
            out
        };
        let expect_source = rules("expect_source", &raw.expect_source);
        let expect_forwarded = rules("expect_forwarded", &raw.expect_forwarded);

        let send_proxy_protocol = raw.send_proxy_protocol.as_ref().and_then(|v| {
            let parsed = ProxyVersion::parse(v.get_ref());
            if parsed.is_none() {
                self.report(
                    &v.span(),
                    scope,
                    format!(
                        "send_proxy_protocol ({:?}) must be \"v1\" or \"v2\"",
                        v.get_ref()
                    ),
                );
            }
            parsed
        });
        // A health check is probed like the load balancer does it: plain GET, 2xx, same trust.
        let health = raw
            .health_url
            .as_ref()
            .and_then(|text| self.url("health_url", text, scope))
            .filter(|u| {
                if u.cloudmap.is_some() {
                    self.report(
                        &raw.health_url.as_ref().map_or(0..0, Spanned::span),
                        scope,
                        "health_url is the load balancer's health check, an http:// or https:// URL".to_string(),
                    );
                }
                u.cloudmap.is_none()
            })
            .map(|url| {
                // A load balancer's health checks of a proxy-protocol target carry the header
                // too (NLB target groups with proxy protocol v2 send it on health checks).
                Box::new(Hop {
                    max_body,
                    tls_server_name: tls_server_name.clone(),
                    ca_file: ca_file.clone(),
                    send_proxy_protocol,
                    ..Hop::plain(
                        raw.name.get_ref(),
                        role.unwrap_or(Role::Target),
                        url,
                        timeout,
                    )
                })
            });

        let client_auth = self.client_auth(raw, url.as_ref(), scope);
        let facts = self.facts(raw, role, limits.kind, scope);
        let (integration_timeout, logs) = self.gateway(raw, role, limits.kind, scope);
        let auth = self.auth(raw, url.as_ref(), scope, env);

        if self.problems.len() > before {
            return None;
        }
        Some(Hop {
            name: raw.name.get_ref().clone(),
            role: role?,
            url: url?,
            method,
            headers,
            body,
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
            client_auth,
            send_proxy_protocol,
            facts,
            integration_timeout,
            logs,
            auth,
        })
    }

    /// What a gateway hop knows of its gateway: the integration timeout (the kind's default
    /// when unset) and where the stage logs. Every key belongs to gateway hops only.
    fn gateway(
        &mut self,
        raw: &RawHop,
        role: Option<Role>,
        kind: Option<Kind>,
        scope: &str,
    ) -> (Option<Duration>, Option<GatewayLogs>) {
        let keys = [
            ("integration_timeout", raw.integration_timeout.as_ref()),
            ("access_log_group", raw.access_log_group.as_ref()),
            ("access_log_format", raw.access_log_format.as_ref()),
            ("execution_log_group", raw.execution_log_group.as_ref()),
        ];
        if role.is_some_and(|r| r != Role::Gateway) {
            for (key, value) in keys {
                if let Some(v) = value {
                    self.report(
                        &v.span(),
                        scope,
                        format!(
                            "{key} is a setting of gateway hops; this hop is {}",
                            role.map_or("", Role::as_str)
                        ),
                    );
                }
            }
            return (None, None);
        }
        if role.is_none() {
            return (None, None);
        }
        let mut timeout = kind.and_then(Kind::integration_timeout);
        if let Some((value, span)) =
            self.duration(&raw.integration_timeout, scope, "integration_timeout")
        {
            // AWS's bounds: at least 50 ms; REST APIs may raise the 29 s default (a quota
            // increase), so the upper bound is only a sanity one.
            // docs.aws.amazon.com/apigateway/latest/developerguide/limits.html
            if value < Duration::from_millis(50) || value > Duration::from_secs(600) {
                self.report(
                    &span,
                    scope,
                    format!(
                        "integration_timeout ({}) must be between 50ms and 10m (API Gateway's integration timeouts start at 50 ms)",
                        format_duration(value)
                    ),
                );
            } else {
                timeout = Some(value);
            }
        }
        let group = |this: &mut Self, key: &str, v: Option<&Spanned<String>>| -> Option<String> {
            let v = v?;
            match log_group_name(v.get_ref()) {
                Some(name) => Some(name),
                None => {
                    this.report(
                        &v.span(),
                        scope,
                        format!(
                            "{key} ({:?}) must be a CloudWatch Logs group name (1 to 512 of a-z A-Z 0-9 _ - / . #) or its ARN (arn:aws:logs:REGION:ACCOUNT:log-group:NAME)",
                            v.get_ref()
                        ),
                    );
                    None
                }
            }
        };
        let access = group(self, "access_log_group", raw.access_log_group.as_ref());
        let execution = group(
            self,
            "execution_log_group",
            raw.execution_log_group.as_ref(),
        );
        if let (Some(format), None) = (&raw.access_log_format, &raw.access_log_group) {
            self.report(
                &format.span(),
                scope,
                "access_log_format describes the lines of access_log_group: set that too"
                    .to_string(),
            );
        }
        let logs = (access.is_some() || execution.is_some()).then(|| GatewayLogs {
            access_log_group: access,
            access_log_format: raw.access_log_format.as_ref().map(|f| f.get_ref().clone()),
            execution_log_group: execution,
        });
        (timeout, logs)
    }

    /// A path written in the config, resolved against the config file's folder, so a config
    /// and the files it names move together.
    fn beside_config(&self, path: &str) -> std::path::PathBuf {
        std::path::Path::new(self.file)
            .parent()
            .unwrap_or(std::path::Path::new(""))
            .join(path)
    }

    /// `client_cert` and `client_key`: both or neither, readable PEM, on an https:// hop.
    fn client_auth(
        &mut self,
        raw: &RawHop,
        url: Option<&HopUrl>,
        scope: &str,
    ) -> Option<ClientAuth> {
        let (cert, key) = match (&raw.client_cert, &raw.client_key) {
            (None, None) => return None,
            (Some(cert), Some(key)) => (cert, key),
            (Some(only), None) | (None, Some(only)) => {
                self.report(
                    &only.span(),
                    scope,
                    "client_cert and client_key go together: set both (PEM files) or neither"
                        .to_string(),
                );
                return None;
            }
        };
        if url.is_some_and(|u| !u.tls) {
            self.report(
                &cert.span(),
                scope,
                "client_cert needs an https:// url: a client certificate is presented in the TLS handshake".to_string(),
            );
        }
        let auth = ClientAuth {
            cert: self.beside_config(cert.get_ref()),
            key: self.beside_config(key.get_ref()),
        };
        if let Err(reason) = super::pem::read_cert_chain(&auth.cert) {
            self.report(
                &cert.span(),
                scope,
                format!("client_cert ({:?}) {reason}", cert.get_ref()),
            );
        }
        if let Err(reason) = super::pem::read_key(&auth.key) {
            self.report(
                &key.span(),
                scope,
                format!("client_key ({:?}) {reason}", key.get_ref()),
            );
        }
        Some(auth)
    }

    /// The facts a hop may state, each on the role it belongs to.
    fn facts(
        &mut self,
        raw: &RawHop,
        role: Option<Role>,
        kind: Option<Kind>,
        scope: &str,
    ) -> HopFacts {
        let mut facts = HopFacts {
            vpc_link: kind.and_then(Kind::implied_link),
            ..HopFacts::default()
        };
        if kind == Some(Kind::RestNlb) {
            facts.vpc_link = Some(VpcLink::V1);
        }
        let only_on = |this: &mut Self, key: &str, span: Range<usize>, wanted: Role| {
            if role.is_some_and(|r| r != wanted) {
                this.report(
                    &span,
                    scope,
                    format!(
                        "{key} is a fact of {wanted} hops; this hop is {}",
                        role.map_or("", Role::as_str)
                    ),
                );
                return false;
            }
            true
        };
        if let Some(v) = &raw.preserve_client_ip {
            if only_on(self, "preserve_client_ip", v.span(), Role::Nlb) {
                facts.preserve_client_ip = Some(*v.get_ref());
            }
        }
        if let Some(v) = &raw.xff_mode {
            if only_on(self, "xff_mode", v.span(), Role::Alb) {
                match XffMode::parse(v.get_ref()) {
                    Some(mode) => facts.xff_mode = mode,
                    None => self.report(
                        &v.span(),
                        scope,
                        format!(
                            "xff_mode ({:?}) must be \"append\", \"preserve\" or \"remove\"",
                            v.get_ref()
                        ),
                    ),
                }
            }
        }
        if let Some(v) = &raw.vpc_link {
            if only_on(self, "vpc_link", v.span(), Role::Gateway) {
                match (VpcLink::parse(v.get_ref()), kind) {
                    (None, _) => self.report(
                        &v.span(),
                        scope,
                        format!("vpc_link ({:?}) must be \"v1\" or \"v2\"", v.get_ref()),
                    ),
                    (Some(link), Some(k)) if k.implied_link().is_some_and(|l| l != link) => self
                        .report(
                            &v.span(),
                            scope,
                            format!(
                            "vpc_link ({link}) does not fit kind {k}, which always uses a {} link",
                            k.implied_link().map_or("", VpcLink::as_str)
                        ),
                        ),
                    (Some(link), _) => facts.vpc_link = Some(link),
                }
            }
        }
        facts
    }

    /// Parses the URL under `key` (`url`, `health_url`), naming that key when it is wrong.
    pub(super) fn url(&mut self, key: &str, raw: &Spanned<String>, scope: &str) -> Option<HopUrl> {
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

    pub(super) fn header(
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

    pub(super) fn status_set(
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
        let before = self.problems.len();
        let mut ranges = Vec::new();
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
                }
            }
        }
        (self.problems.len() == before).then(|| StatusSet::from_ranges(ranges))
    }
}

/// The name of a CloudWatch Logs group written as its name or as its ARN
/// (`arn:aws:logs:REGION:ACCOUNT:log-group:NAME`, with or without a trailing `:*`, as a stage's
/// `accessLogSettings.destinationArn` has it); `None` when it is neither. Names are 1 to 512
/// characters of `a-zA-Z0-9_-/.#` (docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/
/// API_CreateLogGroup.html).
pub fn log_group_name(text: &str) -> Option<String> {
    let name = match text.strip_prefix("arn:") {
        Some(rest) => {
            let (_, name) = rest.split_once(":log-group:")?;
            name.strip_suffix(":*").unwrap_or(name)
        }
        None => text,
    };
    let valid = (1..=512).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-/.#".contains(&b));
    valid.then(|| name.to_string())
}

/// What a hop's checks need to know of its chain.
pub(super) struct HopLimits<'a> {
    /// The chain's kind, when it was valid.
    pub kind: Option<Kind>,
    /// Names of the chain's hops, in order: what `expect_source` entries may name.
    pub hop_names: &'a [String],
    /// `None` when the chain's interval was itself wrong (already reported).
    pub interval: Option<Duration>,
    /// The timeout a hop without its own inherits.
    pub default_timeout: Duration,
}

//! A found estate as a hopwatch config: TOML, one `[[chain]]` per found chain, each setting
//! under a one-line comment that says the fact and where it came from. `validate` accepts it as
//! written; secrets are never written, only said to be needed.

use std::fmt::Write as _;

use super::model::{Estate, FoundChain, FoundHop, Setting};

/// Options of the walk, said at the top of the file so a reader knows what was asked.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub endpoint_url: Option<String>,
    pub apis: Vec<String>,
    pub stages: Vec<String>,
}

/// A TOML string literal: quotes and backslashes escaped.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A comment: one line per line of `text`, never breaking out of the comment.
fn comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}# {line}");
    }
}

fn setting<T>(out: &mut String, key: &str, s: &Option<Setting<T>>, value: impl Fn(&T) -> String) {
    if let Some(s) = s {
        comment(out, "  ", &s.because);
        let _ = writeln!(out, "  {key} = {}", value(&s.value));
    }
}

fn duration(d: &std::time::Duration) -> String {
    crate::config::duration::format_duration(*d)
}

fn hop(out: &mut String, h: &FoundHop) {
    out.push_str("\n  [[chain.hop]]\n");
    for note in &h.notes {
        comment(out, "  ", note);
    }
    let _ = writeln!(out, "  name = {}", quote(&h.name));
    let _ = writeln!(out, "  role = {}", quote(h.role.as_str()));
    let _ = writeln!(out, "  url = {}", quote(&h.url));
    setting(out, "health_url", &h.health_url, |v| quote(v));
    if h.per_address {
        out.push_str(
            "  # the load balancer spans several AZs: one node address each, probed one by one\n",
        );
        out.push_str("  per_address = true\n");
    }
    setting(out, "preserve_client_ip", &h.preserve_client_ip, |v| {
        v.to_string()
    });
    setting(out, "xff_mode", &h.xff_mode, |v| quote(v.as_str()));
    setting(out, "send_proxy_protocol", &h.send_proxy_protocol, |v| {
        quote(v.as_str())
    });
    setting(out, "vpc_link", &h.vpc_link, |v| quote(v.as_str()));
    setting(out, "integration_timeout", &h.integration_timeout, |v| {
        quote(&duration(v))
    });
    setting(out, "access_log_group", &h.access_log_group, |v| quote(v));
    setting(out, "access_log_format", &h.access_log_format, |v| quote(v));
    setting(out, "execution_log_group", &h.execution_log_group, |v| {
        quote(v)
    });
    setting(out, "expect_source", &h.expect_source, |v| {
        let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
        format!("[{}]", items.join(", "))
    });
    setting(out, "method", &h.method, |v| quote(v));
    if let Some(body) = &h.body {
        comment(out, "  ", &body.because);
        let _ = writeln!(out, "  body = {}", quote(&body.value.0));
        let _ = writeln!(out, "  body_content_type = {}", quote(&body.value.1));
    }
    setting(out, "tls_server_name", &h.tls_server_name, |v| quote(v));
    if !h.headers.is_empty() {
        for (_, s) in &h.headers {
            comment(out, "  ", &s.because);
        }
        let items: Vec<String> = h
            .headers
            .iter()
            .map(|(k, s)| format!("{} = {}", quote(k), quote(&s.value)))
            .collect();
        let _ = writeln!(out, "  headers = {{ {} }}", items.join(", "));
    }
    if let Some(region) = &h.sigv4_region {
        comment(out, "  ", &region.because);
        let _ = writeln!(
            out,
            "  auth = {{ sigv4 = {{ region = {} }} }}",
            quote(&region.value)
        );
    }
    for need in &h.needs {
        comment(out, "  ", need);
    }
}

fn chain(out: &mut String, c: &FoundChain) {
    let mut text = String::from("\n[[chain]]\n");
    for note in &c.notes {
        comment(&mut text, "", note);
    }
    let _ = writeln!(text, "name = {}", quote(&c.name));
    let _ = writeln!(text, "kind = {}", quote(c.kind.as_str()));
    for h in &c.hops {
        hop(&mut text, h);
    }
    match &c.disabled {
        None => out.push_str(&text),
        // Written whole but commented out: uncommenting it (after reading why) is all a user
        // does to run it.
        Some(why) => {
            out.push('\n');
            comment(out, "", &format!("NOT RUN: {why}"));
            for line in text.lines().skip(1) {
                if line.is_empty() {
                    out.push_str("#\n");
                } else {
                    let _ = writeln!(out, "# {line}");
                }
            }
        }
    }
}

/// The config for `estate`.
pub fn config(estate: &Estate, header: &Header) -> String {
    let mut out = String::new();
    let off = estate
        .chains
        .iter()
        .filter(|c| c.disabled.is_some())
        .count();
    let _ = writeln!(
        out,
        "# Written by `hopwatch discover` from {} ({} chain{}{}).",
        estate.region,
        estate.chains.len(),
        if estate.chains.len() == 1 { "" } else { "s" },
        if off == 0 {
            String::new()
        } else {
            format!(", {off} written commented out")
        }
    );
    if let Some(url) = &header.endpoint_url {
        let _ = writeln!(out, "# Endpoint: {url}");
    }
    if !header.apis.is_empty() {
        let _ = writeln!(out, "# APIs: {}", header.apis.join(", "));
    }
    if !header.stages.is_empty() {
        let _ = writeln!(out, "# Stages: {}", header.stages.join(", "));
    }
    out.push_str(
        "# Every setting says the fact it comes from. Secrets are never discovered: where a\n",
    );
    out.push_str(
        "# method needs an API key or an authorizer's token, a comment says so; add the header\n",
    );
    out.push_str("# yourself, from the environment (headers = { x-api-key = \"${API_KEY}\" }).\n");
    out.push_str(
        "#\n# To keep these chains and their facts in step with AWS while the agent runs, use\n",
    );
    out.push_str("# [discovery] instead of (or beside) the chains below:\n#\n# [discovery]\n");
    let _ = writeln!(out, "# region = {}", quote(&estate.region));
    if let Some(url) = &header.endpoint_url {
        let _ = writeln!(out, "# endpoint_url = {}", quote(url));
    }
    out.push_str("# refresh = \"5m\"\n");
    for e in &estate.errors {
        let what = if e.access_denied {
            format!(
                "{} failed: access denied; allow {} to see what it tells",
                e.action,
                e.iam_action()
            )
        } else {
            format!("{} ({}) failed: {}", e.action, e.service, e.message)
        };
        comment(&mut out, "", &format!("NOTE: {what}"));
    }
    for w in &estate.warnings {
        comment(&mut out, "", &format!("WARNING: {w}"));
    }
    for u in &estate.unbuilt {
        comment(
            &mut out,
            "",
            &format!("NOT PROBED: {} {}: {}", u.api, u.route, u.why),
        );
    }
    if estate.chains.is_empty() {
        out.push_str("#\n# No API in this region has an integration through a VPC link.\n");
    }
    out.push_str(&chains(estate.chains.iter()));
    out
}

/// The `[[chain]]` tables of `found`, as `config` writes them.
pub fn chains<'a>(found: impl IntoIterator<Item = &'a FoundChain>) -> String {
    let mut out = String::new();
    for c in found {
        chain(&mut out, c);
    }
    out
}

/// The chain as config data, exactly what [`config`] writes for it: what the agent checks
/// and runs beside the user's own chains, each alone (`config::check_chain`).
pub fn raw_chain(c: &FoundChain) -> crate::config::raw::RawChain {
    use crate::config::raw::{RawChain, RawHop};
    use toml::Spanned;
    fn at<T>(v: T) -> Spanned<T> {
        Spanned::new(0..0, v)
    }
    let opt = |v: &Option<Setting<String>>| v.as_ref().map(|s| at(s.value.clone()));
    let hops = c
        .hops
        .iter()
        .map(|h| {
            at(RawHop {
                name: at(h.name.clone()),
                role: Some(at(h.role.as_str().to_string())),
                url: at(h.url.clone()),
                method: h.method.as_ref().map(|s| at(s.value.clone())),
                body: h.body.as_ref().map(|s| at(s.value.0.clone())),
                body_content_type: h.body.as_ref().map(|s| at(s.value.1.clone())),
                headers: h
                    .headers
                    .iter()
                    .map(|(k, s)| (k.clone(), at(s.value.clone())))
                    .collect(),
                expect_status: None,
                expect_body: None,
                timeout: None,
                max_body: None,
                tls_server_name: h.tls_server_name.as_ref().map(|s| at(s.value.clone())),
                ca_file: None,
                health_url: opt(&h.health_url),
                expect_source: h
                    .expect_source
                    .as_ref()
                    .map(|s| s.value.iter().map(|v| at(v.clone())).collect()),
                expect_forwarded: None,
                per_address: h.per_address.then_some(true),
                client_cert: None,
                client_key: None,
                send_proxy_protocol: h
                    .send_proxy_protocol
                    .as_ref()
                    .map(|s| at(s.value.as_str().to_string())),
                preserve_client_ip: h.preserve_client_ip.as_ref().map(|s| at(s.value)),
                xff_mode: h
                    .xff_mode
                    .as_ref()
                    .map(|s| at(s.value.as_str().to_string())),
                vpc_link: h
                    .vpc_link
                    .as_ref()
                    .map(|s| at(s.value.as_str().to_string())),
                integration_timeout: h
                    .integration_timeout
                    .as_ref()
                    .map(|s| at(duration(&s.value))),
                access_log_group: opt(&h.access_log_group),
                access_log_format: opt(&h.access_log_format),
                execution_log_group: opt(&h.execution_log_group),
                auth: h.sigv4_region.as_ref().map(|r| {
                    at(crate::config::raw::RawAuth {
                        sigv4: Some(at(crate::config::raw::RawSigV4 {
                            region: at(r.value.clone()),
                            service: None,
                            role_arn: None,
                            external_id: None,
                        })),
                        oauth2: None,
                    })
                }),
            })
        })
        .collect();
    RawChain {
        name: at(c.name.clone()),
        kind: at(c.kind.as_str().to_string()),
        interval: None,
        timeout: None,
        reuse_connections: None,
        down_after: None,
        up_after: None,
        hops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_comments_cannot_break_out() {
        assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        let mut out = String::new();
        comment(&mut out, "  ", "one\n[[chain]]\nname = \"evil\"");
        assert_eq!(out, "  # one\n  # [[chain]]\n  # name = \"evil\"\n");
    }
}

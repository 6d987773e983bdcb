//! `[[chain]]`: kind, timing, the hops' roles, and the expectations a kind implies.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use super::super::duration::format_duration;
use super::super::raw::RawChain;
use super::super::*;
use super::hop::HopLimits;
use super::{Bound, Checker, Inherited};

impl Checker<'_> {
    pub(super) fn chain(
        &mut self,
        spanned: &Spanned<RawChain>,
        inherited: &Inherited,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Chain> {
        let raw = spanned.get_ref();
        let name = raw.name.get_ref().clone();
        let scope = format!("chain {name:?}");
        let before = self.problems.len();
        if name.trim().is_empty() {
            self.report(
                &raw.name.span(),
                &scope,
                "name must not be empty".to_string(),
            );
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
                if interval_known {
                    self.below(value, Bound::Interval(interval), &span, &scope);
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
            }
            let (line, _) = self.position(hop.get_ref().name.span().start);
            if let Some(first) = seen.get(hop_name.as_str()) {
                self.report(
                    &hop.get_ref().name.span(),
                    &hop_scope,
                    format!("name ({hop_name:?}) is already used by the hop at line {first}"),
                );
            } else {
                seen.insert(hop_name, line);
            }
            let role = roles.as_ref().and_then(|r| r.get(index).copied().flatten());
            let limits = HopLimits {
                kind,
                hop_names: &hop_names,
                interval: interval_known.then_some(interval),
                default_timeout: timeout,
            };
            if let Some(hop) = self.hop(hop.get_ref(), &hop_scope, role, &limits, env) {
                hops.push(hop);
            }
        }
        let kind = kind?;
        if self.problems.len() > before || hops.len() != raw.hops.len() {
            return None;
        }
        self.forwarded_can_hold(raw, &hops, &scope);
        if self.problems.len() > before {
            return None;
        }
        for (index, source, forwarded) in kind.default_expectations(&hops) {
            let written = &raw.hops[index].get_ref();
            let hop = &mut hops[index];
            if written.expect_source.is_none() {
                hop.expect_source = source.into_iter().map(Rule::Hop).collect();
            }
            if written.expect_forwarded.is_none() {
                hop.expect_forwarded = forwarded.into_iter().map(Rule::Hop).collect();
            }
        }
        self.gateway_waits_longer(raw, kind, &hops, &scope);
        Some(Chain {
            name,
            kind,
            interval,
            reuse_connections: raw.reuse_connections.unwrap_or(false),
            thresholds,
            hops,
        })
    }

    /// `expect_forwarded` reads the last `X-Forwarded-For` entry, which the ALB nearest the
    /// target appends: an ALB that removes the header makes it impossible.
    fn forwarded_can_hold(&mut self, raw: &RawChain, hops: &[Hop], scope: &str) {
        let Some(alb) = hops.iter().rev().find(|h| h.role == Role::Alb) else {
            return;
        };
        if alb.facts.xff_mode != XffMode::Remove {
            return;
        }
        for (written, hop) in raw.hops.iter().zip(hops) {
            if let Some(first) = written
                .get_ref()
                .expect_forwarded
                .as_ref()
                .and_then(|l| l.first())
            {
                self.report(
                    &first.span(),
                    &format!("{scope} hop {:?}", hop.name),
                    format!(
                        "expect_forwarded can never hold: hop {:?} removes X-Forwarded-For (xff_mode = \"remove\")",
                        alb.name
                    ),
                );
            }
        }
    }

    /// A gateway hop that gives up before the gateway does sees its own timeout where users
    /// get the gateway's answer (504 on REST, 503 on an HTTP API): said as a warning, since a
    /// short timeout is a fine choice too.
    fn gateway_waits_longer(&mut self, raw: &RawChain, kind: Kind, hops: &[Hop], scope: &str) {
        for (written, hop) in raw.hops.iter().zip(hops) {
            let Some(limit) = hop
                .integration_timeout
                .filter(|_| hop.role == Role::Gateway)
            else {
                continue;
            };
            if hop.timeout > limit {
                continue;
            }
            let w = written.get_ref();
            let (api, answer) = match (w.integration_timeout.is_some(), kind.http_api()) {
                (true, true) => ("the integration_timeout", "503"),
                (true, false) => ("the integration_timeout", "504"),
                (false, true) => ("the HTTP API integration timeout", "503"),
                (false, false) => ("the REST API integration timeout (by default)", "504"),
            };
            let span = w
                .timeout
                .as_ref()
                .map(Spanned::span)
                .or_else(|| raw.timeout.as_ref().map(Spanned::span))
                .unwrap_or_else(|| w.name.span());
            self.warn(
                &span,
                &format!("{scope} hop {:?}", hop.name),
                format!(
                    "timeout ({}) is not above {api} ({}): when the integration hangs, the agent reports its own timeout where users get the gateway's {answer}",
                    format_duration(hop.timeout),
                    format_duration(limit)
                ),
            );
        }
    }

    /// Resolves each hop's role from the kind's shape and the explicit `role` keys, reporting
    /// every mismatch. Returns one entry per hop (`None` where no role could be settled).
    pub(super) fn roles(&mut self, raw: &RawChain, kind: Kind, scope: &str) -> Vec<Option<Role>> {
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
}

fn roles(shape: &[Role]) -> String {
    shape
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

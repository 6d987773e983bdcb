//! `[agent]`.

use super::super::raw::RawAgent;
use super::super::*;
use super::{Bound, Checker, MAX_IN_FLIGHT_LIMIT};

impl Checker<'_> {
    pub(super) fn agent(&mut self, raw: Option<&RawAgent>) -> Agent {
        let mut agent = Agent {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 9464))),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            thresholds: Thresholds::default(),
            vantage: None,
            shard: Shard::WHOLE,
            detail: Detail::Standard,
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
                self.below(timeout, Bound::Interval(agent.interval), &span, scope);
            }
        }
        if let Some(vantage) = &raw.vantage {
            let v = vantage.get_ref();
            if v.is_empty() || v.len() > 255 || v.chars().any(char::is_control) {
                self.report(
                    &vantage.span(),
                    scope,
                    format!("vantage ({v:?}) must be 1 to 255 characters, none of them control characters"),
                );
            } else {
                agent.vantage = Some(v.clone());
            }
        }
        if let Some(shard) = &raw.shard {
            match Shard::parse(shard.get_ref()) {
                Ok(s) => agent.shard = s,
                Err(why) => self.report(&shard.span(), scope, format!("shard: {why}")),
            }
        }
        if let Some(detail) = &raw.detail {
            match Detail::parse(detail.get_ref()) {
                Some(d) => agent.detail = d,
                None => self.report(
                    &detail.span(),
                    scope,
                    format!(
                        "detail ({:?}) must be \"standard\" or \"full\"",
                        detail.get_ref()
                    ),
                ),
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
}

//! `[cloudwatch]`: values within what CloudWatch accepts.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::super::duration::format_duration;
use super::super::raw::RawCloudWatch;
use super::super::*;
use super::{expand_env, Checker};

impl Checker<'_> {
    pub(super) fn cloudwatch(
        &mut self,
        raw: &RawCloudWatch,
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
        let vantage_dimension = raw.vantage_dimension.as_ref().is_some_and(|v| *v.get_ref());
        let mut dimensions = Vec::new();
        let written = raw.dimensions.as_ref();
        for (name, value) in written.into_iter().flat_map(Spanned::get_ref) {
            use super::published::dims;
            if [dims::CHAIN, dims::HOP, dims::RESULT, dims::REASON_CODE].contains(&name.as_str())
                || (vantage_dimension && name == dims::VANTAGE)
            {
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
            if super::published::RESERVED_KEYS.contains(&name.as_str()) {
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
        let extra = dimensions.len() + usize::from(vantage_dimension);
        if extra > MAX_EXTRA_DIMENSIONS {
            let span = written.map_or(0..0, Spanned::span);
            let vantage = if vantage_dimension {
                " (Vantage included)"
            } else {
                ""
            };
            self.report(&span, scope, format!("dimensions: {extra} extra dimensions{vantage}, at most {MAX_EXTRA_DIMENSIONS} fit beside Chain, Hop and Result"));
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
        let detail = match &raw.detail {
            None => CloudWatchDetail::Chain,
            Some(d) => CloudWatchDetail::parse(d.get_ref()).unwrap_or_else(|| {
                self.report(
                    &d.span(),
                    scope,
                    format!("detail ({:?}) must be \"chain\" or \"hop\"", d.get_ref()),
                );
                CloudWatchDetail::Chain
            }),
        };
        let endpoint_url = self.endpoint_url(&raw.endpoint_url, scope);
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
            vantage_dimension,
            detail,
        })
    }
}

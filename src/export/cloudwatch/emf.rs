//! Embedded Metric Format: one JSON line per (chain, hop, flush period) that CloudWatch Logs
//! turns into the same metrics as `PutMetricData`, and that Logs Insights can search for the
//! source IP the target saw, `X-Forwarded-For`, the VPC endpoint id and the probe's trace id.
//!
//! EMF values are plain numbers or arrays of at most [`MAX_VALUES`] numbers, each one sample.
//! A period with more samples than that (a 1 s interval flushed every 5 minutes) continues on
//! further lines that carry the same dimensions and only the overflowing values, so no sample
//! is lost and none is counted twice.

use serde_json::{json, Map, Value as Json};

use hdrhistogram::Histogram;

use super::encode::{dims, names};
use super::period::{HopPeriod, Period, Tally};

/// EMF: values per metric per line.
pub const MAX_VALUES: usize = 100;

/// One metric's samples in a line and where its dimensions come from.
struct Series {
    name: &'static str,
    unit: &'static str,
    values: Vec<f64>,
    /// Chain-level (`ChainUp`): its own dimension set without `Hop`.
    chain_level: bool,
    /// Counts that are one number for the period, not samples: first line only.
    single: bool,
}

fn tally_values(t: &Tally) -> Vec<f64> {
    let zeros = std::iter::repeat_n(0.0, t.zeros as usize);
    zeros
        .chain(std::iter::repeat_n(1.0, t.ones as usize))
        .collect()
}

/// Each recorded latency as milliseconds, at the histogram's precision.
fn latency_values(h: &Histogram<u32>) -> Vec<f64> {
    h.iter_recorded()
        .flat_map(|v| {
            let ms = h.median_equivalent(v.value_iterated_to()) as f64 / 1000.0;
            std::iter::repeat_n(ms, v.count_at_value() as usize)
        })
        .collect()
}

fn series(p: &HopPeriod, chain_up: Option<&Tally>) -> Vec<Series> {
    let mut out = vec![Series {
        name: names::LATENCY,
        unit: "Milliseconds",
        values: latency_values(&p.latency),
        chain_level: false,
        single: false,
    }];
    if !p.results.is_empty() {
        for (name, n) in [
            (names::PROBES, p.results.values().sum::<u64>()),
            (names::PROBE_FAILURES, p.failures()),
        ] {
            out.push(Series {
                name,
                unit: "Count",
                values: vec![n as f64],
                chain_level: false,
                single: true,
            });
        }
    }
    for (name, t) in [
        (names::HOP_UP, &p.up),
        (names::BROKEN_HOP, &p.broken),
        (names::HEALTH_CHECK_UP, &p.health_up),
        (names::UNEXPECTED_SOURCE, &p.unexpected_source),
    ] {
        out.push(Series {
            name,
            unit: "None",
            values: tally_values(t),
            chain_level: false,
            single: false,
        });
    }
    if let Some(t) = chain_up {
        out.push(Series {
            name: names::CHAIN_UP,
            unit: "None",
            values: tally_values(t),
            chain_level: true,
            single: false,
        });
    }
    out.retain(|s| !s.values.is_empty());
    out
}

/// Searchable properties of the period's last probe of the hop.
fn properties(p: &HopPeriod, root: &mut Map<String, Json>) {
    let Some(last) = &p.last else { return };
    let mut put = |key: &str, value: Json| {
        // A configured dimension of the same name wins: it is a metric's identity.
        root.entry(key.to_string()).or_insert(value);
    };
    put("TraceId", json!(last.trace_id));
    put("LastResult", json!(last.result));
    if let Some(status) = last.status {
        put("HttpStatus", json!(status));
    }
    put("Results", json!(p.results));
    if let Some(seen) = &last.seen {
        put("SourceIp", json!(seen.peer));
        if !seen.forwarded_for.is_empty() {
            put("XForwardedFor", json!(seen.forwarded_for.join(", ")));
        }
        if let Some(pp) = &seen.proxy_protocol {
            if let Some(src) = &pp.src {
                put("ProxyProtocolSource", json!(src));
            }
            if let Some(vpce) = &pp.vpce_id {
                put("VpcEndpointId", json!(vpce));
            }
        }
    }
}

/// The EMF lines of one period, for every (chain, hop) in it. The first hop of each chain
/// also carries `ChainUp`, under a dimension set of its own.
pub fn lines(
    period: &Period,
    namespace: &str,
    extra: &[(String, String)],
    storage_resolution: u8,
) -> Vec<String> {
    let timestamp = period
        .start
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let extra_names: Vec<&str> = extra.iter().map(|(k, _)| k.as_str()).collect();
    let hop_dims: Vec<&str> = [dims::CHAIN, dims::HOP]
        .into_iter()
        .chain(extra_names.iter().copied())
        .collect();
    let chain_dims: Vec<&str> = [dims::CHAIN]
        .into_iter()
        .chain(extra_names.iter().copied())
        .collect();
    let mut out = Vec::new();
    let mut chains_done = std::collections::BTreeSet::new();
    for ((chain, hop), p) in &period.hops {
        let chain_up = chains_done
            .insert(chain.as_str())
            .then(|| period.chains.get(chain))
            .flatten();
        let all = series(p, chain_up);
        let longest = all.iter().map(|s| s.values.len()).max().unwrap_or(0);
        let count = longest.div_ceil(MAX_VALUES).max(1);
        for line in 0..count {
            let mut root = Map::new();
            root.insert(dims::CHAIN.into(), json!(chain));
            root.insert(dims::HOP.into(), json!(hop));
            for (k, v) in extra {
                root.insert(k.clone(), json!(v));
            }
            let mut hop_metrics = Vec::new();
            let mut chain_metrics = Vec::new();
            for s in &all {
                if s.single && line > 0 {
                    continue;
                }
                let chunk: Vec<f64> = s
                    .values
                    .iter()
                    .skip(line * MAX_VALUES)
                    .take(MAX_VALUES)
                    .copied()
                    .collect();
                let value = match chunk.as_slice() {
                    [] => continue,
                    [one] => json!(one),
                    many => json!(many),
                };
                root.insert(s.name.to_string(), value);
                let definition = json!({
                    "Name": s.name,
                    "Unit": s.unit,
                    "StorageResolution": storage_resolution,
                });
                if s.chain_level {
                    chain_metrics.push(definition);
                } else {
                    hop_metrics.push(definition);
                }
            }
            let mut directives = Vec::new();
            if !hop_metrics.is_empty() {
                directives.push(json!({
                    "Namespace": namespace,
                    "Dimensions": [hop_dims],
                    "Metrics": hop_metrics,
                }));
            }
            if !chain_metrics.is_empty() {
                directives.push(json!({
                    "Namespace": namespace,
                    "Dimensions": [chain_dims],
                    "Metrics": chain_metrics,
                }));
            }
            if directives.is_empty() {
                continue;
            }
            if line == 0 {
                properties(p, &mut root);
            } else {
                root.insert("Continues".into(), json!(line));
            }
            root.insert(
                "_aws".into(),
                json!({ "Timestamp": timestamp, "CloudWatchMetrics": directives }),
            );
            out.push(Json::Object(root).to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::cloudwatch::period::testing::*;
    use crate::export::cloudwatch::period::Periods;
    use crate::probe::Outcome;
    use std::time::Duration;

    /// The specification's cross-references, which a JSON schema can't state: every metric a
    /// directive names is a root member holding a number or at most 100 numbers, every
    /// dimension a root member holding a string. Returns the parsed line.
    fn check(line: &str) -> Json {
        let doc: Json = serde_json::from_str(line).expect("one JSON object per line");
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].as_u64().is_some(), "{line}");
        let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
        assert!(!directives.is_empty());
        for d in directives {
            for set in d["Dimensions"].as_array().expect("dimension sets") {
                let set = set.as_array().expect("set");
                assert!(set.len() <= 30);
                for key in set {
                    let key = key.as_str().expect("dimension name");
                    assert!(doc[key].is_string(), "dimension {key} missing: {line}");
                }
            }
            let metrics = d["Metrics"].as_array().expect("metrics");
            assert!(metrics.len() <= 100);
            for m in metrics {
                let name = m["Name"].as_str().expect("name");
                match &doc[name] {
                    Json::Number(_) => {}
                    Json::Array(values) => {
                        assert!(!values.is_empty() && values.len() <= MAX_VALUES, "{name}");
                        assert!(values.iter().all(Json::is_number), "{name}");
                    }
                    other => panic!("metric {name} is {other}: {line}"),
                }
            }
        }
        doc
    }

    fn values(doc: &Json, name: &str) -> Vec<f64> {
        match &doc[name] {
            Json::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN)],
            Json::Array(a) => a.iter().filter_map(Json::as_f64).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn one_line_per_hop_with_searchable_sources() {
        let chain = chain();
        let mut periods = Periods::new(Duration::from_secs(60));
        for t in [1.0, 2.0] {
            let results = vec![
                result(Outcome::Ok, 10, at(t), ""),
                result(Outcome::Ok, 20, at(t), ""),
                result(Outcome::Ok, 30, at(t), ECHO),
            ];
            periods.observe(
                &round(&chain, at(t), results, true),
                &[true; 3],
                &verdict(true, None),
            );
        }
        let period = periods.take_all().remove(0);
        let extra = vec![("AvailabilityZone".to_string(), "eu-west-1a".to_string())];
        let lines = lines(&period, "Hopwatch", &extra, 60);
        assert_eq!(lines.len(), 3, "gateway, nlb, target");
        let docs: Vec<Json> = lines.iter().map(|l| check(l)).collect();
        let hops: Vec<&str> = docs.iter().filter_map(|d| d["Hop"].as_str()).collect();
        assert_eq!(hops, ["gateway", "nlb", "target"]);
        for d in &docs {
            assert_eq!(d["_aws"]["Timestamp"], 0, "the period's start, in ms");
            assert_eq!(d["AvailabilityZone"], "eu-west-1a");
            assert_eq!(d["Chain"], "orders");
            assert_eq!(values(d, "Probes"), [2.0]);
            assert_eq!(values(d, "ProbeFailures"), [0.0]);
            assert_eq!(values(d, "HopUp"), [1.0, 1.0]);
            assert!(d["TraceId"]
                .as_str()
                .is_some_and(|t| t.starts_with("Root=1-")));
            let dims = &d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0];
            assert_eq!(*dims, json!(["Chain", "Hop", "AvailabilityZone"]));
        }
        // ChainUp once per chain, under its own dimensions.
        assert_eq!(values(&docs[0], "ChainUp"), [1.0, 1.0]);
        assert_eq!(
            docs[0]["_aws"]["CloudWatchMetrics"][1]["Dimensions"][0],
            json!(["Chain", "AvailabilityZone"])
        );
        assert!(docs[1].get("ChainUp").is_none() && docs[2].get("ChainUp").is_none());
        assert_eq!(values(&docs[1], "HealthCheckUp"), [1.0, 1.0]);
        let latency = values(&docs[1], "Latency");
        assert_eq!(latency.len(), 2);
        assert!(
            latency.iter().all(|v| (v - 20.0).abs() < 0.05),
            "{latency:?}"
        );
        // What the target saw, for Logs Insights.
        let target = &docs[2];
        assert_eq!(target["SourceIp"], "10.0.1.7");
        assert_eq!(target["XForwardedFor"], "203.0.113.9, 10.0.0.5");
        assert_eq!(target["VpcEndpointId"], "vpce-0abc");
        assert_eq!(target["ProxyProtocolSource"], "10.0.0.5:50000");
        assert_eq!(values(target, "UnexpectedSource"), [0.0, 0.0]);
        assert!(docs[0].get("SourceIp").is_none(), "not an echo answer");
    }

    #[test]
    fn more_than_100_samples_continue_on_further_lines() {
        let chain = chain();
        let mut periods = Periods::new(Duration::from_secs(300));
        for i in 0..250u64 {
            let t = at(1.0 + i as f64);
            let results = (0..3)
                .map(|_| {
                    let mut r = result(Outcome::Ok, 0, t, "");
                    r.total = Duration::from_micros(5_000 + i * 100);
                    r
                })
                .collect();
            periods.observe(
                &round(&chain, t, results, true),
                &[true; 3],
                &verdict(true, None),
            );
        }
        let period = periods.take_all().remove(0);
        let lines = lines(&period, "Hopwatch", &[], 1);
        let docs: Vec<Json> = lines.iter().map(|l| check(l)).collect();
        let gateway: Vec<&Json> = docs.iter().filter(|d| d["Hop"] == "gateway").collect();
        assert_eq!(gateway.len(), 3, "250 samples: 100 + 100 + 50");
        let all: usize = gateway.iter().map(|d| values(d, "Latency").len()).sum();
        assert_eq!(all, 250, "every sample once");
        let chain_up: usize = gateway.iter().map(|d| values(d, "ChainUp").len()).sum();
        assert_eq!(chain_up, 250);
        assert_eq!(values(gateway[0], "Probes"), [250.0]);
        assert!(
            gateway[1..].iter().all(|d| d.get("Probes").is_none()),
            "counted once"
        );
        assert_eq!(gateway[2]["Continues"], 2);
        assert!(gateway[1].get("TraceId").is_none());
    }
}

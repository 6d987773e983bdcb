//! Embedded Metric Format: one JSON line per (chain, hop, flush period) that CloudWatch Logs
//! turns into the same metrics, under the same dimensions, as `PutMetricData`, and that Logs
//! Insights can search for the source IP the target saw, `X-Forwarded-For`, the VPC endpoint
//! id and the probe's trace id. A failure class and `ChainUp` need lines of their own: EMF
//! takes one value per dimension a line.
//!
//! With `[cloudwatch] detail = "chain"` a hop that had nothing wrong in the period writes its
//! line without `_aws`: the same members, read by Logs Insights as the properties of a plain
//! JSON log event, and no metric extracted (a metric is paid for in every hour it gets data).
//! The chain's line then also carries `Latency` (its outermost hop's samples) and
//! `ProbeFailures` (its hops').
//!
//! EMF values are plain numbers or arrays of at most [`MAX_VALUES`] numbers, each one sample.
//! A period with more samples than that (a 1 s interval flushed every 5 minutes) continues on
//! further lines that carry the same dimensions and only the overflowing values, so no sample
//! is lost and none is counted twice.

use serde_json::{json, Map, Value as Json};

use hdrhistogram::Histogram;

use super::period::{HopPeriod, Period, Tally};
use crate::config::published::{dims, names, props};
use crate::config::CloudWatchDetail;
use crate::probe::Outcome;

/// EMF: values per metric per line.
pub const MAX_VALUES: usize = 100;

/// Which dimension set a metric is published under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// `Chain`, `Hop`, extras.
    Hop,
    /// `Chain`, `Hop`, `Result`, extras: `Probes` by class.
    Result,
    /// `Chain`, extras: `ChainUp`.
    Chain,
    /// `Chain`, `ReasonCode`, extras: `ChainDownReason`.
    Reason,
}

/// One metric's samples, split over as many lines as they need.
struct Series {
    name: &'static str,
    unit: &'static str,
    values: Vec<f64>,
    level: Level,
    /// One number for the period (a count), not samples: first line only.
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

fn hop_series(p: &HopPeriod) -> Vec<Series> {
    let mut out = vec![Series {
        name: names::LATENCY,
        unit: "Milliseconds",
        values: latency_values(&p.latency),
        level: Level::Hop,
        single: false,
    }];
    let ok = p.count(Outcome::Ok);
    if ok > 0 {
        out.push(Series {
            name: names::PROBES,
            unit: "Count",
            values: vec![ok as f64],
            level: Level::Result,
            single: true,
        });
    }
    if p.probed() {
        out.push(Series {
            name: names::PROBE_FAILURES,
            unit: "Count",
            values: vec![p.failures() as f64],
            level: Level::Hop,
            single: true,
        });
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
            level: Level::Hop,
            single: false,
        });
    }
    out.retain(|s| !s.values.is_empty());
    out
}

/// Searchable properties of the period's last probe of the hop.
fn properties(p: &HopPeriod, root: &mut Map<String, Json>) {
    let Some(last) = &p.last else { return };
    // Config validation keeps dimension names off these keys (RESERVED_KEYS).
    let mut put = |key: &str, value: Json| {
        root.insert(key.to_string(), value);
    };
    put(props::TRACE_ID, json!(last.trace_id));
    put(props::LAST_RESULT, json!(last.result));
    if let Some(status) = last.status {
        put(props::HTTP_STATUS, json!(status));
    }
    let results: Map<String, Json> = p
        .classes()
        .map(|(class, n)| (class.as_str().to_string(), json!(n)))
        .collect();
    put(props::RESULTS, Json::Object(results));
    if let Some((_, code)) = p.code {
        put(props::REASON_CODE, json!(code.as_str()));
    }
    if let Some(at) = last.cert_not_after {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        put(props::TLS_CERTIFICATE_EXPIRY, json!(secs));
    }
    if let Some(seen) = &last.seen {
        put(props::SOURCE_IP, json!(seen.peer));
        if !seen.forwarded_for.is_empty() {
            put(props::X_FORWARDED_FOR, json!(seen.forwarded_for.join(", ")));
        }
        if let Some(pp) = &seen.proxy_protocol {
            if let Some(src) = &pp.src {
                put(props::PROXY_PROTOCOL_SOURCE, json!(src));
            }
            if let Some(vpce) = &pp.vpce_id {
                put(props::VPC_ENDPOINT_ID, json!(vpce));
            }
        }
    }
}

/// Builds lines as EMF wants them: each metric a number or at most [`MAX_VALUES`] samples,
/// each dimension a root member.
struct Writer<'a> {
    namespace: &'a str,
    timestamp: u64,
    extra: &'a [(String, String)],
    storage_resolution: u8,
    out: Vec<String>,
}

impl Writer<'_> {
    fn dims(&self, level: Level) -> Vec<&str> {
        let own: &[&str] = match level {
            Level::Hop => &[dims::CHAIN, dims::HOP],
            Level::Result => &[dims::CHAIN, dims::HOP, dims::RESULT],
            Level::Chain => &[dims::CHAIN],
            Level::Reason => &[dims::CHAIN, dims::REASON_CODE],
        };
        own.iter()
            .copied()
            .chain(self.extra.iter().map(|(k, _)| k.as_str()))
            .collect()
    }

    /// Writes `series` over as many lines as its longest needs. `base` holds the dimension
    /// values; `first` adds the searchable properties to the first line. Unless `publish`, the
    /// lines have no `_aws`: their members are properties of a plain JSON log event.
    fn write(
        &mut self,
        base: &Map<String, Json>,
        series: &[Series],
        publish: bool,
        first: impl FnOnce(&mut Map<String, Json>),
    ) {
        let longest = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
        let mut first = Some(first);
        for line in 0..longest.div_ceil(MAX_VALUES) {
            let mut root = base.clone();
            for (k, v) in self.extra {
                root.insert(k.clone(), json!(v));
            }
            let mut written = false;
            let mut by_level: Vec<(Level, Vec<Json>)> = Vec::new();
            for s in series {
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
                written = true;
                if !publish {
                    continue;
                }
                let definition = json!({
                    "Name": s.name,
                    "Unit": s.unit,
                    "StorageResolution": self.storage_resolution,
                });
                match by_level.iter_mut().find(|(l, _)| *l == s.level) {
                    Some((_, defs)) => defs.push(definition),
                    None => by_level.push((s.level, vec![definition])),
                }
            }
            if !written {
                continue;
            }
            if !by_level.iter().any(|(l, _)| *l == Level::Result) {
                root.remove(dims::RESULT);
            }
            let directives: Vec<Json> = by_level
                .into_iter()
                .map(|(level, metrics)| {
                    json!({
                        "Namespace": self.namespace,
                        "Dimensions": [self.dims(level)],
                        "Metrics": metrics,
                    })
                })
                .collect();
            if line == 0 {
                if let Some(f) = first.take() {
                    f(&mut root);
                }
            } else {
                root.insert(props::CONTINUES.into(), json!(line));
            }
            if publish {
                root.insert(
                    "_aws".into(),
                    json!({ "Timestamp": self.timestamp, "CloudWatchMetrics": directives }),
                );
            }
            self.out.push(Json::Object(root).to_string());
        }
    }
}

/// The EMF lines of one period: per (chain, hop) one line with its metrics, `Probes` of
/// `ok` under `Result`, and the searchable properties; one more per failure class seen (EMF
/// takes one value per dimension a line); per chain one line with `ChainUp`. Samples beyond
/// 100 continue on further lines.
///
/// With [`CloudWatchDetail::Chain`], a hop that was not
/// [troubled](super::period::HopPeriod::troubled) in the period writes the same line without
/// `_aws` (its figures stay searchable, no metric is made of them), and the chain's line also
/// carries `Latency` (the outermost hop's samples) and `ProbeFailures` (every hop's), as
/// [`super::encode::datums`] does.
pub fn lines(
    period: &Period,
    namespace: &str,
    extra: &[(String, String)],
    storage_resolution: u8,
    detail: CloudWatchDetail,
) -> Vec<String> {
    let timestamp = period
        .start
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut w = Writer {
        namespace,
        timestamp,
        extra,
        storage_resolution,
        out: Vec::new(),
    };
    for ((chain, hop), p) in &period.hops {
        let mut base = Map::new();
        base.insert(dims::CHAIN.into(), json!(chain));
        base.insert(dims::HOP.into(), json!(hop));
        base.insert(dims::RESULT.into(), json!("ok"));
        let publish = detail == CloudWatchDetail::Hop || p.troubled();
        w.write(&base, &hop_series(p), publish, |root| properties(p, root));
        // A hop with a failed probe is troubled: at either detail, its classes are published.
        for (class, n) in p.classes().filter(|(c, _)| !c.is_ok()) {
            base.insert(dims::RESULT.into(), json!(class.as_str()));
            let probes = Series {
                name: names::PROBES,
                unit: "Count",
                values: vec![n as f64],
                level: Level::Result,
                single: true,
            };
            w.write(&base, &[probes], true, |_| {});
        }
    }
    let figures = period.chain_figures();
    for (chain, f) in &figures {
        let mut base = Map::new();
        base.insert(dims::CHAIN.into(), json!(chain));
        let mut series = Vec::new();
        if let Some(t) = period.chains.get(*chain) {
            series.push(Series {
                name: names::CHAIN_UP,
                unit: "None",
                values: tally_values(t),
                level: Level::Chain,
                single: false,
            });
        }
        if detail == CloudWatchDetail::Chain {
            if let Some(outermost) = f.outermost {
                series.push(Series {
                    name: names::LATENCY,
                    unit: "Milliseconds",
                    values: latency_values(&outermost.latency),
                    level: Level::Chain,
                    single: false,
                });
            }
            if f.probed {
                series.push(Series {
                    name: names::PROBE_FAILURES,
                    unit: "Count",
                    values: vec![f.failures as f64],
                    level: Level::Chain,
                    single: true,
                });
            }
        }
        w.write(&base, &series, true, |_| {});
    }
    for ((chain, code), rounds) in &period.reasons {
        let mut base = Map::new();
        base.insert(dims::CHAIN.into(), json!(chain));
        base.insert(dims::REASON_CODE.into(), json!(code.as_str()));
        let reason = Series {
            name: names::CHAIN_DOWN_REASON,
            unit: "Count",
            values: vec![*rounds as f64],
            level: Level::Reason,
            single: true,
        };
        w.write(&base, &[reason], true, |_| {});
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::cloudwatch::period::Periods;
    use crate::probe::Outcome;
    use crate::record::testing::*;
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
            periods.observe(&observed(
                round(&chain, at(t), results, true),
                &[true; 3],
                verdict(true, None),
            ));
        }
        let period = periods.take_all().remove(0);
        let extra = vec![("AvailabilityZone".to_string(), "eu-west-1a".to_string())];
        let lines = lines(&period, "Hopwatch", &extra, 60, CloudWatchDetail::Hop);
        assert_eq!(lines.len(), 4, "gateway, nlb, target, and the chain");
        let docs: Vec<Json> = lines.iter().map(|l| check(l)).collect();
        let hops: Vec<&str> = docs.iter().filter_map(|d| d["Hop"].as_str()).collect();
        assert_eq!(hops, ["gateway", "nlb", "target"]);
        for d in &docs[..3] {
            assert_eq!(d["_aws"]["Timestamp"], 0, "the period's start, in ms");
            assert_eq!(d["AvailabilityZone"], "eu-west-1a");
            assert_eq!(d["Chain"], "orders");
            assert_eq!(d["Result"], "ok");
            assert_eq!(values(d, "Probes"), [2.0]);
            assert_eq!(values(d, "ProbeFailures"), [0.0]);
            assert_eq!(values(d, "HopUp"), [1.0, 1.0]);
            assert!(d["TraceId"]
                .as_str()
                .is_some_and(|t| t.starts_with("Root=1-")));
            let directives = &d["_aws"]["CloudWatchMetrics"];
            assert_eq!(
                directives[0]["Dimensions"][0],
                json!(["Chain", "Hop", "AvailabilityZone"])
            );
            assert_eq!(
                directives[1]["Dimensions"][0],
                json!(["Chain", "Hop", "Result", "AvailabilityZone"])
            );
            assert_eq!(directives[1]["Metrics"][0]["Name"], "Probes");
            assert!(d.get("ChainUp").is_none());
        }
        for d in &docs {
            for key in d.as_object().expect("object").keys() {
                assert!(
                    ["Chain", "Hop", "Result", "AvailabilityZone"].contains(&key.as_str())
                        || crate::config::published::RESERVED_KEYS.contains(&key.as_str()),
                    "{key} must be reserved so no dimension can collide with it"
                );
            }
        }
        // ChainUp once per chain, on a line of its own under its own dimensions.
        let chain = &docs[3];
        assert_eq!(values(chain, "ChainUp"), [1.0, 1.0]);
        assert!(chain.get("Hop").is_none());
        assert_eq!(
            chain["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            json!(["Chain", "AvailabilityZone"])
        );
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

    /// `detail = "chain"`: a healthy hop's line keeps every figure as a property, without
    /// `_aws`; the chain's line has the chain's three metrics; a troubled hop's line is as at
    /// `hop` detail.
    #[test]
    fn at_chain_detail_healthy_hops_keep_their_figures_as_properties() {
        let chain = chain();
        let mut periods = Periods::new(Duration::from_secs(60));
        for (t, target) in [(1.0, Outcome::Ok), (2.0, Outcome::Timeout)] {
            let results = vec![
                result(Outcome::Ok, 10, at(t), ""),
                result(Outcome::Ok, 20, at(t), ""),
                result(target, 30, at(t), ECHO),
            ];
            periods.observe(&observed(
                round(&chain, at(t), results, true),
                &[true; 3],
                verdict(true, None),
            ));
        }
        let period = periods.take_all().remove(0);
        let chain_level = lines(&period, "Hopwatch", &[], 60, CloudWatchDetail::Chain);
        let hop_level = lines(&period, "Hopwatch", &[], 60, CloudWatchDetail::Hop);
        let docs: Vec<Json> = chain_level
            .iter()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        let hop = |name: &str| -> Vec<&Json> { docs.iter().filter(|d| d["Hop"] == name).collect() };
        for name in ["gateway", "nlb"] {
            let lines = hop(name);
            assert_eq!(lines.len(), 1, "{name}");
            let d = lines[0];
            assert!(d.get("_aws").is_none(), "nothing published for {name}: {d}");
            assert!(d.get("Result").is_none(), "no dimension to fill: {d}");
            assert_eq!(values(d, "Latency").len(), 2);
            assert_eq!(values(d, "Probes"), [2.0]);
            assert_eq!(values(d, "HopUp"), [1.0, 1.0]);
            assert!(d["TraceId"].is_string());
        }
        // The target timed out once: its lines are the ones `hop` detail writes.
        let target: Vec<String> = chain_level
            .iter()
            .filter(|l| l.contains("\"Hop\":\"target\""))
            .cloned()
            .collect();
        let target_at_hop: Vec<String> = hop_level
            .iter()
            .filter(|l| l.contains("\"Hop\":\"target\""))
            .cloned()
            .collect();
        assert_eq!(target, target_at_hop);
        assert!(target.iter().all(|l| check(l)["_aws"].is_object()));
        let chain_line: Vec<&Json> = docs.iter().filter(|d| d.get("Hop").is_none()).collect();
        assert_eq!(chain_line.len(), 1);
        let c = check(
            &chain_level[docs
                .iter()
                .position(|d| d.get("Hop").is_none())
                .unwrap_or(0)],
        );
        assert_eq!(values(&c, "ChainUp"), [1.0, 1.0]);
        assert_eq!(values(&c, "ProbeFailures"), [1.0], "the target's timeout");
        let latency = values(&c, "Latency");
        assert!(
            latency.len() == 2 && latency.iter().all(|v| (v - 10.0).abs() < 0.05),
            "the gateway's samples: {latency:?}"
        );
        let directive = &c["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"][0], json!(["Chain"]));
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["Name"].as_str())
            .collect();
        assert_eq!(names, ["ChainUp", "Latency", "ProbeFailures"]);
    }

    #[test]
    fn each_failure_class_gets_its_own_line() {
        let chain = chain();
        let mut periods = Periods::new(Duration::from_secs(60));
        let results = |t, o| vec![result(o, 10, at(t), ""); 3];
        periods.observe(&observed(
            round(&chain, at(1.0), results(1.0, Outcome::Ok), true),
            &[true; 3],
            verdict(true, None),
        ));
        periods.observe(&observed(
            round(&chain, at(2.0), results(2.0, Outcome::Timeout), true),
            &[true; 3],
            verdict(false, Some(2)),
        ));
        periods.observe(&observed(
            round(&chain, at(3.0), results(3.0, Outcome::Reset), true),
            &[true; 3],
            verdict(false, Some(2)),
        ));
        let period = periods.take_all().remove(0);
        let docs: Vec<Json> = lines(&period, "Hopwatch", &[], 60, CloudWatchDetail::Hop)
            .iter()
            .map(|l| check(l))
            .collect();
        let nlb: Vec<(String, Vec<f64>)> = docs
            .iter()
            .filter(|d| d["Hop"] == "nlb")
            .map(|d| {
                (
                    d["Result"].as_str().unwrap_or("").to_string(),
                    values(d, "Probes"),
                )
            })
            .collect();
        assert_eq!(
            nlb,
            [
                ("ok".to_string(), vec![1.0]),
                ("reset".to_string(), vec![1.0]),
                ("timeout".to_string(), vec![1.0])
            ]
        );
        let main = docs
            .iter()
            .find(|d| d["Hop"] == "nlb" && d["Result"] == "ok")
            .expect("main");
        assert_eq!(values(main, "ProbeFailures"), [2.0]);
        assert_eq!(main["Results"], json!({"ok": 1, "reset": 1, "timeout": 1}));
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
            periods.observe(&observed(
                round(&chain, t, results, true),
                &[true; 3],
                verdict(true, None),
            ));
        }
        let period = periods.take_all().remove(0);
        let lines = lines(&period, "Hopwatch", &[], 1, CloudWatchDetail::Hop);
        let docs: Vec<Json> = lines.iter().map(|l| check(l)).collect();
        let gateway: Vec<&Json> = docs.iter().filter(|d| d["Hop"] == "gateway").collect();
        assert_eq!(gateway.len(), 3, "250 samples: 100 + 100 + 50");
        let all: usize = gateway.iter().map(|d| values(d, "Latency").len()).sum();
        assert_eq!(all, 250, "every sample once");
        let chain_up: usize = docs.iter().map(|d| values(d, "ChainUp").len()).sum();
        assert_eq!(chain_up, 250);
        assert!(
            gateway[1].get("Result").is_none(),
            "no Probes, no Result dimension"
        );
        assert_eq!(values(gateway[0], "Probes"), [250.0]);
        assert!(
            gateway[1..].iter().all(|d| d.get("Probes").is_none()),
            "counted once"
        );
        assert_eq!(gateway[2]["Continues"], 2);
        assert!(gateway[1].get("TraceId").is_none());
    }
}

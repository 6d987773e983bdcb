//! What ships in deploy/: the Prometheus alert rules pass `promtool check rules` and their
//! unit tests (`promtool test rules`), and every metric and label they use is exported by a
//! real `hopwatch run` (not by a list written by hand).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_check_and_their_unit_tests_pass() {
    let rules = deploy("prometheus/alerts.yml");
    let text = promtool(&["check", "rules", rules.to_str().unwrap_or_default()]);
    assert!(text.contains("SUCCESS: 22 rules found"), "{text}");
    let tests = deploy("prometheus/alerts.test.yml");
    let text = promtool(&["test", "rules", tests.to_str().unwrap_or_default()]);
    assert!(text.contains("SUCCESS"), "{text}");
    // Every alert is exercised by the unit tests.
    let rules_text = std::fs::read_to_string(&rules).expect("rules");
    let tests_text = std::fs::read_to_string(&tests).expect("tests");
    for name in rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests_text.contains(&format!("alertname: {name}")),
            "{name} has no unit test"
        );
    }
    // And every recording rule.
    for name in rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
    {
        assert!(
            tests_text.contains(&format!("expr: {name}")),
            "{name} has no unit test"
        );
    }
}

/// What one real `hopwatch run` put out.
struct RealRun {
    /// The `/metrics` text.
    metrics: String,
    /// The EMF lines.
    emf: String,
}

/// The same config run at the default detail (`[agent] detail = "standard"`, `[cloudwatch]
/// detail = "chain"`) and at the full one (`"full"`, `"hop"`), side by side.
struct RealRuns {
    default: RealRun,
    full: RealRun,
}

/// Both runs, made once for every test of this file (each waits for the same few seconds of
/// rounds): three chains with every kind of signal on. `orders` is down, blamed on its gateway,
/// and its target has a health check, an unexpected source and per-address probes; `blind` is
/// up with an inner hop the agent cannot reach (a blind spot); `healthy` has nothing wrong.
fn real_runs() -> &'static RealRuns {
    static RUNS: std::sync::OnceLock<RealRuns> = std::sync::OnceLock::new();
    RUNS.get_or_init(|| {
        // Its own runtime on its own thread: the tests that ask are async, each on its own.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let echo = refused_port();
                let _echo = echo_process(echo);
                let (default, full) = tokio::join!(
                    real_run(echo, "standard", "chain"),
                    real_run(echo, "full", "hop")
                );
                RealRuns { default, full }
            })
        })
        .join()
        .expect("the real runs")
    })
}

/// What every run publishes to CloudWatch, whatever its detail: the failing chain publishes
/// every hop metric at `chain` detail too.
const EVERY_METRIC: [&str; 9] = [
    "Latency",
    "Probes",
    "ProbeFailures",
    "HopUp",
    "ChainUp",
    "BrokenHop",
    "HealthCheckUp",
    "UnexpectedSource",
    "ChainDownReason",
];

async fn real_run(echo: std::net::SocketAddr, detail: &str, cloudwatch: &str) -> RealRun {
    let dir = std::env::temp_dir().join(format!(
        "hopwatch-deploy-{}-{detail}-{}",
        std::process::id(),
        refused_port().port()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let metrics = refused_port();
    // A TLS hop, for the certificate series the expiry alert reads.
    let (ca_file, chain, key) = common::tls::ca_and_leaf(&dir, (2031, 1, 1), (2030, 1, 1));
    let portal = common::tls::serve(chain, &key).await;
    let emf = dir.join("emf.log");
    let config = dir.join("hopwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
interval = "300ms"
timeout = "200ms"
down_after = 1
detail = "{detail}"

[[chain]]
name = "orders"
kind = "custom"
  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{gateway}/"
  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{echo}/"
  health_url = "http://{echo}/health"
  expect_source = ["10.9.9.9/32"]
  per_address = true

[[chain]]
name = "portal"
kind = "custom"
  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "https://localhost:{portal_port}/"
  ca_file = "{ca_file}"

[[chain]]
name = "blind"
kind = "custom"
  [[chain.hop]]
  name = "edge"
  role = "gateway"
  url = "http://{echo}/"
  [[chain.hop]]
  name = "inner"
  role = "target"
  url = "http://{inner}/"

[[chain]]
name = "healthy"
kind = "custom"
  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{echo}/"

[cloudwatch]
mode = "emf"
flush_interval = "1s"
emf_output = "{emf}"
detail = "{cloudwatch}"
"#,
            gateway = refused_port(),
            inner = refused_port(),
            emf = emf.display(),
            portal_port = portal.port(),
            ca_file = ca_file.display()
        ),
    )
    .expect("config");
    let _agent = Kill(
        Command::new(BIN)
            .args(["run", "--listen", &metrics.to_string(), "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run"),
    );
    let mut run = RealRun {
        metrics: String::new(),
        emf: String::new(),
    };
    let full = detail == "full";
    wait_for(
        &format!("every series and EMF metric at detail {detail}"),
        Duration::from_secs(30),
        || {
            run.metrics = http_get(metrics, "/metrics")
                .map(|r| r.1)
                .unwrap_or_default();
            run.emf = std::fs::read_to_string(&emf).unwrap_or_default();
            let published = published(&run.emf);
            let healthy = published_by(&run.emf, "healthy");
            run.metrics.contains("hopwatch_chain_broken_reason_info{")
                && run
                    .metrics
                    .contains("hopwatch_cloudwatch_last_success_timestamp_seconds 1")
                && run.metrics.contains("hopwatch_probe_latency_seconds{")
                && run
                    .metrics
                    .contains("hopwatch_tls_certificate_expiry_timestamp_seconds{")
                && run
                    .metrics
                    .contains("hopwatch_hop_blind_spot{chain=\"blind\",hop=\"inner\"} 1")
                && (!full
                    || run
                        .metrics
                        .contains("hopwatch_probe_duration_seconds_bucket{"))
                && EVERY_METRIC.iter().all(|m| published.contains_key(*m))
                && ["ChainUp", "Latency", "ProbeFailures"]
                    .iter()
                    .all(|m| healthy.contains_key(*m) || (full && *m != "ChainUp"))
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// `name -> label names` of every series in a `/metrics` text.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, labels) in DISCOVERY_FAMILIES {
        out.insert(
            name.to_string(),
            labels.iter().map(|l| l.to_string()).collect(),
        );
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        // Histogram and summary parts are queried by their family's name too.
        let entry = out.entry(name.to_string()).or_default();
        for pair in labels.trim_end_matches('}').split("\",") {
            if let Some((k, _)) = pair.split_once('=') {
                entry.insert(k.to_string());
            }
        }
    }
    out
}

/// Metric names in a PromQL expression with the label names their selectors use, and the
/// label names of the expression's `by`/`on` clauses.
fn used(expr: &str) -> (Vec<(String, BTreeSet<String>)>, BTreeSet<String>) {
    let mut out = Vec::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    // Labels named by `by (...)` / `on (...)` must exist on the metrics they group.
    let mut grouping = BTreeSet::new();
    for kw in ["by (", "on (", "by(", "on("] {
        for (at, _) in expr.match_indices(kw) {
            let rest = &expr[at + kw.len()..];
            if let Some(end) = rest.find(')') {
                grouping.extend(rest[..end].split(',').map(|l| l.trim().to_string()));
            }
        }
    }
    while i < bytes.len() {
        // Exported names, and the recording rules' `hopwatch:…` ones.
        if (expr[i..].starts_with("hopwatch_") || expr[i..].starts_with("hopwatch:"))
            && (i == 0 || !bytes[i - 1].is_alphanumeric() && bytes[i - 1] != '_')
        {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(expr.len(), |e| i + e);
            let name = expr[i..end].to_string();
            let mut labels = BTreeSet::new();
            if expr[end..].starts_with('{') {
                let close = expr[end..].find('}').map_or(expr.len(), |e| end + e);
                for m in expr[end + 1..close].split(',') {
                    let key: String = m
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !key.is_empty() {
                        labels.insert(key);
                    }
                }
            }
            out.push((name, labels));
            i = end;
        } else {
            i += 1;
        }
    }
    (out, grouping)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_use_is_exported_with_its_labels() {
    // At the default detail: what `detail = "standard"` leaves out, no alert may need.
    let runs = tokio::task::spawn_blocking(real_runs).await.expect("runs");
    let exported = exported(&runs.default.metrics);
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("rules");
    // The `expr:` values, including folded multi-line ones.
    let mut exprs = Vec::new();
    let mut exported = exported;
    let mut record: Option<String> = None;
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if let Some(name) = line.trim().strip_prefix("- record:") {
            record = Some(name.trim().to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("expr:") {
            let mut expr = rest.trim().trim_start_matches(">-").to_string();
            let indent = line.len() - line.trim_start().len();
            for next in &lines[n + 1..] {
                if next.trim().is_empty() || next.len() - next.trim_start().len() <= indent {
                    break;
                }
                expr.push(' ');
                expr.push_str(next.trim());
            }
            // A recording rule's series carry the labels its outermost `by` keeps; it is
            // checked like an exported metric by the rules that use it (after this one).
            if let Some(name) = record.take() {
                check_metrics(std::slice::from_ref(&expr), &exported);
                let (_, grouping) = used(&expr);
                exported.insert(name, grouping);
            }
            exprs.push(expr);
        }
    }
    assert_eq!(
        exprs.len(),
        22,
        "one expression per alert and recording rule"
    );
    let checked = check_metrics(&exprs, &exported);
    assert!(checked >= 20, "{checked} metric uses checked");
}

/// Asserts every metric and label the expressions use is exported; returns how many uses.
fn check_metrics(exprs: &[String], exported: &BTreeMap<String, BTreeSet<String>>) -> usize {
    let mut checked = 0;
    for expr in exprs {
        let (metrics, grouping) = used(expr);
        // A `by`/`on` label must be on some metric of the expression; Prometheus adds `job`
        // and `instance` to every scraped series.
        for label in grouping
            .iter()
            .filter(|l| !["job", "instance"].contains(&l.as_str()))
        {
            assert!(
                metrics
                    .iter()
                    .any(|(name, _)| exported.get(name).is_some_and(|l| l.contains(label))),
                "no metric of `{expr}` has the label {label:?}"
            );
        }
        for (name, labels) in metrics {
            let known = exported.get(&name).unwrap_or_else(|| {
                panic!(
                    "{name} (in `{expr}`) is not exported; exported: {:?}",
                    exported.keys()
                )
            });
            for label in labels {
                assert!(
                    known.contains(&label),
                    "{name} has no label {label:?} (used in `{expr}`); it has {known:?}"
                );
            }
            checked += 1;
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_parses_uses_its_variables_and_real_metrics() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards/grafana-hopwatch.json");
    let text = std::fs::read_to_string(&path).expect("dashboard");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    // Queries of the panels every agent feeds, and of those in the collapsed row that says it
    // needs `[agent] detail = "full"`.
    let mut exprs = Vec::new();
    let mut full_exprs: Vec<Vec<String>> = Vec::new();
    let mut panels = 0;
    let mut queries = |panel: &serde_json::Value| -> Vec<String> {
        panels += 1;
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        targets
            .iter()
            .map(|t| t["expr"].as_str().expect("expr").to_string())
            .collect()
    };
    for panel in doc["panels"].as_array().expect("panels") {
        if panel["type"] != "row" {
            exprs.extend(queries(panel));
            continue;
        }
        let nested = panel["panels"].as_array().map_or(&[][..], Vec::as_slice);
        if nested.is_empty() {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            title.contains("detail = \"full\"") && panel["collapsed"] == true,
            "only the full-detail row is collapsed with panels inside: {title}"
        );
        for p in nested {
            full_exprs.push(queries(p));
        }
    }
    assert!(panels >= 12, "{panels} panels");
    assert_eq!(
        full_exprs.len(),
        2,
        "the latency heatmap and the phase breakdown"
    );
    // Every variable is used somewhere outside its own definition.
    let vars: Vec<String> = doc["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(vars, ["datasource", "chain", "hop"]);
    let panels_text = doc["panels"].to_string();
    for v in &vars {
        let used =
            panels_text.contains(&format!("${v}")) || panels_text.contains(&format!("${{{v}}}"));
        assert!(used, "${v} is never used");
    }
    // Every query parses: promtool reads each as a recording rule, variables filled in.
    let all: Vec<String> = exprs
        .iter()
        .chain(full_exprs.iter().flatten())
        .cloned()
        .collect();
    let rules: String = all
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$chain", ".*")
                .replace("$hop", ".*")
                .replace("$__rate_interval", "1m");
            format!(
                "      - record: dashboard:query_{i}\n        expr: {}\n",
                serde_json::to_string(&e).unwrap_or_default()
            )
        })
        .collect();
    let file = std::env::temp_dir().join(format!("hopwatch-dashboard-{}.yml", std::process::id()));
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .expect("rules");
    let out = promtool(&["check", "rules", file.to_str().unwrap_or_default()]);
    let _ = std::fs::remove_file(&file);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", all.len())),
        "{out}"
    );
    // Every metric they read is exported by a real agent, with those labels: at the default
    // detail for the panels outside the full-detail row, at full detail for those inside.
    let runs = tokio::task::spawn_blocking(real_runs).await.expect("runs");
    let standard = exported(&runs.default.metrics);
    let full = exported(&runs.full.metrics);
    let checked = check_metrics(&exprs, &standard);
    assert!(checked >= exprs.len(), "{checked} metric uses checked");
    for panel in &full_exprs {
        check_metrics(panel, &full);
        // The row's title is honest: each of its panels reads something standard leaves out.
        let missing = panel
            .iter()
            .flat_map(|e| used(e).0)
            .any(|(name, _)| !standard.contains_key(&name));
        assert!(
            missing,
            "{panel:?} works at the default detail: move it out of the row"
        );
    }
    // `full` restores everything `standard` exports.
    for (name, labels) in &standard {
        let at_full = full
            .get(name)
            .unwrap_or_else(|| panic!("{name} only at standard"));
        assert!(
            labels.is_subset(at_full),
            "{name}: {labels:?} vs {at_full:?}"
        );
    }
}

/// `metric -> dimension sets` in EMF lines (the same names and dimensions `PutMetricData`
/// gets; tests/cloudwatch.rs checks those against LocalStack).
fn published(emf: &str) -> BTreeMap<String, BTreeSet<Vec<String>>> {
    published_in(emf, None)
}

/// The same, of one chain's lines only.
fn published_by(emf: &str, chain: &str) -> BTreeMap<String, BTreeSet<Vec<String>>> {
    published_in(emf, Some(chain))
}

fn published_in(emf: &str, chain: Option<&str>) -> BTreeMap<String, BTreeSet<Vec<String>>> {
    let mut out: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    for line in emf.lines() {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if chain.is_some_and(|c| doc["Chain"] != c) {
            continue;
        }
        for d in doc["_aws"]["CloudWatchMetrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for set in d["Dimensions"].as_array().into_iter().flatten() {
                let mut dims: Vec<String> = set
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                dims.sort();
                for m in d["Metrics"].as_array().into_iter().flatten() {
                    if let Some(name) = m["Name"].as_str() {
                        out.entry(name.to_string())
                            .or_default()
                            .insert(dims.clone());
                    }
                }
            }
        }
    }
    out
}

/// A metric and the (sorted) names of its dimensions.
type Use = (String, Vec<String>);

/// One alarm of the template: what it reads (with the `CloudWatchDetail` a use is for, when it
/// depends on it) and how it treats missing data.
struct Alarm {
    name: String,
    uses: Vec<(Use, Option<&'static str>)>,
    treat_missing: String,
}

fn sorted(mut dims: Vec<String>) -> Vec<String> {
    dims.sort();
    dims
}

/// The template's alarms, read from its text.
fn alarms(template: &str) -> Vec<Alarm> {
    let resources = &template[template.find("\nResources:\n").expect("Resources")..];
    let mut out = Vec::new();
    // A resource starts at a line of two spaces and its name.
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in resources.lines().skip(2) {
        if !line.starts_with(' ') && !line.is_empty() {
            break; // Outputs:
        }
        let top = line.starts_with("  ")
            && !line.starts_with("   ")
            && !line.trim_start().starts_with('#')
            && line.ends_with(':');
        if top {
            blocks.push((line.trim().trim_end_matches(':').to_string(), String::new()));
        } else if let Some((_, text)) = blocks.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    for (name, text) in blocks {
        if !text.contains("Type: AWS::CloudWatch::Alarm") {
            continue;
        }
        let mut uses = Vec::new();
        // Metrics Insights: `SELECT MAX(BrokenHop) FROM SCHEMA("${Namespace}", Chain, Hop)`.
        for (at, _) in text.match_indices("FROM SCHEMA(") {
            let metric = text[..at]
                .rsplit_once('(')
                .map(|(_, m)| m.trim().trim_end_matches(')').to_string())
                .unwrap_or_default();
            let args = &text[at + "FROM SCHEMA(".len()..];
            let args = &args[..args.find(')').unwrap_or(0)];
            let dims = args.split(',').skip(1).map(|d| d.trim().to_string());
            uses.push(((metric, sorted(dims.collect())), None));
        }
        // A classic alarm: `MetricName:` and `Dimensions:`, maybe `!If [HopDetail, hop, chain]`.
        if let Some(rest) = text.split("MetricName: ").nth(1) {
            let metric = rest.lines().next().unwrap_or("").trim().to_string();
            let dims_text = &rest[rest.find("Dimensions:").expect("Dimensions")..];
            let dims_text = &dims_text[..dims_text.find("ExtendedStatistic").unwrap_or(0)];
            // `- - Name: Chain`, `- Name: Hop`, `Name: Chain`: list markers off, then the name.
            let names = |branch: &str| -> Vec<String> {
                let names = branch.lines().filter_map(|l| {
                    let mut l = l.trim();
                    while let Some(rest) = l.strip_prefix("- ") {
                        l = rest;
                    }
                    l.strip_prefix("Name: ").map(str::to_string)
                });
                sorted(names.collect())
            };
            if dims_text.starts_with("Dimensions: !If") {
                assert!(dims_text.contains("- HopDetail"), "{name}: {dims_text}");
                let branches: Vec<&str> = dims_text.split("- - Name:").skip(1).collect();
                assert_eq!(branches.len(), 2, "{name}: {dims_text}");
                let branch = |b: &str| names(&format!("- Name:{b}"));
                uses.push(((metric.clone(), branch(branches[0])), Some("hop")));
                uses.push(((metric, branch(branches[1])), Some("chain")));
            } else {
                uses.push(((metric, names(dims_text)), None));
            }
        }
        let treat_missing = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("TreatMissingData: "))
            .unwrap_or("missing")
            .to_string();
        out.push(Alarm {
            name,
            uses,
            treat_missing,
        });
    }
    out
}

/// Each metric widget of a CloudWatch dashboard: its title and what its `SEARCH` reads.
fn searches(dashboard: &serde_json::Value) -> Vec<(String, Use)> {
    let mut out = Vec::new();
    for w in dashboard["widgets"].as_array().expect("widgets") {
        let Some(expr) = w["properties"]["metrics"][0][0]["expression"].as_str() else {
            continue;
        };
        // `SEARCH('{Hopwatch,Chain,Hop} MetricName="Latency"', 'p99', 60)`
        let inner = &expr[expr.find("{").expect("{") + 1..];
        let dims = inner[..inner.find('}').expect("}")]
            .split(',')
            .skip(1)
            .map(str::to_string)
            .collect();
        let metric = expr
            .split("MetricName=\"")
            .nth(1)
            .and_then(|m| m.split('"').next())
            .unwrap_or_default()
            .to_string();
        let title = w["properties"]["title"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.push((title, (metric, sorted(dims))));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloudformation_template_lints_and_uses_published_metrics() {
    let template = deploy("cloudformation/hopwatch.yaml");
    // cfn-lint from the test venv (scripts/test builds it; see tests/localstack/requirements.txt).
    match common::localstack::python() {
        Some(python) => {
            let lint = python.with_file_name("cfn-lint");
            let out = Command::new(&lint)
                .arg(&template)
                .output()
                .expect("cfn-lint");
            assert!(
                out.status.success(),
                "cfn-lint:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => common::localstack::skip("cfn-lint of deploy/cloudformation/hopwatch.yaml"),
    }
    let text = std::fs::read_to_string(&template).expect("template");
    // The standalone CloudWatch dashboard is the template's, its parameters filled in.
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards/cloudwatch-hopwatch.json");
    let standalone: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard"))
            .expect("dashboard is JSON");
    let body = text
        .split("DashboardBody: !Sub |\n")
        .nth(1)
        .and_then(|b| b.split("\nOutputs:").next())
        .expect("the template's dashboard")
        .replace("${Namespace}", "Hopwatch")
        .replace("${AWS::Region}", "eu-west-1")
        .replace("${LogGroup}", "/ecs/hopwatch");
    let body: serde_json::Value =
        serde_json::from_str(&body).expect("the template's dashboard is JSON");
    assert_eq!(
        body, standalone,
        "dashboards/cloudwatch-hopwatch.json is the template's"
    );
    let searches = searches(&standalone);
    assert_eq!(searches.len(), 9, "{searches:?}");
    let alarms = alarms(&text);
    assert_eq!(
        alarms.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        [
            "ChainDownAlarm",
            "BrokenHopAlarm",
            "VPCLinkAlarm",
            "GatewayRefusingAlarm",
            "HealthCheckAlarm",
            "UnexpectedSourceAlarm",
            "LatencyAlarm"
        ]
    );

    let runs = tokio::task::spawn_blocking(real_runs).await.expect("runs");
    let default = published(&runs.default.emf);
    let healthy = published_by(&runs.default.emf, "healthy");
    let full = published(&runs.full.emf);
    let has = |published: &BTreeMap<String, BTreeSet<Vec<String>>>, (metric, dims): &Use| {
        published
            .get(metric)
            .is_some_and(|sets| sets.contains(dims))
    };
    // A healthy chain publishes three metrics at the default detail, and nothing per hop.
    assert_eq!(
        healthy,
        [
            ("ChainUp", vec!["Chain".to_string()]),
            ("Latency", vec!["Chain".to_string()]),
            ("ProbeFailures", vec!["Chain".to_string()])
        ]
        .into_iter()
        .map(|(m, d)| (m.to_string(), BTreeSet::from([d])))
        .collect(),
        "a healthy chain's metrics at [cloudwatch] detail = \"chain\""
    );
    // Every widget shows data at the default detail; at `hop` detail, all but the chain's own
    // (their titles say "detail chain").
    for (title, u) in &searches {
        assert!(
            has(&default, u),
            "{title}: {u:?} is not published at detail chain"
        );
        let chain_only = title.contains("detail chain)") || title.contains("(detail chain");
        assert_eq!(
            has(&full, u),
            !chain_only,
            "{title}: {u:?} at detail hop (published: {full:?})"
        );
    }
    // Every alarm reads what its detail publishes. One on a metric a healthy chain does not
    // publish (published only while something fails) treats missing data as not breaching;
    // one on a metric published every minute may treat it as breaching.
    for alarm in &alarms {
        for (u, detail) in &alarm.uses {
            match detail {
                Some("hop") => {
                    assert!(has(&full, u), "{}: {u:?} at detail hop", alarm.name);
                    continue;
                }
                _ => assert!(has(&default, u), "{}: {u:?} at detail chain", alarm.name),
            }
            if !has(&healthy, u) {
                assert_eq!(
                    alarm.treat_missing, "notBreaching",
                    "{}: {u:?} is published only while something fails",
                    alarm.name
                );
            }
        }
    }
    assert_eq!(
        alarms
            .iter()
            .find(|a| a.name == "ChainDownAlarm")
            .map(|a| a.treat_missing.as_str()),
        Some("breaching"),
        "a chain that stops reporting is down"
    );
}

#[test]
fn kubernetes_config_validates_and_ecs_files_call_real_commands() {
    // The ConfigMap's hopwatch.toml is a real config.
    let k8s = std::fs::read_to_string(deploy("kubernetes/agent.yaml")).expect("agent.yaml");
    let toml: String = k8s
        .split("hopwatch.toml: |\n")
        .nth(1)
        .expect("ConfigMap data")
        .lines()
        .take_while(|l| !l.starts_with("---"))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let out = Command::new(BIN)
        .args(["validate", "--config", "env:HOPWATCH_K8S_CONFIG"])
        .env("HOPWATCH_K8S_CONFIG", &toml)
        .output()
        .expect("validate");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The ECS task definitions parse, and the commands they run are ones the binary has.
    for file in [
        "ecs/task-definition.json",
        "ecs/sidecar-task-definition.json",
    ] {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(deploy(file)).expect("file"))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        for c in doc["containerDefinitions"].as_array().expect("containers") {
            let Some(args) = c["command"].as_array() else {
                continue;
            };
            let sub = args[0].as_str().unwrap_or("");
            let help = Command::new(BIN)
                .args([sub, "--help"])
                .output()
                .expect("help");
            assert!(
                help.status.success(),
                "{file}: `hopwatch {sub}` does not exist"
            );
            let help = String::from_utf8_lossy(&help.stdout);
            for flag in args
                .iter()
                .filter_map(|a| a.as_str())
                .filter(|a| a.starts_with("--"))
            {
                assert!(
                    help.contains(flag),
                    "{file}: `hopwatch {sub}` has no {flag}"
                );
            }
        }
    }
}

/// The read-only policy discovery ships with allows exactly the calls it makes: every
/// `failed("service", "Action")` the walk can note is in `discover::CALLS`, and the policy file
/// and the CloudFormation template allow those and nothing else.
#[test]
fn the_discovery_policy_allows_exactly_the_calls_it_makes() {
    use std::collections::BTreeSet;
    let calls: BTreeSet<String> = hopwatch::discover::CALLS
        .iter()
        .map(|(s, a)| {
            if *s == "apigateway" {
                "apigateway:GET".to_string()
            } else {
                format!("{s}:{a}")
            }
        })
        .collect();
    // Every call the readers make names its service constant and operation:
    // `budget.call(API, "GetStages", …)`, `paged(ELB, "DescribeListeners", …)`,
    // `listing(r, "DescribeSubnets", …)` (EC2).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/discover/read");
    let mut made = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("readers") {
        let path = entry.expect("entry").path();
        let code = std::fs::read_to_string(&path).expect("reader");
        for (constant, service) in [
            ("API, \"", "apigateway"),
            ("ELB, \"", "elasticloadbalancing"),
            ("SD, \"", "servicediscovery"),
            ("EC2, \"", "ec2"),
            ("listing(r, \"", "ec2"),
        ] {
            for (at, _) in code.match_indices(constant) {
                let rest = &code[at + constant.len()..];
                let action = &rest[..rest.find('"').unwrap_or(0)];
                made.insert((service, action.to_string()));
            }
        }
    }
    assert!(made.len() >= 15, "the scan found {made:?}");
    for (service, action) in &made {
        assert!(
            hopwatch::discover::CALLS.contains(&(service, action.as_str())),
            "a reader calls {service}:{action}, which discover::CALLS does not list"
        );
    }
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("iam/hopwatch-discovery.json")).expect("policy"),
    )
    .expect("policy JSON");
    let mut allowed = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("statements") {
        assert_eq!(statement["Effect"], "Allow");
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                allowed.insert(a.clone());
            }
            serde_json::Value::Array(a) => {
                allowed.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string)))
            }
            other => panic!("unexpected Action {other}"),
        }
    }
    assert_eq!(allowed, calls, "deploy/iam/hopwatch-discovery.json");
    let template =
        std::fs::read_to_string(deploy("cloudformation/hopwatch.yaml")).expect("template");
    let block = &template[template.find("DiscoveryPolicy:").expect("DiscoveryPolicy")..];
    let end = ["\n  GatewayLogsPolicy:", "\n  TaskDefinition:"]
        .iter()
        .filter_map(|m| block.find(m))
        .min()
        .unwrap_or(block.len());
    let block = &block[..end];
    // `service:Action` items: a lower-case service, one colon, an action of letters.
    let is_action = |s: &str| {
        s.split_once(':').is_some_and(|(service, action)| {
            !service.is_empty()
                && service
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && !action.is_empty()
                && action.chars().all(|c| c.is_ascii_alphabetic())
        })
    };
    let in_template: BTreeSet<String> = block
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("- ")
                .trim_start_matches("Action: ")
        })
        .filter(|l| is_action(l))
        .map(str::to_string)
        .collect();
    assert_eq!(in_template, calls, "the template's DiscoveryPolicy");
}

/// The gateway log lookups read with `FilterLogEvents` and nothing else, on exactly the groups
/// given: the standalone policy and the template's agree.
#[test]
fn the_gateway_logs_policy_allows_filter_log_events_on_the_named_groups_only() {
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("iam/hopwatch-gateway-logs.json")).expect("policy"),
    )
    .expect("policy JSON");
    let statements = policy["Statement"].as_array().expect("statements");
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Action"], "logs:FilterLogEvents");
    for r in statements[0]["Resource"].as_array().expect("resources") {
        let r = r.as_str().unwrap_or("");
        assert!(
            r.contains(":log-group:") && r.ends_with(":*") && !r.contains("log-group:*"),
            "{r}"
        );
    }
    let template =
        std::fs::read_to_string(deploy("cloudformation/hopwatch.yaml")).expect("template");
    let block = &template[template
        .find("GatewayLogsPolicy:")
        .expect("GatewayLogsPolicy")..];
    let block = &block[..block.find("\n  TaskDefinition:").unwrap_or(block.len())];
    let actions: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("- ") && !l.contains(": ") && l.contains(':'))
        .collect();
    assert_eq!(actions, ["- logs:FilterLogEvents"]);
    assert!(block.contains("Resource: !Ref GatewayLogGroupArns"));
    assert!(block.contains("Condition: WithGatewayLogs"));
}

/// SigV4 probes (issue 24): the standalone policy allows `execute-api:Invoke` and nothing else,
/// on routes named as AWS writes them (`arn:aws:execute-api:REGION:ACCOUNT:API_ID/STAGE/METHOD/
/// PATH`); the probe role's trust policy lets the task role assume it with the external id; the
/// template grants exactly those, on exactly the ARNs its parameters give, only when given.
#[test]
fn the_sigv4_policies_allow_invoke_and_assume_role_on_the_named_resources_only() {
    let read = |path: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(deploy(path)).expect("policy"))
            .expect("policy JSON")
    };
    let invoke = read("iam/hopwatch-execute-api.json");
    let statements = invoke["Statement"].as_array().expect("statements");
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Action"], "execute-api:Invoke");
    for r in statements[0]["Resource"].as_array().expect("resources") {
        let r = r.as_str().unwrap_or("");
        let parts: Vec<&str> = r.splitn(6, ':').collect();
        assert_eq!(
            parts.get(..3),
            Some(&["arn", "aws", "execute-api"][..]),
            "{r}"
        );
        let path = parts.get(5).copied().unwrap_or("");
        assert!(
            path.split('/').count() >= 4,
            "API_ID/STAGE/METHOD/PATH: {r}"
        );
    }
    let trust = read("iam/hopwatch-probe-role-trust.json");
    let statement = &trust["Statement"][0];
    assert_eq!(statement["Action"], "sts:AssumeRole");
    assert!(statement["Condition"]["StringEquals"]["sts:ExternalId"].is_string());

    let template =
        std::fs::read_to_string(deploy("cloudformation/hopwatch.yaml")).expect("template");
    for (resource, end, action, parameter, condition) in [
        (
            "ExecuteApiPolicy:",
            "\n  ProbeRolesPolicy:",
            "- execute-api:Invoke",
            "Resource: !Ref ExecuteApiArns",
            "Condition: WithExecuteApi",
        ),
        (
            "ProbeRolesPolicy:",
            "\n  # [discovery]",
            "- sts:AssumeRole",
            "Resource: !Ref ProbeRoleArns",
            "Condition: WithProbeRoles",
        ),
    ] {
        let block = &template[template.find(resource).expect(resource)..];
        let block = &block[..block.find(end).unwrap_or(block.len())];
        let actions: Vec<&str> = block
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("- ") && !l.contains(": ") && l.contains(':'))
            .collect();
        assert_eq!(actions, [action], "{resource}");
        assert!(block.contains(parameter), "{resource}");
        assert!(block.contains(condition), "{resource}");
    }
}

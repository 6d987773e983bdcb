//! What hopwatch costs, counted from a real run: Prometheus series per hop and CloudWatch
//! metrics per healthy chain, at the default detail and at the full one, and the dollars those
//! metrics come to at CloudWatch's list price. The cost table of docs/performance-and-cost.md is
//! this test's output (`HOPWATCH_BLESS=1 cargo test --test cost` rewrites it; read the diff), so
//! the figures users read are measured, never computed by hand.
//!
//! Two agents run the same 25 healthy `rest-nlb-alb` chains (4 hops each, every hop a
//! `hopwatch echo`, so each reports the source it saw) side by side, one with no `detail` keys
//! (the defaults: `[agent] detail = "standard"`, `[cloudwatch] detail = "chain"`), one with
//! `"full"` and `"hop"`. 20 chains are plain (the kind's own source expectations, which hold,
//! on three hops of four); 5 give every hop a `health_url` and an `expect_source` that holds,
//! the most a healthy hop carries.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

/// CloudWatch's list price of a custom metric in us-east-1, per month, for the first 10,000
/// metrics (aws.amazon.com/cloudwatch/pricing, "Metrics"); a metric is billed pro rata for the
/// hours it receives data. The date those prices were read.
const PRICE_PER_METRIC_MONTH: f64 = 0.30;
const PRICES_AS_OF: &str = "2026-12-04";

const PLAIN: usize = 20;
const CHECKED: usize = 5;
const HOPS: [&str; 4] = ["gateway", "nlb", "alb", "target"];

fn config(echo: SocketAddr, emf: &Path, full: bool) -> String {
    let mut s = String::from("[agent]\ninterval = \"1s\"\ntimeout = \"900ms\"\n");
    if full {
        s.push_str("detail = \"full\"\n");
    }
    for c in 0..PLAIN + CHECKED {
        let (name, checked) = if c < PLAIN {
            (format!("plain-{c}"), false)
        } else {
            (format!("checked-{}", c - PLAIN), true)
        };
        s.push_str(&format!(
            "\n[[chain]]\nname = \"{name}\"\nkind = \"rest-nlb-alb\"\n"
        ));
        for hop in HOPS {
            s.push_str(&format!(
                "  [[chain.hop]]\n  name = \"{hop}\"\n  url = \"http://{echo}/{name}/{hop}\"\n"
            ));
            // The kind expects the gateway's probe to reach the target with the NLB's address
            // in X-Forwarded-For, which only an ALB in front adds; on loopback every hop is the
            // echo itself. The source expectations it sets still hold (every host here is
            // 127.0.0.1) and keep their series.
            if hop == "gateway" {
                s.push_str("  expect_forwarded = []\n");
            }
            if checked {
                s.push_str(&format!(
                    "  health_url = \"http://{echo}/health\"\n  expect_source = [\"127.0.0.0/8\"]\n"
                ));
            }
        }
    }
    s.push_str(&format!(
        "\n[cloudwatch]\nmode = \"emf\"\nflush_interval = \"1s\"\nemf_output = \"{}\"\n",
        emf.display()
    ));
    if full {
        s.push_str("detail = \"hop\"\n");
    }
    s
}

/// One agent's run: its last `/metrics` and every EMF line it wrote.
struct Run {
    metrics: String,
    emf: String,
}

async fn run(dir: &Path, echo: SocketAddr, full: bool) -> Run {
    let level = if full { "full" } else { "default" };
    let listen = refused_port();
    let emf = dir.join(format!("emf-{level}.log"));
    let path = dir.join(format!("hopwatch-{level}.toml"));
    std::fs::write(&path, config(echo, &emf, full)).expect("config");
    let _agent = Kill(
        Command::new(BIN)
            .args(["run", "--listen", &listen.to_string(), "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run"),
    );
    let mut out = Run {
        metrics: String::new(),
        emf: String::new(),
    };
    // Three periods written after every hop was probed: each chain's metrics for a whole
    // period, whatever the phase of its rounds in the first.
    wait_for(
        &format!("every hop probed and three EMF periods ({level})"),
        Duration::from_secs(60),
        || {
            out.metrics = http_get(listen, "/metrics")
                .map(|r| r.1)
                .unwrap_or_default();
            out.emf = std::fs::read_to_string(&emf).unwrap_or_default();
            let probed = out
                .metrics
                .lines()
                .filter(|l| l.starts_with("hopwatch_probes_total{"))
                .count();
            probed >= (PLAIN + CHECKED) * HOPS.len() && periods(&out.emf) >= 4
        },
    )
    .await;
    out
}

/// Distinct period timestamps among the EMF lines that publish.
fn periods(emf: &str) -> usize {
    emf.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|d| d["_aws"]["Timestamp"].as_u64())
        .collect::<BTreeSet<_>>()
        .len()
}

/// Series of each (chain, hop) in a `/metrics` text, and of each chain alone.
fn series(text: &str) -> (BTreeMap<(String, String), usize>, BTreeMap<String, usize>) {
    let label = |series: &str, name: &str| -> Option<String> {
        let at = series.find(&format!("{name}=\""))? + name.len() + 2;
        Some(series[at..].split('"').next()?.to_string())
    };
    let mut hops = BTreeMap::new();
    let mut chains = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        match (label(line, "chain"), label(line, "hop")) {
            (Some(chain), Some(hop)) => *hops.entry((chain, hop)).or_default() += 1,
            (Some(chain), None) => *chains.entry(chain).or_default() += 1,
            _ => {}
        }
    }
    (hops, chains)
}

/// The distinct CloudWatch metrics (name and dimension values) each chain's EMF lines make.
fn metrics_by_chain(emf: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for doc in emf
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let Some(chain) = doc["Chain"].as_str() else {
            continue;
        };
        for d in doc["_aws"]["CloudWatchMetrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for set in d["Dimensions"].as_array().into_iter().flatten() {
                let dims: Vec<String> = set
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str())
                    .map(|k| format!("{k}={}", doc[k].as_str().unwrap_or("")))
                    .collect();
                for m in d["Metrics"].as_array().into_iter().flatten() {
                    let name = m["Name"].as_str().unwrap_or("");
                    out.entry(chain.to_string())
                        .or_default()
                        .insert(format!("{name}{{{}}}", dims.join(",")));
                }
            }
        }
    }
    out
}

/// Chains none of whose probes failed: healthy, as the counts are meant for. A probe that
/// times out on a loaded machine adds its class's series and its hop's metrics, honestly, to
/// a chain that is then not counted.
fn healthy(metrics: &str) -> BTreeSet<String> {
    let (hops, _) = series(metrics);
    let chains: BTreeSet<String> = hops.keys().map(|(c, _)| c.clone()).collect();
    chains
        .into_iter()
        .filter(|c| {
            !metrics.lines().any(|l| {
                l.starts_with("hopwatch_probes_total{")
                    && l.contains(&format!("chain=\"{c}\""))
                    && !l.contains("result=\"ok\"")
            })
        })
        .collect()
}

/// Figures of one level, over its healthy chains of one kind (`plain-` or `checked-`).
struct Figures {
    /// Series per hop: the most any hop has.
    per_hop: usize,
    /// Series per chain besides its hops'.
    per_chain: usize,
    /// CloudWatch metrics per chain: the most any chain made.
    cloudwatch: usize,
    chains: usize,
}

fn figures(run: &Run, prefix: &str) -> Figures {
    let ok = healthy(&run.metrics);
    let (hops, chains) = series(&run.metrics);
    let by_chain = metrics_by_chain(&run.emf);
    let mine = |c: &String| c.starts_with(prefix) && ok.contains(c);
    Figures {
        per_hop: hops
            .iter()
            .filter(|((c, _), _)| mine(c))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0),
        per_chain: chains
            .iter()
            .filter(|(c, _)| mine(c))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0),
        cloudwatch: by_chain
            .iter()
            .filter(|(c, _)| mine(c))
            .map(|(_, m)| m.len())
            .max()
            .unwrap_or(0),
        chains: ok.iter().filter(|c| c.starts_with(prefix)).count(),
    }
}

fn dollars(metrics: usize) -> String {
    format!("{:.2}", metrics as f64 * PRICE_PER_METRIC_MONTH)
}

/// The cost table of docs/performance-and-cost.md, from the two runs.
fn table(default: (&Figures, &Figures), full: (&Figures, &Figures)) -> String {
    let mut s = String::from(
        "| detail (`[agent]` / `[cloudwatch]`) | series per hop | series per hop with `health_url` and `expect_source` | series per chain | CloudWatch metrics per healthy 4-hop chain | $ per chain per month | $ per month for 100 chains |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, (plain, checked)) in [
        ("`standard` / `chain` (default)", default),
        ("`full` / `hop`", full),
    ] {
        s.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} |\n",
            plain.per_hop,
            checked.per_hop,
            plain.per_chain,
            plain.cloudwatch,
            dollars(plain.cloudwatch),
            format_thousands(plain.cloudwatch as f64 * PRICE_PER_METRIC_MONTH * 100.0),
        ));
    }
    s.push_str(&format!(
        "\nMeasured by `tests/cost.rs` ({PLAIN} plain and {CHECKED} checked healthy `rest-nlb-alb` chains against `hopwatch echo`, one agent per level); dollars at CloudWatch's list price of ${PRICE_PER_METRIC_MONTH:.2} per metric per month (us-east-1, first 10,000 metrics, billed by the hour; [pricing](https://aws.amazon.com/cloudwatch/pricing/), prices of {PRICES_AS_OF}), before `PutMetricData` requests ($0.01 per 1,000, one per flush per 1,000 datums) or, in EMF mode, log ingestion.\n"
    ));
    s
}

fn format_thousands(v: f64) -> String {
    let whole = v.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const BEGIN: &str = "<!-- cost table: written by tests/cost.rs -->\n";
const END: &str = "<!-- end of cost table -->";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_per_hop_and_cloudwatch_metrics_per_chain_at_each_detail() {
    let dir = std::env::temp_dir().join(format!("hopwatch-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let echo = refused_port();
    let _echo = echo_process(echo);
    let (default, full) = tokio::join!(run(&dir, echo, false), run(&dir, echo, true));
    let _ = std::fs::remove_dir_all(&dir);

    let d = (figures(&default, "plain-"), figures(&default, "checked-"));
    let f = (figures(&full, "plain-"), figures(&full, "checked-"));
    for (level, (plain, checked)) in [("default", &d), ("full", &f)] {
        assert!(
            plain.chains >= PLAIN * 3 / 4 && checked.chains >= 1,
            "{level}: too few healthy chains to measure ({} plain, {} checked): is the machine overloaded?",
            plain.chains,
            checked.chains
        );
    }
    let table = table((&d.0, &d.1), (&f.0, &f.1));
    println!("{table}");

    // The bounds, at the default detail.
    assert!(d.0.per_hop <= 12 && d.1.per_hop <= 12, "{table}");
    assert!(d.0.cloudwatch <= 3 && d.1.cloudwatch <= 3, "{table}");
    // Full is what every hop and chain published before the levels existed: the families per
    // hop, each with its labels, and every hop's CloudWatch metrics.
    let families = |text: &str, chain: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|l| l.contains(&format!("chain=\"{chain}\",hop=\"alb\"")))
            .map(|l| {
                let name = l.split('{').next().unwrap_or("");
                let labels: Vec<&str> = l
                    .split(['{', ','])
                    .skip(1)
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                    .filter(|k| !["chain", "hop"].contains(k))
                    .collect();
                format!("{name}{labels:?}")
            })
            .collect()
    };
    let plain = healthy(&full.metrics)
        .into_iter()
        .find(|c| c.starts_with("plain-"))
        .expect("a healthy plain chain");
    let expected: BTreeSet<String> = [
        "hopwatch_probes_total[\"result\"]",
        "hopwatch_probe_duration_seconds_bucket[\"le\"]",
        "hopwatch_probe_duration_seconds_sum[]",
        "hopwatch_probe_duration_seconds_count[]",
        "hopwatch_probe_phase_duration_seconds_sum[\"phase\"]",
        "hopwatch_probe_phase_duration_seconds_count[\"phase\"]",
        "hopwatch_probe_latency_seconds[\"quantile\"]",
        "hopwatch_probe_latency_seconds_sum[]",
        "hopwatch_probe_latency_seconds_count[]",
        "hopwatch_target_source_info[\"source_ip\"]",
        "hopwatch_hop_up[]",
        "hopwatch_probe_http_status[]",
        "hopwatch_last_probe_timestamp_seconds[]",
        "hopwatch_chain_broken_hop[]",
        "hopwatch_hop_blind_spot[]",
        "hopwatch_source_unexpected[]",
        "hopwatch_hop_info[\"role\"]",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(families(&full.metrics, &plain), expected, "detail full");
    let cloudwatch = metrics_by_chain(&full.emf);
    let names: BTreeSet<&str> = cloudwatch[&plain]
        .iter()
        .filter_map(|m| m.split('{').next())
        .collect();
    assert_eq!(
        names,
        [
            "BrokenHop",
            "ChainUp",
            "HopUp",
            "Latency",
            "ProbeFailures",
            "Probes",
            "UnexpectedSource"
        ]
        .into(),
        "detail hop"
    );
    // Both expositions are valid Prometheus text.
    for (level, text) in [("default", &default.metrics), ("full", &full.metrics)] {
        let file =
            std::env::temp_dir().join(format!("hopwatch-cost-{level}-{}.txt", std::process::id()));
        std::fs::write(&file, text).expect("write");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("promtool check metrics < {}", file.display()))
            .output()
            .expect("promtool");
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics ({level}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The docs show exactly these figures.
    let page_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/performance-and-cost.md");
    let page = std::fs::read_to_string(&page_path).expect("docs/performance-and-cost.md");
    let start = page.find(BEGIN).expect("the page's cost table marker") + BEGIN.len();
    let end = page[start..].find(END).expect("its end marker") + start;
    if std::env::var_os("HOPWATCH_BLESS").is_some() {
        let updated = format!("{}{table}{}", &page[..start], &page[end..]);
        std::fs::write(&page_path, updated).expect("write docs/performance-and-cost.md");
    } else {
        assert_eq!(
            &page[start..end],
            table,
            "docs/performance-and-cost.md's cost table is not what was measured (HOPWATCH_BLESS=1 rewrites it)"
        );
    }
}

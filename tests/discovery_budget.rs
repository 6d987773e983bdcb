//! Discovery as a well-behaved refresher (issue 21), against moto in server mode behind a fault
//! proxy (tests/moto/fault_proxy.py) that answers chosen actions with each service's own
//! throttling error and logs every call:
//! - a fact that could not be read is unknown, never missing: with each service throttled in
//!   turn, `explain` reports no missing rule it did not read, and a running agent exports no
//!   `hopwatch_path_rule_missing` it did not read and keeps probing;
//! - a steady walk of an unchanged estate makes one API Gateway call per API plus a constant,
//!   each load balancer and target group is read once, and API Gateway never sees more than
//!   the configured calls in any second;
//! - a discovered chain that fails validation is left out and counted, and never rejects the
//!   user's own file or edits.
//!
//! Everything runs in a network namespace of its own (moto, the proxy, the agent, the
//! targets): the estates name AWS host names and private addresses, which must never be
//! probed from the host.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::moto::{self, FaultProxy, Moto};
use common::{can_use_namespaces, skip, Kill, Netns};

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

fn aws_env(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
}

/// Moto and its proxy in a namespace of their own, or why the test cannot run.
fn setup(test: &str) -> Option<(Netns, Moto, PathBuf)> {
    if !can_use_namespaces() {
        skip(test, "needs root and ip netns");
        return None;
    }
    let Some(python) = moto::python() else {
        moto::skip(test);
        return None;
    };
    let ns = Netns::new(&test.chars().take(6).collect::<String>());
    let moto = Moto::start(python.clone(), Some(&ns));
    Some((ns, moto, python))
}

/// `hopwatch explain --json` through `endpoint`, inside `ns`: exit code and document.
fn explain(ns: &Netns, endpoint: &str) -> (i32, serde_json::Value, String) {
    let mut cmd = ns.command(BIN);
    let out = aws_env(&mut cmd)
        .args([
            "explain",
            "--json",
            "--region",
            "us-east-1",
            "--endpoint-url",
            endpoint,
        ])
        .output()
        .expect("explain");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "explain printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code().unwrap_or(-1),
        doc,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// (chain, from, to, port, purpose, direction) of every edge in `state`.
fn edges(doc: &serde_json::Value, state: &str) -> BTreeSet<String> {
    doc["chains"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| {
            let name = c["name"].as_str().unwrap_or("").to_string();
            c["edges"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(move |e| e["state"] == state)
                .map(move |e| {
                    format!(
                        "{name} {}->{} {} {} {}",
                        e["from"].as_str().unwrap_or(""),
                        e["to"].as_str().unwrap_or(""),
                        e["port"],
                        e["purpose"].as_str().unwrap_or(""),
                        e["direction"].as_str().unwrap_or("")
                    )
                })
        })
        .collect()
}

/// With each service throttled in turn, `explain` calls nothing missing that it did not read:
/// what it read is judged as before, what it could not read is unknown (and has no fix), and
/// it exits 2 rather than 1 unless a rule it did read blocks.
#[test]
fn throttled_reads_are_unknown_never_missing_in_explain() {
    let Some((ns, moto, _)) = setup("throttled_reads_are_unknown_never_missing_in_explain") else {
        return;
    };
    moto.fixture(["127.0.0.5", "127.0.0.6"]);
    let proxy = FaultProxy::start(&moto);
    let (code, healthy, _) = explain(&ns, &proxy.endpoint);
    let missing = edges(&healthy, "missing");
    let allowed = edges(&healthy, "allowed");
    assert!(
        allowed.len() > 10,
        "the seed's edges are judged: {healthy:#}"
    );
    assert!(edges(&healthy, "unknown").is_empty(), "{healthy:#}");
    assert_eq!(code, if missing.is_empty() { 0 } else { 1 });

    // EC2 throttled: no security group, subnet or NACL is read.
    proxy.throttle(&[("ec2", "*")]);
    let (code, doc, stderr) = explain(&ns, &proxy.endpoint);
    assert!(
        edges(&doc, "missing").is_empty() && edges(&doc, "denied").is_empty(),
        "nothing read, nothing missing: {doc:#}"
    );
    let unknown = edges(&doc, "unknown");
    assert!(!unknown.is_empty(), "{doc:#}");
    assert_eq!(code, 2, "unknown is exit 2, not 1\n{stderr}");
    for c in doc["chains"].as_array().into_iter().flatten() {
        for e in c["edges"].as_array().into_iter().flatten() {
            if e["state"] == "unknown" {
                assert!(e["fix"].is_null(), "an unknown edge has no fix: {e}");
                // The first call names EC2's own error; the rest of the walk's, not asked again,
                // say that EC2 throttled.
                assert!(
                    e["unknown"]
                        .as_str()
                        .is_some_and(|w| w.contains("could not be read")
                            && (w.contains("RequestLimitExceeded") || w.contains("throttled"))),
                    "it says what was not read and why: {e}"
                );
            }
        }
    }
    assert!(stderr.contains("RequestLimitExceeded"), "{stderr}");

    // Every other service throttled in turn: chains it cannot follow are said, never judged
    // missing; what was read stays as judged unthrottled.
    for service in ["elasticloadbalancing", "apigateway", "servicediscovery"] {
        proxy.throttle(&[(service, "*")]);
        let (code, doc, stderr) = explain(&ns, &proxy.endpoint);
        let now_missing = edges(&doc, "missing");
        assert!(
            now_missing.is_subset(&missing),
            "{service} throttled: missing {:?} were not missing when read",
            now_missing.difference(&missing).collect::<Vec<_>>()
        );
        assert_ne!(
            code, 0,
            "{service} throttled is not a clean result\n{stderr}"
        );
        assert!(
            proxy
                .calls()
                .iter()
                .any(|c| c.service == service && c.throttled),
            "{service} was asked and throttled"
        );
    }
    proxy.clear();
}

fn sum(m: &BTreeMap<String, f64>, prefix: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

fn wait_metrics(
    ns: &Netns,
    what: &str,
    secs: u64,
    cond: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let m = ns.metrics();
        if cond(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}; metrics:\n{}",
            m.iter()
                .filter(|(k, _)| k.contains("discovery") || k.contains("path_rule"))
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts `hopwatch run` in `ns` with `config` written to `dir`.
fn agent(ns: &Netns, dir: &Path, config: &str) -> Kill {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("hopwatch.toml");
    std::fs::write(&path, config).expect("config");
    let log = std::fs::File::create(dir.join("agent.log")).expect("log");
    let mut cmd = ns.command(BIN);
    aws_env(&mut cmd);
    Kill(
        cmd.args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run"),
    )
}

fn discovery_config(endpoint: &str, extra: &str) -> String {
    format!(
        "[agent]\nlisten = \"127.0.0.1:9464\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n[discovery]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\nrefresh = \"1s\"\n{extra}"
    )
}

/// A running agent: security groups unreadable from its first walk on export unknown edges and
/// no missing one; with them throttled after a good walk, the last good reading stands and
/// nothing changes; the chains keep probing throughout.
#[test]
fn a_running_agent_never_pages_on_what_it_could_not_read() {
    let Some((ns, moto, _)) = setup("a_running_agent_never_pages_on_what_it_could_not_read") else {
        return;
    };
    moto.fixture(["127.0.0.5", "127.0.0.6"]);
    let proxy = FaultProxy::start(&moto);
    let dir = std::env::temp_dir().join(format!("hopwatch-budget-run-{}", std::process::id()));

    // From the start, EC2 throttled.
    proxy.throttle(&[("ec2", "*")]);
    let run = agent(&ns, &dir, &discovery_config(&proxy.endpoint, ""));
    let m = wait_metrics(&ns, "unknown edges and probing chains", 60, |m| {
        sum(m, "hopwatch_path_rule_unknown{", &[]) > 0.0
            && sum(m, "hopwatch_probes_total{", &[]) > 0.0
    });
    assert_eq!(
        sum(&m, "hopwatch_path_rule_missing{", &[]),
        0.0,
        "nothing unread is missing: {:?}",
        m.keys()
            .filter(|k| k.starts_with("hopwatch_path_rule"))
            .collect::<Vec<_>>()
    );
    drop(run);

    // A good walk first, then EC2 throttled: the rules read stand, their series unchanged.
    proxy.clear();
    let run = agent(&ns, &dir, &discovery_config(&proxy.endpoint, ""));
    let before = wait_metrics(&ns, "a walk with every rule read", 60, |m| {
        sum(m, "hopwatch_discovery_duration_seconds_count", &[]) >= 1.0
            && sum(m, "hopwatch_path_rule_unknown{", &[]) == 0.0
            && sum(m, "hopwatch_probes_total{", &[]) > 0.0
            && m.keys().any(|k| k.starts_with("hopwatch_hop_info{"))
    });
    let missing = |m: &BTreeMap<String, f64>| -> BTreeSet<String> {
        m.iter()
            .filter(|(k, v)| k.starts_with("hopwatch_path_rule_missing{") && **v == 1.0)
            .map(|(k, _)| k.clone())
            .collect()
    };
    proxy.throttle(&[("ec2", "*")]);
    let throttled_before = sum(
        &before,
        "hopwatch_discovery_calls_total{",
        &["service=\"ec2\"", "result=\"throttled\""],
    );
    let probes_before = sum(&before, "hopwatch_probes_total{", &[]);
    let after = wait_metrics(&ns, "two walks with EC2 throttled", 90, |m| {
        sum(
            m,
            "hopwatch_discovery_calls_total{",
            &["service=\"ec2\"", "result=\"throttled\""],
        ) > throttled_before
            && sum(m, "hopwatch_discovery_duration_seconds_count", &[])
                >= sum(&before, "hopwatch_discovery_duration_seconds_count", &[]) + 2.0
    });
    assert_eq!(
        missing(&after),
        missing(&before),
        "the last good rules stand"
    );
    assert_eq!(sum(&after, "hopwatch_path_rule_unknown{", &[]), 0.0);
    assert!(
        sum(&after, "hopwatch_probes_total{", &[]) > probes_before,
        "probing goes on"
    );
    assert!(
        sum(
            &after,
            "hopwatch_discovery_errors_total{",
            &["service=\"ec2\""]
        ) > 0.0,
        "the failures are counted"
    );
    drop(run);
    proxy.clear();
    let _ = std::fs::remove_dir_all(&dir);
}

/// API Gateway calls per walk from the agent's own counter: the walks it has made and the
/// calls so far.
fn apigateway_calls(m: &BTreeMap<String, f64>) -> (f64, f64) {
    (
        sum(m, "hopwatch_discovery_duration_seconds_count", &[]),
        sum(
            m,
            "hopwatch_discovery_calls_total{",
            &["service=\"apigateway\""],
        ),
    )
}

/// The budget on an estate of many APIs: the first walk reads everything once; every walk after
/// it, nothing having changed, makes one API Gateway call per API plus the four listings, and
/// reads each load balancer's listeners and each target group's health once; no second of the
/// run sees more API Gateway calls than max_calls_per_second.
#[test]
fn a_steady_walk_spends_one_call_per_api_and_never_more_than_the_rate() {
    let Some((ns, moto, _)) = setup("a_steady_walk_spends_one_call_per_api") else {
        return;
    };
    let apis = 30;
    let estate = moto.estate(apis, &["127.0.0.5", "127.0.0.6"]);
    let lbs = estate["load_balancers"].as_u64().unwrap_or(0) as usize;
    assert!(lbs >= 4, "{estate:#}");
    let proxy = FaultProxy::start(&moto);
    let dir = std::env::temp_dir().join(format!("hopwatch-budget-steady-{}", std::process::id()));
    let rate = 10.0;
    let run = agent(
        &ns,
        &dir,
        &discovery_config(&proxy.endpoint, &format!("max_calls_per_second = {rate}\n")),
    );
    let first = wait_metrics(&ns, "the first walk", 120, |m| apigateway_calls(m).0 >= 1.0);
    let (_, first_calls) = apigateway_calls(&first);
    assert!(first_calls >= apis as f64, "the first walk reads every API");
    let at_two = wait_metrics(&ns, "a second walk", 60, |m| apigateway_calls(m).0 >= 2.0);
    proxy.reset_calls();
    let at_four = wait_metrics(&ns, "two more walks", 60, |m| {
        apigateway_calls(m).0 >= apigateway_calls(&at_two).0 + 2.0
    });
    let calls = proxy.calls();
    drop(run);
    let (walks, total) = apigateway_calls(&at_four);
    let (walks_then, total_then) = apigateway_calls(&at_two);
    let per_walk = (total - total_then) / (walks - walks_then);
    println!(
        "{apis} APIs: first walk {first_calls} API Gateway calls; steady walks {per_walk:.1} each"
    );
    assert!(
        per_walk <= apis as f64 + 4.0,
        "a steady walk makes {per_walk} API Gateway calls for {apis} APIs (at most {} allowed)",
        apis + 4
    );
    // Each shared object once per walk, as the proxy saw them (whole walks in the window).
    let in_window = |op: &str| calls.iter().filter(|c| c.operation == op).count();
    let walks_seen = in_window("GetRestApis");
    assert!(walks_seen >= 2, "{walks_seen} walks in the window");
    for (op, per) in [
        ("DescribeLoadBalancers", 1),
        ("DescribeListeners", lbs),
        ("DescribeTargetHealth", lbs),
    ] {
        let n = in_window(op);
        assert!(
            n <= per * (walks_seen + 1),
            "{op}: {n} calls in {walks_seen} walks, more than {per} each"
        );
    }
    let busiest = moto::max_per_second(&calls, "apigateway");
    println!("busiest second of API Gateway calls: {busiest} (max_calls_per_second {rate})");
    assert!(busiest as f64 <= rate, "{busiest} calls in one second");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A found chain that fails validation is left out, logged and counted; the user's own chains
/// and their edits load as ever.
#[test]
fn a_bad_discovered_chain_never_rejects_the_users_file() {
    let Some((ns, moto, _)) = setup("a_bad_discovered_chain_never_rejects_the_users_file") else {
        return;
    };
    moto.fixture(["127.0.0.5", "127.0.0.6"]);
    // One more REST API whose integration timeout is below AWS's 50 ms minimum (moto keeps
    // what it is given): its chain's integration_timeout fails validation.
    moto.boto(
        r#"
nlb = [lb for lb in elb.describe_load_balancers()["LoadBalancers"] if lb["Type"] == "network"][0]
api = rest.create_rest_api(name="broken")["id"]
root = rest.get_resources(restApiId=api)["items"][0]["id"]
res = rest.create_resource(restApiId=api, parentId=root, pathPart="x")["id"]
rest.put_method(restApiId=api, resourceId=res, httpMethod="GET", authorizationType="NONE")
rest.put_integration(restApiId=api, resourceId=res, httpMethod="GET", type="HTTP_PROXY",
    integrationHttpMethod="GET", uri="http://" + nlb["DNSName"] + "/x", connectionType="VPC_LINK",
    connectionId="unknown", timeoutInMillis=20)
rest.create_deployment(restApiId=api, stageName="prod")
"#,
    );
    let dir = std::env::temp_dir().join(format!("hopwatch-budget-bad-{}", std::process::id()));
    let written = |extra: &str| {
        format!(
            "{}\n[[chain]]\nname = \"mine\"\nkind = \"custom\"\n  [[chain.hop]]\n  name = \"target{extra}\"\n  role = \"target\"\n  url = \"http://127.0.0.5:80/\"\n",
            discovery_config(&moto.endpoint, "")
        )
    };
    let run = agent(&ns, &dir, &written(""));
    let m = wait_metrics(&ns, "the bad chain rejected, the others running", 60, |m| {
        sum(m, "hopwatch_discovery_chains_rejected_total", &[]) >= 1.0
            && m.keys()
                .any(|k| k.starts_with("hopwatch_hop_info{") && k.contains("chain=\"mine\""))
            && m.keys()
                .any(|k| k.starts_with("hopwatch_hop_info{") && k.contains("chain=\"orders-prod\""))
    });
    assert!(
        !m.keys().any(|k| k.contains("chain=\"broken-prod\"")),
        "the bad chain does not run"
    );
    assert_eq!(
        sum(&m, "hopwatch_config_last_reload_successful", &[]),
        1.0,
        "the reload with the found chains succeeded"
    );
    // The user's edit lands though the bad chain is found again at every walk.
    std::fs::write(dir.join("hopwatch.toml"), written("-edited")).expect("edit");
    wait_metrics(&ns, "the user's edit", 30, |m| {
        m.keys()
            .any(|k| k.starts_with("hopwatch_hop_info{") && k.contains("hop=\"target-edited\""))
    });
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    assert!(
        log.contains("broken-prod") && log.contains("integration_timeout"),
        "the rejected chain and its problem are logged"
    );
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The benchmark the docs quote (by hand: `cargo test --test discovery_budget -- --ignored
/// --nocapture`): an estate of 200 APIs at the default rate, the first walk's time and calls,
/// then the calls of each steady walk.
#[test]
#[ignore = "by hand: a benchmark of a few minutes"]
fn budget_of_200_apis() {
    let Some((ns, moto, _)) = setup("budget_of_200_apis") else {
        return;
    };
    let apis = 200;
    let estate = moto.estate(apis, &["127.0.0.5", "127.0.0.6"]);
    let proxy = FaultProxy::start(&moto);
    let dir = std::env::temp_dir().join(format!("hopwatch-budget-200-{}", std::process::id()));
    let started = Instant::now();
    let run = agent(&ns, &dir, &discovery_config(&proxy.endpoint, ""));
    let first = wait_metrics(&ns, "the first walk", 600, |m| apigateway_calls(m).0 >= 1.0);
    let first_took = started.elapsed();
    let (_, first_calls) = apigateway_calls(&first);
    let all_first: f64 = sum(&first, "hopwatch_discovery_calls_total{", &[]);
    let at_three = wait_metrics(&ns, "two steady walks", 600, |m| {
        apigateway_calls(m).0 >= 3.0
    });
    let calls = proxy.calls();
    drop(run);
    let (walks, total) = apigateway_calls(&at_three);
    let all: f64 = sum(&at_three, "hopwatch_discovery_calls_total{", &[]);
    println!(
        "estate: {}\nfirst walk: {:.1} s, {first_calls} API Gateway calls, {all_first} calls in all\nsteady walks: {:.1} API Gateway calls each, {:.1} calls in all each\nbusiest second of API Gateway calls: {}",
        serde_json::json!({"apis": apis, "rest": estate["rest_apis"], "http": estate["http_apis"], "stages": estate["stages"], "integrations": estate["integrations"], "load_balancers": estate["load_balancers"]}),
        first_took.as_secs_f64(),
        (total - first_calls) / (walks - 1.0),
        (all - all_first) / (walks - 1.0),
        moto::max_per_second(&calls, "apigateway")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

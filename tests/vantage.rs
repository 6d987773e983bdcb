//! Many agents: vantages, shards and the verdicts a real Prometheus agrees across them.
//!
//! Three `hopwatch run` processes: two shards of vantage `a` in one network namespace, vantage
//! `b` (one agent) in another, and a hub namespace holding the target and a real Prometheus
//! that scrapes all three with the shipped rules (deploy/prometheus/alerts.yml) loaded. nftables
//! in the hub cuts a vantage off from the target, as a subnet's NACL or an AZ's security group
//! would. Everything binds inside namespaces the test made.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

const CHAINS: [&str; 4] = ["orders", "billing", "search", "cart"];

/// A config with `n` one-hop chains named `chain-0`…
fn chains_config(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[[chain]]\nname = \"chain-{i}\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"target\"\nrole = \"target\"\nurl = \"http://127.0.0.1:1/\"\n\n"
        ));
    }
    text
}

/// The chains `hopwatch validate --shard` says the shard runs.
fn owned(file: &std::path::Path, shard: &str) -> Vec<String> {
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(file)
        .args(["--shard", shard])
        .env_remove("HOPWATCH_SHARD")
        .output()
        .expect("validate");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("shard {shard} runs")), "{text}");
    text.lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_string)
        .collect()
}

/// 200 chains over 3 shards: each chain run by exactly one; 3 → 4 shards moves about a quarter
/// (only to the new shard), as rendezvous hashing promises.
#[test]
fn shards_split_chains_once_and_a_new_shard_moves_a_quarter() {
    let dir = std::env::temp_dir().join(format!("hopwatch-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("hopwatch.toml");
    std::fs::write(&file, chains_config(200)).expect("config");

    let mut owner3: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..3 {
        for chain in owned(&file, &format!("{i}/3")) {
            assert!(
                owner3.insert(chain.clone(), i).is_none(),
                "{chain} is run by two shards"
            );
        }
    }
    assert_eq!(owner3.len(), 200, "every chain is run by some shard");
    let mut owner4: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..4 {
        for chain in owned(&file, &format!("{i}/4")) {
            owner4.insert(chain, i);
        }
    }
    assert_eq!(owner4.len(), 200);
    let moved: Vec<&String> = owner3
        .iter()
        .filter(|(c, i)| owner4.get(*c) != Some(*i))
        .map(|(c, _)| c)
        .collect();
    let share = moved.len() as f64 / 200.0;
    println!(
        "3 -> 4 shards: {} of 200 chains moved ({:.1} %); per shard of 3: {:?}",
        moved.len(),
        share * 100.0,
        (0..3)
            .map(|i| owner3.values().filter(|&&o| o == i).count())
            .collect::<Vec<_>>()
    );
    assert!(
        (0.20..=0.35).contains(&share),
        "{:.1} % moved, expected 20-35 %",
        share * 100.0
    );
    // Rendezvous: a chain that moves goes to the new shard, never between old ones.
    for chain in &moved {
        assert_eq!(owner4[*chain], 3, "{chain} moved between old shards");
    }

    // `check --shard` judges only its own chains, and says which part it is.
    let out = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(&file)
        .env("HOPWATCH_SHARD", "hopwatch-1/3")
        .output()
        .expect("check");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(doc["shard"]["shard"], "1/3", "{doc:#}");
    assert_eq!(doc["shard"]["chains_total"], 200);
    let checked: BTreeSet<String> = doc["chains"]
        .as_array()
        .expect("chains")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let expected: BTreeSet<String> = owner3
        .iter()
        .filter(|(_, &i)| i == 1)
        .map(|(c, _)| c.clone())
        .collect();
    assert_eq!(checked, expected);

    // A chain another shard owns is named as such.
    let other = owner3
        .iter()
        .find(|(_, &i)| i == 2)
        .map(|(c, _)| c.clone())
        .expect("shard 2 owns a chain");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&file)
        .args(["--shard", "1/3", "--chain", &other])
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("belongs to shard 2/3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A malformed shard is a clear error, from the flag and from the file.
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&file)
        .args(["--shard", "3/3"])
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("start at 0"));
    std::fs::write(
        &file,
        format!("[agent]\nshard = \"2/x\"\n\n{}", chains_config(2)),
    )
    .expect("config");
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&file)
        .env_remove("HOPWATCH_SHARD")
        .output()
        .expect("validate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(":2:9:") && err.contains("shard"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Three namespaces wired as a star: the hub holds the target and Prometheus; each vantage
/// reaches the target's address through the hub.
struct Star {
    hub: Netns,
    a: Netns,
    b: Netns,
}

impl Star {
    fn new() -> Star {
        let star = Star {
            hub: Netns::new("vhub"),
            a: Netns::new("va"),
            b: Netns::new("vb"),
        };
        for (ns, hub_if, ns_if, net) in [(&star.a, "ha", "va0", 1), (&star.b, "hb", "vb0", 2)] {
            star.hub.exec(&[
                "ip", "link", "add", hub_if, "type", "veth", "peer", "name", ns_if, "netns",
                &ns.name,
            ]);
            star.hub.exec(&[
                "ip",
                "addr",
                "add",
                &format!("10.77.{net}.1/24"),
                "dev",
                hub_if,
            ]);
            star.hub.exec(&["ip", "link", "set", hub_if, "up"]);
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("10.77.{net}.2/24"),
                "dev",
                ns_if,
            ]);
            ns.exec(&["ip", "link", "set", ns_if, "up"]);
            ns.exec(&[
                "ip",
                "route",
                "add",
                "10.77.0.1/32",
                "via",
                &format!("10.77.{net}.1"),
            ]);
        }
        star.hub
            .exec(&["ip", "addr", "add", "10.77.0.1/32", "dev", "lo"]);
        star
    }

    /// A GET from inside the hub (where Prometheus listens).
    fn get(&self, url: &str) -> Option<String> {
        let out = self
            .hub
            .command("curl")
            .args(["-sf", "--max-time", "3", url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The alerts Prometheus holds (pending or firing): name and labels.
    fn alerts(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let Some(body) = self.get("http://127.0.0.1:9090/api/v1/alerts") else {
            return Vec::new();
        };
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        doc["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let labels: BTreeMap<String, String> = a["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                (labels.get("alertname").cloned().unwrap_or_default(), labels)
            })
            .collect()
    }

    /// One PromQL query: label sets and values.
    fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let encoded: String = q
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let Some(body) = self.get(&format!(
            "http://127.0.0.1:9090/api/v1/query?query={encoded}"
        )) else {
            return Vec::new();
        };
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        doc["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// Waits up to `secs` for `cond` over Prometheus's alerts.
    fn wait_alerts(
        &self,
        what: &str,
        secs: u64,
        logs: &std::path::Path,
        cond: impl Fn(&[(String, BTreeMap<String, String>)]) -> bool,
    ) -> Vec<(String, BTreeMap<String, String>)> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let alerts = self.alerts();
            if cond(&alerts) {
                return alerts;
            }
            if Instant::now() > deadline {
                let logs: String = ["a0.log", "a1.log", "b0.log", "prometheus.log"]
                    .iter()
                    .map(|f| {
                        let text = std::fs::read_to_string(logs.join(f)).unwrap_or_default();
                        let tail: Vec<&str> = text.lines().rev().take(15).collect();
                        format!(
                            "--- {f}\n{}\n",
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    })
                    .collect();
                panic!(
                    "timed out after {secs}s waiting for {what}; alerts: {alerts:#?}\nchain_up by vantage: {:?}\n{logs}",
                    self.query("hopwatch:chain_up:by_vantage")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn named<'a>(
    alerts: &'a [(String, BTreeMap<String, String>)],
    name: &str,
) -> Vec<&'a BTreeMap<String, String>> {
    alerts
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, l)| l)
        .collect()
}

fn chains_of(alerts: &[&BTreeMap<String, String>]) -> BTreeSet<String> {
    alerts
        .iter()
        .filter_map(|l| l.get("chain").cloned())
        .collect()
}

#[test]
fn prometheus_tells_a_vantage_fault_from_a_shared_one() {
    if !can_use_namespaces() {
        return skip(
            "prometheus_tells_a_vantage_fault_from_a_shared_one",
            "needs root and ip netns",
        );
    }
    for tool in ["prometheus", "nft", "curl"] {
        if !which(tool) {
            return skip(
                "prometheus_tells_a_vantage_fault_from_a_shared_one",
                &format!("needs {tool}"),
            );
        }
    }
    let star = Star::new();
    let dir = std::env::temp_dir().join(format!("hopwatch-vantage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");

    // The target, in the hub.
    let _echo = Kill(
        star.hub
            .command(BIN)
            .args(["echo", "--listen", "10.77.0.1:80"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("echo"),
    );

    // One config for every agent: four chains through the target.
    let mut config =
        "[agent]\ninterval = \"1s\"\ntimeout = \"400ms\"\ndown_after = 2\nup_after = 1\n\n"
            .to_string();
    for chain in CHAINS {
        config.push_str(&format!(
            "[[chain]]\nname = \"{chain}\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"target\"\nrole = \"target\"\nurl = \"http://10.77.0.1:80/{chain}\"\n\n"
        ));
    }
    let file = dir.join("hopwatch.toml");
    std::fs::write(&file, &config).expect("config");

    let agent = |ns: &Netns, listen: &str, shard: &str, vantage: &str, log: &str| {
        let log = std::fs::File::create(dir.join(log)).expect("log");
        Kill(
            ns.command(BIN)
                .args(["run", "--config"])
                .arg(&file)
                .args(["--listen", listen, "--shard", shard])
                .env("HOPWATCH_VANTAGE", vantage)
                .env_remove("HOPWATCH_SHARD")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("run"),
        )
    };
    let _a0 = agent(&star.a, "10.77.1.2:9464", "0/2", "a", "a0.log");
    let _a1 = agent(&star.a, "10.77.1.2:9465", "1/2", "a", "a1.log");
    let mut b0 = Some(agent(&star.b, "10.77.2.2:9464", "0/1", "b", "b0.log"));

    // Prometheus in the hub, with the shipped rules.
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: hopwatch\n    static_configs:\n      - targets: [\"10.77.1.2:9464\", \"10.77.1.2:9465\", \"10.77.2.2:9464\"]\n",
            rules.display()
        ),
    )
    .expect("prometheus.yml");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
    let _prometheus = Kill(
        star.hub
            .command("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .args(["--web.listen-address=127.0.0.1:9090"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus"),
    );

    // Healthy: every chain judged from both vantages and up; the two shards of `a` split the
    // four chains; one config hash everywhere.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = star.query("hopwatch:chain_vantages_up:count");
        if up.len() == CHAINS.len() && up.iter().all(|(_, v)| *v == 2.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never healthy from both vantages: {up:?}\n{:?}",
            star.query("up")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let assigned = star.query("sum by (vantage) (hopwatch_chains_assigned * on (job, instance) group_left (vantage) hopwatch_agent_info)");
    let per_vantage: BTreeMap<String, f64> = assigned
        .iter()
        .map(|(l, v)| (l.get("vantage").cloned().unwrap_or_default(), *v))
        .collect();
    assert_eq!(
        per_vantage,
        BTreeMap::from([("a".to_string(), 4.0), ("b".to_string(), 4.0)])
    );
    let hashes: BTreeSet<String> = star
        .query("hopwatch_config_hash")
        .iter()
        .map(|(_, v)| v.to_string())
        .collect();
    assert_eq!(hashes.len(), 1, "one config, one hash: {hashes:?}");
    assert!(named(&star.alerts(), "ShardConfigMismatch").is_empty());

    // Cut off from vantage a: down from a, up from b.
    star.hub.nft(
        "table inet cut {\n  chain input {\n    type filter hook input priority 0;\n    ip saddr 10.77.1.0/24 tcp dport 80 drop\n  }\n}\n",
    );
    let alerts = star.wait_alerts("ChainDownFromSomeVantages for every chain", 60, &dir, |a| {
        chains_of(&named(a, "ChainDownFromSomeVantages")).len() == CHAINS.len()
    });
    for labels in named(&alerts, "ChainDownFromSomeVantages") {
        assert_eq!(
            labels.get("vantage").map(String::as_str),
            Some("a"),
            "{labels:?}"
        );
        assert_eq!(
            labels.get("hop").map(String::as_str),
            Some("target"),
            "{labels:?}"
        );
        assert!(
            labels.get("code").is_some_and(|c| !c.is_empty()),
            "{labels:?}"
        );
    }
    assert!(
        named(&alerts, "ChainDownEverywhere").is_empty(),
        "{alerts:#?}"
    );

    // Cut off from b too: down everywhere; the partial alert goes away.
    star.hub.nft(
        "table inet cut2 {\n  chain input {\n    type filter hook input priority 0;\n    ip saddr 10.77.2.0/24 tcp dport 80 drop\n  }\n}\n",
    );
    star.wait_alerts(
        "ChainDownEverywhere for every chain, no partial alert",
        60,
        &dir,
        |a| {
            chains_of(&named(a, "ChainDownEverywhere")).len() == CHAINS.len()
                && named(a, "ChainDownFromSomeVantages").is_empty()
        },
    );

    // Vantage b's agent dies: its vantage is reported down, a's are not.
    drop(b0.take());
    let alerts = star.wait_alerts("VantageDown for b", 60, &dir, |a| {
        !named(a, "VantageDown").is_empty()
    });
    let down: Vec<(Option<&String>, Option<&String>)> = named(&alerts, "VantageDown")
        .iter()
        .map(|l| (l.get("vantage"), l.get("shard")))
        .collect();
    assert_eq!(
        down,
        vec![(Some(&"b".to_string()), Some(&"0/1".to_string()))],
        "{alerts:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

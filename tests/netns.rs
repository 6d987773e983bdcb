//! Failures that need a network of their own: a security-group-style drop (nftables inside a
//! namespace the test makes) and a resolver that fails. The agent runs inside the namespace via
//! the real binary; no packet leaves it.

mod common;

use std::process::Command;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

fn check_in(ns: &Netns, config: &str) -> serde_json::Value {
    let path = std::env::temp_dir().join(format!("{}.toml", ns.name));
    std::fs::write(&path, config).expect("write config");
    let out = ns
        .command(BIN)
        .args(["check", "--json", "--config"])
        .arg(&path)
        .output()
        .expect("run check in namespace");
    let _ = std::fs::remove_file(&path);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn security_group_drop_is_connect_timeout_and_refusal_is_not() {
    if !can_use_namespaces() {
        return skip(
            "security_group_drop_is_connect_timeout_and_refusal_is_not",
            "needs root, ip and nft",
        );
    }
    let ns = Netns::new("sgdrop");
    // Two "hosts" inside the namespace: one behind a drop rule, one with nothing listening.
    ns.exec(&["ip", "addr", "add", "10.213.0.2/32", "dev", "lo"]);
    ns.exec(&["ip", "addr", "add", "10.213.0.3/32", "dev", "lo"]);
    ns.nft(
        "table inet sg {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    ip daddr 10.213.0.2 tcp dport 80 drop\n  }\n}\n",
    );
    let doc = check_in(
        &ns,
        r#"
[agent]
interval = "10s"
timeout = "700ms"

[[chain]]
name = "sg"
kind = "custom"

  [[chain.hop]]
  name = "dropped"
  role = "alb"
  url = "http://10.213.0.2/"

  [[chain.hop]]
  name = "refused"
  role = "target"
  url = "http://10.213.0.3/"
"#,
    );
    let hops = &doc["chains"][0]["hops"];
    assert_eq!(hops[0]["result"], "connect_timeout", "{doc:#}");
    let ms = hops[0]["duration_ms"].as_f64().expect("duration");
    assert!(
        (700.0..900.0).contains(&ms),
        "ends at its timeout, took {ms} ms"
    );
    assert_eq!(hops[1]["result"], "connect_refused", "{doc:#}");
}

#[test]
fn unresolvable_name_is_dns() {
    if !can_use_namespaces() {
        return skip("unresolvable_name_is_dns", "needs root, ip and nft");
    }
    let ns = Netns::new("dns");
    let doc = check_in(
        &ns,
        r#"
[[chain]]
name = "dns"
kind = "custom"

  [[chain.hop]]
  name = "nowhere"
  role = "target"
  url = "http://orders.hopwatch-test.invalid/"
  timeout = "3s"
"#,
    );
    let hop = &doc["chains"][0]["hops"][0];
    assert_eq!(hop["result"], "dns", "{doc:#}");
    assert!(hop["phases"]["connect"].is_null());
    // The namespace is gone after the test: nothing left behind.
    let name = ns.name.clone();
    drop(ns);
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
}

//! Failures that need a network of their own: a security-group-style drop (nftables inside a
//! namespace the test makes) and one name with two nodes behind it. The agent runs inside the
//! namespace via the real binary; no packet leaves it. Broken resolvers are in tests/hostile.rs.

mod common;

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
fn per_address_probes_every_node_of_a_name() {
    if !can_use_namespaces() {
        return skip(
            "per_address_probes_every_node_of_a_name",
            "needs root, ip and nft",
        );
    }
    let ns = Netns::new("peraddr");
    // Two "ALB nodes" behind one name, from the namespace's own hosts file: one answers, one
    // is gone (nothing listens).
    std::fs::write(
        format!("/etc/netns/{}/hosts", ns.name),
        "127.0.0.1 localhost\n127.0.0.2 orders-alb.hopwatch.test\n127.0.0.3 orders-alb.hopwatch.test\n",
    )
    .expect("hosts");
    let mut echo = ns
        .command(BIN)
        .args(["--log-format", "json", "echo", "--listen", "127.0.0.2:8080"])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("echo in namespace");
    let stderr = echo.stderr.take().expect("stderr");
    let up = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .any(|l| l.contains("hopwatch echo listening"));
    assert!(up, "echo did not start in the namespace");
    let doc = check_in(
        &ns,
        r#"
[[chain]]
name = "az"
kind = "custom"

  [[chain.hop]]
  name = "alb"
  role = "alb"
  url = "http://orders-alb.hopwatch.test:8080/health"
  per_address = true
  timeout = "2s"
"#,
    );
    let _ = echo.kill();
    let _ = echo.wait();
    let hop = &doc["chains"][0]["hops"][0];
    let addresses = hop["addresses"]
        .as_array()
        .unwrap_or_else(|| panic!("no addresses: {doc:#}"));
    let by = |a: &str| {
        addresses
            .iter()
            .find(|x| x["address"] == a)
            .unwrap_or_else(|| panic!("{a} missing: {doc:#}"))
    };
    assert_eq!(by("127.0.0.2")["result"], "ok");
    assert_eq!(by("127.0.0.3")["result"], "connect_refused");
    assert_eq!(addresses.len(), 2);
}

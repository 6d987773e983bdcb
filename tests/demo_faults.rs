//! Every fault the demo can inject, seen through `hopwatch check --json`: the right hop is
//! blamed, for the right reason. Parts break by resetting connections (nothing listening);
//! links break by dropping packets (a security group without the rule).

mod common;

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

fn check(config: &PathBuf) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(config)
        .output()
        .expect("run check");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_blames_the_right_hop() {
    let demo = hopwatch::demo::start().await.expect("demo");
    let dir = std::env::temp_dir().join(format!("hopwatch-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("demo.toml");
    std::fs::write(&config, &demo.config_toml).expect("write");
    let alb_port = demo.addrs[2].port();
    let target_port = demo.addrs[3].port();

    // (faults, blamed hop, reason code, the reason's start).
    let cases: Vec<(&[&str], &str, &str, String)> = vec![
        (&["gateway"], "gateway", "gateway_unreachable", "gateway: reset; the agent cannot reach the API endpoint itself".into()),
        (&["nlb"], "nlb", "no_healthy_targets", format!("nlb -> alb: reset while alb answers directly; the NLB has no healthy target or its target group uses another port than {alb_port}")),
        (&["alb"], "alb", "no_listener", format!("alb: reset while target answers directly; nothing accepts on alb's port {alb_port}: listener removed or load balancer deleted")),
        (&["target-a", "target-b"], "target", "target_reset", "target: reset and no hop answers; the target resets or closes the connection".into()),
        (&["gateway-nlb"], "gateway", "integration_timeout", "gateway: 504 with x-amzn-ErrorType InternalServerErrorException".into()),
        (&["nlb-alb"], "nlb", "sg_drop", "nlb -> alb: no answer in time after connecting while alb answers directly; alb-sg probably lacks the NLB addresses or VPC CIDR".into()),
        (&["alb-targets"], "alb", "upstream_unreachable", format!("alb -> target: 504 from the ALB (Server: awselb/2.0) while target answers directly; the ALB cannot reach the target in time (it waits 10 s to connect, then its idle timeout, 60 s by default); target-sg probably lacks alb-sg on port {target_port}")),
    ];
    for (faults, blamed, code, reason) in cases {
        for f in faults {
            assert!(demo.faults.set(f, true), "no fault {f}");
        }
        let doc = tokio::task::spawn_blocking({
            let config = config.clone();
            move || check(&config)
        })
        .await
        .expect("join");
        let chain = &doc["chains"][0];
        assert_eq!(chain["up"], false, "{faults:?}: {doc:#}");
        assert_eq!(chain["broken_hop"], blamed, "{faults:?}: {doc:#}");
        assert_eq!(chain["reason_code"], code, "{faults:?}: {doc:#}");
        let text = chain["reason"].as_str().unwrap_or("");
        assert!(text.starts_with(reason.as_str()), "{faults:?}: {text}");
        for f in faults {
            demo.faults.set(f, false);
        }
    }
    // Mended: up again, nothing blamed.
    let doc = tokio::task::spawn_blocking(move || check(&config))
        .await
        .expect("join");
    assert_eq!(doc["chains"][0]["up"], true, "{doc:#}");
    assert!(doc["chains"][0]["broken_hop"].is_null());
    let _ = std::fs::remove_dir_all(dir);
    demo.shutdown().await;
}

//! `hopwatch discover` and `[discovery]` against moto in server mode (the AWS control plane,
//! through the real SDK): the six topologies of the brief built by tests/moto/fixture.py, the
//! config discovery writes for them, the `cloudmap://` hop against `DiscoverInstances`, and an
//! agent whose chains and facts follow AWS while it runs.
//!
//! A discovered config holds the estate's addresses and AWS host names. Nothing here probes
//! them outside the test's own network: `discover` probes nothing; `check` only probes targets
//! registered at 127.0.0.x; the running agent lives in a network namespace of its own (moto
//! with it), where AWS names do not resolve and 10.x addresses have no route.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::moto::{self, Moto};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

/// The SDK's default chain, pinned so no call ever looks beyond the test: fixed credentials and
/// region, and no instance metadata service.
fn aws_env(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
}

fn discover(moto: &Moto, extra: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    aws_env(&mut cmd)
        .args([
            "discover",
            "--region",
            "us-east-1",
            "--endpoint-url",
            &moto.endpoint,
        ])
        .args(extra);
    let out = cmd.output().expect("run discover");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// What one discovered hop came to, read back through the config loader.
fn hops(text: &str) -> BTreeMap<String, (String, Vec<(String, String)>)> {
    let config = match hopwatch::config::load_str("discovered.toml", text, &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("the discovered config does not load:\n{e}\n{text}"),
    };
    config
        .chains
        .iter()
        .map(|c| {
            let hops = c
                .hops
                .iter()
                .map(|h| (h.role.to_string(), h.url.text.clone()))
                .collect();
            (c.name.clone(), (c.kind.to_string(), hops))
        })
        .collect()
}

#[test]
fn discover_writes_each_topology_as_aws_holds_it() {
    let Some(python) = moto::python() else {
        return moto::skip("discover_writes_each_topology_as_aws_holds_it");
    };
    let moto = Moto::start(python, None);
    let f = moto.fixture(["10.0.1.20", "10.0.2.20"]);
    let (code, text, stderr) = discover(&moto, &[]);
    assert_eq!(code, 0, "discover failed:\n{stderr}\n{text}");
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let lb = |name: &str, key: &str| s(&f["load_balancers"][name][key]);
    let rest = |name: &str| s(&f["rest"][name]);
    let http = |name: &str| s(&f["http"][name]["endpoint"]);
    let url = |host: &str, path: &str| format!("http://{host}:80{path}");
    let gw = |id: &str, path: &str| {
        format!("https://{id}.execute-api.us-east-1.amazonaws.com/prod{path}")
    };
    let expected: BTreeMap<String, (String, Vec<(String, String)>)> = [
        (
            "orders-prod",
            "rest-nlb",
            vec![
                ("gateway", gw(&rest("orders"), "/items")),
                ("nlb", url(&lb("t1-nlb", "dns"), "/items")),
                ("target", url("10.0.1.20", "/items")),
            ],
        ),
        (
            "billing-prod",
            "rest-nlb-alb",
            vec![
                ("gateway", gw(&rest("billing"), "/invoices")),
                ("nlb", url(&lb("t2-nlb", "dns"), "/invoices")),
                ("alb", url(&lb("t2-alb", "dns"), "/invoices")),
                ("target", url("10.0.1.30", "/invoices")),
            ],
        ),
        (
            "search-prod",
            "rest-alb",
            vec![
                ("gateway", gw(&rest("search"), "/find")),
                ("alb", url(&lb("t3-alb", "dns"), "/find")),
                ("target", url("10.0.1.20", "/find")),
            ],
        ),
        (
            "users-default",
            "http-alb",
            vec![
                ("gateway", format!("{}/users", http("users"))),
                ("alb", url(&lb("t4-alb", "dns"), "/users")),
                ("target", url("10.0.1.20", "/users")),
            ],
        ),
        (
            "cart-default",
            "http-nlb",
            vec![
                ("gateway", format!("{}/cart", http("cart"))),
                ("nlb", url(&lb("t5-nlb", "dns"), "/cart")),
                ("target", url("10.0.1.30", "/cart")),
            ],
        ),
        (
            "catalog-default",
            "http-cloudmap",
            vec![
                ("gateway", format!("{}/catalog", http("catalog"))),
                ("cloudmap", "cloudmap://shop/catalog/catalog".to_string()),
                ("target", url("10.0.1.20", "/catalog")),
            ],
        ),
    ]
    .into_iter()
    .map(|(name, kind, hops)| {
        (
            name.to_string(),
            (
                kind.to_string(),
                hops.into_iter().map(|(r, u)| (r.to_string(), u)).collect(),
            ),
        )
    })
    .collect();
    assert_eq!(hops(&text), expected, "{text}");

    // The facts behind the settings, each said with where it came from.
    let config = hopwatch::config::load_str("d.toml", &text, &|_| None).expect("loads");
    let chain = |name: &str| {
        config
            .chains
            .iter()
            .find(|c| c.name == name)
            .expect(name)
            .clone()
    };
    let t1 = chain("orders-prod");
    assert!(t1.hops[1].per_address, "the NLB spans two AZs");
    assert_eq!(
        t1.hops[1].facts.preserve_client_ip,
        Some(false),
        "ip targets: AWS's default is off"
    );
    assert_eq!(
        t1.hops[2].send_proxy_protocol,
        Some(hopwatch::config::ProxyVersion::V2)
    );
    assert!(text.contains(&format!("preserve_client_ip.enabled not returned for target group {}: AWS's default for ip targets, off", lb("t1-nlb", "tg"))), "{text}");
    let t2 = chain("billing-prod");
    assert_eq!(
        t2.hops[1].facts.preserve_client_ip,
        Some(true),
        "an alb target group: on"
    );
    assert_eq!(t2.hops[2].facts.xff_mode, hopwatch::config::XffMode::Append);
    assert!(
        text.contains("routing.http.xff_header_processing.mode not returned for"),
        "{text}"
    );
    let health = |c: &hopwatch::config::Chain, i: usize| {
        c.hops[i].health.as_ref().map(|h| h.url.text.clone())
    };
    assert_eq!(
        health(&t2, 3),
        Some("http://10.0.1.30:8080/health".to_string()),
        "the ALB's target group checks 8080"
    );
    assert_eq!(
        health(&t2, 2).map(|u| u.starts_with(&format!("http://{}:8080", lb("t2-alb", "dns")))),
        Some(true),
        "the NLB checks the ALB on 8080"
    );
    assert_eq!(
        chain("search-prod").hops[1].facts.xff_mode,
        hopwatch::config::XffMode::Preserve
    );
    assert_eq!(
        chain("cart-default").hops[1].facts.preserve_client_ip,
        Some(false),
        "set off by hand"
    );
    assert!(chain("catalog-default").hops[1].per_address);
    for (_, v) in f["load_balancers"].as_object().expect("lbs") {
        assert!(
            text.contains(&s(&v["arn"])),
            "every load balancer's ARN is cited:\n{text}"
        );
    }

    // validate accepts it as written.
    let dir = std::env::temp_dir().join(format!("hopwatch-discover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("discovered.toml");
    let (code, _, stderr) = discover(&moto, &["--output", file.to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "{stderr}");
    let status = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .status()
        .expect("validate");
    assert!(status.success(), "validate refuses the discovered config");
    let _ = std::fs::remove_dir_all(dir);

    // --api and --stage narrow the walk.
    let (code, only, _) = discover(&moto, &["--api", &rest("orders")]);
    assert_eq!(code, 0);
    assert_eq!(
        hops(&only).keys().cloned().collect::<Vec<_>>(),
        ["orders-prod"]
    );
    let (code, none, stderr) = discover(&moto, &["--stage", "nosuchstage"]);
    assert_eq!(code, 1, "nothing found is no clean result: {stderr}");
    assert!(
        none.contains("No API in this region has an integration through a VPC link"),
        "{none}"
    );
    assert!(!none.contains("[[chain]]"), "{none}");
}

/// A custom chain: the Cloud Map hop, then a target; DiscoverInstances at moto.
fn cloudmap_config(moto: &Moto, target: &str) -> String {
    format!(
        "[agent]\ninterval = \"2s\"\ntimeout = \"1s\"\n\n[discovery]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\n[[chain]]\nname = \"catalog\"\nkind = \"custom\"\n  [[chain.hop]]\n  name = \"cloudmap\"\n  role = \"cloudmap\"\n  url = \"cloudmap://shop/catalog/\"\n  per_address = true\n  [[chain.hop]]\n  name = \"target\"\n  role = \"target\"\n  url = \"http://{target}/\"\n",
        moto.endpoint
    )
}

fn check(config: &PathBuf) -> (i32, serde_json::Value) {
    let mut cmd = Command::new(BIN);
    let out = aws_env(&mut cmd)
        .args(["check", "--json", "--config"])
        .arg(config)
        .output()
        .expect("check");
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), doc)
}

#[test]
fn the_cloudmap_hop_asks_discover_instances_as_api_gateway_does() {
    let Some(python) = moto::python() else {
        return moto::skip("the_cloudmap_hop_asks_discover_instances_as_api_gateway_does");
    };
    let moto = Moto::start(python, None);
    // Two instances at loopback addresses where `hopwatch echo` answers.
    let (a, b) = (refused_port(), refused_port());
    let _echo_a = echo_process(a);
    let _echo_b = echo_process(b);
    moto.boto(&format!(
        "ns = sd.get_operation(OperationId=sd.create_http_namespace(Name='shop')['OperationId'])['Operation']['Targets']['NAMESPACE']\nsvc = sd.create_service(Name='catalog', NamespaceId=ns, Type='HTTP')['Service']['Id']\nfor i, addr in enumerate(['{a}', '{b}']):\n    ip, port = addr.split(':')\n    sd.register_instance(ServiceId=svc, InstanceId=f'i-{{i}}', Attributes={{'AWS_INSTANCE_IPV4': ip, 'AWS_INSTANCE_PORT': port}})\nprint(svc)"
    ));
    wait_until_answers(a);
    let dir = std::env::temp_dir().join(format!("hopwatch-cloudmap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("catalog.toml");
    std::fs::write(&file, cloudmap_config(&moto, &a.to_string())).expect("config");
    let (code, doc) = check(&file);
    let chain = &doc["chains"][0];
    assert_eq!(code, 0, "{doc:#}");
    let cloudmap = &chain["hops"][0];
    assert_eq!(cloudmap["result"], "ok", "{cloudmap:#}");
    let addresses: Vec<String> = cloudmap["addresses"]
        .as_array()
        .expect("per-address probes of the instances")
        .iter()
        .map(|x| {
            format!(
                "{}={}",
                x["address"].as_str().unwrap_or(""),
                x["result"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        addresses,
        [format!("{}=ok", a.ip()), format!("{}=ok", b.ip())]
    );

    // No instance left: what API Gateway would find too.
    moto.boto("svc = [s for s in sd.list_services()['Services'] if s['Name'] == 'catalog'][0]['Id']\nfor i in sd.list_instances(ServiceId=svc)['Instances']:\n    sd.deregister_instance(ServiceId=svc, InstanceId=i['Id'])");
    let (code, doc) = check(&file);
    let chain = &doc["chains"][0];
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(chain["broken_hop"], "cloudmap", "{doc:#}");
    assert_eq!(chain["reason_code"], "cloudmap_no_instances", "{doc:#}");
    assert_eq!(chain["hops"][0]["result"], "no_instances");

    // A service Cloud Map does not know: its own error, not "no instance".
    std::fs::write(
        &file,
        cloudmap_config(&moto, &a.to_string())
            .replace("cloudmap://shop/catalog/", "cloudmap://shop/nosuchservice/"),
    )
    .expect("config");
    let (_, doc) = check(&file);
    assert_eq!(doc["chains"][0]["reason_code"], "cloudmap_error", "{doc:#}");
    let _ = std::fs::remove_dir_all(dir);
}

fn wait_until_answers(addr: std::net::SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while http_get(addr, "/").is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "echo at {addr} never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has(metrics: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)], value: f64) -> bool {
    metrics.iter().any(|(series, v)| {
        *v == value
            && series.starts_with(&format!("{name}{{"))
            && labels
                .iter()
                .all(|(k, want)| series.contains(&format!("{k}=\"{want}\"")))
    })
}

/// Waits up to `secs` for `cond` on the agent's metrics; the metrics when it held.
fn wait_metrics(
    ns: &Netns,
    what: &str,
    secs: u64,
    cond: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let m = ns.metrics();
        if cond(&m) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}; metrics:\n{}",
            m.iter()
                .filter(|(k, _)| k.contains("discovery")
                    || k.contains("vpc_link")
                    || k.contains("target_health")
                    || k.contains("hop_info"))
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `[discovery]` in `run`: the agent, moto and the targets in a namespace of their own. The
/// chains follow what AWS holds within a refresh; an outage of the API keeps them, counted.
#[test]
fn a_running_agent_follows_what_aws_holds() {
    if !can_use_namespaces() {
        return skip(
            "a_running_agent_follows_what_aws_holds",
            "needs root and ip netns",
        );
    }
    let Some(python) = moto::python() else {
        return moto::skip("a_running_agent_follows_what_aws_holds");
    };
    let ns = Netns::new("disc");
    let mut moto = Moto::start(python, Some(&ns));
    moto.fixture(["127.0.0.5", "127.0.0.6"]);
    // The targets the fixture registered, answering inside the namespace.
    ns.exec(&["ip", "addr", "add", "127.0.0.5/8", "dev", "lo"]);
    let _echo: Vec<Kill> = ["127.0.0.5:80", "127.0.0.6:80"]
        .iter()
        .map(|addr| {
            Kill(
                ns.command(BIN)
                    .args(["echo", "--listen", addr])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("echo"),
            )
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("hopwatch-discovery-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("hopwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"127.0.0.1:9464\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n[discovery]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\nrefresh = \"2s\"\n",
            moto.endpoint
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.join("agent.log")).expect("log");
    let mut agent = ns.command(BIN);
    aws_env(&mut agent);
    let _agent = Kill(
        agent
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run"),
    );
    fn chain(c: &str) -> [(&'static str, &str); 1] {
        [("chain", c)]
    }
    // The chains start with the reload; their facts reach /metrics with their first round.
    let m = wait_metrics(&ns, "the six discovered chains and their facts", 30, |m| {
        [
            "orders-prod",
            "billing-prod",
            "search-prod",
            "users-default",
            "cart-default",
            "catalog-default",
        ]
        .iter()
        .all(|c| has(m, "hopwatch_hop_info", &chain(c), 1.0))
            && ["orders-prod", "users-default"]
                .iter()
                .all(|c| has(m, "hopwatch_vpc_link_status", &chain(c), 1.0))
            && has(
                m,
                "hopwatch_lb_target_health",
                &[("chain", "users-default"), ("target", "127.0.0.6:80")],
                1.0,
            )
    });
    assert!(has(
        &m,
        "hopwatch_vpc_link_status",
        &[("chain", "orders-prod"), ("status", "AVAILABLE")],
        1.0
    ));
    assert!(has(
        &m,
        "hopwatch_vpc_link_status",
        &[("chain", "users-default"), ("status", "INACTIVE")],
        0.0
    ));
    let users_targets = |m: &BTreeMap<String, f64>, target: &str| {
        has(
            m,
            "hopwatch_lb_target_health",
            &[
                ("chain", "users-default"),
                ("hop", "target"),
                ("target", target),
                ("state", "healthy"),
            ],
            1.0,
        )
    };
    assert!(
        users_targets(&m, "127.0.0.5:80") && users_targets(&m, "127.0.0.6:80"),
        "{m:?}"
    );
    assert!(m
        .get("hopwatch_discovery_last_success_timestamp_seconds")
        .is_some_and(|v| *v > 0.0));
    // The users chain's target (127.0.0.5, answering) is probed and passes.
    wait_metrics(&ns, "the users target probed", 20, |m| {
        has(
            m,
            "hopwatch_probes_total",
            &[
                ("chain", "users-default"),
                ("hop", "target"),
                ("result", "ok"),
            ],
            1.0,
        ) || m.iter().any(|(k, v)| {
            k.starts_with("hopwatch_probes_total{")
                && k.contains("chain=\"users-default\"")
                && k.contains("hop=\"target\"")
                && k.contains("result=\"ok\"")
                && *v >= 1.0
        })
    });

    // A target deregistered: the load balancer's view follows within a refresh.
    let tg = moto.boto("print([g['TargetGroupArn'] for g in elb.describe_target_groups()['TargetGroups'] if g['TargetGroupName'] == 't4-app'][0])");
    moto.boto(&format!(
        "elb.deregister_targets(TargetGroupArn='{}', Targets=[{{'Id': '127.0.0.6', 'Port': 80}}])",
        tg.trim()
    ));
    wait_metrics(&ns, "the deregistered target to leave", 15, |m| {
        users_targets(m, "127.0.0.5:80") && !users_targets(m, "127.0.0.6:80")
    });
    // The rules along the paths (explain), re-judged on each walk: T1's target-sg allows only
    // the agent, not the NLB; T4's tables allow everything until a rule is revoked.
    let missing =
        |m: &BTreeMap<String, f64>, chain: &str, from: &str, port: &str, purpose: &str| {
            has(
                m,
                "hopwatch_path_rule_missing",
                &[
                    ("chain", chain),
                    ("from", from),
                    ("to", "target"),
                    ("port", port),
                    ("purpose", purpose),
                ],
                1.0,
            )
        };
    let m = wait_metrics(&ns, "T1's missing NLB rule", 15, |m| {
        missing(m, "orders-prod", "t1-nlb", "80", "traffic")
    });
    assert!(
        !m.keys()
            .any(|k| k.starts_with("hopwatch_path_rule_missing{")
                && k.contains("chain=\"users-default\"")),
        "the seed's T4 table allows every edge: {m:?}"
    );
    let f = moto.boto("print(json.dumps({g['GroupName']: g['GroupId'] for g in ec2.describe_security_groups()['SecurityGroups']}))");
    let groups: serde_json::Value = serde_json::from_str(f.trim()).expect("groups");
    moto.boto(&format!(
        "ec2.revoke_security_group_ingress(GroupId='{}', IpPermissions=[{{'IpProtocol': 'tcp', 'FromPort': 80, 'ToPort': 80, 'UserIdGroupPairs': [{{'GroupId': '{}'}}]}}])",
        groups["target-alb-sg"].as_str().unwrap_or_default(),
        groups["t4-alb-sg"].as_str().unwrap_or_default()
    ));
    let m = wait_metrics(&ns, "the revoked T4 rule, within a refresh", 15, |m| {
        missing(m, "users-default", "t4-alb", "80", "traffic")
    });
    // Every family only discovery exports carries exactly the labels the alert and dashboard
    // checks (tests/deploy.rs) take it to have.
    for (family, labels) in DISCOVERY_FAMILIES {
        let series = m
            .keys()
            .find(|k| k.starts_with(&format!("{family}{{")))
            .unwrap_or_else(|| panic!("{family} is not exported: {m:?}"));
        let names: std::collections::BTreeSet<&str> = series
            .trim_start_matches(family)
            .trim_matches(|c| c == '{' || c == '}')
            .split("\",")
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
            .collect();
        assert_eq!(
            names,
            labels.iter().copied().collect(),
            "{family}: {series}"
        );
    }

    // An API removed: its chain goes.
    let cart = moto
        .boto("print([a['ApiId'] for a in http.get_apis()['Items'] if a['Name'] == 'cart'][0])");
    moto.boto(&format!("http.delete_api(ApiId='{}')", cart.trim()));
    wait_metrics(&ns, "the removed API's chain to go", 15, |m| {
        !has(m, "hopwatch_hop_info", &chain("cart-default"), 1.0)
            && has(m, "hopwatch_hop_info", &chain("users-default"), 1.0)
    });
    // A VPC link deleted: the chain stays (its integration still names it) without a status.
    let link = moto.boto(
        "print([l['id'] for l in rest.get_vpc_links()['items'] if l['name'] == 't1-link'][0])",
    );
    moto.boto(&format!(
        "rest.delete_vpc_link(vpcLinkId='{}')",
        link.trim()
    ));
    wait_metrics(&ns, "the deleted link's status to go", 15, |m| {
        !m.keys().any(|k| {
            k.starts_with("hopwatch_vpc_link_status{") && k.contains("chain=\"orders-prod\"")
        })
    });

    // moto down: every call fails, counted; the chains stay as they were.
    let before: f64 = ns
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("hopwatch_discovery_errors_total{"))
        .map(|(_, v)| v)
        .sum();
    moto.stop();
    let m = wait_metrics(&ns, "failed walks to be counted", 30, |m| {
        m.iter()
            .filter(|(k, _)| k.starts_with("hopwatch_discovery_errors_total{"))
            .map(|(_, v)| v)
            .sum::<f64>()
            > before
    });
    for c in [
        "orders-prod",
        "billing-prod",
        "users-default",
        "catalog-default",
    ] {
        assert!(
            has(&m, "hopwatch_hop_info", &chain(c), 1.0),
            "{c} was dropped in the outage"
        );
    }
    let logs = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    assert!(logs.contains("discovery: a call failed"), "{logs}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `check` with `[discovery]`, in a namespace of its own: T1's NLB answers the agent (its name
/// mapped to a responder in the namespace, as the lab maps names), while the rules EC2 holds
/// keep the NLB's traffic from the targets (target-sg allows only the agent's group). The
/// contradiction is named, and the failing gateway's reason quotes the rule it lacks.
#[test]
fn check_names_where_the_rules_and_the_probes_disagree() {
    if !can_use_namespaces() {
        return skip(
            "check_names_where_the_rules_and_the_probes_disagree",
            "needs root and ip netns",
        );
    }
    let Some(python) = moto::python() else {
        return moto::skip("check_names_where_the_rules_and_the_probes_disagree");
    };
    let ns = Netns::new("expl");
    let moto = Moto::start(python, Some(&ns));
    let f = moto.fixture(["127.0.0.5", "127.0.0.6"]);
    let nlb = f["load_balancers"]["t1-nlb"]["dns"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    std::fs::write(
        format!("/etc/netns/{}/hosts", ns.name),
        format!("127.0.0.1 localhost\n127.0.0.7 {nlb}\n"),
    )
    .expect("hosts");
    // T1's target group has proxy protocol v2, so the target's hop sends the header.
    let _echo: Vec<Kill> = [
        &["--listen", "127.0.0.5:80", "--proxy-protocol"][..],
        &["--listen", "127.0.0.7:80"][..],
    ]
    .iter()
    .map(|args| {
        Kill(
            ns.command(BIN)
                .arg("echo")
                .args(*args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("echo"),
        )
    })
    .collect();
    let dir = std::env::temp_dir().join(format!("hopwatch-explain-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("hopwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ninterval = \"2s\"\ntimeout = \"1s\"\n\n[discovery]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\napis = [\"{}\"]\n",
            moto.endpoint,
            f["rest"]["orders"].as_str().unwrap_or_default()
        ),
    )
    .expect("config");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let doc = loop {
        let mut cmd = ns.command(BIN);
        let out = aws_env(&mut cmd)
            .args(["check", "--json", "--config"])
            .arg(&config)
            .output()
            .expect("check");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        // The echo processes may still be starting.
        let hops = &doc["chains"][0]["hops"];
        if hops[1]["result"] == "ok" && hops[2]["result"] == "ok" {
            break doc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the NLB and target never answered: {doc:#}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let chain = &doc["chains"][0];
    assert_eq!(chain["name"], "orders-prod", "{doc:#}");
    // The agent reaches the targets through the NLB; the rules do not let the NLB's own
    // traffic (what PrivateLink delivers) in.
    let contradictions = chain["contradictions"].to_string();
    assert!(
        contradictions.contains("t1-nlb passes the agent's probe")
            && contradictions.contains("target has no inbound rule for the NLB t1-nlb"),
        "{chain:#}"
    );
    assert!(
        chain["path"]
            .as_array()
            .is_some_and(|p| p.iter().any(|e| e["from"] == "t1-nlb"
                && e["to"] == "target"
                && e["purpose"] == "traffic"
                && e["allowed"] == false)),
        "{chain:#}"
    );
    // The gateway is down (its name does not resolve here) and its reason quotes what the
    // rules say of its own edge: the NLB's groups refuse PrivateLink traffic.
    assert_eq!(chain["broken_hop"], "gateway", "{chain:#}");
    assert!(
        chain["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the rules say")
                && r.contains("enforce-security-group-inbound-rules-on-private-link-traffic off")),
        "{chain:#}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A discovered config's chain by name: its hops as the loader reads them.
fn chain_of<'a>(config: &'a hopwatch::config::Config, name: &str) -> &'a hopwatch::config::Chain {
    config
        .chains
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.as_ref())
        .unwrap_or_else(|| panic!("no chain {name} in the discovered config"))
}

/// The API shapes users build (tests/moto/routes.py), each discovered as the request AWS would
/// forward: what routes.py says each API sends its backend is what the hops behind the gateway
/// are probed with; what cannot be probed is named, never dropped.
#[test]
fn discover_sends_each_route_the_request_aws_would_forward() {
    let Some(python) = moto::python() else {
        return moto::skip("discover_sends_each_route_the_request_aws_would_forward");
    };
    let moto = Moto::start(python, None);
    let r = moto.routes(["127.0.0.5", "127.0.0.6"]);
    // Two more: a route that takes only POST on the rules ALB's /prod/* path, and a REST
    // resource with a path parameter.
    let alb_listener = r["alb"]["listener"].as_str().expect("alb listener");
    let link_v2 = r["links"]["v2"].as_str().expect("v2 link");
    let nlb_dns = r["nlb"]["dns"].as_str().expect("nlb dns");
    moto.boto(&format!(
        "a = http.create_api(Name='submit', ProtocolType='HTTP')['ApiId']\n\
         i = http.create_integration(ApiId=a, IntegrationType='HTTP_PROXY', IntegrationMethod='ANY', ConnectionType='VPC_LINK', ConnectionId='{link_v2}', IntegrationUri='{alb_listener}', PayloadFormatVersion='1.0')['IntegrationId']\n\
         http.create_route(ApiId=a, RouteKey='POST /submit', Target=f'integrations/{{i}}')\n\
         http.create_stage(ApiId=a, StageName='prod', AutoDeploy=True)\n\
         p = rest.create_rest_api(name='params')['id']\n\
         root = [x for x in rest.get_resources(restApiId=p)['items'] if x['path'] == '/'][0]['id']\n\
         o = rest.create_resource(restApiId=p, parentId=root, pathPart='orders')['id']\n\
         oid = rest.create_resource(restApiId=p, parentId=o, pathPart='{{id}}')['id']\n\
         rest.put_method(restApiId=p, resourceId=oid, httpMethod='GET', authorizationType='NONE', requestParameters={{'method.request.path.id': True}})\n\
         rest.put_integration(restApiId=p, resourceId=oid, httpMethod='GET', type='HTTP_PROXY', integrationHttpMethod='GET', uri='http://{nlb_dns}/orders/{{id}}', connectionType='VPC_LINK', connectionId='{link_v1}', requestParameters={{'integration.request.path.id': 'method.request.path.id'}})\n\
         d = rest.create_deployment(restApiId=p, stageName='prod')\n\
         s = rest.create_rest_api(name='signed')['id']\n\
         root = [x for x in rest.get_resources(restApiId=s)['items'] if x['path'] == '/'][0]['id']\n\
         o = rest.create_resource(restApiId=s, parentId=root, pathPart='ledger')['id']\n\
         rest.put_method(restApiId=s, resourceId=o, httpMethod='GET', authorizationType='AWS_IAM')\n\
         rest.put_integration(restApiId=s, resourceId=o, httpMethod='GET', type='HTTP_PROXY', integrationHttpMethod='GET', uri='http://{nlb_dns}/ledger', connectionType='VPC_LINK', connectionId='{link_v1}')\n\
         rest.create_deployment(restApiId=s, stageName='prod')\n\
         j = http.create_api(Name='tokens', ProtocolType='HTTP')['ApiId']\n\
         au = http.create_authorizer(ApiId=j, AuthorizerType='JWT', Name='pool', IdentitySource=['$request.header.Authorization'], JwtConfiguration={{'Audience': ['client-7f3a'], 'Issuer': 'https://cognito-idp.us-east-1.amazonaws.com/us-east-1_pool'}})['AuthorizerId']\n\
         i = http.create_integration(ApiId=j, IntegrationType='HTTP_PROXY', IntegrationMethod='ANY', ConnectionType='VPC_LINK', ConnectionId='{link_v2}', IntegrationUri='{alb_listener}', PayloadFormatVersion='1.0')['IntegrationId']\n\
         http.create_route(ApiId=j, RouteKey='GET /prod/orders', Target=f'integrations/{{i}}', AuthorizationType='JWT', AuthorizerId=au, AuthorizationScopes=['orders/read'])\n\
         http.create_stage(ApiId=j, StageName='$default', AutoDeploy=True)\n",
        link_v1 = r["links"]["v1"].as_str().expect("v1 link"),
    ));

    let (code, text, stderr) = discover(&moto, &[]);
    let config = match hopwatch::config::load_str("discovered.toml", &text, &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("the discovered config does not load:\n{e}\n{text}"),
    };
    let urls: Vec<&str> = config
        .chains
        .iter()
        .flat_map(|c| c.hops.iter().map(|h| h.url.text.as_str()))
        .collect();
    assert!(
        urls.iter().all(|u| !u.contains('{') && !u.contains("%7B")),
        "a written URL holds a template: {urls:?}"
    );
    assert!(!text.contains("vpce.amazonaws.com"), "{text}");

    // Every API whose request reaches a backend, per routes.py: the gateway hop is entered at
    // the request's host and path, the load balancer and the target are asked the path the
    // backend receives.
    for (key, api) in r["apis"].as_object().expect("apis") {
        let stage = api["stage"].as_str().expect("stage");
        let name = format!(
            "{}-{}",
            api["name"].as_str().unwrap_or(key),
            if stage == "$default" {
                "default"
            } else {
                stage
            }
        );
        let forwarded = api["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .find(|q| q.get("backend").is_some() && q.get("answered_by").is_none());
        let Some(q) = forwarded else { continue };
        if q["method"] != "GET" {
            continue;
        }
        let chain = chain_of(&config, &name);
        let gateway = &chain.hops[0];
        assert_eq!(
            gateway.url.text,
            format!(
                "https://{}{}",
                q["host"].as_str().unwrap(),
                q["path"].as_str().unwrap()
            ),
            "{name}: the gateway is entered where callers enter it\n{text}"
        );
        let backend = &q["backend"];
        let lb = &chain.hops[1];
        let port = backend["port"].as_u64().unwrap_or(80);
        let scheme = backend["scheme"].as_str().unwrap_or("http");
        assert_eq!(
            lb.url.text,
            format!(
                "{scheme}://{}:{port}{}",
                backend["host"].as_str().unwrap(),
                backend["path"].as_str().unwrap()
            ),
            "{name}: the load balancer gets the request the gateway sends\n{text}"
        );
        assert_eq!(
            lb.tls_server_name.as_deref(),
            backend["sni"].as_str(),
            "{name}: the TLS name the integration verifies\n{text}"
        );
        let target = chain.hops.last().expect("target");
        assert!(
            target.url.text.ends_with(backend["path"].as_str().unwrap()),
            "{name}: the target gets the path the gateway sends: {}\n{text}",
            target.url.text
        );
    }

    // The proxy-only API: never its root, and why the child was chosen.
    let proxy = chain_of(&config, "proxy-prod");
    assert!(!proxy.hops[0].url.text.ends_with("/prod/"), "{text}");
    assert!(text.contains("{proxy+} is given \"health\""), "{text}");
    // The ALB routes by rule: the rule that takes the request is named.
    let rules_rule = r["apis"]["rules"]["requests"][0]["backend"]["rule"]
        .as_str()
        .expect("rule arn");
    assert!(
        text.contains(&format!("listener rule {rules_rule}")),
        "{text}"
    );
    // Private API over its endpoint's alias; a custom domain where the default endpoint is off.
    assert!(text.contains("vpcEndpointIds"), "{text}");
    assert!(
        text.contains("callers use the custom domain pay.example.com"),
        "{text}"
    );
    // Stage variables were resolved: the chain exists with the resolved backend.
    assert!(text.contains("stageVariables"), "{text}");

    // Authorized as callers are: an AWS_IAM method is signed; a JWT route gets the oauth2
    // block to fill in, its scopes and the authorizer's audience as client id.
    let signed = chain_of(&config, "signed-prod");
    assert_eq!(
        signed.hops[0].auth,
        Some(hopwatch::config::Auth::SigV4(hopwatch::config::SigV4 {
            region: "us-east-1".into(),
            service: "execute-api".into(),
            role_arn: None,
            external_id: None,
        })),
        "{text}"
    );
    assert!(
        text.contains("execute-api:Invoke on arn:aws:execute-api:us-east-1:123456789012:"),
        "{text}"
    );
    assert!(chain_of(&config, "tokens-default").hops[0].auth.is_none());
    assert!(
        text.contains("client_id = \"client-7f3a\"") && text.contains("scopes = [\"orders/read\"]"),
        "{text}"
    );

    // Named and not written as a chain: the POST route of post-only ends in the ALB's fixed
    // 404 (its stage sends no /prod prefix), a path parameter without a value.
    assert_eq!(
        code, 1,
        "integrations not probed must fail discover:\n{stderr}"
    );
    assert!(
        stderr.contains("not probed: post-only") && stderr.contains("fixed 404"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not probed: params") && stderr.contains("--path-param id=VALUE"),
        "{stderr}"
    );
    // A POST-only route is written commented out until opted into, and not loaded.
    assert!(
        stderr.contains("written commented out: submit-prod"),
        "{stderr}"
    );
    assert!(config.chains.iter().all(|c| c.name != "submit-prod"));
    assert!(text.contains("# NOT RUN: "), "{text}");
    assert!(text.contains("# name = \"submit-prod\""), "{text}");

    // Opted in: POST with a body, at every hop; the parameter filled.
    let (_, text, stderr) = discover(&moto, &["--methods", "POST", "--path-param", "id=42"]);
    let config = match hopwatch::config::load_str("discovered.toml", &text, &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("the discovered config does not load:\n{e}\n{text}\n{stderr}"),
    };
    let submit = chain_of(&config, "submit-prod");
    for h in &submit.hops {
        assert_eq!(h.method, http::Method::POST, "{}: {text}", h.name);
        assert!(h.body.is_some(), "{}: a body is sent\n{text}", h.name);
    }
    assert!(submit.hops[1].url.text.ends_with("/prod/submit"), "{text}");
    let params = chain_of(&config, "params-prod");
    assert!(
        params.hops[0].url.text.ends_with("/prod/orders/42"),
        "{text}"
    );
    assert!(params.hops[1].url.text.ends_with("/orders/42"), "{text}");
    assert!(!stderr.contains("not probed: params"), "{stderr}");
}

//! The chain lab's scenarios: each reference topology (T1, T2, T4 in `tests/lab/`) on real
//! HAProxy, real nftables security groups and `hopwatch echo` targets in network namespaces,
//! broken one way at a time. Every scenario is judged twice, from `hopwatch check --json` and
//! from the running agent's `/metrics` as a real Prometheus scraped it, and must reach its
//! verdict within the configured rounds. Each topology prints a table and writes it to
//! `target/lab/<topology>.txt`.

#[path = "lab/mod.rs"]
mod lab;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lab::{second, Faults, Lab, DEBOUNCE, INTERVAL_MS};

/// What a scenario must end in. Everything not named must be clean.
#[derive(Debug, Clone, Default)]
struct Expect {
    up: bool,
    broken: Option<&'static str>,
    /// A phrase the reason must contain.
    reason: Option<&'static str>,
    blind: Vec<&'static str>,
    health_down: Vec<&'static str>,
    /// (hop, node) whose address probe fails.
    address_down: Vec<(&'static str, &'static str)>,
    unexpected: Vec<&'static str>,
    /// (hop, node): the TCP peer the target saw through that hop.
    peers: Vec<(&'static str, &'static str)>,
    /// (hop, ms): the hop's latency is at least this.
    slow: Option<(&'static str, u64)>,
    /// (hop, node-link): the caller in the PROXY v2 header the target saw.
    proxy_src: Option<(&'static str, &'static str)>,
    /// The reason code of a down chain (`hopwatch_chain_broken_reason_info{code}`,
    /// `reason_code` in check --json).
    code: Option<&'static str>,
    /// (hop, result, phrase): what check --json says of one hop's probe (its result class and
    /// a phrase of its detail).
    hop_result: Option<(&'static str, &'static str, &'static str)>,
    /// (hop, status): the HTTP status check --json says the hop's probe got, and every
    /// address of a `per_address` hop.
    hop_status: Vec<(&'static str, u16)>,
    /// (url, path): a GET from the agent's namespace reaches the echo at the end of the chain
    /// as a request for `path` (what the gateway forwards).
    path_seen: Option<(&'static str, &'static str)>,
    /// (hop, url, code): check --json with that hop probed at `url` instead blames it with
    /// this reason code.
    elsewhere: Option<(&'static str, &'static str, &'static str)>,
    /// (url, auth, code): check --json with the gateway probed at `url` (an AWS_IAM route of
    /// the stand-in) and the hop key `auth` (none: unsigned) is up (`None`) or down at the
    /// gateway with that reason code. One round each, no agent reload: a few seconds in all.
    signed: Vec<(&'static str, Option<&'static str>, Option<&'static str>)>,
}

struct Scenario {
    name: &'static str,
    faults: Faults,
    expect: Expect,
}

fn up() -> Expect {
    Expect {
        up: true,
        ..Expect::default()
    }
}

fn down(broken: &'static str, code: &'static str, reason: &'static str) -> Expect {
    Expect {
        up: false,
        broken: Some(broken),
        code: Some(code),
        reason: Some(reason),
        ..Expect::default()
    }
}

fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = series.find(&key)? + key.len();
    let len = series[start..].find('"')?;
    Some(&series[start..start + len])
}

/// The verdict as one comparable line: `up` or `down at HOP`, then every other signal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Verdict {
    up: Option<bool>,
    broken: BTreeSet<String>,
    code: BTreeSet<String>,
    blind: BTreeSet<String>,
    health_down: BTreeSet<String>,
    address_down: BTreeSet<String>,
    unexpected: BTreeSet<String>,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.up {
            None => write!(f, "no data")?,
            Some(true) => write!(f, "up")?,
            Some(false) => write!(
                f,
                "down at {} [{}]",
                self.broken.iter().cloned().collect::<Vec<_>>().join(","),
                self.code.iter().cloned().collect::<Vec<_>>().join(",")
            )?,
        }
        for (what, set) in [
            ("blind spot", &self.blind),
            ("health check down", &self.health_down),
            ("address down", &self.address_down),
            ("unexpected source", &self.unexpected),
        ] {
            if !set.is_empty() {
                write!(
                    f,
                    "; {what} {}",
                    set.iter().cloned().collect::<Vec<_>>().join(",")
                )?;
            }
        }
        Ok(())
    }
}

impl Expect {
    fn verdict(&self, lab: &Lab) -> Verdict {
        let addr = |node: &str| lab.topo.nodes[node].addr.to_string();
        Verdict {
            up: Some(self.up),
            broken: self.broken.iter().map(|s| s.to_string()).collect(),
            code: self.code.iter().map(|s| s.to_string()).collect(),
            blind: self.blind.iter().map(|s| s.to_string()).collect(),
            health_down: self.health_down.iter().map(|s| s.to_string()).collect(),
            address_down: self
                .address_down
                .iter()
                .map(|(h, n)| format!("{h}/{}", addr(n)))
                .collect(),
            unexpected: self.unexpected.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The verdict read from the agent's own `/metrics`.
fn from_metrics(metrics: &BTreeMap<String, f64>) -> Verdict {
    let mut v = Verdict::default();
    for (series, value) in metrics {
        let hop = || label(series, "hop").unwrap_or("").to_string();
        if series.starts_with("hopwatch_chain_up{") {
            v.up = Some(*value == 1.0);
        } else if series.starts_with("hopwatch_chain_broken_hop{") && *value == 1.0 {
            v.broken.insert(hop());
        } else if series.starts_with("hopwatch_chain_broken_reason_info{") && *value == 1.0 {
            v.code
                .insert(label(series, "code").unwrap_or("").to_string());
        } else if series.starts_with("hopwatch_hop_blind_spot{") && *value == 1.0 {
            v.blind.insert(hop());
        } else if series.starts_with("hopwatch_health_check_up{") && *value == 0.0 {
            v.health_down.insert(hop());
        } else if series.starts_with("hopwatch_hop_address_up{") && *value == 0.0 {
            v.address_down.insert(format!(
                "{}/{}",
                hop(),
                label(series, "address").unwrap_or("")
            ));
        } else if series.starts_with("hopwatch_source_unexpected{") && *value == 1.0 {
            v.unexpected.insert(hop());
        }
    }
    v
}

/// The verdict as Prometheus has it from its scrapes.
fn from_prometheus(lab: &Lab) -> Verdict {
    let hops = |q: &str, with: &dyn Fn(&BTreeMap<String, String>) -> String| -> BTreeSet<String> {
        lab.promql(q).iter().map(|(l, _)| with(l)).collect()
    };
    let hop = |l: &BTreeMap<String, String>| l.get("hop").cloned().unwrap_or_default();
    Verdict {
        up: lab
            .promql("hopwatch_chain_up")
            .first()
            .map(|(_, v)| *v == 1.0),
        broken: hops("hopwatch_chain_broken_hop == 1", &hop),
        code: hops("hopwatch_chain_broken_reason_info == 1", &|l| {
            l.get("code").cloned().unwrap_or_default()
        }),
        blind: hops("hopwatch_hop_blind_spot == 1", &hop),
        health_down: hops("hopwatch_health_check_up == 0", &hop),
        address_down: hops("hopwatch_hop_address_up == 0", &|l| {
            format!(
                "{}/{}",
                hop(l),
                l.get("address").cloned().unwrap_or_default()
            )
        }),
        unexpected: hops("hopwatch_source_unexpected == 1", &hop),
    }
}

struct Row {
    scenario: &'static str,
    expected: String,
    observed: String,
    rounds: u64,
}

/// Brings up `topology`, runs every scenario from a healthy lab, and returns the table.
fn run(topology: &str, scenarios: Vec<Scenario>) {
    if let Some(why) = lab::missing_tools() {
        if std::env::var_os("HOPWATCH_REQUIRE_NETNS").is_some() {
            panic!("the lab cannot run: {why} (HOPWATCH_REQUIRE_NETNS is set)");
        }
        eprintln!("SKIPPED lab {topology}: {why}");
        return;
    }
    let mut lab = Lab::up(topology);
    let healthy = up().verdict(&lab);
    let settle = Duration::from_secs(30);
    let got = lab.wait(settle, || {
        (from_metrics(&lab.metrics()) == healthy).then_some(())
    });
    assert!(
        got.is_some(),
        "{topology} never became healthy: {}\n{}",
        from_metrics(&lab.metrics()),
        lab.logs()
    );

    let mut rows = Vec::new();
    for s in scenarios {
        let start = lab.rounds();
        lab.apply(&s.faults);
        let expected = s.expect.verdict(&lab);
        // A fault whose verdict looks healthy (slow targets) must be judged on rounds made
        // after the parts restarted, not on the metrics from before it.
        let min_rounds = if expected == healthy { DEBOUNCE + 1 } else { 1 };
        let reached = lab.wait(Duration::from_secs(20), || {
            let v = from_metrics(&lab.metrics());
            (v == expected && lab.rounds() >= start + min_rounds).then_some(v)
        });
        let rounds = lab.rounds().saturating_sub(start);
        let observed = reached
            .clone()
            .unwrap_or_else(|| from_metrics(&lab.metrics()));
        rows.push(Row {
            scenario: s.name,
            expected: expected.to_string(),
            observed: observed.to_string(),
            rounds,
        });
        let table = render(topology, &rows);
        assert!(
            reached.is_some(),
            "{topology}/{}: expected {expected}, the agent says {observed}\n{table}\n{}",
            s.name,
            lab.logs()
        );
        // Counting the round that was in flight when the fault landed.
        assert!(
            rounds <= DEBOUNCE + 2,
            "{topology}/{}: {rounds} rounds to detect, more than down_after ({DEBOUNCE}) + 2\n{table}",
            s.name
        );

        // The same verdict from Prometheus's own scrapes of the agent.
        let prom = lab.wait(Duration::from_secs(15), || {
            (from_prometheus(&lab) == expected).then_some(())
        });
        assert!(
            prom.is_some(),
            "{topology}/{}: Prometheus says {}, expected {expected}",
            s.name,
            from_prometheus(&lab)
        );

        // And from one `check --json` round: verdict, blamed hop, reason, sources.
        let doc = lab.check();
        let chain = &doc["chains"][0];
        assert_eq!(
            chain["up"], s.expect.up,
            "{topology}/{}: check --json {chain:#}",
            s.name
        );
        assert_eq!(
            chain["broken_hop"].as_str(),
            s.expect.broken,
            "{topology}/{}: {chain:#}",
            s.name
        );
        assert_eq!(
            chain["reason_code"].as_str(),
            s.expect.code,
            "{topology}/{}: {chain:#}",
            s.name
        );
        if let Some(phrase) = s.expect.reason {
            let reason = chain["reason"].as_str().unwrap_or("");
            assert!(
                reason.contains(phrase),
                "{topology}/{}: reason {reason:?} lacks {phrase:?}",
                s.name
            );
        }
        let hop = |name: &str| {
            chain["hops"]
                .as_array()
                .and_then(|hops| hops.iter().find(|h| h["name"] == name))
                .cloned()
                .unwrap_or_default()
        };
        for (h, node) in &s.expect.peers {
            let want = if s.faults.new_source.iter().any(|n| n == node) {
                second(lab.topo.nodes[*node].addr).to_string()
            } else {
                lab.topo.nodes[*node].addr.to_string()
            };
            assert_eq!(
                hop(h)["source"]["peer"],
                want,
                "{topology}/{}: what the target saw through {h}",
                s.name
            );
            let info = format!("hopwatch_target_source_info{{hop=\"{h}\",source_ip=\"{want}\"}}");
            let seen = lab.wait(Duration::from_secs(10), || {
                (!lab.promql(&info).is_empty()).then_some(())
            });
            assert!(
                seen.is_some(),
                "{topology}/{}: Prometheus has no {info}",
                s.name
            );
        }
        if let Some((h, result, phrase)) = s.expect.hop_result {
            let probe = hop(h);
            assert_eq!(probe["result"], result, "{topology}/{}: {probe:#}", s.name);
            let detail = probe["detail"].as_str().unwrap_or("");
            assert!(
                detail.contains(phrase),
                "{topology}/{}: {h}'s detail {detail:?} lacks {phrase:?}",
                s.name
            );
        }
        for (h, status) in &s.expect.hop_status {
            let probe = hop(h);
            assert_eq!(probe["status"], *status, "{topology}/{}: {probe:#}", s.name);
            for a in probe["addresses"].as_array().into_iter().flatten() {
                assert_eq!(a["status"], *status, "{topology}/{}: {h}: {a:#}", s.name);
            }
        }
        if let Some((url, path)) = s.expect.path_seen {
            let body = lab.get(url).unwrap_or_default();
            let echo: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            assert_eq!(
                echo["path"], path,
                "{topology}/{}: GET {url} reached the target as {body:?}",
                s.name
            );
        }
        if let Some((h, url, code)) = s.expect.elsewhere {
            let mut faults = s.faults.clone();
            faults.agent_urls.retain(|(hop, _)| hop != h);
            faults.agent_urls.push((h.to_string(), url.to_string()));
            let doc = lab.check_config(&lab.agent_config_for(&faults));
            let chain = &doc["chains"][0];
            assert_eq!(
                (
                    chain["up"].as_bool(),
                    chain["broken_hop"].as_str(),
                    chain["reason_code"].as_str()
                ),
                (Some(false), Some(h), Some(code)),
                "{topology}/{}: {h} probed at {url}: {chain:#}",
                s.name
            );
        }
        let signed_checks = std::time::Instant::now();
        for (url, auth, code) in &s.expect.signed {
            let mut faults = s.faults.clone();
            faults
                .agent_urls
                .push(("gateway".to_string(), url.to_string()));
            if let Some(auth) = auth {
                faults
                    .agent_extra
                    .push(("gateway".to_string(), auth.to_string()));
            }
            let doc = lab.check_config(&lab.agent_config_for(&faults));
            let chain = &doc["chains"][0];
            let gateway = &chain["hops"][0];
            match code {
                None => {
                    assert_eq!(
                        chain["up"], true,
                        "{topology}/{}: {auth:?}: {chain:#}",
                        s.name
                    );
                    // Verified and forwarded onto the link: the target's echo answered.
                    assert!(
                        gateway["source"]["peer"].is_string(),
                        "{topology}/{}: the signed request reached a target: {gateway:#}",
                        s.name
                    );
                }
                Some(code) => assert_eq!(
                    (chain["broken_hop"].as_str(), chain["reason_code"].as_str()),
                    (Some("gateway"), Some(*code)),
                    "{topology}/{}: {auth:?}: {chain:#}",
                    s.name
                ),
            }
        }
        if !s.expect.signed.is_empty() {
            println!(
                "{topology}/{}: {} checks of the AWS_IAM route in {:?}",
                s.name,
                s.expect.signed.len(),
                signed_checks.elapsed()
            );
        }
        if let Some((h, link)) = s.expect.proxy_src {
            let node = link.trim_end_matches("-link");
            let want = lab.topo.nodes[node]
                .link
                .map(|a| a.to_string())
                .unwrap_or_default();
            let src = hop(h)["source"]["proxy_protocol"]["src"]
                .as_str()
                .unwrap_or("")
                .to_string();
            assert!(
                src.starts_with(&format!("{want}:")),
                "{topology}/{}: PROXY v2 source {src:?}, want {want}",
                s.name
            );
        }
        if let Some((h, ms)) = s.expect.slow {
            let took = hop(h)["duration_ms"].as_f64().unwrap_or(0.0);
            assert!(
                took >= ms as f64,
                "{topology}/{}: {h} took {took} ms, the targets add {ms}",
                s.name
            );
            let q = format!(
                "rate(hopwatch_probe_latency_seconds_sum{{hop=\"{h}\"}}[4s]) / rate(hopwatch_probe_latency_seconds_count{{hop=\"{h}\"}}[4s])"
            );
            let slow = lab.wait(Duration::from_secs(15), || {
                lab.promql(&q)
                    .first()
                    .filter(|(_, v)| *v >= ms as f64 / 1000.0)
                    .map(|_| ())
            });
            assert!(
                slow.is_some(),
                "{topology}/{}: Prometheus never saw {h} at {ms} ms: {:?}",
                s.name,
                lab.promql(&q)
            );
        }

        // Back to healthy before the next scenario.
        let start = lab.rounds();
        lab.apply(&Faults::default());
        let back = lab.wait(settle, || {
            (from_metrics(&lab.metrics()) == healthy && lab.rounds() > start + DEBOUNCE)
                .then_some(())
        });
        assert!(
            back.is_some(),
            "{topology}: not healthy again after {}: {}",
            s.name,
            from_metrics(&lab.metrics())
        );
    }
    let table = render(topology, &rows);
    println!("{table}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lab");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{topology}.txt")), &table);
}

fn render(topology: &str, rows: &[Row]) -> String {
    let w = |f: &dyn Fn(&Row) -> usize, title: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let (a, b, c) = (
        w(&|r| r.scenario.len(), "scenario"),
        w(&|r| r.expected.len(), "expected verdict"),
        w(&|r| r.observed.len(), "observed verdict"),
    );
    let mut out = format!(
        "lab {topology} (rounds of {INTERVAL_MS} ms, down_after {DEBOUNCE})\n{:a$}  {:b$}  {:c$}  rounds to detect\n",
        "scenario", "expected verdict", "observed verdict"
    );
    for r in rows {
        out.push_str(&format!(
            "{:a$}  {:b$}  {:c$}  {}\n",
            r.scenario, r.expected, r.observed, r.rounds
        ));
    }
    out
}

fn f() -> Faults {
    Faults::default()
}

fn s(text: &str) -> String {
    text.to_string()
}

// Scenarios every topology shares.

/// target-b's `hopwatch echo` stopped: the load balancer routes around it, per_address names it.
fn one_target_down() -> Scenario {
    Scenario {
        name: "one target down",
        faults: Faults {
            stopped: vec![s("target-b")],
            ..f()
        },
        expect: Expect {
            address_down: vec![("target", "target-b")],
            ..up()
        },
    }
}

/// Every target stopped; `also_down` are the other per-address probes that fail with them.
fn all_targets_down(also_down: &[(&'static str, &'static str)]) -> Scenario {
    let mut address_down = also_down.to_vec();
    address_down.extend([("target", "target-a"), ("target", "target-b")]);
    Scenario {
        name: "all targets down",
        faults: Faults {
            stopped: vec![s("target-a"), s("target-b")],
            ..f()
        },
        expect: Expect {
            health_down: vec!["target"],
            address_down,
            ..down("target", "target_down", "nothing listening on port 80")
        },
    }
}

fn targets_slow() -> Scenario {
    Scenario {
        name: "targets slow (250 ms)",
        faults: Faults {
            target_delay_ms: 250,
            ..f()
        },
        expect: Expect {
            slow: Some(("target", 250)),
            ..up()
        },
    }
}

/// API Gateway answering on its own (HAProxy's `http-request return`, with API Gateway's
/// status, x-amzn-ErrorType and body): nothing behind the gateway is asked, so it is blamed,
/// never the link (docs.aws.amazon.com/apigateway/latest/developerguide/
/// supported-gateway-response-types.html).
fn gateway_says(
    name: &'static str,
    status: u16,
    error_type: Option<&str>,
    message: &str,
    code: &'static str,
    phrase: &'static str,
) -> Scenario {
    Scenario {
        name,
        faults: Faults {
            gateway_answer: Some((status, error_type.map(s), s(message))),
            ..f()
        },
        expect: down("gateway", code, phrase),
    }
}

/// The application behind the chain answers `status` itself, to everyone: API Gateway passes
/// it through (HTTP_PROXY, …/api-gateway-set-up-simple-proxy.html), so it is never the
/// gateway's refusal nor the link. Every hop behind answers the same when probed directly: the
/// deepest one, the target, is blamed. `address_down`: the per-address hops, which fail too.
fn app_says(
    name: &'static str,
    status: u16,
    address_down: &[(&'static str, &'static str)],
) -> Scenario {
    Scenario {
        name,
        faults: Faults {
            app_status: Some((status, None)),
            ..f()
        },
        expect: Expect {
            address_down: address_down.to_vec(),
            ..down(
                "target",
                "target_error",
                "the target itself answers wrongly",
            )
        },
    }
}

/// The application fails only on the path the gateway sends (`prefix`): the hops behind pass
/// on their own paths, the gateway's forwarded request gets the application's answer.
fn app_fails_on_the_gateway_path(name: &'static str, prefix: &str) -> Scenario {
    Scenario {
        name,
        faults: Faults {
            app_status: Some((500, Some(s(prefix)))),
            ..f()
        },
        expect: down(
            "gateway",
            "backend_status",
            "the integration answered 500 to the request the gateway forwarded",
        ),
    }
}

/// A REST API that is one greedy resource, `ANY /{proxy+}` on stage prod integrated with
/// `http://nlb.lab/api/{proxy}` (no method at the stage root), probed along the chain
/// `hopwatch discover` writes for it: the gateway at a child path (`health`, never the root),
/// the hops behind at the path the gateway sends for it (`/api/health`: a v1 link adds no
/// stage).
fn proxy_api() -> Faults {
    Faults {
        proxy_resource: Some(s("/api/{proxy}")),
        agent_urls: vec![
            (s("gateway"), s("http://api.lab/prod/health")),
            (s("nlb"), s("http://nlb.lab/api/health")),
            (s("target"), s("http://targets.lab/api/health")),
        ],
        ..f()
    }
}

/// The NLB node of AZ b stopped (T1, T2).
fn one_nlb_node_down() -> Scenario {
    Scenario {
        name: "one NLB node (AZ b) down",
        faults: Faults {
            stopped: vec![s("nlb-b")],
            ..f()
        },
        expect: Expect {
            address_down: vec![("nlb", "nlb-b")],
            ..up()
        },
    }
}

#[test]
fn t2_rest_nlb_alb() {
    run(
        "t2",
        vec![
            Scenario {
                name: "healthy",
                faults: f(),
                expect: Expect {
                    // Through the NLB and the ALB the target sees an ALB node; direct, the agent.
                    peers: vec![
                        ("gateway", "alb"),
                        ("nlb", "alb"),
                        ("alb", "alb"),
                        ("target", "agent"),
                    ],
                    ..up()
                },
            },
            Scenario {
                name: "alb-sg lacks the NLB on 80",
                faults: Faults {
                    removed_sources: vec![
                        (s("alb-sg"), s("traffic"), s("nlb-a")),
                        (s("alb-sg"), s("traffic"), s("nlb-b")),
                    ],
                    ..f()
                },
                expect: Expect {
                    // Each NLB node, probed on its own, fails the same way.
                    address_down: vec![("nlb", "nlb-a"), ("nlb", "nlb-b")],
                    ..down("nlb", "sg_drop", "alb-sg probably lacks the NLB addresses")
                },
            },
            Scenario {
                name: "alb-sg lacks health port 8080",
                faults: Faults {
                    removed_rules: vec![(s("alb-sg"), s("health"))],
                    ..f()
                },
                expect: Expect {
                    health_down: vec!["alb"],
                    ..up()
                },
            },
            one_target_down(),
            all_targets_down(&[("nlb", "nlb-a"), ("nlb", "nlb-b")]),
            targets_slow(),
            Scenario {
                name: "VPC link down (gateway -> NLB)",
                faults: Faults {
                    link_down: true,
                    ..f()
                },
                expect: down("gateway", "link_failed", "VPC link or endpoint service"),
            },
            one_nlb_node_down(),
            Scenario {
                name: "agent blocked from the ALB",
                faults: Faults {
                    removed_sources: vec![(s("alb-sg"), s("traffic"), s("agent"))],
                    ..f()
                },
                expect: Expect {
                    blind: vec!["alb"],
                    ..up()
                },
            },
            Scenario {
                name: "ALB connects from an unexpected address",
                faults: Faults {
                    new_source: vec![s("alb")],
                    ..f()
                },
                expect: Expect {
                    unexpected: vec!["alb", "gateway", "nlb"],
                    peers: vec![("alb", "alb")],
                    ..up()
                },
            },
            Scenario {
                // routing.http.xff_client_port.enabled: entries are ip:port, still the NLB.
                name: "ALB appends ip:port to X-Forwarded-For",
                faults: Faults {
                    xff_client_port: true,
                    ..f()
                },
                expect: Expect {
                    peers: vec![("gateway", "alb")],
                    ..up()
                },
            },
            gateway_says(
                "gateway throttles (429 TooManyRequestsException)",
                429,
                Some("TooManyRequestsException"),
                "Too Many Requests",
                "gateway_throttled",
                "throttled",
            ),
            gateway_says(
                "gateway refuses (403 ForbiddenException: WAF, API key, policy)",
                403,
                Some("ForbiddenException"),
                "Forbidden",
                "gateway_refused",
                "an AWS WAF rule, a missing or invalid API key, or the resource policy",
            ),
            gateway_says(
                "authorizer fails (500 AuthorizerConfigurationException)",
                500,
                Some("AuthorizerConfigurationException"),
                "Internal server error",
                "gateway_authorizer_failed",
                "the authorizer failed",
            ),
            app_says(
                "the application answers 403 to everyone (passed through)",
                403,
                &[
                    ("nlb", "nlb-a"),
                    ("nlb", "nlb-b"),
                    ("target", "target-a"),
                    ("target", "target-b"),
                ],
            ),
            // A REST stage's resource /orders maps onto the integration URI's /orders.
            app_fails_on_the_gateway_path(
                "the application fails only on /orders, the path the gateway sends",
                "/orders",
            ),
        ],
    );
}

#[test]
fn t1_rest_nlb() {
    run(
        "t1",
        vec![
            Scenario {
                name: "healthy",
                faults: f(),
                expect: Expect {
                    // Behind the NLB the target's peer is an NLB node (which one varies), and
                    // the PROXY v2 header names the VPC link endpoint as the caller.
                    peers: vec![("target", "agent")],
                    proxy_src: Some(("gateway", "gateway-link")),
                    // The AWS_IAM route: signed, it passes the verifier and the link; unsigned,
                    // API Gateway's Missing Authentication Token; signed for another region,
                    // InvalidSignatureException.
                    signed: vec![
                        (
                            "http://api.lab/prod/signed/orders?page=1",
                            Some(r#"auth = { sigv4 = { region = "eu-west-1" } }"#),
                            None,
                        ),
                        (
                            "http://api.lab/prod/signed/orders",
                            None,
                            Some("gateway_no_route"),
                        ),
                        (
                            "http://api.lab/prod/signed/orders",
                            Some(r#"auth = { sigv4 = { region = "us-east-1" } }"#),
                            Some("gateway_refused"),
                        ),
                    ],
                    ..up()
                },
            },
            Scenario {
                name: "target-sg lacks the NLB on 80",
                faults: Faults {
                    removed_sources: vec![
                        (s("target-a-sg"), s("traffic"), s("nlb-a")),
                        (s("target-a-sg"), s("traffic"), s("nlb-b")),
                        (s("target-b-sg"), s("traffic"), s("nlb-a")),
                        (s("target-b-sg"), s("traffic"), s("nlb-b")),
                    ],
                    ..f()
                },
                expect: Expect {
                    address_down: vec![("nlb", "nlb-a"), ("nlb", "nlb-b")],
                    ..down(
                        "nlb",
                        "sg_drop",
                        "target-sg probably lacks the NLB addresses",
                    )
                },
            },
            Scenario {
                name: "target-sg lacks health port 8080",
                faults: Faults {
                    removed_rules: vec![
                        (s("target-a-sg"), s("health")),
                        (s("target-b-sg"), s("health")),
                    ],
                    ..f()
                },
                expect: Expect {
                    health_down: vec!["target"],
                    ..up()
                },
            },
            one_target_down(),
            all_targets_down(&[("nlb", "nlb-a"), ("nlb", "nlb-b")]),
            targets_slow(),
            Scenario {
                name: "VPC link down (gateway -> NLB)",
                faults: Faults {
                    link_down: true,
                    ..f()
                },
                expect: down("gateway", "link_failed", "VPC link or endpoint service"),
            },
            one_nlb_node_down(),
            Scenario {
                name: "agent blocked from the targets",
                faults: Faults {
                    removed_sources: vec![
                        (s("target-a-sg"), s("traffic"), s("agent")),
                        (s("target-b-sg"), s("traffic"), s("agent")),
                    ],
                    ..f()
                },
                expect: Expect {
                    blind: vec!["target"],
                    address_down: vec![("target", "target-a"), ("target", "target-b")],
                    ..up()
                },
            },
            Scenario {
                name: "NLB connects from unexpected addresses",
                faults: Faults {
                    new_source: vec![s("nlb-a"), s("nlb-b")],
                    ..f()
                },
                expect: Expect {
                    unexpected: vec!["gateway"],
                    ..up()
                },
            },
            Scenario {
                // The targets close connections without a PROXY header: the agent's direct
                // probes (and its health-check probes) fail, the NLB's traffic is served.
                name: "agent sends no PROXY header to the targets",
                faults: Faults {
                    agent_without: vec![(s("target"), s("send_proxy_protocol"))],
                    ..f()
                },
                expect: Expect {
                    blind: vec!["target"],
                    health_down: vec!["target"],
                    address_down: vec![("target", "target-a"), ("target", "target-b")],
                    hop_result: Some(("target", "reset", "")),
                    ..up()
                },
            },
            app_says(
                "the application answers 401 to everyone (passed through)",
                401,
                &[
                    ("nlb", "nlb-a"),
                    ("nlb", "nlb-b"),
                    ("target", "target-a"),
                    ("target", "target-b"),
                ],
            ),
            app_says(
                "the application answers 429 to everyone (passed through)",
                429,
                &[
                    ("nlb", "nlb-a"),
                    ("nlb", "nlb-b"),
                    ("target", "target-a"),
                    ("target", "target-b"),
                ],
            ),
            Scenario {
                name: "proxy API (/{proxy+} -> /api/{proxy}), the chain discover writes",
                faults: proxy_api(),
                expect: Expect {
                    path_seen: Some(("http://api.lab/prod/health", "/api/health")),
                    // The stage root has no method: the gateway's own 403, not the app's.
                    elsewhere: Some(("gateway", "http://api.lab/prod/", "gateway_no_route")),
                    ..up()
                },
            },
            Scenario {
                // Every hop probes the path the gateway sends: the application's 500 there is
                // seen through the gateway, the NLB and directly, and the target is blamed.
                name: "proxy API: the application fails on /api/health, the mapped path",
                faults: Faults {
                    app_status: Some((500, Some(s("/api/health")))),
                    ..proxy_api()
                },
                expect: Expect {
                    address_down: vec![
                        ("nlb", "nlb-a"),
                        ("nlb", "nlb-b"),
                        ("target", "target-a"),
                        ("target", "target-b"),
                    ],
                    hop_status: vec![("gateway", 500), ("nlb", 500), ("target", 500)],
                    ..down(
                        "target",
                        "target_error",
                        "the target itself answers wrongly",
                    )
                },
            },
        ],
    );
}

#[test]
fn t1c_rest_nlb_preserving_client_ips() {
    run(
        "t1c",
        vec![
            Scenario {
                name: "healthy",
                faults: f(),
                expect: Expect {
                    // Over PrivateLink the target sees the NLB; probed through the NLB by the
                    // agent, it sees the agent (client IP preservation); direct, the agent.
                    peers: vec![("gateway", "nlb-a"), ("nlb", "agent"), ("target", "agent")],
                    ..up()
                },
            },
            Scenario {
                name: "target-sg allows the agent but not the NLB",
                faults: Faults {
                    removed_sources: vec![(s("target-sg"), s("traffic"), s("nlb-a"))],
                    ..f()
                },
                expect: down(
                    "gateway",
                    "sg_drop",
                    "target-sg probably allows the agent but lacks the NLB's addresses or VPC CIDR on port 80",
                ),
            },
        ],
    );
}

#[test]
fn t4_http_alb() {
    run(
        "t4",
        vec![
            Scenario {
                name: "healthy",
                faults: f(),
                expect: Expect {
                    peers: vec![("gateway", "alb"), ("alb", "alb"), ("target", "agent")],
                    ..up()
                },
            },
            Scenario {
                name: "alb-sg lacks the link (httpapi-sg) on 80",
                faults: Faults {
                    removed_sources: vec![(s("alb-sg"), s("traffic"), s("gateway-link"))],
                    ..f()
                },
                expect: down("gateway", "link_failed", "httpapi-sg"),
            },
            Scenario {
                name: "target-sg lacks health port 8080",
                faults: Faults {
                    removed_rules: vec![
                        (s("target-a-sg"), s("health")),
                        (s("target-b-sg"), s("health")),
                    ],
                    ..f()
                },
                expect: Expect {
                    health_down: vec!["target"],
                    ..up()
                },
            },
            one_target_down(),
            all_targets_down(&[]),
            targets_slow(),
            Scenario {
                name: "VPC link down",
                faults: Faults {
                    link_down: true,
                    ..f()
                },
                expect: down("gateway", "link_failed", "VPC link (INACTIVE"),
            },
            Scenario {
                name: "httpapi-sg outbound rule removed",
                faults: Faults {
                    removed_rules: vec![(s("httpapi-sg"), s("to-alb"))],
                    ..f()
                },
                expect: down("gateway", "link_failed", "httpapi-sg"),
            },
            Scenario {
                name: "agent blocked from the ALB",
                faults: Faults {
                    // The agent enters the ALB on its TLS listener (443).
                    removed_sources: vec![(s("alb-sg"), s("tls"), s("agent"))],
                    ..f()
                },
                expect: Expect {
                    blind: vec!["alb"],
                    ..up()
                },
            },
            Scenario {
                name: "ALB connects from an unexpected address",
                faults: Faults {
                    new_source: vec![s("alb")],
                    ..f()
                },
                expect: Expect {
                    unexpected: vec!["alb", "gateway"],
                    peers: vec![("alb", "alb")],
                    ..up()
                },
            },
            gateway_says(
                "no such route (HTTP API 404 Not Found)",
                404,
                None,
                "Not Found",
                "gateway_no_route",
                "no route matches",
            ),
            Scenario {
                // An ALB accepts the connection, then waits (10 s on AWS, 2 s here) to connect
                // to a target target-sg drops: the agent gives up first. The wait is the ALB's,
                // the missing rule is target-sg's, not a drop in front of the ALB.
                name: "ALB waits on targets target-sg drops (longer than the agent)",
                faults: Faults {
                    alb_connect_wait_ms: 2000,
                    removed_sources: vec![
                        (s("target-a-sg"), s("traffic"), s("alb")),
                        (s("target-b-sg"), s("traffic"), s("alb")),
                    ],
                    ..f()
                },
                expect: down(
                    "alb",
                    "upstream_unreachable",
                    "target-sg probably lacks alb's addresses (alb-sg) on port 80",
                ),
            },
            Scenario {
                // The ALB's listener is in mutual-TLS verify mode: without its client
                // certificate the agent cannot enter it, users (through the gateway) are served.
                name: "agent without its client certificate (mTLS ALB)",
                faults: Faults {
                    agent_without: vec![(s("alb"), s("client_cert")), (s("alb"), s("client_key"))],
                    ..f()
                },
                expect: Expect {
                    blind: vec!["alb"],
                    hop_result: Some(("alb", "tls", "CertificateRequired")),
                    ..up()
                },
            },
            app_says(
                "the application answers 404 to everyone (passed through)",
                404,
                &[("target", "target-a"), ("target", "target-b")],
            ),
            // Not the gateway's own 500: the body is the application's, not {"message":"Internal Server Error"}.
            app_says(
                "the application answers 500 to everyone (passed through)",
                500,
                &[("target", "target-a"), ("target", "target-b")],
            ),
            // An HTTP API stage prod sends /prod/orders to its private integration.
            app_fails_on_the_gateway_path(
                "the application fails only on /prod/, the path the gateway sends",
                "/prod/",
            ),
        ],
    );
}

/// Brings one topology up and holds it until Enter: `tests/lab/lab up t2`.
#[test]
#[ignore = "by hand: tests/lab/lab up t2"]
fn hold() {
    if let Some(why) = lab::missing_tools() {
        panic!("the lab cannot run: {why}");
    }
    let name = std::env::var("HOPWATCH_LAB").unwrap_or_else(|_| "t2".to_string());
    let lab = Lab::up(&name);
    let agent = lab.ns("agent");
    println!("lab {name} is up. Namespaces:");
    for node in lab.topo.nodes.keys() {
        println!("  {node:10} {}", lab.ns(node));
    }
    println!("  {:10} {}", "router", lab.ns("vpc"));
    println!(
        "\nTry:\n  ip netns exec {agent} {} check --config {}\n  ip netns exec {agent} curl -s 127.0.0.1:9464/metrics | grep chain\n  ip netns exec {} nft list ruleset\n\nPress Enter to tear it down.",
        lab::BIN,
        lab.config_path().display(),
        lab.ns(lab.topo.sg.first().map(|s| s.node.as_str()).unwrap_or("agent")),
    );
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

//! The chain lab: a reference topology (`tests/lab/t*.toml`) built from network namespaces,
//! veth pairs, HAProxy (gateway, NLB nodes, ALB), `hopwatch echo` targets and nftables
//! security groups, with the agent and a real Prometheus in a namespace of their own.
//!
//! Every address lives inside the namespaces the lab makes; all of them are deleted, and every
//! process it started is killed by PID, when the `Lab` is dropped (a failing test included).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

/// Round interval of the lab's agent; every timeout in the lab is set against it.
pub const INTERVAL_MS: u64 = 1000;
/// Hop timeout: above the gateway's and the ALB's own timeouts, so they answer first.
pub const HOP_TIMEOUT_MS: u64 = 850;
/// The agent's `down_after` / `up_after`.
pub const DEBOUNCE: u64 = 2;

/// The AWS credentials the lab's agent and `check` sign with (`auth.sigv4`), and the only ones
/// the gateway's signed route accepts: access key id, secret key, session token.
pub const LAB_AWS: [&str; 3] = [
    "AKIDHOPWATCHLAB",
    "hopwatch-lab-secret-access-key",
    "hopwatch-lab-session-token",
];
/// Where, inside the gateway's namespace, the signature verifier listens, and the integration
/// it forwards verified requests to (HAProxy's own frontend onto the VPC link).
const VERIFIER: &str = "127.0.0.1:8444";
const INTEGRATION: &str = "127.0.0.1:8081";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub kind: String,
    pub nodes: BTreeMap<String, Node>,
    pub names: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub sg: Vec<Sg>,
    pub hop: Vec<HopSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub addr: Ipv4Addr,
    /// The gateway's VPC link address: the source of its onward connections.
    pub link: Option<Ipv4Addr>,
    /// `gateway`, `nlb`, `alb` or `target`; none for the agent.
    pub part: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// NLB: send PROXY protocol v2 to its targets.
    #[serde(default)]
    pub proxy_v2: bool,
    /// Target: read PROXY protocol headers, and close connections without one (as nginx's
    /// `listen … proxy_protocol` does), on the traffic and health-check ports alike.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// ALB: a TLS listener on 443 that requires a client certificate (mutual TLS, verify mode).
    #[serde(default)]
    pub mtls: bool,
    /// Gateway: the path prefix of a route that requires SigV4, as an `AWS_IAM` method does.
    /// HAProxy hands those requests to `tests/auth/gateway.py`, which verifies the signature
    /// (AWS's algorithm, region eu-west-1, the lab's credentials) and forwards the ones that
    /// pass onto the VPC link; the others get API Gateway's 403.
    pub signed: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sg {
    pub name: String,
    pub node: String,
    /// Outbound group: applies to traffic leaving from this address of the node (`link`).
    pub outbound_from: Option<String>,
    pub rules: Vec<SgRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgRule {
    pub id: String,
    pub port: u16,
    #[serde(default)]
    pub from: Vec<String>,
    #[serde(default)]
    pub to: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopSpec {
    pub name: String,
    pub url: String,
    pub health_url: Option<String>,
    #[serde(default)]
    pub per_address: bool,
    /// More hop keys, one TOML line each; `{dir}` is the lab's folder (certificates).
    #[serde(default)]
    pub extra: Vec<String>,
}

/// What is broken right now. `Faults::default()` is the healthy lab.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// (security group, rule id) removed.
    pub removed_rules: Vec<(String, String)>,
    /// (security group, rule id, source) taken out of one rule.
    pub removed_sources: Vec<(String, String, String)>,
    /// Nodes whose processes are stopped (nothing listening).
    pub stopped: Vec<String>,
    /// Added delay at every target, milliseconds.
    pub target_delay_ms: u64,
    /// The gateway's VPC link drops everything it sends onward.
    pub link_down: bool,
    /// Nodes that now connect onward from a second address (.99 in their subnet), which the
    /// security groups allow (a group wider than intended).
    pub new_source: Vec<String>,
    /// The gateway answers every request itself, as API Gateway does when it throttles or
    /// refuses: (status, x-amzn-ErrorType, message). HTTP APIs send no error type.
    pub gateway_answer: Option<(u16, Option<String>, String)>,
    /// How long the ALB waits to connect to a target, ms (0: the lab's 200 ms). AWS's is 10 s;
    /// scaled, it is longer than the agent's hop timeout.
    pub alb_connect_wait_ms: u64,
    /// The ALB appends `ip:port` to X-Forwarded-For (`routing.http.xff_client_port.enabled`).
    pub xff_client_port: bool,
    /// Keys taken out of the agent's config: (hop, key).
    pub agent_without: Vec<(String, String)>,
    /// The application at every target answers this status itself, for every path or only
    /// under the prefix (`hopwatch echo --status CODE --status-path PREFIX`); API Gateway
    /// passes it through, as HTTP_PROXY integrations do.
    pub app_status: Option<(u16, Option<String>)>,
    /// The API is one greedy proxy resource on stage `prod` and nothing else: `ANY /{proxy+}`
    /// integrated with this integration URI path (`/api/{proxy}`, the greedy parameter last),
    /// no method at the stage root. A REST API sends `/prod/PATH` to the integration as
    /// `/api/PATH` (a v1 link: no stage); an HTTP API sends `/prod/PATH` as is. A path the
    /// resource does not match (the stage root) gets API Gateway's own answer.
    pub proxy_resource: Option<String>,
    /// (hop, url): the agent probes `url` for that hop instead of the topology's (the chain
    /// `hopwatch discover` writes for another shape of API).
    pub agent_urls: Vec<(String, String)>,
    /// (hop, TOML line): more keys of that hop in the agent's config (`auth = { ... }`).
    pub agent_extra: Vec<(String, String)>,
}

/// A topology brought up.
pub struct Lab {
    pub name: String,
    pub topo: Topology,
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    /// Running processes per node, with the spec they were started from.
    procs: BTreeMap<String, (String, Vec<Child>)>,
    agent: Vec<Child>,
    faults: Faults,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True when the lab can run here: root, `ip`, `nft`, `haproxy`, `prometheus`, `curl`, a
/// Python 3 (the signature verifier: [`python`]).
pub fn missing_tools() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        return Some("needs root (network namespaces)".into());
    }
    let python = python();
    let missing: Vec<&str> = ["ip", "nft", "haproxy", "prometheus", "curl", &python]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .collect();
    (!missing.is_empty()).then(|| format!("missing {}", missing.join(", ")))
}

impl Lab {
    /// Reads `tests/lab/NAME.toml`.
    pub fn topology(name: &str) -> Topology {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/lab/{name}.toml"));
        let text = std::fs::read_to_string(&path).expect("topology file");
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Builds the namespaces, the network and the security groups, starts every part, the
    /// agent and Prometheus.
    pub fn up(name: &str) -> Lab {
        let topo = Self::topology(name);
        let prefix = format!("hwl{}{name}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab dir");
        let mut lab = Lab {
            name: name.to_string(),
            topo,
            prefix,
            dir,
            namespaces: Vec::new(),
            procs: BTreeMap::new(),
            agent: Vec::new(),
            faults: Faults::default(),
        };
        lab.network();
        if lab.topo.nodes.values().any(|n| n.mtls) {
            lab.certificates();
        }
        lab.apply(&Faults::default());
        lab.start_agent();
        lab
    }

    /// The namespace of a node (`vpc` is the router).
    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    fn add_ns(&mut self, node: &str) -> String {
        let ns = self.ns(node);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        let etc = format!("/etc/netns/{ns}");
        std::fs::create_dir_all(&etc).expect("/etc/netns");
        // No resolver: names come from the hosts file only, nothing is asked outside.
        std::fs::write(
            format!("{etc}/resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .expect("resolv.conf");
        // Only the hosts file: no NSS module may ask the host's resolver.
        std::fs::write(format!("{etc}/nsswitch.conf"), "hosts: files\n").expect("nsswitch.conf");
        ns
    }

    fn exec(&self, node: &str, args: &[&str]) {
        let ns = self.ns(node);
        let mut full = vec!["ip", "netns", "exec", ns.as_str()];
        full.extend_from_slice(args);
        run(&full);
    }

    /// A router namespace ("the VPC") with one veth per node; each node's addresses are /32s
    /// routed to its veth, so any node reaches any other through the router.
    fn network(&mut self) {
        let router = self.add_ns("vpc");
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        let nodes: Vec<(String, Node)> = self
            .topo
            .nodes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (i, (name, node)) in nodes.iter().enumerate() {
            let ns = self.add_ns(name);
            let r = format!("r{i}");
            run(&[
                "ip", "link", "add", &r, "netns", &router, "type", "veth", "peer", "name", "e0",
                "netns", &ns,
            ]);
            // Point-to-point: the router is 169.254.0.1 on every veth, reached on-link.
            run(&[
                "ip",
                "netns",
                "exec",
                &router,
                "ip",
                "addr",
                "add",
                "169.254.0.1/32",
                "dev",
                &r,
            ]);
            run(&[
                "ip", "netns", "exec", &router, "ip", "link", "set", &r, "up",
            ]);
            self.exec(name, &["ip", "link", "set", "e0", "up"]);
            for addr in [Some(node.addr), node.link, Some(second(node.addr))]
                .into_iter()
                .flatten()
            {
                self.exec(
                    name,
                    &["ip", "addr", "add", &format!("{addr}/32"), "dev", "e0"],
                );
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    &router,
                    "ip",
                    "route",
                    "add",
                    &format!("{addr}/32"),
                    "dev",
                    &r,
                ]);
            }
            self.exec(name, &["ip", "route", "add", "169.254.0.1/32", "dev", "e0"]);
            self.exec(
                name,
                &[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    "169.254.0.1",
                    "dev",
                    "e0",
                    "src",
                    &node.addr.to_string(),
                ],
            );
        }
        // NAT NLB nodes (client IP preservation): they forward, and the router sends their
        // targets' answers back through them, so replies are un-NATed as an NLB's are.
        let index: BTreeMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.clone(), i))
            .collect();
        let mut table = 100;
        for (name, node) in nodes
            .iter()
            .filter(|(_, n)| n.part.as_deref() == Some("nlb-nat"))
        {
            self.exec(name, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            for sysctl in [
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ] {
                run(&["ip", "netns", "exec", &router, "sysctl", "-qw", sysctl]);
            }
            for target in &node.to {
                table += 1;
                let t = table.to_string();
                let from = format!("r{}", index[target]);
                let via = format!("r{}", index[name]);
                run(&[
                    "ip", "netns", "exec", &router, "ip", "rule", "add", "iif", &from, "lookup", &t,
                ]);
                // Via the NLB's own address: the router resolves that one on the link, not
                // every destination's.
                let nlb = node.addr.to_string();
                run(&[
                    "ip", "netns", "exec", &router, "ip", "route", "add", "default", "via", &nlb,
                    "dev", &via, "onlink", "table", &t,
                ]);
            }
        }
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for (name, nodes) in &self.topo.names {
            for n in nodes {
                hosts.push_str(&format!("{} {name}\n", self.topo.nodes[n].addr));
            }
        }
        std::fs::write(format!("/etc/netns/{}/hosts", self.ns("agent")), hosts).expect("hosts");
    }

    /// Addresses a security-group reference stands for: a node (its address, and its second
    /// address once it uses it), `NODE-link`, or a CIDR.
    fn addresses(&self, name: &str, faults: &Faults) -> Vec<String> {
        if let Some(node) = name
            .strip_suffix("-link")
            .and_then(|n| self.topo.nodes.get(n))
        {
            return node.link.iter().map(|a| a.to_string()).collect();
        }
        match self.topo.nodes.get(name) {
            Some(node) => {
                let mut out = vec![node.addr.to_string()];
                if faults.new_source.iter().any(|n| n == name) {
                    out.push(second(node.addr).to_string());
                }
                out
            }
            None => vec![name.to_string()],
        }
    }

    /// The nftables ruleset of one node under `faults`.
    fn ruleset(&self, node: &str, faults: &Faults) -> String {
        let mut input = Vec::new();
        let mut output = Vec::new();
        for sg in self.topo.sg.iter().filter(|s| s.node == node) {
            let outbound = sg.outbound_from.as_ref().map(|f| {
                let n = &self.topo.nodes[node];
                match f.as_str() {
                    "link" => n.link.unwrap_or(n.addr).to_string(),
                    other => other.to_string(),
                }
            });
            for rule in &sg.rules {
                if faults
                    .removed_rules
                    .contains(&(sg.name.clone(), rule.id.clone()))
                {
                    continue;
                }
                let peers: Vec<String> = rule
                    .from
                    .iter()
                    .chain(&rule.to)
                    .filter(|p| {
                        !faults.removed_sources.contains(&(
                            sg.name.clone(),
                            rule.id.clone(),
                            (*p).clone(),
                        ))
                    })
                    .flat_map(|p| self.addresses(p, faults))
                    .collect();
                if peers.is_empty() {
                    continue;
                }
                let set = peers.join(", ");
                match &outbound {
                    Some(src) => output.push(format!(
                        "    ip saddr {src} ip daddr {{ {set} }} tcp dport {} accept comment \"{}:{}\"",
                        rule.port, sg.name, rule.id
                    )),
                    None => input.push(format!(
                        "    ip saddr {{ {set} }} tcp dport {} accept comment \"{}:{}\"",
                        rule.port, sg.name, rule.id
                    )),
                }
            }
            if let Some(src) = &outbound {
                // Security groups are stateful: answers to allowed traffic pass.
                output.insert(0, "    ct state established,related accept".into());
                output.push(format!(
                    "    ip saddr {src} drop comment \"{}: default deny\"",
                    sg.name
                ));
            }
        }
        let inbound = self
            .topo
            .sg
            .iter()
            .any(|s| s.node == node && s.outbound_from.is_none());
        if inbound {
            input.insert(0, "    ct state established,related accept".into());
            input.insert(1, "    iif lo accept".into());
        }
        let node_spec = &self.topo.nodes[node];
        if node_spec.part.as_deref() == Some("gateway") && faults.link_down {
            if let Some(link) = node_spec.link {
                // First: a dead link carries nothing, not even connections already open.
                output.insert(
                    0,
                    format!("    ip saddr {link} drop comment \"vpc link down\""),
                );
            }
        }
        let mut text = format!(
            "table inet lab\ndelete table inet lab\ntable inet lab {{\n  chain input {{\n    type filter hook input priority 0; policy {};\n{}\n  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{}\n  }}\n}}\n",
            if inbound { "drop" } else { "accept" },
            input.join("\n"),
            output.join("\n")
        );
        if node_spec.part.as_deref() == Some("nlb-nat") {
            text.push_str(&self.nat_nlb(node));
        }
        text
    }

    /// An NLB node as AWS runs one, in nftables: connections to its address go on to the target
    /// with the caller's address kept (client IP preservation), except those from the VPC link,
    /// which leave with the NLB's own address: client IP preservation has no effect on
    /// PrivateLink traffic (docs.aws.amazon.com/elasticloadbalancing/latest/network/
    /// edit-target-group-attributes.html). The router sends the target's answers back through
    /// this node (`network`), so they are un-NATed as an NLB's are.
    fn nat_nlb(&self, node: &str) -> String {
        let n = &self.topo.nodes[node];
        let target =
            n.to.first()
                .map(|t| self.topo.nodes[t].addr)
                .expect("an nlb-nat node forwards to one target");
        let links: Vec<String> = self
            .topo
            .nodes
            .values()
            .filter_map(|other| other.link)
            .map(|a| a.to_string())
            .collect();
        let snat = if links.is_empty() {
            String::new()
        } else {
            format!(
                "    ip saddr {{ {} }} snat to {}\n",
                links.join(", "),
                n.addr
            )
        };
        format!(
            "table ip labnat\ndelete table ip labnat\ntable ip labnat {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr {addr} tcp dport {{ 80, 8080 }} dnat to {target}\n  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{snat}  }}\n}}\n",
            addr = n.addr
        )
    }

    /// The command lines a node runs under `faults` (none when stopped), and the HAProxy
    /// config they load (written to the lab's folder), so a changed config restarts the part
    /// even when its command line is the same.
    fn processes(&self, node: &str, faults: &Faults) -> (Vec<Vec<String>>, String) {
        let n = &self.topo.nodes[node];
        if faults.stopped.iter().any(|s| s == node) {
            return (Vec::new(), String::new());
        }
        match n.part.as_deref() {
            Some("target") => {
                let mut traffic = vec![
                    BIN.to_string(),
                    "echo".into(),
                    "--listen".into(),
                    format!("{}:80", n.addr),
                ];
                if n.proxy_protocol {
                    traffic.push("--proxy-protocol".into());
                    traffic.push("--require-proxy-protocol".into());
                }
                if faults.target_delay_ms > 0 {
                    traffic.push("--delay".into());
                    traffic.push(format!("{}ms", faults.target_delay_ms));
                }
                if let Some((status, prefix)) = &faults.app_status {
                    traffic.push("--status".into());
                    traffic.push(status.to_string());
                    if let Some(prefix) = prefix {
                        traffic.push("--status-path".into());
                        traffic.push(prefix.clone());
                    }
                }
                let mut health = vec![
                    BIN.to_string(),
                    "echo".into(),
                    "--listen".into(),
                    format!("{}:8080", n.addr),
                ];
                if n.proxy_protocol {
                    // An NLB with proxy protocol v2 sends the header on health checks too.
                    health.push("--proxy-protocol".into());
                    health.push("--require-proxy-protocol".into());
                }
                (vec![traffic, health], String::new())
            }
            // An NLB node made of nftables rules (see `ruleset`): no process.
            Some("nlb-nat") => (Vec::new(), String::new()),
            Some(part) => {
                let cfg = self.dir.join(format!("{node}.cfg"));
                let text = self.haproxy(node, part, faults);
                std::fs::write(&cfg, &text).expect("haproxy config");
                let cmd = vec![
                    "haproxy".into(),
                    "-db".into(),
                    "-f".into(),
                    cfg.display().to_string(),
                ];
                let mut cmds = vec![cmd];
                if let (Some(prefix), "gateway") = (&n.signed, part) {
                    let script =
                        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auth/gateway.py");
                    cmds.push(vec![
                        python(),
                        script.display().to_string(),
                        "--listen".into(),
                        VERIFIER.into(),
                        "--signed-prefix".into(),
                        prefix.clone(),
                        "--key".into(),
                        LAB_AWS.join(":"),
                        "--forward".into(),
                        format!("http://{INTEGRATION}"),
                    ]);
                }
                (cmds, text)
            }
            None => (Vec::new(), String::new()),
        }
    }

    /// HAProxy playing API Gateway, an NLB node or an ALB. Timeouts are scaled to the lab's
    /// 1 s rounds: the gateway and the ALB give up before the agent does, so their error pages
    /// are what the agent sees; an NLB holds the connection, as a real one does on a drop.
    fn haproxy(&self, node: &str, part: &str, faults: &Faults) -> String {
        let n = &self.topo.nodes[node];
        let source = if faults.new_source.iter().any(|s| s == node) {
            format!("  source {}\n", second(n.addr))
        } else {
            n.link
                .map(|l| format!("  source {l}\n"))
                .unwrap_or_default()
        };
        let mut servers = String::new();
        let proxy = if n.proxy_v2 {
            " send-proxy-v2 check-send-proxy"
        } else {
            ""
        };
        for t in &n.to {
            let addr = self.topo.nodes[t].addr;
            let check = if part == "gateway" {
                // The link checks the next hop's traffic listener (all its group allows).
                "check inter 300ms fall 2 rise 1"
            } else {
                // Load balancers check their targets on the health-check port.
                "check port 8080 inter 300ms fall 2 rise 1"
            };
            servers.push_str(&format!("  server {t} {addr}:80{proxy} {check}\n"));
        }
        // Load balancers fail open: when every target fails its health check, they route to
        // all of them anyway.
        if part != "gateway" {
            for t in &n.to {
                let addr = self.topo.nodes[t].addr;
                servers.push_str(&format!("  server {t}-open {addr}:80{proxy} backup\n"));
            }
        }
        // A raw response for `errorfile`: HAProxy sends it as is, status line included.
        let errors = |name: &str, status: &str, headers: &[&str], body: &str| {
            let mut text = format!("HTTP/1.1 {status}\r\n");
            for h in headers {
                text.push_str(&format!("{h}\r\n"));
            }
            text.push_str(&format!(
                "connection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ));
            let path = self.dir.join(format!("{node}-{name}.http"));
            std::fs::write(&path, text).expect("errorfile");
            path.display().to_string()
        };
        match part {
            "gateway" => {
                // API Gateway's answers when its integration fails (brief §3): a REST API says
                // why in x-amzn-ErrorType (500 for a link it cannot use, 504 "Endpoint request
                // timed out" at its integration timeout); an HTTP API only gives
                // apigw-requestid and a fixed body, 500 "Internal Server Error", and 503
                // "Service Unavailable" at its integration timeout (field reports:
                // cortexlabs/cortex#1225, serverless/serverless#11222).
                let http_api = self.topo.kind.starts_with("http-");
                let json = "content-type: application/json";
                let (e500, e504, ids, path) = if http_api {
                    (
                        errors("500", "500 Internal Server Error", &[json], "{\"message\":\"Internal Server Error\"}"),
                        errors("504", "503 Service Unavailable", &[json], "{\"message\":\"Service Unavailable\"}"),
                        "  http-after-response set-header apigw-requestid %[rand,hex]\n",
                        // "For private integrations, API Gateway includes the stage portion of the
                        // API endpoint in the request to your backend resources"
                        // (http-api-develop-integrations-private.html): the path goes on as is,
                        // under a greedy route `/{proxy+}` too.
                        String::new(),
                    )
                } else {
                    let kind = "x-amzn-ErrorType: InternalServerErrorException";
                    (
                        errors("500", "500 Internal Server Error", &[json, kind], "{\"message\": \"Internal server error\"}"),
                        errors("504", "504 Gateway Timeout", &[json, kind], "{\"message\": \"Endpoint request timed out\"}"),
                        "  http-after-response set-header x-amzn-RequestId %[uuid]\n  http-after-response set-header x-amz-apigw-id %[rand,hex]\n",
                        // A REST resource /orders of stage prod maps onto the integration URI's
                        // path: the stage is not sent (a v1 link). A greedy resource /{proxy+}
                        // integrated with http://NLB/api/{proxy} sends /prod/a/b as /api/a/b
                        // (api-gateway-set-up-simple-proxy.html: `/api/{proxy+}` onto a backend
                        // `/site/{proxy}`). The backend's clashing headers come back renamed
                        // x-amzn-Remapped-* (api-gateway-known-issues.html: Date and Server
                        // "Remapped Overwritten").
                        format!(
                            "  http-request set-path %[path,regsub(^/prod/,{})]\n  http-response set-header x-amzn-Remapped-Date %[res.hdr(date)] if {{ res.hdr(date) -m found }}\n  http-response set-header x-amzn-Remapped-Content-Length %[res.hdr(content-length)] if {{ res.hdr(content-length) -m found }}\n",
                            faults.proxy_resource.as_deref().map_or("/", integration_prefix)
                        ),
                    )
                };
                // API Gateway answering on its own (throttled, refused, no route): nothing
                // behind it is asked.
                let own = match &faults.gateway_answer {
                    Some((status, kind, message)) => {
                        let kind = match (http_api, kind) {
                            (false, Some(k)) => format!(" hdr x-amzn-ErrorType {k}"),
                            _ => String::new(),
                        };
                        format!("  http-request return status {status} content-type application/json{kind} string '{{\"message\":\"{message}\"}}'\n")
                    }
                    None => String::new(),
                };
                // A proxy-only API matches child paths of the stage and nothing else: at the
                // stage root no method exists, and API Gateway answers itself. A REST API says
                // 403 Missing Authentication Token "for a method or resource that does not
                // exist", a proxy resource's root included
                // (repost.aws/knowledge-center/api-gateway-authentication-token-errors); an HTTP
                // API 404 {"message":"Not Found"} when no route matches
                // (http-api-develop-routes.html, "Routing API requests").
                let unrouted = match &faults.proxy_resource {
                    None => "",
                    Some(_) if http_api => "  http-request return status 404 content-type application/json string '{\"message\":\"Not Found\"}' unless { path_reg ^/prod/.+ }\n",
                    Some(_) => "  http-request return status 403 content-type application/json hdr x-amzn-ErrorType MissingAuthenticationTokenException string '{\"message\":\"Missing Authentication Token\"}' unless { path_reg ^/prod/.+ }\n",
                };
                // An AWS_IAM route: its requests go through the signature verifier, which
                // forwards those that pass to the integration (HAProxy again, onto the link).
                let (signed, integration) = match &n.signed {
                    Some(prefix) => (
                        format!("  use_backend authorizer if {{ path_beg {prefix} }}\n"),
                        format!("frontend integration\n  bind {INTEGRATION}\n  default_backend link\nbackend authorizer\n  server verifier {VERIFIER}\n"),
                    ),
                    None => (String::new(), String::new()),
                };
                format!(
                    "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 200ms\n  timeout client 10s\n  timeout server 600ms\n  retries 1\n  option redispatch\nfrontend api\n  bind {}:80\n{ids}{own}{unrouted}{signed}  default_backend link\n{integration}backend link\n{source}{path}  balance roundrobin\n  errorfile 502 {e500}\n  errorfile 503 {e500}\n  errorfile 504 {e504}\n{servers}",
                    n.addr
                )
            }
            "nlb" => format!(
                "global\n  maxconn 512\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  retries 1\n  option redispatch\nfrontend nlb\n  bind {}:80\n  default_backend targets\nbackend targets\n{source}  balance roundrobin\n  option allbackups\n{servers}",
                n.addr
            ),
            "alb" => {
                // ALB-made errors carry `Server: awselb/2.0`.
                let e502 = errors("502", "502 Bad Gateway", &["Server: awselb/2.0", "content-type: text/html"], "<html>502 Bad Gateway</html>");
                let e504 = errors("504", "504 Gateway Time-out", &["Server: awselb/2.0", "content-type: text/html"], "<html>504 Gateway Time-out</html>");
                // What the ALB appends: the client's address, with its port when
                // routing.http.xff_client_port.enabled is on.
                let client = if faults.xff_client_port {
                    "%[src]:%[src_port]"
                } else {
                    "%[src]"
                };
                let connect = match faults.alb_connect_wait_ms {
                    0 => 200,
                    ms => ms,
                };
                // Mutual TLS: a listener in verify mode refuses clients without a certificate
                // signed by the trust store's CA.
                let tls = if n.mtls {
                    format!(
                        "  bind {}:443 ssl crt {} ca-file {} verify required alpn http/1.1\n",
                        n.addr,
                        self.dir.join("alb.pem").display(),
                        self.dir.join("clients-ca.pem").display()
                    )
                } else {
                    String::new()
                };
                format!(
                    "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect {connect}ms\n  timeout client 10s\n  timeout server 600ms\n  retries 1\n  option redispatch\nfrontend alb\n  bind {addr}:80\n{tls}  http-request set-header X-Forwarded-For \"%[req.fhdr(X-Forwarded-For)], {client}\" if {{ req.hdr(X-Forwarded-For) -m found }}\n  http-request set-header X-Forwarded-For {client} unless {{ req.hdr(X-Forwarded-For) -m found }}\n  http-request set-header X-Forwarded-Proto http\n  http-request set-header X-Forwarded-Port %[dst_port]\n  default_backend targets\nfrontend health\n  bind {addr}:8080\n  http-request return status 200 content-type text/plain string ok\nbackend targets\n{source}  balance roundrobin\n  option allbackups\n  errorfile 502 {e502}\n  errorfile 503 {e502}\n  errorfile 504 {e504}\n{servers}",
                    addr = n.addr
                )
            }
            other => panic!("unknown part {other}"),
        }
    }

    /// Moves the lab to `faults`: rewrites every security group and restarts exactly the
    /// processes whose command line changed.
    pub fn apply(&mut self, faults: &Faults) {
        let nodes: Vec<String> = self.topo.nodes.keys().cloned().collect();
        for node in &nodes {
            let rules = self.ruleset(node, faults);
            let path = self.dir.join(format!("{node}.nft"));
            std::fs::write(&path, rules).expect("ruleset");
            self.exec(node, &["nft", "-f", &path.display().to_string()]);
        }
        for node in &nodes {
            let (cmds, config) = self.processes(node, faults);
            let spec = format!("{cmds:?}|{config}");
            if self.procs.get(node).is_some_and(|(s, _)| *s == spec) {
                continue;
            }
            if let Some((_, children)) = self.procs.remove(node) {
                stop(children);
            }
            let mut children = Vec::new();
            for (i, cmd) in cmds.iter().enumerate() {
                let log =
                    std::fs::File::create(self.dir.join(format!("{node}-{i}.log"))).expect("log");
                let child = Command::new("ip")
                    .args(["netns", "exec", &self.ns(node)])
                    .args(cmd)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("log"))
                    .stderr(log)
                    .spawn()
                    .expect("start part");
                children.push(child);
            }
            self.procs.insert(node.clone(), (spec, children));
        }
        // A fault of the agent's own config: rewritten, and reloaded at once (SIGHUP).
        let (before, after) = (
            self.agent_config_for(&self.faults),
            self.agent_config_for(faults),
        );
        if before != after && !self.agent.is_empty() {
            std::fs::write(self.config_path(), &after).expect("config");
            run(&["kill", "-HUP", &self.agent[0].id().to_string()]);
        }
        self.faults = faults.clone();
    }

    /// Certificates for mutual TLS, in the lab's folder: the ALB's server certificate for
    /// `alb.lab` (`alb.pem`, key included, as HAProxy reads it) and the CA that signed it
    /// (`ca.pem`, the agent's `ca_file`); the CA the ALB trusts for clients (`clients-ca.pem`)
    /// and the agent's client certificate and key (`agent.pem`, `agent-key.pem`).
    fn certificates(&self) {
        let ca = |name: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("hopwatch lab {name} CA"));
            let cert = params.self_signed(&key).expect("ca");
            (cert.pem(), rcgen::Issuer::new(params, key))
        };
        let issue = |name: &str, issuer: &rcgen::Issuer<'static, rcgen::KeyPair>| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name.to_string());
            let cert = params.signed_by(&key, issuer).expect("cert");
            (cert.pem(), key.serialize_pem())
        };
        let (server_ca, server_issuer) = ca("server");
        let (clients_ca, clients_issuer) = ca("clients");
        let (alb, alb_key) = issue("alb.lab", &server_issuer);
        let (agent, agent_key) = issue("hopwatch-agent", &clients_issuer);
        for (file, text) in [
            ("ca.pem", server_ca),
            ("clients-ca.pem", clients_ca),
            ("alb.pem", format!("{alb}{alb_key}")),
            ("agent.pem", agent),
            ("agent-key.pem", agent_key),
        ] {
            std::fs::write(self.dir.join(file), text).expect("certificate");
        }
    }

    /// The hopwatch config probing this topology's chain.
    pub fn agent_config(&self) -> String {
        self.agent_config_for(&self.faults)
    }

    /// The agent's config under `faults` (some take keys out of it, or change hop URLs).
    pub fn agent_config_for(&self, faults: &Faults) -> String {
        let mut text = format!(
            "[agent]\nlisten = \"127.0.0.1:9464\"\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{HOP_TIMEOUT_MS}ms\"\ndown_after = {DEBOUNCE}\nup_after = {DEBOUNCE}\n\n[[chain]]\nname = \"{}\"\nkind = \"{}\"\n",
            self.name, self.topo.kind
        );
        for hop in &self.topo.hop {
            let url = faults
                .agent_urls
                .iter()
                .find(|(h, _)| *h == hop.name)
                .map_or(hop.url.as_str(), |(_, url)| url.as_str());
            text.push_str(&format!(
                "\n  [[chain.hop]]\n  name = \"{}\"\n  url = \"{url}\"\n",
                hop.name
            ));
            if let Some(h) = &hop.health_url {
                text.push_str(&format!("  health_url = \"{h}\"\n"));
            }
            if hop.per_address {
                text.push_str("  per_address = true\n");
            }
            for (_, line) in faults.agent_extra.iter().filter(|(h, _)| *h == hop.name) {
                text.push_str(&format!("  {line}\n"));
            }
            for line in &hop.extra {
                let key = line.split('=').next().unwrap_or("").trim();
                if faults
                    .agent_without
                    .iter()
                    .any(|(h, k)| *h == hop.name && k == key)
                {
                    continue;
                }
                let line = line.replace("{dir}", &self.dir.display().to_string());
                text.push_str(&format!("  {line}\n"));
            }
        }
        text
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("hopwatch.toml")
    }

    fn start_agent(&mut self) {
        std::fs::write(self.config_path(), self.agent_config()).expect("config");
        let prom = self.dir.join("prometheus.yml");
        std::fs::write(
            &prom,
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: hopwatch\n    static_configs:\n      - targets: ['127.0.0.1:9464']\n",
        )
        .expect("prometheus.yml");
        let agent_ns = self.ns("agent");
        let log = std::fs::File::create(self.dir.join("agent.log")).expect("log");
        let agent = Command::new("ip")
            .args([
                "netns",
                "exec",
                &agent_ns,
                BIN,
                "run",
                "--log-format",
                "json",
                "--config",
            ])
            .arg(self.config_path())
            .envs(lab_aws())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent");
        let log = std::fs::File::create(self.dir.join("prometheus.log")).expect("log");
        let prometheus = Command::new("ip")
            .args(["netns", "exec", &agent_ns, "prometheus"])
            .arg(format!("--config.file={}", prom.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("tsdb").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9090")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        self.agent = vec![agent, prometheus];
    }

    /// GET a URL from inside the agent's namespace.
    pub fn get(&self, url: &str) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("agent"),
                "curl",
                "-sf",
                "--max-time",
                "3",
                url,
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The agent's own `/metrics`, as `series -> value`.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        self.get("http://127.0.0.1:9464/metrics")
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// An instant PromQL query against the lab's Prometheus: `labels -> value` per series.
    pub fn promql(&self, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let url = format!(
            "http://127.0.0.1:9090/api/v1/query?query={}",
            query
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                })
                .collect::<String>()
        );
        let Some(body) = self.get(&url) else {
            return Vec::new();
        };
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        doc["data"]["result"]
            .as_array()
            .map(|results| {
                results
                    .iter()
                    .map(|r| {
                        let labels = r["metric"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let value = r["value"][1]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(f64::NAN);
                        (labels, value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `hopwatch check --json` from the agent's namespace.
    pub fn check(&self) -> serde_json::Value {
        self.check_at(&self.config_path())
    }

    /// `hopwatch check --json` of another config (`check.toml` in the lab's folder), beside
    /// the agent's.
    pub fn check_config(&self, config: &str) -> serde_json::Value {
        let path = self.dir.join("check.toml");
        std::fs::write(&path, config).expect("check config");
        self.check_at(&path)
    }

    fn check_at(&self, config: &Path) -> serde_json::Value {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("agent"),
                BIN,
                "check",
                "--json",
                "--config",
            ])
            .arg(config)
            .envs(lab_aws())
            .output()
            .expect("check");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Rounds the agent has completed (probes of the outermost hop).
    pub fn rounds(&self) -> u64 {
        let first = &self.topo.hop[0].name;
        self.metrics()
            .iter()
            .filter(|(k, _)| {
                k.starts_with("hopwatch_probes_total{") && k.contains(&format!("hop=\"{first}\""))
            })
            .map(|(_, v)| *v as u64)
            .sum()
    }

    /// Where the logs are, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["agent.log", "prometheus.log"] {
            let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!(
                "--- {name} (last lines)\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out.push_str(&format!("(all logs in {})", self.dir.display()));
        out
    }

    /// Waits for `cond` with a deadline; `None` on time out.
    pub fn wait<T>(&self, deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(v) = cond() {
                return Some(v);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The path before the greedy parameter of an integration URI path template, where a REST
/// proxy resource puts the rest of the request's path: `/api/{proxy}` gives `/api/`.
/// The Python 3 of the SigV4 verifier (standard library only): the one `scripts/test` gives the
/// moto tests (`HOPWATCH_MOTO_PYTHON`), else `python3` on the PATH.
pub fn python() -> String {
    std::env::var("HOPWATCH_MOTO_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// The AWS environment of the agent and `check`: the lab's static credentials, and no IMDS (the
/// default chain would spend seconds looking for it).
fn lab_aws() -> [(&'static str, &'static str); 4] {
    [
        ("AWS_ACCESS_KEY_ID", LAB_AWS[0]),
        ("AWS_SECRET_ACCESS_KEY", LAB_AWS[1]),
        ("AWS_SESSION_TOKEN", LAB_AWS[2]),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

fn integration_prefix(template: &str) -> &str {
    let prefix = template
        .strip_suffix("{proxy}")
        .unwrap_or_else(|| panic!("{template:?}: the lab maps a greedy {{proxy}} at the end only"));
    assert!(
        prefix.starts_with('/')
            && prefix.ends_with('/')
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c)),
        "{template:?}: the prefix goes into an HAProxy regsub as is"
    );
    prefix
}

/// A node's second address: .99 in its own /24.
pub fn second(addr: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, _] = addr.octets();
    Ipv4Addr::new(a, b, c, 99)
}

fn stop(children: Vec<Child>) {
    for mut c in children {
        // `ip netns exec` execs the program, so this PID is the part itself.
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        stop(std::mem::take(&mut self.agent));
        for (_, (_, children)) in std::mem::take(&mut self.procs) {
            stop(children);
        }
        for ns in self.namespaces.iter().rev() {
            // Anything still running in the namespace (a part whose Child was not recorded
            // before a panic) goes too: deleting a namespace does not end its processes.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).output();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
        if std::env::var_os("HOPWATCH_LAB_KEEP_LOGS").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

//! moto in server mode (PyPI `moto`, pinned in tests/moto/requirements.txt): the AWS control
//! plane discovery reads, on 127.0.0.1 (of the host, or of a network namespace a test made),
//! started and killed by the test. The topologies are built by tests/moto/fixture.py with boto3.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Kill, Netns};

/// The Python with moto installed: `HOPWATCH_MOTO_PYTHON`, else the repo's `.venv-moto`.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HOPWATCH_MOTO_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-moto/bin/python");
    let has_moto = Command::new(&venv)
        .args(["-c", "import moto.server, boto3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    has_moto.then_some(venv)
}

/// Says why moto tests can't run; a failure where the suite must run everything
/// (`scripts/test` sets `HOPWATCH_REQUIRE_MOTO=1`).
pub fn skip(test: &str) {
    let why = "no Python with moto (run scripts/test, or set HOPWATCH_MOTO_PYTHON)";
    if std::env::var_os("HOPWATCH_REQUIRE_MOTO").is_some() {
        panic!("{test} cannot run: {why} (HOPWATCH_REQUIRE_MOTO is set)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// One moto server.
pub struct Moto {
    python: PathBuf,
    /// `http://127.0.0.1:PORT`, as seen from where it runs.
    pub endpoint: String,
    /// The namespace it runs in, if any.
    netns: Option<String>,
    process: Option<Kill>,
    addr: SocketAddr,
}

impl Moto {
    /// Starts moto on 127.0.0.1: of the host (`netns` None) or inside `netns`, and waits until
    /// it answers.
    pub fn start(python: PathBuf, netns: Option<&Netns>) -> Moto {
        // A fresh namespace has its own loopback: any port is free there.
        let addr: SocketAddr = match netns {
            Some(_) => "127.0.0.1:5000".parse().expect("addr"),
            None => super::refused_port(),
        };
        let mut moto = Moto {
            endpoint: format!("http://{addr}"),
            netns: netns.map(|n| n.name.clone()),
            process: None,
            addr,
            python,
        };
        moto.restart();
        moto
    }

    fn command(&self, program: &std::path::Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Kills moto (an outage: everything it held is gone).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts it again, empty, on the same address.
    pub fn restart(&mut self) {
        self.stop();
        let server = self.python.with_file_name("moto_server");
        let child = self
            .command(&server)
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        self.process = Some(Kill(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.answers() {
            assert!(Instant::now() < deadline, "moto did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether moto answers its own API.
    fn answers(&self) -> bool {
        self.python(&format!(
            "import urllib.request; urllib.request.urlopen('{}/moto-api/', timeout=1).read()",
            self.endpoint
        ))
        .is_ok()
    }

    /// Runs a Python snippet beside moto (boto3 is there); its stdout, or why it failed.
    pub fn python(&self, code: &str) -> Result<String, String> {
        let out = self
            .command(&self.python)
            .args(["-c", code])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// Runs boto3 calls against moto: `code` sees clients `ec2`, `elb`, `rest`, `http`, `sd`.
    pub fn boto(&self, code: &str) -> String {
        let preamble = format!(
            "import boto3, json\ns = boto3.Session(aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1')\nep = '{}'\nec2, elb, rest, http, sd = (s.client(n, endpoint_url=ep) for n in ('ec2', 'elbv2', 'apigateway', 'apigatewayv2', 'servicediscovery'))\n",
            self.endpoint
        );
        self.python(&format!("{preamble}{code}"))
            .unwrap_or_else(|e| panic!("boto3 against moto failed:\n{code}\n{e}"))
    }

    /// Builds T1-T6 (tests/moto/fixture.py) with `targets` as the two target addresses; what
    /// was made, as JSON.
    pub fn fixture(&self, targets: [&str; 2]) -> serde_json::Value {
        self.build("fixture.py", targets)
    }

    /// Runs a builder of tests/moto/ (`fixture.py`, `routes.py`) against this moto with `targets`
    /// as the two target addresses; what it made, as the JSON it prints.
    fn build(&self, script: &str, targets: [&str; 2]) -> serde_json::Value {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/moto")
            .join(script);
        let out = self
            .command(&self.python)
            .arg(path)
            .args([
                "--endpoint",
                &self.endpoint,
                "--targets",
                &targets.join(","),
            ])
            .output()
            .unwrap_or_else(|e| panic!("run {script}: {e}"));
        assert!(
            out.status.success(),
            "{script} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{script} prints no JSON: {e}"))
    }
}

impl Moto {
    /// Builds the large estate of tests/moto/estate.py: `apis` APIs (60 % REST, 40 % HTTP)
    /// over shared VPC links, load balancers and target groups, `targets` registered as every
    /// target. What was made, as JSON (counts, `api_ids`, `seconds`).
    pub fn estate(&self, apis: usize, targets: &[&str]) -> serde_json::Value {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/moto/estate.py");
        let out = self
            .command(&self.python)
            .arg(script)
            .args(["--endpoint", &self.endpoint, "--apis", &apis.to_string()])
            .args(["--targets", &targets.join(",")])
            .output()
            .expect("run estate.py");
        assert!(
            out.status.success(),
            "estate.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("estate.py prints JSON")
    }
}

/// One call the fault proxy saw, as `GET /_fault/calls` lists it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Call {
    /// When it arrived, Unix seconds.
    pub t: f64,
    /// The signing name of its SigV4 credential scope (`ec2`, `elasticloadbalancing`,
    /// `apigateway` for REST and HTTP APIs alike, `servicediscovery`, `logs`), or `unsigned`.
    pub service: String,
    /// `DescribeSecurityGroups`, `GetRestApis`, … (tests/moto/fault_proxy.py says how).
    pub operation: String,
    /// The status it was answered with: moto's, or the throttling answer's.
    pub status: u16,
    /// Whether the proxy answered it with the service's throttling error instead of moto.
    pub throttled: bool,
}

/// tests/moto/fault_proxy.py in front of a [`Moto`], where that moto runs (the host's
/// 127.0.0.1 or its namespace's): every call forwarded and remembered, chosen ones answered
/// with their service's own throttling error. Killed (by PID) on drop.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: what hopwatch's `endpoint_url` should be.
    pub endpoint: String,
    python: PathBuf,
    netns: Option<String>,
    _process: Kill,
}

impl FaultProxy {
    /// Starts the proxy in front of `moto` and waits until it listens (it prints its port
    /// once bound).
    pub fn start(moto: &Moto) -> FaultProxy {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/moto/fault_proxy.py");
        let mut child = moto
            .command(&moto.python)
            .arg(script)
            .args(["--moto", &moto.endpoint, "--port", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start fault_proxy.py");
        let stdout = child.stdout.take().expect("fault_proxy.py's stdout");
        let process = Kill(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Drain until the proxy exits, so it never writes to a closed pipe.
            lines.for_each(drop);
        });
        let port: u16 = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("fault_proxy.py's first line is not a port: {line:?}")),
            other => panic!("fault_proxy.py did not print its port within 30 s: {other:?}"),
        };
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            python: moto.python.clone(),
            netns: moto.netns.clone(),
            _process: process,
        }
    }

    /// Runs a Python snippet where the proxy runs; its stdout, or why it failed.
    pub fn python(&self, code: &str) -> Result<String, String> {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.python);
                c
            }
            None => Command::new(&self.python),
        };
        let out = command
            .args(["-c", code])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// One request to the proxy's own control API (`/_fault/...`): the answer's body.
    fn control(&self, path: &str, body: Option<&serde_json::Value>) -> String {
        // A JSON string is a Python string literal too.
        let url = serde_json::to_string(&format!("{}{path}", self.endpoint)).expect("url");
        let (data, method) = match body {
            Some(b) => (
                format!(
                    "{}.encode()",
                    serde_json::to_string(&b.to_string()).expect("body")
                ),
                "POST",
            ),
            None => ("None".to_string(), "GET"),
        };
        let code = format!(
            "import sys, urllib.request\nreq = urllib.request.Request({url}, data={data}, method='{method}', headers={{'Content-Type': 'application/json'}})\nsys.stdout.write(urllib.request.urlopen(req, timeout=10).read().decode())"
        );
        self.python(&code)
            .unwrap_or_else(|e| panic!("fault proxy {method} {path} failed:\n{e}"))
    }

    /// Throttles exactly these (service, operation) pairs from now on; operation `*` is every
    /// operation of the service. Replaces what was throttled before.
    pub fn throttle(&self, rules: &[(&str, &str)]) {
        let rules: Vec<[&str; 2]> = rules.iter().map(|(s, o)| [*s, *o]).collect();
        self.control(
            "/_fault/throttle",
            Some(&serde_json::json!({ "rules": rules })),
        );
    }

    /// Throttles nothing from now on.
    pub fn clear(&self) {
        self.throttle(&[]);
    }

    /// Every call proxied since the start or the last [`reset_calls`](Self::reset_calls),
    /// oldest first.
    pub fn calls(&self) -> Vec<Call> {
        let text = self.control("/_fault/calls", None);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("calls are not JSON ({e}): {text}"))
    }

    /// Forgets the calls seen so far.
    pub fn reset_calls(&self) {
        self.control("/_fault/calls/reset", Some(&serde_json::json!({})));
    }

    /// Runs boto3 calls through the proxy: `code` sees clients `ec2`, `elb`, `rest`, `http`,
    /// `sd`, which make one attempt per call (botocore retries nothing) and call Cloud Map's
    /// data plane at the endpoint as given (no `data-` host prefix).
    pub fn boto(&self, code: &str) -> String {
        let preamble = format!(
            "import boto3, json\nfrom botocore.config import Config\ns = boto3.Session(aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1')\nep = '{}'\ncfg = Config(retries={{'total_max_attempts': 1}}, inject_host_prefix=False)\nec2, elb, rest, http, sd = (s.client(n, endpoint_url=ep, config=cfg) for n in ('ec2', 'elbv2', 'apigateway', 'apigatewayv2', 'servicediscovery'))\n",
            self.endpoint
        );
        self.python(&format!("{preamble}{code}"))
            .unwrap_or_else(|e| panic!("boto3 through the fault proxy failed:\n{code}\n{e}"))
    }
}

/// The most calls to `service` within any `window` (sliding: every window that starts at a
/// call), throttled ones included: each one reached the service's endpoint.
pub fn max_in_window(calls: &[Call], service: &str, window: Duration) -> usize {
    let mut times: Vec<f64> = calls
        .iter()
        .filter(|c| c.service == service)
        .map(|c| c.t)
        .collect();
    times.sort_by(f64::total_cmp);
    let window = window.as_secs_f64();
    let mut end = 0;
    let mut most = 0;
    for (start, t) in times.iter().enumerate() {
        while end < times.len() && times[end] - t < window {
            end += 1;
        }
        most = most.max(end - start);
    }
    most
}

/// The most calls to `service` in any one second (sliding): "API Gateway never sees more
/// than N calls per second".
pub fn max_per_second(calls: &[Call], service: &str) -> usize {
    max_in_window(calls, service, Duration::from_secs(1))
}

impl Moto {
    /// Builds the API shapes of tests/moto/routes.py (proxy, rules, post-only, private, tls,
    /// stagevars, domain, over a VPC link v1 to an NLB and a v2 to two ALBs) with `targets` as
    /// the two target addresses; what was made, as JSON, with `moto_differs` (what moto stores
    /// or answers otherwise than AWS).
    pub fn routes(&self, targets: [&str; 2]) -> serde_json::Value {
        self.build("routes.py", targets)
    }
}

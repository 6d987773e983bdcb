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
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/moto/fixture.py");
        let out = self
            .command(&self.python)
            .arg(script)
            .args([
                "--endpoint",
                &self.endpoint,
                "--targets",
                &targets.join(","),
            ])
            .output()
            .expect("run fixture.py");
        assert!(
            out.status.success(),
            "fixture.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("fixture.py prints JSON")
    }
}

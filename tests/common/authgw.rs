//! `tests/auth/gateway.py` as a process: an authenticating gateway stand-in (SigV4 verified from
//! AWS's published algorithm, bearer tokens), an OAuth 2.0 token endpoint with short-lived
//! tokens and an ECS-style credentials endpoint, on 127.0.0.1 (of the host or of a namespace).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Kill, Netns};

/// A Python 3 for the stand-in (standard library only): the one `scripts/test` gives the moto
/// tests (`HOPWATCH_MOTO_PYTHON`), else `python3` on the PATH, else the repo's moto venv.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HOPWATCH_MOTO_PYTHON") {
        return Some(PathBuf::from(p));
    }
    if super::which("python3") {
        return Some(PathBuf::from("python3"));
    }
    super::moto::python()
}

/// Says why the stand-in cannot run; a failure where everything must run (`scripts/test`).
pub fn skip(test: &str) {
    let why = "no python3 for tests/auth/gateway.py";
    if std::env::var_os("HOPWATCH_REQUIRE_MOTO").is_some() {
        panic!("{test} cannot run: {why} (HOPWATCH_REQUIRE_MOTO is set)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// One running stand-in.
pub struct Gateway {
    pub addr: SocketAddr,
    _process: Kill,
}

impl Gateway {
    /// Starts it on 127.0.0.1 with `args` (see the script's `--help`) and waits until it
    /// listens. In `netns` when given (then `addr` is the namespace's own loopback).
    pub fn start(python: &PathBuf, args: &[&str], netns: Option<&Netns>) -> Gateway {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/auth/gateway.py");
        let mut command = match netns {
            Some(ns) => {
                let mut c = ns.command(python.to_str().unwrap_or("python3"));
                c.arg(&script);
                c
            }
            None => {
                let mut c = Command::new(python);
                c.arg(&script);
                c
            }
        };
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/auth/gateway.py");
        let stdout = child.stdout.take().expect("stdout");
        let process = Kill(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read LISTEN");
        let port: u16 = line
            .trim()
            .strip_prefix("LISTEN ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("gateway.py said {line:?}, not LISTEN <port>"));
        Gateway {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _process: process,
        }
    }

    /// What it saw (`/_stats`).
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = super::http_get(self.addr, "/_stats").expect("GET /_stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// The last signed request it received (`/_last`).
    pub fn last_signed(&self) -> serde_json::Value {
        let (_, body) = super::http_get(self.addr, "/_last").expect("GET /_last");
        serde_json::from_str(&body).expect("last JSON")
    }

    /// A number from the stats.
    pub fn count(&self, key: &str) -> u64 {
        self.stats()[key].as_u64().unwrap_or(0)
    }
}

/// Waits, up to `deadline`, for the stand-in's `key` to reach `at_least`.
pub async fn wait_count(gw: &Gateway, key: &str, at_least: u64, deadline: Duration) {
    super::wait_for(&format!("{key} >= {at_least}"), deadline, || {
        gw.count(key) >= at_least
    })
    .await;
}

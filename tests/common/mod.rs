//! Helpers shared by the integration tests: real servers on 127.0.0.1 that behave in one
//! specific (often broken) way, a plain HTTP GET, network namespaces, and waiting on conditions.
#![allow(dead_code)]

pub mod authgw;
pub mod localstack;
pub mod moto;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::process::Command;
use std::time::{Duration, Instant};

use hopwatch::config::{self, Config, Hop};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Loads a config from TOML text, panicking with every problem if it is invalid.
pub fn config(text: &str) -> Config {
    match config::load_str("test.toml", text, &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("test config is invalid:\n{e}\n---\n{text}"),
    }
}

/// A one-hop custom chain probing `url`, with extra hop keys (TOML lines) appended.
pub fn hop(url: &str, extra: &str) -> Hop {
    let text = format!(
        "[agent]\ninterval = \"10s\"\ntimeout = \"2s\"\n\n[[chain]]\nname = \"t\"\nkind = \"custom\"\n\n  [[chain.hop]]\n  name = \"h\"\n  role = \"target\"\n  url = \"{url}\"\n{extra}\n"
    );
    config(&text).chains[0].hops[0].clone()
}

/// Waits until `cond` is true, polling every 20 ms, or panics after `deadline` naming `what`.
pub async fn wait_for<F: FnMut() -> bool>(what: &str, deadline: Duration, mut cond: F) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain blocking HTTP/1.0 GET: (status, body). Independent of the code under test.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = StdStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A port on 127.0.0.1 with nothing listening: connecting is refused.
pub fn refused_port() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

/// Starts a server that reads the request head, then runs `behave` on the socket.
pub async fn raw_server<F, Fut>(behave: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            read_head(&mut stream).await;
            tokio::spawn(behave(stream));
        }
    });
    addr
}

/// Reads until the end of an HTTP request head (or EOF).
pub async fn read_head(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
}

/// Writes a whole response and closes.
pub async fn respond(mut stream: TcpStream, response: Vec<u8>) {
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// Closes with RST.
pub fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// True when this process can create network namespaces (root with `ip` and `nft`).
pub fn can_use_namespaces() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    root && which("ip") && which("nft")
}

pub fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A network namespace made by the test, deleted (with its /etc/netns files) on drop.
pub struct Netns {
    pub name: String,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// `/metrics` of an agent listening on 127.0.0.1:9464 inside this namespace, as
    /// `series -> value`; empty while nothing answers.
    pub fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let out = self
            .command("curl")
            .args(["-sf", "--max-time", "3", "http://127.0.0.1:9464/metrics"])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// Creates a namespace with loopback up. Its resolver points at 127.0.0.1 inside the
    /// namespace, where nothing listens: DNS fails fast and no query leaves the namespace.
    pub fn new(tag: &str) -> Netns {
        let name = format!("hw-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        let dir = format!("/etc/netns/{}", ns.name);
        std::fs::create_dir_all(&dir).expect("mkdir /etc/netns");
        std::fs::write(
            format!("{dir}/resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .expect("resolv.conf");
        ns
    }

    /// Runs a command inside the namespace and asserts it succeeded.
    pub fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full);
    }

    /// Loads an nftables ruleset inside the namespace.
    pub fn nft(&self, ruleset: &str) {
        let path = std::env::temp_dir().join(format!("{}.nft", self.name));
        std::fs::write(&path, ruleset).expect("write ruleset");
        self.exec(&["nft", "-f", path.to_str().unwrap_or_default()]);
        let _ = std::fs::remove_file(path);
    }

    /// A command to run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// A child process killed (by its PID) and reaped when the test lets go of it, passing or not.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `hopwatch echo` as a real process listening on `addr` (loopback).
pub fn echo_process(addr: SocketAddr) -> Kill {
    assert!(addr.ip().is_loopback(), "tests bind loopback only");
    Kill(
        Command::new(env!("CARGO_BIN_EXE_hopwatch"))
            .args(["echo", "--listen", &addr.to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start hopwatch echo"),
    )
}

/// Says why a test cannot run here. Where the suite must run everything (CI sets
/// `HOPWATCH_REQUIRE_NETNS=1`) that is a failure, so a missing capability never passes quietly.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("HOPWATCH_REQUIRE_NETNS").is_some() {
        panic!("{test} cannot run: {why} (HOPWATCH_REQUIRE_NETNS is set)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// Families the agent exports only with `[discovery]` (facts from AWS), and their labels:
/// `tests/discover.rs` asserts a running agent with discovery exports exactly these, and the
/// alert and dashboard checks of `tests/deploy.rs` (whose agent runs without discovery) take
/// them as exported.
pub const DISCOVERY_FAMILIES: &[(&str, &[&str])] = &[
    ("hopwatch_vpc_link_status", &["chain", "link", "status"]),
    (
        "hopwatch_lb_target_health",
        &["chain", "hop", "target", "state", "reason"],
    ),
    (
        "hopwatch_path_rule_missing",
        &["chain", "from", "to", "port", "purpose"],
    ),
];

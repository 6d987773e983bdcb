//! The agent as operators run it: config reloads (file change and SIGHUP), a rejected reload,
//! and stopping with SIGTERM — gracefully, or at once on a second signal.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

struct Agent {
    process: Kill,
    addr: SocketAddr,
    log: PathBuf,
    config: PathBuf,
    _dir: Dir,
}

/// A scratch directory removed when the test ends.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Dir {
    let dir = std::env::temp_dir().join(format!("hopwatch-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    Dir(dir)
}

/// Writes `text` so the agent never reads half of it: a new file renamed over the old.
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

fn chain(name: &str, url: &str) -> String {
    format!(
        "[[chain]]\nname = \"{name}\"\nkind = \"custom\"\n  [[chain.hop]]\n  name = \"target\"\n  role = \"target\"\n  url = \"{url}\"\n"
    )
}

fn agent_section(addr: SocketAddr, interval: &str, timeout: &str) -> String {
    format!("[agent]\nlisten = \"{addr}\"\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\n\n")
}

fn start(tag: &str, config: &str, addr: SocketAddr) -> Agent {
    start_with_env(tag, config, addr, &[])
}

/// Starts the agent with `env` set in its environment (for `${...}` header values).
fn start_with_env(tag: &str, config: &str, addr: SocketAddr, env: &[(&str, &str)]) -> Agent {
    let dir = scratch(tag);
    let path = dir.0.join("hopwatch.toml");
    write_config(&path, config);
    let log = dir.0.join("agent.log");
    let process = Kill(
        Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start hopwatch run"),
    );
    Agent {
        process,
        addr,
        log,
        config: path,
        _dir: dir,
    }
}

impl Agent {
    fn metrics(&self) -> String {
        http_get(self.addr, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.process.0.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, returning its status and how long that took.
    fn exit_within(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.process.0.try_wait().expect("try_wait") {
                return (status, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "agent still running {limit:?} after the signal; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The value of the sample whose line starts with `series` (name and labels, exactly).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn free_addr() -> SocketAddr {
    refused_port()
}

#[tokio::test]
async fn reloads_add_and_remove_chains_keep_the_others_and_reject_a_bad_config() {
    let echo_addr = free_addr();
    let _echo = echo_process(echo_addr);
    let url = |path: &str| format!("http://{echo_addr}/{path}");
    let addr = free_addr();
    let agent_cfg = agent_section(addr, "200ms", "150ms");
    let first = format!(
        "{agent_cfg}{}{}",
        chain("keep", &url("keep")),
        chain("retire", &url("retire"))
    );
    let agent = start("reload", &first, addr);
    let keep_count = "hopwatch_probe_latency_seconds_count{chain=\"keep\",hop=\"target\"}";
    let retire_ok = "hopwatch_probes_total{chain=\"retire\",hop=\"target\",result=\"ok\"}";
    let mut before = 0.0;
    wait_for("both chains probed", Duration::from_secs(15), || {
        let m = agent.metrics();
        before = value(&m, keep_count).unwrap_or(0.0);
        // Ten rounds in: a reset count could not catch up with that in the round or two
        // between the reload and the check below.
        before >= 10.0 && value(&m, retire_ok).is_some_and(|v| v >= 1.0)
    })
    .await;
    let m = agent.metrics();
    assert_eq!(
        value(&m, "hopwatch_config_last_reload_successful"),
        Some(1.0)
    );
    assert!(m.contains("hopwatch_chain_up{chain=\"retire\"}"));

    // A changed file is picked up without a signal: "retire" goes, "added" comes.
    write_config(
        &agent.config,
        &format!(
            "{agent_cfg}{}{}",
            chain("keep", &url("keep")),
            chain("added", &url("added"))
        ),
    );
    let added_ok = "hopwatch_probes_total{chain=\"added\",hop=\"target\",result=\"ok\"}";
    wait_for("the file change applied", Duration::from_secs(15), || {
        let m = agent.metrics();
        value(&m, added_ok).is_some_and(|v| v >= 1.0) && !m.contains("chain=\"retire\"")
    })
    .await;
    let m = agent.metrics();
    // The unchanged chain kept its series: its cumulative count went on from where it was.
    let after = value(&m, keep_count).expect("keep still exported");
    assert!(
        after >= before,
        "keep's count went from {before} back to {after}: its series were reset"
    );
    assert!(m.contains("hopwatch_hop_info{chain=\"added\",hop=\"target\",role=\"target\"} 1"));
    assert!(m.contains("hopwatch_chain_interval_seconds{chain=\"added\"}"));
    let logs = agent.logs();
    assert!(
        logs.contains("config reloaded") && logs.contains("config file changed"),
        "{logs}"
    );

    // An invalid config, announced with SIGHUP: rejected with its errors, nothing changes.
    write_config(
        &agent.config,
        &format!(
            "{agent_cfg}{}[[chain]]\nname = \"broken\"\nkind = \"custom\"\ninterval = \"soon\"\n",
            chain("keep", &url("keep"))
        ),
    );
    agent.signal("HUP");
    wait_for(
        "the rejected reload reported",
        Duration::from_secs(10),
        || value(&agent.metrics(), "hopwatch_config_last_reload_successful") == Some(0.0),
    )
    .await;
    let logs = agent.logs();
    let config_name = agent.config.display().to_string();
    assert!(
        logs.contains("config reload rejected") && logs.contains(&format!("{config_name}:")),
        "the problem, with the file's name and position, is logged:\n{logs}"
    );
    assert!(logs.contains("interval"), "{logs}");
    let m = agent.metrics();
    assert!(!m.contains("chain=\"broken\""));
    let added_before = value(&m, added_ok).expect("added still exported");
    wait_for(
        "the running config still probing",
        Duration::from_secs(10),
        || value(&agent.metrics(), added_ok).is_some_and(|v| v > added_before),
    )
    .await;

    // Fixed again: the next reload succeeds and the metric says so.
    write_config(
        &agent.config,
        &format!("{agent_cfg}{}", chain("keep", &url("keep"))),
    );
    agent.signal("HUP");
    wait_for("the good reload", Duration::from_secs(10), || {
        let m = agent.metrics();
        value(&m, "hopwatch_config_last_reload_successful") == Some(1.0)
            && !m.contains("chain=\"added\"")
    })
    .await;

    let mut agent = agent;
    agent.signal("TERM");
    let (status, _) = agent.exit_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", agent.logs());
}

/// A target that accepts and never answers, counting connections.
/// A target answering 200 to everything and keeping the `x-api-key` of every request.
fn key_recorder() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = keys.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(key) = line.to_ascii_lowercase().strip_prefix("x-api-key:") {
                    seen.lock().expect("lock").push(key.trim().to_string());
                }
                line.clear();
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (addr, keys)
}

/// A secret header value that came from the environment prints as `<redacted>`; a reload that
/// only changes which variable it comes from must still restart the chain with the new value.
#[tokio::test]
async fn a_changed_secret_header_is_a_changed_chain() {
    let (target, keys) = key_recorder();
    let addr = free_addr();
    let with_key = |var: &str| {
        format!(
            "{}{}  headers = {{ x-api-key = \"${{{var}}}\" }}\n",
            agent_section(addr, "200ms", "150ms"),
            chain("orders", &format!("http://{target}/")),
        )
    };
    let agent = start_with_env(
        "secret-reload",
        &with_key("KEY_A"),
        addr,
        &[("KEY_A", "alpha"), ("KEY_B", "beta")],
    );
    wait_for("the first key to arrive", Duration::from_secs(10), || {
        keys.lock().expect("lock").iter().any(|k| k == "alpha")
    })
    .await;
    write_config(&agent.config, &with_key("KEY_B"));
    wait_for(
        "the new key after the reload",
        Duration::from_secs(15),
        || keys.lock().expect("lock").iter().any(|k| k == "beta"),
    )
    .await;
    let logs = agent.logs();
    assert!(
        logs.contains("changed=[\"orders\"]"),
        "the reload names the chain as changed:\n{logs}"
    );
    assert!(
        !logs.contains("alpha") && !logs.contains("beta"),
        "a secret reached the log:\n{logs}"
    );
}

fn silent_target() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn sigterm_lets_probes_in_flight_end_and_a_second_signal_exits_at_once() {
    let timeout = Duration::from_secs(3);
    for second_signal in [false, true] {
        let (target, accepted) = silent_target();
        let addr = free_addr();
        let config = format!(
            "{}{}",
            agent_section(addr, "5s", "3s"),
            chain("hangs", &format!("http://{target}/"))
        );
        let mut agent = start(
            if second_signal { "stop-twice" } else { "stop" },
            &config,
            addr,
        );
        wait_for("a probe in flight", Duration::from_secs(15), || {
            accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1
        })
        .await;
        let probe_started = Instant::now();
        agent.signal("TERM");
        if second_signal {
            wait_for("the agent stopping", Duration::from_secs(5), || {
                agent.logs().contains("a second signal exits at once")
            })
            .await;
            agent.signal("TERM");
            let (status, took) = agent.exit_within(Duration::from_secs(2));
            assert_eq!(status.code(), Some(130), "{}", agent.logs());
            assert!(
                probe_started.elapsed() < timeout,
                "exited only after {took:?}, when the probe would have ended anyway"
            );
        } else {
            let (status, _) = agent.exit_within(timeout + Duration::from_secs(5));
            assert_eq!(status.code(), Some(0), "{}", agent.logs());
            // It waited for the probe to reach its timeout (the signal came after it started).
            let waited = probe_started.elapsed();
            assert!(
                waited + Duration::from_millis(200) >= timeout,
                "exited after {waited:?}, before the probe in flight could time out"
            );
            assert!(agent.logs().contains("stopped"), "{}", agent.logs());
        }
    }
}

#[tokio::test]
async fn serves_on_the_configured_address_only() {
    let echo_addr = free_addr();
    let _echo = echo_process(echo_addr);
    // The same port on another loopback address: 127.0.0.2 answers, 127.0.0.1 must not.
    let probe = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let addr: SocketAddr = format!("127.0.0.2:{port}").parse().expect("addr");
    let config = format!(
        "{}{}",
        agent_section(addr, "1s", "500ms"),
        chain("one", &format!("http://{echo_addr}/"))
    );
    let mut agent = start("listen", &config, addr);
    wait_for("the agent serving", Duration::from_secs(10), || {
        http_get(addr, "/-/healthy").is_ok_and(|(status, _)| status == 200)
    })
    .await;
    let other: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let refused = std::net::TcpStream::connect_timeout(&other, Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "the agent answered on {other}, an address it was not told to listen on"
    );
    agent.signal("TERM");
    let (status, _) = agent.exit_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

/// A changed `[agent] shard` applies on reload: the agent runs the other shard's chains, and
/// `hopwatch_agent_info` and `hopwatch_chains_assigned` say so; the config hash stays (one
/// config, whatever the shard).
#[tokio::test]
async fn a_reload_moves_the_agent_to_another_shard() {
    let echo_addr = free_addr();
    let _echo = echo_process(echo_addr);
    let addr = free_addr();
    let chains: String = (0..6)
        .map(|i| chain(&format!("chain-{i}"), &format!("http://{echo_addr}/{i}")))
        .collect();
    let config = |shard: &str| {
        format!(
            "[agent]\nlisten = \"{addr}\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nshard = \"{shard}\"\n\n{chains}"
        )
    };
    let agent = start_with_env("shard", &config("0/3"), addr, &[]);
    // The pinned owners (src/config/shard.rs): chain-0 and chain-1 in 0/3; 2, 4, 5 in 1/3.
    let runs = |m: &str, i: usize| m.contains(&format!("hopwatch_chain_up{{chain=\"chain-{i}\"}}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let m = agent.metrics();
        if runs(&m, 0) && runs(&m, 1) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "shard 0/3 never ran: {}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!runs(&before, 2) && !runs(&before, 3), "{before}");
    assert_eq!(value(&before, "hopwatch_chains_assigned"), Some(2.0));
    assert!(before.contains("shard=\"0/3\""), "{before}");
    let hash = value(&before, "hopwatch_config_hash");
    assert!(hash.is_some_and(|h| h > 0.0));

    write_config(&agent.config, &config("1/3"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let m = agent.metrics();
        if runs(&m, 2) && runs(&m, 4) && runs(&m, 5) && !runs(&m, 0) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "never moved to 1/3: {}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(value(&after, "hopwatch_chains_assigned"), Some(3.0));
    assert!(
        after.contains("shard=\"1/3\"") && !after.contains("shard=\"0/3\""),
        "{after}"
    );
    assert_eq!(value(&after, "hopwatch_config_hash"), hash);
}

//! The soak: the real agent (`hopwatch run`, a separate process measured by its PID) probing the
//! demo chain (`src/demo.rs`, started inside this test process) at 100 times the demo's probe
//! rate for a bounded time, while every fault the demo supports switches on and off in turn.
//! It prints a table of figures and fails unless, after warm-up, the agent's RSS stayed flat
//! (growth under 5 %), its open file descriptors did not grow, and `/metrics` held exactly the
//! series it held before the first fault once every fault is mended again.
//!
//! Not part of the fast suite (`#[ignore]`): `scripts/soak` builds in release and runs it, e.g.
//! `scripts/soak --minutes 3`. Environment: `HOPWATCH_SOAK_SECONDS` (run length, default 600; at
//! least one full cycle of faults, about 30 s, always runs).
//!
//! Rate: the demo probes its 4 hops every 3 s. The shortest interval a chain may have is 100 ms,
//! so 100 times that rate comes from several chains over the same demo parts: 10 chains of 4
//! hops every 300 ms, 133 probes/s instead of 1.33. Chains differ in what they exercise:
//! odd ones keep connections open between rounds (`reuse_connections`), every third probes each
//! address of the ALB (`per_address`), others probe a health-check URL on the target, and the
//! direct target hop alternates between target-a and target-b.
//!
//! Warm-up: the first 20 % of the run, but never less than the agent's 5-minute latency window
//! plus 30 s. That window keeps every successful sample of the last 5 minutes (about 40,000 at
//! this rate, a few MB), so RSS rightly grows until it is full; judging RSS before then would
//! measure the window filling, not a leak. A run too short for that reports RSS unjudged.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http_get, Kill};
use hopwatch::record::window::DEFAULT_WINDOW;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

/// How many times the demo's probe rate the soak runs at.
const FACTOR: u32 = 100;
/// Interval of each soak chain; the chain count follows from it and [`FACTOR`].
const INTERVAL: Duration = Duration::from_millis(300);
/// Hops of each soak chain (gateway, nlb, alb, target).
const SOAK_HOPS: usize = 4;
/// Probe timeout: below the interval, as the config requires.
const TIMEOUT: &str = "250ms";
/// The agent's latency window plus a margin: the least warm-up.
const LEAST_WARMUP: Duration = Duration::from_secs(DEFAULT_WINDOW.as_secs() + 30);
/// Allowed RSS growth after warm-up.
const RSS_GROWTH_LIMIT: f64 = 5.0;
/// How long a fault may take to show, or to clear, in `/metrics` (hops change state after 2
/// agreeing rounds, 0.6 s here).
const SETTLE: Duration = Duration::from_secs(20);
/// How long a fault stays on once seen, and the chain stays mended once clear: a few rounds.
const HOLD_BROKEN: Duration = Duration::from_millis(1500);
const HOLD_MENDED: Duration = Duration::from_millis(900);
/// Between RSS/fd samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Every fault the demo supports, each part and each link, plus both targets at once.
const FAULTS: &[&[&str]] = &[
    &["gateway"],
    &["nlb"],
    &["alb"],
    &["target-a"],
    &["target-b"],
    &["target-a", "target-b"],
    &["gateway-nlb"],
    &["nlb-alb"],
    &["alb-targets"],
];

/// One scrape of `/metrics`: each series (name and labels, without the value) with its family
/// type and value.
struct Scrape {
    series: BTreeMap<String, (String, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut series = BTreeMap::new();
        let mut kind = String::from("untyped");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                kind = rest.split_whitespace().nth(1).unwrap_or("untyped").into();
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Label values may hold spaces (reasons do); the value never does.
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value = value.parse().unwrap_or(f64::NAN);
            series.insert(key.to_string(), (kind.clone(), value));
        }
        Scrape { series }
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = f64> + 'a {
        self.series
            .iter()
            .filter(move |(k, _)| k.split('{').next() == Some(name))
            .map(|(_, (_, v))| *v)
    }

    fn sum(&self, name: &str) -> f64 {
        self.values(name).sum()
    }

    /// Series that describe the present (gauges, info, summaries): these must go away when
    /// what they describe does.
    fn state(&self) -> BTreeSet<String> {
        self.keys(|kind| kind != "counter" && kind != "histogram")
    }

    fn keys(&self, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
        self.series
            .iter()
            .filter(|(_, (kind, _))| keep(kind))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Some hop or chain is down.
    fn fault_seen(&self) -> bool {
        self.values("hopwatch_hop_up")
            .chain(self.values("hopwatch_chain_up"))
            .any(|v| v == 0.0)
    }

    /// Every chain and hop up, every health check and address passing, no reason series.
    fn all_clear(&self, chains: usize) -> bool {
        self.values("hopwatch_chain_up").count() == chains
            && [
                "hopwatch_chain_up",
                "hopwatch_hop_up",
                "hopwatch_health_check_up",
                "hopwatch_hop_address_up",
            ]
            .iter()
            .all(|name| self.values(name).all(|v| v == 1.0))
            && self.values("hopwatch_chain_broken_reason_info").count() == 0
    }
}

fn scrape(addr: SocketAddr) -> Option<Scrape> {
    match http_get(addr, "/metrics") {
        Ok((200, body)) => Some(Scrape::parse(&body)),
        _ => None,
    }
}

/// Scrapes every 250 ms until `cond` holds; the scrape that satisfied it, or `None` after
/// `deadline`.
fn scrape_until(
    addr: SocketAddr,
    deadline: Duration,
    cond: impl Fn(&Scrape) -> bool,
) -> Option<Scrape> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(s) = scrape(addr) {
            if cond(&s) {
                return Some(s);
            }
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn rss_kb(pid: &str) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

/// A `kB` figure of `/proc/PID/status` (`VmRSS:`, `RssAnon:`, `RssFile:`).
fn status_kb(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn fds(pid: &str) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Open descriptors at rest: the fewest over ten looks a second apart, so a probe's socket
/// that happens to be open at the instant of one look is not counted.
fn fds_at_rest(pid: &str) -> usize {
    let mut least = usize::MAX;
    for _ in 0..10 {
        if let Some(n) = fds(pid) {
            least = least.min(n);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    least
}

fn config_toml(demo: &hopwatch::demo::DemoChain, chains: usize) -> String {
    let url = |a: SocketAddr| format!("http://{a}/orders");
    let mut text = format!(
        "[agent]\ninterval = \"{}ms\"\ntimeout = \"{TIMEOUT}\"\n",
        INTERVAL.as_millis()
    );
    for i in 0..chains {
        let target = demo.addrs[3 + i % 2];
        text.push_str(&format!(
            "\n[[chain]]\nname = \"soak-{i:02}\"\nkind = \"rest-nlb-alb\"\nreuse_connections = {}\n\
             \n  [[chain.hop]]\n  name = \"gateway\"\n  url = \"{}\"\n\
             \n  [[chain.hop]]\n  name = \"nlb\"\n  url = \"{}\"\n\
             \n  [[chain.hop]]\n  name = \"alb\"\n  url = \"{}\"\n  per_address = {}\n\
             \n  [[chain.hop]]\n  name = \"target\"\n  url = \"{}\"\n",
            i % 2 == 1,
            url(demo.addrs[0]),
            url(demo.addrs[1]),
            url(demo.addrs[2]),
            i % 3 == 0,
            url(target),
        ));
        if i % 3 == 1 {
            text.push_str(&format!("  health_url = \"http://{target}/health\"\n"));
        }
    }
    text
}

/// Removes the soak's temporary directory however the test ends.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn pct(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / from.max(1) as f64 * 100.0
}

#[test]
#[ignore = "the soak runs for minutes: scripts/soak"]
fn soak() {
    let run = Duration::from_secs(
        std::env::var("HOPWATCH_SOAK_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let warmup = LEAST_WARMUP.max(run / 5);
    let rss_judged = warmup <= run * 4 / 5;
    let warmup = if rss_judged { warmup } else { run / 5 };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let demo = runtime.block_on(hopwatch::demo::start()).expect("demo");

    // The normal rate is the demo's own config: its hops, every its interval.
    let normal = common::config(&demo.config_toml);
    let normal_hops = normal.chains[0].hops.len();
    let normal_interval = normal.chains[0].interval;
    // FACTOR x (normal hops / normal interval) = chains x (SOAK_HOPS / INTERVAL), rounded up.
    let wanted = u128::from(FACTOR) * normal_hops as u128 * INTERVAL.as_millis();
    let per_chain = normal_interval.as_millis() * SOAK_HOPS as u128;
    let chains = wanted.div_ceil(per_chain.max(1)) as usize;
    let normal_rate = normal_hops as f64 / normal_interval.as_secs_f64();

    let dir = TempDir(std::env::temp_dir().join(format!("hopwatch-soak-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let config = dir.0.join("soak.toml");
    let text = config_toml(&demo, chains);
    common::config(&text); // fails here, with every problem, if the soak's config is invalid
    std::fs::write(&config, &text).expect("write config");

    let mut agent = Kill(
        Command::new(BIN)
            .args([
                "--log-format",
                "json",
                "run",
                "--listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hopwatch run"),
    );
    let pid = agent.0.id().to_string();

    // The agent's log: where it listens, then warnings and errors counted. Always drained, so
    // the agent never blocks on a full pipe.
    let warnings = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let (listen_tx, listen_rx) = mpsc::channel();
    let stderr = agent.0.stderr.take().expect("stderr piped");
    let logger = {
        let (warnings, errors) = (warnings.clone(), errors.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                match event["level"].as_str() {
                    Some("WARN") => warnings.fetch_add(1, Ordering::Relaxed),
                    Some("ERROR") => errors.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
                if event["message"] == "hopwatch agent started" {
                    if let Some(addr) = event["listen"].as_str().and_then(|a| a.parse().ok()) {
                        let _ = listen_tx.send(addr);
                    }
                }
            }
        })
    };
    let addr: SocketAddr = listen_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the agent logs where it listens within 20 s");
    assert!(addr.ip().is_loopback());

    let first = scrape_until(addr, SETTLE, |s| s.all_clear(chains))
        .expect("every chain up before the first fault");
    let start_state = first.state();
    let start_all = first.series.len();
    let start_fds = fds_at_rest(&pid);
    let started = Instant::now();

    // RSS and fds every few seconds, beside the fault schedule.
    let samples: Arc<Mutex<Vec<(Duration, u64, usize)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop, pid) = (samples.clone(), stop.clone(), pid.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let (Some(rss), Some(n)) = (rss_kb(&pid), fds(&pid)) {
                    if let Ok(mut s) = samples.lock() {
                        s.push((started.elapsed(), rss, n));
                    }
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        })
    };
    let demo_rss_start = rss_kb("self").unwrap_or(0);
    let demo_fds_start = fds("self").unwrap_or(0);

    let mut switches = 0u64;
    let mut cycles = 0u64;
    let mut failures: Vec<String> = Vec::new();
    let (mut slowest_seen, mut slowest_clear) = (Duration::ZERO, Duration::ZERO);
    let mut after_cycle: Option<Scrape> = None;
    let (mut most_series, mut most_reasons) = (0, 0);
    let mut warm: Option<(Scrape, usize)> = None;
    // Until the time is up, but at least one full cycle: the series are compared after it.
    'run: while started.elapsed() < run || cycles == 0 {
        for fault in FAULTS {
            for part in *fault {
                assert!(demo.faults.set(part, true), "the demo has no fault {part}");
            }
            switches += 1;
            let t = Instant::now();
            match scrape_until(addr, SETTLE, Scrape::fault_seen) {
                Some(_) => slowest_seen = slowest_seen.max(t.elapsed()),
                None => failures.push(format!("{fault:?} not seen within {SETTLE:?}")),
            }
            std::thread::sleep(HOLD_BROKEN);
            // What the fault added, to show the series criterion is not vacuous.
            if let Some(s) = scrape(addr) {
                most_series = most_series.max(s.series.len());
                most_reasons =
                    most_reasons.max(s.values("hopwatch_chain_broken_reason_info").count());
            }
            for part in *fault {
                demo.faults.set(part, false);
            }
            switches += 1;
            let t = Instant::now();
            match scrape_until(addr, SETTLE, |s| s.all_clear(chains)) {
                Some(clear) => {
                    slowest_clear = slowest_clear.max(t.elapsed());
                    if warm.is_none() && started.elapsed() >= warmup {
                        warm = Some((clear, fds_at_rest(&pid)));
                    }
                }
                None => failures.push(format!(
                    "{fault:?} still not clear {SETTLE:?} after mending"
                )),
            }
            if agent.0.try_wait().ok().flatten().is_some() {
                failures.push("the agent exited during the soak".into());
                break 'run;
            }
            std::thread::sleep(HOLD_MENDED);
            if started.elapsed() >= run && cycles > 0 {
                break 'run;
            }
        }
        cycles += 1;
        if after_cycle.is_none() {
            after_cycle = scrape_until(addr, SETTLE, |s| s.all_clear(chains));
        }
    }

    // The end: every fault mended (the schedule always mends before it stops).
    let end = scrape_until(addr, SETTLE, |s| s.all_clear(chains));
    let end_fds = fds_at_rest(&pid);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let demo_rss_end = rss_kb("self").unwrap_or(0);
    let demo_fds_end = fds("self").unwrap_or(0);

    // A clean stop: SIGTERM to the agent by its PID, and it exits 0 promptly.
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let term = Instant::now();
    let mut exit = None;
    while term.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(status)) = agent.0.try_wait() {
            exit = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop_time = term.elapsed();
    drop(agent);
    let _ = logger.join();
    runtime.block_on(demo.shutdown());

    // Figures.
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let Some(end) = end else {
        panic!("the chains never came back up at the end; failures: {failures:#?}");
    };
    let probes = end.sum("hopwatch_probes_total");
    let rounds = end.sum("hopwatch_schedule_lag_seconds_count");
    let rate = probes / elapsed.as_secs_f64();
    let warm_rss = samples
        .iter()
        .find(|(at, _, _)| *at >= warmup)
        .map(|s| s.1)
        .unwrap_or(0);
    let after: Vec<u64> = samples
        .iter()
        .filter(|(at, _, _)| *at >= warmup)
        .map(|s| s.1)
        .collect();
    let max_rss = after.iter().copied().max().unwrap_or(0);
    let end_rss = after.last().copied().unwrap_or(0);
    let first_rss = samples.first().map(|s| s.1).unwrap_or(0);
    let growth = pct(warm_rss, end_rss);
    let rss_ok = !rss_judged || (warm_rss > 0 && growth < RSS_GROWTH_LIMIT);
    let warm_fds = warm.as_ref().map(|w| w.1);
    let fds_ok = end_fds <= start_fds && warm_fds.is_none_or(|n| n <= start_fds);

    let end_state = end.state();
    let gone: Vec<&String> = start_state.difference(&end_state).collect();
    let left: Vec<&String> = end_state.difference(&start_state).collect();
    let accumulators = |s: &Scrape| s.keys(|k| k == "counter" || k == "histogram");
    let (cycle_acc, end_acc) = (
        after_cycle.as_ref().map(accumulators).unwrap_or_default(),
        accumulators(&end),
    );
    let new_acc: Vec<&String> = end_acc.difference(&cycle_acc).collect();
    let series_ok =
        gone.is_empty() && left.is_empty() && after_cycle.is_some() && new_acc.is_empty();

    let names: Vec<String> = FAULTS.iter().map(|f| f.join("+")).collect();
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!();
    println!(
        "hopwatch soak: {chains} chains x {SOAK_HOPS} hops every {}ms over the demo's parts (agent PID {pid}, a separate process)",
        INTERVAL.as_millis()
    );
    println!(
        "run {:.0} s, warm-up {:.0} s ({})",
        elapsed.as_secs_f64(),
        warmup.as_secs_f64(),
        if rss_judged {
            "20 % of the run, at least the 5-min latency window + 30 s"
        } else {
            "20 % of the run: too short for the latency window to fill"
        }
    );
    println!();
    let row = |k: &str, v: String| println!("  {k:<36} {v}");
    row(
        "probes made (traffic)",
        format!(
            "{probes:.0} ({rate:.1}/s = {:.0}x the demo's {normal_rate:.2}/s)",
            rate / normal_rate
        ),
    );
    row("rounds", format!("{rounds:.0}"));
    row(
        "fault switches",
        format!(
            "{switches} ({cycles} full cycles of {}: {})",
            FAULTS.len(),
            names.join(", ")
        ),
    );
    row(
        "slowest fault seen / cleared",
        format!(
            "{:.1} s / {:.1} s",
            slowest_seen.as_secs_f64(),
            slowest_clear.as_secs_f64()
        ),
    );
    row(
        "RSS first / warm-up end / max / end",
        format!(
            "{} / {} / {} / {}",
            mb(first_rss),
            mb(warm_rss),
            mb(max_rss),
            mb(end_rss)
        ),
    );
    let per_minute: Vec<String> = samples
        .iter()
        .filter(|(at, _, _)| at.as_secs() % 60 < SAMPLE_EVERY.as_secs())
        .map(|s| format!("{:.1}", s.1 as f64 / 1024.0))
        .collect();
    row("RSS each minute, MB", per_minute.join(" "));
    row(
        "RSS growth after warm-up",
        if rss_judged {
            format!(
                "{growth:+.1} % (max {:+.1} %)  {} (< {RSS_GROWTH_LIMIT} %)",
                pct(warm_rss, max_rss),
                verdict(rss_ok)
            )
        } else {
            format!(
                "{growth:+.1} % (max {:+.1} %)  NOT JUDGED: a run under {:.0} s ends before the latency window is full",
                pct(warm_rss, max_rss),
                (LEAST_WARMUP * 5 / 4).as_secs_f64()
            )
        },
    );
    row(
        "open fds start / warm-up / end",
        format!(
            "{start_fds} / {} / {end_fds}  {}",
            warm_fds.map_or("-".into(), |n| n.to_string()),
            verdict(fds_ok)
        ),
    );
    row(
        "series start / end (no fault)",
        format!(
            "{start_all} / {} (state series {} / {}; counter+histogram series after cycle 1 / end: {} / {})  {}",
            end.series.len(),
            start_state.len(),
            end_state.len(),
            cycle_acc.len(),
            end_acc.len(),
            verdict(series_ok)
        ),
    );
    row(
        "series with a fault on, at most",
        format!("{most_series} (reason series: up to {most_reasons})"),
    );
    row(
        "agent log warnings / errors",
        format!(
            "{} / {}",
            warnings.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed)
        ),
    );
    row(
        "agent stop on SIGTERM",
        match exit {
            Some(s) => format!("{s} after {:.2} s", stop_time.as_secs_f64()),
            None => "did not exit within 20 s (killed)".into(),
        },
    );
    row(
        "demo (this test process) RSS, fds",
        format!(
            "{} -> {}, {demo_fds_start} -> {demo_fds_end} (not judged)",
            mb(demo_rss_start),
            mb(demo_rss_end)
        ),
    );
    for (what, list) in [
        ("state series gone since start", &gone),
        ("state series left behind", &left),
        ("counter/histogram series new after cycle 1", &new_acc),
    ] {
        if !list.is_empty() {
            println!("  {what}:");
            for s in list.iter().take(20) {
                println!("    {s}");
            }
        }
    }
    for f in &failures {
        println!("  failure: {f}");
    }
    let exit_ok = exit.is_some_and(|s| s.success());
    let pass = rss_ok && fds_ok && series_ok && failures.is_empty() && exit_ok;
    println!();
    println!("soak {}", verdict(pass));
    assert!(pass, "the soak failed: see the figures above");
}

/// `/metrics` of an agent listening on 127.0.0.1:9464 inside `ns`, as text.
fn metrics_in(ns: &common::Netns) -> String {
    let out = ns
        .command("curl")
        .args(["-sf", "--max-time", "3", "http://127.0.0.1:9464/metrics"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

/// One look at the churn soak's agent.
struct ChurnSample {
    at: Duration,
    /// VmRSS, and its anonymous and file-backed parts, kB.
    rss: u64,
    anon: u64,
    file: u64,
    fds: usize,
    series: usize,
    walks: f64,
    errors: f64,
}

/// `HOPWATCH_SOAK_WRAP`, split at whitespace: a command the churn soak starts the agent under
/// (`heaptrack -o /tmp/churn`, `env MALLOC_ARENA_MAX=2`); empty when unset.
fn soak_wrap() -> Vec<String> {
    std::env::var("HOPWATCH_SOAK_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The agent's PID given the PID of what was started: itself, or the first descendant that
/// runs this build's `hopwatch` (a wrapper such as heaptrack forks it). Waits up to 30 s.
fn agent_pid(started: u32) -> u32 {
    let bin = std::fs::canonicalize(BIN).expect("the hopwatch binary");
    let runs_bin =
        |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == bin);
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if runs_bin(started) {
            return started;
        }
        let descendant = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| runs_bin(pid))
            .find(|&pid| {
                let mut at = pid;
                for _ in 0..8 {
                    match parent(at) {
                        Some(p) if p == started => return true,
                        Some(p) if p > 1 => at = p,
                        _ => return false,
                    }
                }
                false
            });
        if let Some(pid) = descendant {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no hopwatch process under the wrapper (PID {started}) within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sum of a family's samples in an exposition.
fn family_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The churn soak (issue 22): the agent with `[discovery] refresh = "1s"` watches a moto estate
/// (tests/moto/fixture.py) while tests/moto/churn.py creates and deletes ten REST APIs every
/// 3 s, adds and removes a stage, deregisters and registers a target and revokes and authorizes
/// a security-group rule. Everything runs in a network namespace of its own (the estate names
/// AWS host names and private addresses). Fails unless, from the end of warm-up (half the run,
/// minute 2 of the default 4) to the end, RSS grew under 5 %, the open fds did not grow, and,
/// once the churn stops and its APIs are deleted, no series of a removed chain is left.
/// `scripts/soak --churn [--minutes 4]` runs it in release.
///
/// `HOPWATCH_SOAK_WRAP` (words split at whitespace) starts the agent under a wrapper, e.g.
/// `heaptrack -o /tmp/churn` or `env MALLOC_ARENA_MAX=2`; the agent's own PID (the wrapper's
/// descendant running this build's `hopwatch`) is what is measured, and at the end the agent is
/// killed and the wrapper waited for (heaptrack writes its file then).
#[test]
#[ignore = "the churn soak runs for minutes: scripts/soak --churn"]
fn churn() {
    let run = Duration::from_secs(
        std::env::var("HOPWATCH_SOAK_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(240),
    );
    let warmup = run / 2;
    assert!(
        common::can_use_namespaces(),
        "the churn soak needs root and ip netns"
    );
    let python =
        common::moto::python().expect("a Python with moto (.venv-moto, scripts/test makes it)");
    let ns = common::Netns::new("churn");
    let moto = common::moto::Moto::start(python.clone(), Some(&ns));
    moto.fixture(["127.0.0.5", "127.0.0.6"]);
    ns.exec(&["ip", "addr", "add", "127.0.0.5/8", "dev", "lo"]);
    let _targets: Vec<Kill> = ["127.0.0.5:80", "127.0.0.6:80"]
        .iter()
        .map(|a| {
            Kill(
                ns.command(BIN)
                    .args(["echo", "--listen", a])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("echo"),
            )
        })
        .collect();
    let dir = TempDir(std::env::temp_dir().join(format!("hopwatch-churn-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let config = dir.0.join("churn.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"127.0.0.1:9464\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n[discovery]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\nrefresh = \"1s\"\nmax_calls_per_second = 10\n",
            moto.endpoint
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.0.join("agent.log")).expect("log");
    let wrap = soak_wrap();
    let mut command = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = ns.command(program);
            c.args(args).arg(BIN);
            c
        }
        None => ns.command(BIN),
    };
    let agent_started = Instant::now();
    let mut agent = Kill(
        command
            .args(["run", "--config"])
            .arg(&config)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hopwatch run"),
    );
    // `ip netns exec` execs the program: this PID is the agent's, or its wrapper's, which
    // starts the agent as itself (`env`) or as a descendant (`heaptrack`).
    let pid = agent_pid(agent.0.id()).to_string();
    let mut churner = Kill(
        ns.command(python.to_str().unwrap_or("python3"))
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto/churn.py"))
            .args(["--endpoint", &moto.endpoint])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("churn.py"),
    );
    // churn.py prints a line per period: read them all, or it blocks once the pipe is full
    // (about 200 periods, 10 minutes), and count them.
    let periods = Arc::new(AtomicU64::new(0));
    let churn_out = churner.0.stdout.take().expect("churn.py's stdout piped");
    {
        let periods = periods.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(churn_out).lines() {
                if line.is_ok_and(|l| l.starts_with("{\"period\"")) {
                    periods.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while family_sum(
        &metrics_in(&ns),
        "hopwatch_discovery_duration_seconds_count",
    ) < 1.0
    {
        assert!(Instant::now() < deadline, "no walk within 60 s");
        std::thread::sleep(Duration::from_millis(500));
    }
    // RSS (and its anonymous and file-backed parts: heap, stacks and the allocator's arenas;
    // the binary's pages as they are first run), fds, series and walks every 2 s.
    let mut samples: Vec<ChurnSample> = Vec::new();
    let mut warm: Option<(u64, usize)> = None;
    while started.elapsed() < run {
        let text = metrics_in(&ns);
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        if let (Some(rss), Some(fds)) = (rss_kb(&pid), fds(&pid)) {
            samples.push(ChurnSample {
                at: started.elapsed(),
                rss,
                anon: status_kb(&pid, "RssAnon:").unwrap_or(0),
                file: status_kb(&pid, "RssFile:").unwrap_or(0),
                fds,
                series,
                walks: family_sum(&text, "hopwatch_discovery_duration_seconds_count"),
                errors: family_sum(&text, "hopwatch_discovery_errors_total"),
            });
        }
        if warm.is_none() && started.elapsed() >= warmup {
            warm = Some((rss_kb(&pid).unwrap_or(0), fds_at_rest(&pid)));
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    let end_rss = rss_kb(&pid).unwrap_or(0);
    let end_fds = fds_at_rest(&pid);
    drop(churner);
    // The churn's APIs deleted: their chains and every series of them must go.
    moto.boto(
        "for a in rest.get_rest_apis(limit=500)['items']:\n    if a['name'].startswith('churn-'):\n        rest.delete_rest_api(restApiId=a['id'])\n",
    );
    let walks = family_sum(
        &metrics_in(&ns),
        "hopwatch_discovery_duration_seconds_count",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let left = loop {
        let text = metrics_in(&ns);
        let churned: Vec<String> = text
            .lines()
            .filter(|l| l.contains("chain=\"churn-"))
            .map(str::to_string)
            .collect();
        if churned.is_empty()
            && family_sum(&text, "hopwatch_discovery_duration_seconds_count") >= walks + 2.0
        {
            break churned;
        }
        if Instant::now() > deadline {
            break churned;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let churned = periods.load(Ordering::Relaxed);
    if wrap.is_empty() {
        drop(agent);
    } else {
        // The agent killed as without a wrapper; the wrapper then ends on its own (heaptrack
        // writes its file), or is killed after 5 minutes.
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let end = Instant::now() + Duration::from_secs(300);
        while agent.0.try_wait().ok().flatten().is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(agent);
    }

    let (warm_rss, warm_fds) = warm.unwrap_or((0, 0));
    let max_rss = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    println!("churn soak: {:?} of churn, warm-up {:?}", run, warmup);
    if !wrap.is_empty() {
        println!(
            "  agent PID {pid} run by HOPWATCH_SOAK_WRAP={:?}, started {:.1} s before t=0",
            wrap.join(" "),
            (started - agent_started).as_secs_f64()
        );
    }
    println!("  churn periods (3 s each): {churned}");
    println!("  t(s)   RSS       anon      file      fds  series  walks  discovery errors");
    for s in samples.iter().step_by(15) {
        println!(
            "  {:>4}  {:>8}  {:>8}  {:>8}  {:>3}  {:>6}  {:>5}  {}",
            s.at.as_secs(),
            mb(s.rss),
            mb(s.anon),
            mb(s.file),
            s.fds,
            s.series,
            s.walks,
            s.errors
        );
    }
    let growth = pct(warm_rss, end_rss);
    println!(
        "  RSS at warm-up {} -> end {} ({growth:+.1} %), max {}; fds at rest {} -> {}; series of removed chains left: {}",
        mb(warm_rss),
        mb(end_rss),
        mb(max_rss),
        warm_fds,
        end_fds,
        left.len()
    );
    assert!(
        growth < RSS_GROWTH_LIMIT,
        "RSS grew {growth:.1} % after warm-up"
    );
    assert!(
        end_fds <= warm_fds,
        "open fds grew: {warm_fds} -> {end_fds}"
    );
    assert!(left.is_empty(), "series of removed chains left: {left:?}");
}

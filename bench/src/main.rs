//! `hopwatch-bench`: what a probe costs, measured three ways in one run on one machine, against
//! loopback targets only.
//!
//! 1. the floor: a blocking fresh-connection GET in a tight loop ([`floor`]);
//! 2. `hopwatch run` with N hops at a 1 s interval against `hopwatch echo` targets;
//! 3. Debian's `prometheus-blackbox-exporter`, driven through `/probe` at the same rate.
//!
//! CPU is read from each process's `/proc/PID/stat` over the same kind of window, so the
//! ratios compare like with like. Then accuracy against a target with a known delay, and
//! hopwatch's memory, CPU and `/metrics` render time as the number of hops grows at a constant
//! probe rate. Run through `bench/run`, which builds and installs what this needs.

mod blackbox;
mod floor;
mod http;
mod proc;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use proc::{free_port, wait_for, Proc};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Probes per second every agent is held to.
const RATE: f64 = 1000.0;
/// The accuracy target's delay (`hopwatch echo --delay`).
const DELAY: Duration = Duration::from_millis(20);
/// Samples taken of the delayed target by each agent.
const ACCURACY_SAMPLES: usize = 200;

struct Options {
    hopwatch: PathBuf,
    blackbox: PathBuf,
    hops: usize,
    scale: Vec<usize>,
    warmup: Duration,
    seconds: Duration,
    /// Parts to run (all when empty): floor, hopwatch, blackbox, accuracy.
    only: Vec<String>,
    /// `[agent] detail` levels the scale runs at; the comparison runs at the first.
    details: Vec<String>,
}

impl Options {
    fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

fn usage() -> &'static str {
    "usage: hopwatch-bench [--hopwatch PATH] [--blackbox PATH] [--hops N] [--scale N,N,..] \
     [--warmup SECONDS] [--seconds SECONDS] [--only floor,hopwatch,blackbox,accuracy] \
     [--detail standard,full]"
}

fn options() -> Result<Options> {
    let mut o = Options {
        hopwatch: PathBuf::from("target/release/hopwatch"),
        blackbox: PathBuf::from("/usr/bin/prometheus-blackbox-exporter"),
        hops: 1000,
        scale: vec![1000, 5000, 10000],
        warmup: Duration::from_secs(5),
        seconds: Duration::from_secs(20),
        only: Vec::new(),
        details: vec!["standard".into(), "full".into()],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))
        };
        match flag.as_str() {
            "--hopwatch" => o.hopwatch = value()?.into(),
            "--blackbox" => o.blackbox = value()?.into(),
            "--hops" => o.hops = value()?.parse()?,
            "--scale" => {
                o.scale = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()?
            }
            "--warmup" => o.warmup = Duration::from_secs_f64(value()?.parse()?),
            "--seconds" => o.seconds = Duration::from_secs_f64(value()?.parse()?),
            "--only" => o.only = value()?.split(',').map(str::to_string).collect(),
            "--detail" => o.details = value()?.split(',').map(str::to_string).collect(),
            _ => return Err(format!("unknown argument {flag}\n{}", usage()).into()),
        }
    }
    if o.hops < 4 || o.scale.iter().any(|&n| n < 4) {
        return Err("at least 4 hops (one chain)".into());
    }
    if o.details.is_empty() || o.details.iter().any(|d| d != "standard" && d != "full") {
        return Err(format!("--detail takes standard and/or full\n{}", usage()).into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = if args.get(1).map(String::as_str) == Some("floor") {
        floor_child(&args[2..])
    } else {
        options().and_then(|o| run(&o))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hopwatch-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn floor_child(args: &[String]) -> Result<()> {
    let [addr, warmup, seconds] = args else {
        return Err("usage: hopwatch-bench floor ADDR WARMUP_S SECONDS".into());
    };
    Ok(floor::child(
        addr.parse()?,
        Duration::from_secs_f64(warmup.parse()?),
        Duration::from_secs_f64(seconds.parse()?),
    )?)
}

/// A scratch directory removed at the end, whatever happened.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One measured agent.
#[derive(Default)]
struct Row {
    name: String,
    probes: u64,
    failed: u64,
    elapsed: Duration,
    cpu: Duration,
    peak_rss: u64,
    lag: Option<(f64, f64)>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.probes as f64 / self.elapsed.as_secs_f64()
    }
    /// CPU microseconds per probe.
    fn cpu_per_probe(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.probes.max(1) as f64
    }
}

/// A hopwatch run at one number of hops.
struct Scaled {
    row: Row,
    /// `[agent] detail`.
    detail: String,
    hops: usize,
    interval: Duration,
    render: Duration,
    render_bytes: usize,
}

fn run(o: &Options) -> Result<()> {
    for (what, path) in [
        ("hopwatch", &o.hopwatch),
        ("blackbox_exporter", &o.blackbox),
    ] {
        if !path.exists() {
            return Err(format!("{what} not found at {}", path.display()).into());
        }
    }
    let dir = std::env::temp_dir().join(format!("hopwatch-bench.{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let scratch = Scratch(dir);
    let dir = scratch.0.as_path();

    // Two targets so no single responder is what limits the rate.
    let mut targets = Vec::new();
    let mut ports = Vec::new();
    for i in 0..2 {
        let port = free_port()?;
        targets.push(echo(o, dir, &format!("echo{i}"), port, None)?);
        ports.push(port);
    }
    let delay_port = free_port()?;
    let _delayed = echo(o, dir, "echo-delayed", delay_port, Some(DELAY))?;

    let mut floor = None;
    if o.runs("floor") {
        eprintln!("floor: {}s tight loop…", o.seconds.as_secs_f64());
        floor = Some(floor_row(o, SocketAddr::from(([127, 0, 0, 1], ports[0])))?);
    }
    let mut scaled = Vec::new();
    if o.runs("hopwatch") {
        // The first run (o.hops at the first detail) is the one compared with the floor and
        // blackbox_exporter.
        let mut runs: Vec<(usize, &str)> = vec![(o.hops, o.details[0].as_str())];
        for detail in &o.details {
            for &n in &o.scale {
                if (n, detail.as_str()) != runs[0] {
                    runs.push((n, detail));
                }
            }
        }
        for (n, detail) in runs {
            eprintln!("hopwatch: {n} hops at {RATE} probes/s, detail {detail}…");
            scaled.push(hopwatch_row(o, dir, &ports, n, detail)?);
        }
    }
    let mut bb = None;
    if o.runs("blackbox") {
        eprintln!("blackbox_exporter: {} targets at {RATE} probes/s…", o.hops);
        let urls = target_urls(&ports, o.hops);
        bb = Some(blackbox_row(o, dir, &urls)?);
    }
    let mut acc = None;
    if o.runs("accuracy") {
        eprintln!("accuracy: {ACCURACY_SAMPLES} probes of a target delayed {DELAY:?}…");
        let delayed = format!("http://127.0.0.1:{delay_port}/delayed");
        acc = Some(accuracy(o, dir, &delayed)?);
    }
    drop(targets);
    print!("{}", report(o, floor.as_ref(), &scaled, bb.as_ref(), acc));
    Ok(())
}

fn echo(o: &Options, dir: &Path, name: &str, port: u16, delay: Option<Duration>) -> Result<Proc> {
    let mut cmd = Command::new(&o.hopwatch);
    cmd.args(["echo", "--listen", &format!("127.0.0.1:{port}")]);
    if let Some(d) = delay {
        cmd.args(["--delay", &format!("{}ms", d.as_millis())]);
    }
    let mut p = Proc::spawn(name, &mut cmd, &dir.join(format!("{name}.log")))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(name, Duration::from_secs(10), || {
        http::get(addr, "/").is_ok_and(|(s, _)| s == 200)
    })?;
    p.alive()?;
    Ok(p)
}

fn floor_row(o: &Options, target: SocketAddr) -> Result<Row> {
    let me = std::env::current_exe()?;
    let child = Command::new(me)
        .args([
            "floor",
            &target.to_string(),
            &o.warmup.as_secs_f64().to_string(),
            &o.seconds.as_secs_f64().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut p = Proc::adopt("floor", child);
    let stdout = p.child().stdout.take().ok_or("floor: no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let expect = |line: Option<std::io::Result<String>>| -> Result<String> {
        Ok(line.ok_or("floor: ended early (see its stderr)")??)
    };
    if expect(lines.next())? != "start" {
        return Err("floor: unexpected output".into());
    }
    let (cpu0, t0) = (p.cpu()?, Instant::now());
    let done = expect(lines.next())?;
    let (cpu1, t1) = (p.cpu()?, Instant::now());
    let probes: u64 = done
        .strip_prefix("done ")
        .ok_or("floor: unexpected output")?
        .parse()?;
    let peak_rss = p.peak_rss()?;
    if let Some(mut stdin) = p.child().stdin.take() {
        let _ = stdin.write_all(b"\n");
    }
    Ok(Row {
        name: "floor (blocking connect+GET+read)".into(),
        probes,
        elapsed: t1 - t0,
        cpu: cpu1 - cpu0,
        peak_rss,
        ..Row::default()
    })
}

fn target_urls(ports: &[u16], hops: usize) -> Vec<String> {
    (0..hops)
        .map(|i| {
            format!(
                "http://127.0.0.1:{}/c{}/h{}",
                ports[i % ports.len()],
                i / 4,
                i % 4
            )
        })
        .collect()
}

/// A config of `hops / 4` chains of kind rest-nlb-alb (gateway, nlb, alb, target), every hop
/// an echo target: the shape of a real deployment, diagnosis and all.
fn hopwatch_config(
    listen: u16,
    ports: &[u16],
    hops: usize,
    interval: Duration,
    detail: &str,
) -> String {
    let timeout = Duration::from_millis(800).min(interval.mul_f64(0.8));
    let mut s = format!(
        "[agent]\nlisten = \"127.0.0.1:{listen}\"\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\ndetail = \"{detail}\"\n",
        interval.as_millis(),
        timeout.as_millis()
    );
    let urls = target_urls(ports, hops);
    for (c, chain) in urls.chunks(4).enumerate() {
        if chain.len() < 4 {
            break;
        }
        let _ = write!(s, "\n[[chain]]\nname = \"c{c}\"\nkind = \"rest-nlb-alb\"\n");
        for (hop, url) in ["gateway", "nlb", "alb", "target"].iter().zip(chain) {
            let _ = write!(s, "[[chain.hop]]\nname = \"{hop}\"\nurl = \"{url}\"\n");
        }
    }
    s
}

fn metrics(addr: SocketAddr) -> Result<String> {
    let (status, body) = http::get(addr, "/metrics")?;
    if status != 200 {
        return Err(format!("/metrics answered {status}").into());
    }
    Ok(String::from_utf8(body)?)
}

fn hopwatch_row(
    o: &Options,
    dir: &Path,
    ports: &[u16],
    hops: usize,
    detail: &str,
) -> Result<Scaled> {
    let hops = hops / 4 * 4;
    let interval = Duration::from_secs_f64(hops as f64 / RATE);
    let listen = free_port()?;
    let config = dir.join(format!("hopwatch-{hops}-{detail}.toml"));
    std::fs::write(
        &config,
        hopwatch_config(listen, ports, hops, interval, detail),
    )?;
    let mut cmd = Command::new(&o.hopwatch);
    cmd.arg("run").arg("--config").arg(&config);
    let mut p = Proc::spawn(
        "hopwatch",
        &mut cmd,
        &dir.join(format!("hopwatch-{hops}-{detail}.log")),
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], listen));
    // Warm-up: every hop probed at least once, then the warm-up time on top.
    wait_for("hopwatch's first round", interval * 3 + o.warmup, || {
        metrics(addr).is_ok_and(|m| http::sum(&m, "hopwatch_probes_total") >= hops as f64)
    })?;
    std::thread::sleep(o.warmup);
    p.alive()?;
    let (m0, cpu0, t0) = (metrics(addr)?, p.cpu()?, Instant::now());
    std::thread::sleep(o.seconds);
    // CPU before the closing scrape: rendering is measured on its own below, and at 10,000
    // hops one scrape would add ~2 µs to every probe of the window.
    let (cpu1, t1) = (p.cpu()?, Instant::now());
    let m1 = metrics(addr)?;
    p.alive()?;
    let probes = http::sum(&m1, "hopwatch_probes_total") - http::sum(&m0, "hopwatch_probes_total");
    let ok = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("hopwatch_probes_total{") && l.contains("result=\"ok\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };
    let failed = probes - (ok(&m1) - ok(&m0));
    let lag = lag_quantiles(&m0, &m1);

    // Render time after the CPU window so scrapes don't count as probing CPU; the peak RSS is
    // read after them, since a scrape's buffers are part of what the agent needs.
    let mut renders = Vec::new();
    let mut bytes = 0;
    for _ in 0..7 {
        let start = Instant::now();
        bytes = metrics(addr)?.len();
        renders.push(start.elapsed());
    }
    renders.sort();
    let peak_rss = p.peak_rss()?;
    Ok(Scaled {
        row: Row {
            name: format!("hopwatch run ({hops} hops, detail {detail})"),
            probes: probes as u64,
            failed: failed.max(0.0) as u64,
            elapsed: t1 - t0,
            cpu: cpu1 - cpu0,
            peak_rss,
            lag,
        },
        detail: detail.to_string(),
        hops,
        interval,
        render: renders[renders.len() / 2],
        render_bytes: bytes,
    })
}

/// p50 and p99 of the schedule lag observed between two scrapes, interpolated inside the
/// buckets as Prometheus's `histogram_quantile` does.
fn lag_quantiles(before: &str, after: &str) -> Option<(f64, f64)> {
    let name = "hopwatch_schedule_lag_seconds";
    let b0 = http::buckets(before, name);
    let b1 = http::buckets(after, name);
    if b0.len() != b1.len() || b1.is_empty() {
        return None;
    }
    let delta: Vec<(f64, f64)> = b1
        .iter()
        .zip(&b0)
        .map(|((le, c1), (_, c0))| (*le, c1 - c0))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let q = |q: f64| {
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, count) in &delta {
            if count >= rank {
                if le.is_infinite() {
                    return prev.0;
                }
                let in_bucket = count - prev.1;
                let frac = if in_bucket > 0.0 {
                    (rank - prev.1) / in_bucket
                } else {
                    1.0
                };
                return prev.0 + (le - prev.0) * frac;
            }
            prev = (le, count);
        }
        prev.0
    };
    Some((q(0.5), q(0.99)))
}

/// Starts blackbox_exporter on a free loopback port with [`blackbox::CONFIG`], logging to
/// `log` in `dir`, and waits until it answers.
fn start_blackbox(o: &Options, dir: &Path, log: &str) -> Result<(Proc, SocketAddr)> {
    let config = dir.join("blackbox.yml");
    std::fs::write(&config, blackbox::CONFIG)?;
    let port = free_port()?;
    let mut cmd = Command::new(&o.blackbox);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn");
    let p = Proc::spawn("blackbox_exporter", &mut cmd, &dir.join(log))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for("blackbox_exporter", Duration::from_secs(15), || {
        http::get(addr, "/-/healthy").is_ok_and(|(s, _)| s == 200)
    })?;
    Ok((p, addr))
}

fn blackbox_row(o: &Options, dir: &Path, targets: &[String]) -> Result<Row> {
    let (mut p, addr) = start_blackbox(o, dir, "blackbox.log")?;
    let start = Instant::now();
    let from = start + o.warmup;
    let end = from + o.seconds;
    let mut cpu0 = Duration::ZERO;
    let mut cpu1 = Duration::ZERO;
    let pid = p.pid();
    let paced = std::thread::scope(|scope| -> Result<blackbox::Paced> {
        let sampler = scope.spawn(move || -> std::io::Result<(Duration, Duration)> {
            std::thread::sleep(from.saturating_duration_since(Instant::now()));
            let c0 = proc::cpu_of(pid)?;
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            Ok((c0, proc::cpu_of(pid)?))
        });
        let paced = blackbox::paced(addr, targets, RATE, start, from, end);
        (cpu0, cpu1) = sampler.join().map_err(|_| "sampler panicked")??;
        Ok(paced)
    })?;
    p.alive()?;
    Ok(Row {
        name: "blackbox_exporter (/probe)".into(),
        probes: paced.done,
        failed: paced.failed,
        elapsed: end - from,
        cpu: cpu1 - cpu0,
        peak_rss: p.peak_rss()?,
        lag: None,
    })
}

/// Median measured total minus the true delay, in milliseconds: (hopwatch, blackbox, floor).
fn accuracy(o: &Options, dir: &Path, target: &str) -> Result<(f64, f64, f64)> {
    // hopwatch: one chain of one hop every 100 ms; its own p50 (hdrhistogram, 3 digits).
    let listen = free_port()?;
    let config = dir.join("accuracy.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"127.0.0.1:{listen}\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\n\n\
             [[chain]]\nname = \"accuracy\"\nkind = \"custom\"\n\
             [[chain.hop]]\nname = \"target\"\nrole = \"target\"\nurl = \"{target}\"\n"
        ),
    )?;
    let mut cmd = Command::new(&o.hopwatch);
    cmd.arg("run").arg("--config").arg(&config);
    let agent = Proc::spawn("hopwatch", &mut cmd, &dir.join("accuracy.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], listen));
    let labels = "chain=\"accuracy\",hop=\"target\"";
    let mut p50 = None;
    wait_for(
        "hopwatch accuracy samples",
        Duration::from_secs(ACCURACY_SAMPLES as u64),
        || {
            let Ok(m) = metrics(addr) else { return false };
            let count = http::sample(&m, "hopwatch_probe_latency_seconds_count", labels);
            p50 = http::sample(
                &m,
                "hopwatch_probe_latency_seconds",
                &format!("{labels},quantile=\"0.5\""),
            );
            count.is_some_and(|c| c >= ACCURACY_SAMPLES as f64)
        },
    )?;
    let hw = p50.ok_or("no p50 from hopwatch")? * 1e3 - DELAY.as_secs_f64() * 1e3;
    drop(agent);

    // blackbox: the same target at the same pace, its probe_duration_seconds.
    let (_bb, bb_addr) = start_blackbox(o, dir, "blackbox-acc.log")?;
    let mut d = blackbox::durations(
        bb_addr,
        target,
        ACCURACY_SAMPLES,
        Duration::from_millis(100),
    )?;
    if d.is_empty() {
        return Err("blackbox_exporter: no successful probe of the delayed target".into());
    }
    d.sort_by(f64::total_cmp);
    let bb = d[d.len() / 2] * 1e3 - DELAY.as_secs_f64() * 1e3;
    Ok((hw, bb, floor_accuracy(target)?))
}

/// The floor's own answer: a blocking fresh-connection GET of the delayed target, timed from
/// before `connect` to the server's close, at the same pace. What no agent can go below.
fn floor_accuracy(target: &str) -> Result<f64> {
    let addr: SocketAddr = target
        .trim_start_matches("http://")
        .split('/')
        .next()
        .ok_or("target has no address")?
        .parse()?;
    let request = floor::request(addr, "/delayed");
    let mut buf = vec![0u8; 16 * 1024];
    let mut took = Vec::with_capacity(ACCURACY_SAMPLES);
    let start = Instant::now();
    for k in 0..ACCURACY_SAMPLES {
        let due = start + Duration::from_millis(100) * k as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let t = Instant::now();
        floor::probe(addr, &request, &mut buf)?;
        took.push(t.elapsed().as_secs_f64());
    }
    took.sort_by(f64::total_cmp);
    let p50 = took.get(took.len() / 2).ok_or("no floor sample")?;
    Ok(p50 * 1e3 - DELAY.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}

fn report(
    o: &Options,
    floor: Option<&Row>,
    scaled: &[Scaled],
    bb: Option<&Row>,
    acc: Option<(f64, f64, f64)>,
) -> String {
    let hw = scaled.first().map(|s| &s.row);
    let mut s = String::new();
    let _ = writeln!(s, "machine: {}", machine());
    let _ = writeln!(
        s,
        "window: {:.0} s after {:.0} s warm-up; loopback targets: hopwatch echo\n",
        o.seconds.as_secs_f64(),
        o.warmup.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| agent | probes/s | failed | CPU s / 1,000 probes | CPU µs / probe | peak RSS MiB | lag p50 ms | lag p99 ms |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in [floor, hw, bb].into_iter().flatten() {
        let lag = row
            .lag
            .map_or(("–".to_string(), "–".to_string()), |(a, b)| {
                (format!("{:.3}", a * 1e3), format!("{:.3}", b * 1e3))
            });
        let _ = writeln!(
            s,
            "| {} | {:.0} | {} | {:.4} | {:.1} | {:.1} | {} | {} |",
            row.name,
            row.rate(),
            row.failed,
            row.cpu_per_probe() / 1e3,
            row.cpu_per_probe(),
            mib(row.peak_rss),
            lag.0,
            lag.1
        );
    }
    if let (Some(hw), Some(floor)) = (hw, floor) {
        let _ = writeln!(
            s,
            "\nhopwatch / floor = {:.2}× CPU per probe (target ≤ 1.5×)",
            hw.cpu_per_probe() / floor.cpu_per_probe()
        );
    }
    if let (Some(hw), Some(bb)) = (hw, bb) {
        let _ = writeln!(
            s,
            "blackbox / hopwatch = {:.2}× CPU per probe (target ≥ 5×)",
            bb.cpu_per_probe() / hw.cpu_per_probe()
        );
    }
    if let Some((hw_acc, bb_acc, floor_acc)) = acc {
        let _ = writeln!(
            s,
            "\naccuracy, {ACCURACY_SAMPLES} probes of a target delayed {} ms (measured p50 − delay):\n",
            DELAY.as_millis()
        );
        let _ = writeln!(
            s,
            "| agent | p50 − delay ms |\n|---|---:|\n| hopwatch (hopwatch_probe_latency_seconds p50) | {hw_acc:+.3} |\n| blackbox_exporter (probe_duration_seconds median) | {bb_acc:+.3} |\n| floor (blocking connect + GET + read to close, median) | {floor_acc:+.3} |"
        );
    }
    if scaled.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\nscale, {RATE} probes/s whatever the number of hops (interval = hops / {RATE} s):\n"
    );
    let _ = writeln!(
        s,
        "| detail | hops | interval s | probes/s | CPU µs / probe | peak RSS MiB | /metrics ms (median of 7) | /metrics MiB | lag p99 ms |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut by_hops: Vec<&Scaled> = scaled.iter().collect();
    by_hops.sort_by_key(|r| (r.detail != o.details[0], r.detail.clone(), r.hops));
    for r in by_hops {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.detail,
            r.hops,
            r.interval.as_secs_f64(),
            r.row.rate(),
            r.row.cpu_per_probe(),
            mib(r.row.peak_rss),
            r.render.as_secs_f64() * 1e3,
            mib(r.render_bytes as u64),
            r.row
                .lag
                .map_or("–".to_string(), |(_, p99)| format!("{:.3}", p99 * 1e3)),
        );
    }
    s
}

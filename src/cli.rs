//! The command line. `main.rs` only calls [`main`].

use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::AsyncBufReadExt;

use crate::config::{self, duration::parse_duration, Config, ConfigError};

/// Exit code for usage and config errors.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "hopwatch",
    version,
    about = "Hop-by-hop prober for private API Gateway integrations"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: probe every chain each interval and serve /metrics.
    Run {
        /// The config file (or env:NAME, the TOML in an environment variable); SIGHUP or a
        /// change to it reloads it.
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides [agent] listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[command(flatten)]
        shard: ShardArg,
        /// Where this agent probes from (the vantage label); overrides [agent] vantage.
        /// Default: the ECS task's availability zone, else the host name.
        #[arg(long, env = "HOPWATCH_VANTAGE", value_parser = parse_vantage)]
        vantage: Option<String>,
    },
    /// Probe every chain once and print a per-hop table (exit 0: all up, 1: some down, 2: error).
    Check {
        /// The config file (or env:NAME, the TOML in an environment variable).
        #[arg(long, short)]
        config: PathBuf,
        /// Only this chain.
        #[arg(long)]
        chain: Option<String>,
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
        /// How long to wait for API Gateway's own log record of a failed gateway request,
        /// on chains that name the stage's log groups ("0s": do not look).
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_wait)]
        log_wait: Duration,
        #[command(flatten)]
        shard: ShardArg,
    },
    /// Check a config file and print every problem in it (exit 0 or 2); with a shard, the
    /// chains it runs.
    Validate {
        /// The config file (or env:NAME, the TOML in an environment variable).
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        shard: ShardArg,
    },
    /// The responder to place at targets: answers with the source address it saw.
    Echo {
        /// Where to answer: the target's traffic port (or a port of its own beside it).
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Artificial delay before each answer, e.g. "20ms" (at most 10s; off by default).
        #[arg(long, value_parser = parse_delay)]
        delay: Option<Duration>,
        /// Read PROXY protocol v1/v2 headers (as an NLB target group with proxy protocol v2
        /// sends them) and report the caller and VPC endpoint id they carry.
        #[arg(long)]
        proxy_protocol: bool,
        /// With --proxy-protocol: close connections that start without a PROXY header, as
        /// nginx's `listen ... proxy_protocol` does.
        #[arg(long, requires = "proxy_protocol")]
        require_proxy_protocol: bool,
        /// Serve only TCP peers in this range (repeatable: "10.0.0.0/16", a bare IP); other
        /// connections are closed before anything is read. Default: every source. With
        /// --proxy-protocol the peer checked is still the TCP one (the load balancer node).
        #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
        allow: Vec<crate::config::Cidr>,
        /// Answer with this HTTP status instead of 200 (same reply body): an application that
        /// fails on its own, to try verdicts and alerts out.
        #[arg(long, value_name = "CODE", value_parser = parse_status)]
        status: Option<http::StatusCode>,
        /// With --status: only for request paths starting with this prefix (e.g. "/prod/"),
        /// as an application failing only on the path the gateway sends.
        #[arg(long, value_name = "PREFIX", requires = "status")]
        status_path: Option<String>,
    },
    /// Exit 0 when a running agent's /-/healthy answers 2xx, else 1: a container health check
    /// for images without curl.
    Health {
        /// The agent's health URL.
        #[arg(long, default_value = "http://127.0.0.1:9464/-/healthy")]
        url: String,
    },
    /// Walk a region's API Gateway, ELB, Cloud Map and EC2 (read-only) and print a config with
    /// one chain per API stage and VPC-link integration (exit 0; 1 when some calls failed).
    Discover {
        #[command(flatten)]
        walk: WalkArgs,
        /// Write the config here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Judge every security-group and NACL rule on each discovered chain's path, traffic and
    /// health-check ports, and say which rule to add (exit 0: every edge allowed; 1: a rule is
    /// missing or a NACL denies; 2: nothing blocks, but something could not be read).
    Explain {
        #[command(flatten)]
        walk: WalkArgs,
        /// Explain the chains of this config's [discovery] (its region, endpoint, APIs and
        /// stages; the options above override them).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Run a local T2-shaped chain in-process and watch it (no AWS, no root).
    Demo {
        /// Where the demo agent serves /metrics.
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: SocketAddr,
    },
}

impl From<ShardArg> for config::Placement {
    fn from(arg: ShardArg) -> Self {
        config::Placement {
            shard: arg.shard,
            vantage: None,
        }
    }
}

/// What `discover` and `explain` walk.
#[derive(clap::Args)]
struct WalkArgs {
    /// The AWS region (default: the SDK's chain: AWS_REGION, the profile, ECS, IMDS).
    #[arg(long)]
    region: Option<String>,
    /// One endpoint for every service (VPC interface endpoints, or a test server).
    #[arg(long)]
    endpoint_url: Option<String>,
    /// Only this API id (repeatable; default: every REST and HTTP API with a VPC-link
    /// integration).
    #[arg(long = "api", value_name = "ID")]
    apis: Vec<String>,
    /// Only this stage (repeatable; default: every stage).
    #[arg(long = "stage", value_name = "NAME")]
    stages: Vec<String>,
    /// The path to probe on every chain, over each route's own (default: the route's own,
    /// its parameters filled from --path-param, a greedy {proxy+} given a child path).
    #[arg(long)]
    path: Option<String>,
    /// Also probe routes that take only these methods (POST, PUT, PATCH, DELETE), with a body to
    /// edit; without it such a route's chain is written commented out.
    #[arg(long, value_delimiter = ',', value_name = "METHOD")]
    methods: Vec<String>,
    /// The value of a path parameter (repeatable): `id=42` fills `{id}`, `proxy=health` the
    /// child path of a greedy `{proxy+}`.
    #[arg(long = "path-param", value_name = "NAME=VALUE", value_parser = parse_param)]
    path_params: Vec<(String, String)>,
}

impl From<WalkArgs> for crate::discover::Options {
    fn from(a: WalkArgs) -> Self {
        crate::discover::Options {
            region: a.region,
            endpoint_url: a.endpoint_url,
            apis: a.apis,
            stages: a.stages,
            path: a.path,
            methods: a
                .methods
                .into_iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            path_params: a.path_params.into_iter().collect(),
            shard: crate::config::Shard::WHOLE,
        }
    }
}

/// Says which calls of a walk failed, and the IAM action a denied one needs.
fn say_walk_errors(command: &str, errors: &[crate::discover::WalkError], denied_then: &str) {
    for e in errors {
        if e.access_denied {
            eprintln!(
                "hopwatch {command}: {} was denied: allow {}{denied_then}",
                e.action,
                e.iam_action()
            );
        } else {
            eprintln!("hopwatch {command}: {} failed: {}", e.action, e.message);
        }
    }
}

/// `--shard N/M` (or `HOPWATCH_SHARD`): overrides `[agent] shard`.
#[derive(clap::Args, Clone, Copy)]
struct ShardArg {
    /// Run only the chains that hash to shard N of M ("0/3"; from 0; a StatefulSet pod name
    /// ending in its ordinal works as N). Overrides [agent] shard.
    #[arg(long, env = "HOPWATCH_SHARD", value_name = "N/M", value_parser = config::Shard::parse)]
    shard: Option<config::Shard>,
}

fn parse_vantage(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 255 || text.chars().any(char::is_control) {
        return Err("a vantage is 1 to 255 characters, none of them control characters".into());
    }
    Ok(text.to_string())
}

fn parse_delay(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration such as \"20ms\""))?;
    if d > crate::echo::MAX_DELAY {
        return Err(format!(
            "delay must be at most {}",
            config::duration::format_duration(crate::echo::MAX_DELAY)
        ));
    }
    Ok(d)
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .filter(|d| *d <= Duration::from_secs(900))
        .ok_or_else(|| format!("{text:?} is not a duration up to 15m, such as \"30s\""))
}

fn parse_status(text: &str) -> Result<http::StatusCode, String> {
    text.parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| http::StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("{text:?} is not an HTTP status from 200 to 599"))
}

fn parse_cidr(text: &str) -> Result<crate::config::Cidr, String> {
    crate::config::Cidr::parse(text)
        .ok_or_else(|| format!("{text:?} is not a CIDR such as \"10.0.0.0/16\" or an IP address"))
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Parses the arguments, runs the command, returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let default_level = match cli.command {
        Command::Check { .. } | Command::Validate { .. } | Command::Health { .. } => "warn",
        // The demo's live table is the output, and it already shows every failure; logs would
        // only scroll it away.
        Command::Demo { .. } => "error",
        _ => "info",
    };
    init_logging(cli.log_format, default_level);
    // The agent runs its probes on one thread: probing is waiting, and one thread saves the
    // cross-thread wake-ups and work stealing (~12 % of the CPU per probe at 1,000 probes/s,
    // bench/run). Rendering /metrics and writing EMF go to the blocking pool. The echo
    // responder and the demo serve others and keep a thread per core.
    if matches!(cli.command, Command::Run { .. }) {
        bound_malloc_arenas();
    }
    let mut builder = match cli.command {
        Command::Run { .. } => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("hopwatch: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(dispatch(cli.command));
    // A blocking read of stdin (the demo's console) never returns on its own; don't let it hold
    // the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hopwatch: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Caps glibc's malloc arenas at two for `run`: the runtime thread's and one that the blocking
/// pool's threads (DNS lookups, /metrics renders, config reloads) share. glibc gives each
/// thread that allocates an arena of its own, up to 8 per core of the host (not of the
/// container's CPU quota), and each arena keeps what was freed in it: under discovery churn the
/// agent's RSS grew with the number of pool threads while its live heap stayed flat (1.5 MB;
/// tests/soak.rs `churn` under heaptrack, issue 22). `MALLOC_ARENA_MAX` in the environment
/// still decides when set. Called before the runtime starts any thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt sets one allocator parameter and touches no Rust memory; no other
        // thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_malloc_arenas() {}

fn load(path: &std::path::Path, place: &config::Placement) -> Result<Config, ExitCode> {
    load_quietly(path, place).inspect(|config| {
        for w in &config.warnings {
            eprintln!("warning: {w}");
        }
    })
}

/// [`load`] without printing warnings: `run` logs them instead.
fn load_quietly(path: &std::path::Path, place: &config::Placement) -> Result<Config, ExitCode> {
    config::load(path).map(|c| place.apply(c)).map_err(|err| {
        match &err {
            ConfigError::Invalid(problems) => {
                for p in problems {
                    eprintln!("{p}");
                }
                eprintln!(
                    "{}: {} problem(s); nothing was started",
                    path.display(),
                    problems.len()
                );
            }
            ConfigError::Read { .. } => eprintln!("hopwatch: {err}"),
        }
        ExitCode::from(EXIT_USAGE)
    })
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Health { url } => {
            let hop =
                config::Hop::get("health", config::Role::Target, &url, Duration::from_secs(2))
                    .map_err(|e| anyhow::anyhow!("--url {url:?}: {e}"))?;
            let prober = crate::probe::Prober::new(
                crate::probe::tls::TlsConfigs::new(std::iter::empty::<&std::path::Path>())
                    .map_err(anyhow::Error::msg)?,
            );
            let result = prober.probe(&hop, None).await;
            if result.outcome.is_ok() {
                println!("{url}: {}", result.status.unwrap_or(0));
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "{url}: {} {}",
                    result.outcome,
                    result.detail.unwrap_or_default()
                );
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Validate { config, shard } => Ok(match load(&config, &shard.into()) {
            Ok(c) => {
                let hops: usize = c.chains.iter().map(|c| c.hops.len()).sum();
                if c.agent.shard == config::Shard::WHOLE {
                    println!(
                        "{}: ok ({} chains, {hops} hops)",
                        config.display(),
                        c.chains.len()
                    );
                } else {
                    println!(
                        "{}: ok; shard {} runs {} of {} chains ({hops} hops):",
                        config.display(),
                        c.agent.shard,
                        c.chains.len(),
                        c.chains_total
                    );
                    for chain in &c.chains {
                        println!("  {}", chain.name);
                    }
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        }),
        Command::Check {
            config,
            chain,
            json,
            log_wait,
            shard,
        } => {
            let path = config;
            let place: config::Placement = shard.into();
            let config = match load(&path, &place) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            // With [discovery]: the chains AWS holds join the written ones, with their facts
            // (link status, target health, the rules along their paths).
            let (config, facts) = match &config.discovery {
                Some(d) => {
                    let options = crate::discover::Options {
                        shard: config.agent.shard,
                        ..crate::discover::Options::from(d)
                    };
                    let estate = crate::discover::walk_once(&options).await;
                    for e in &estate.errors {
                        eprintln!(
                            "hopwatch check: discovery: {} failed: {}",
                            e.action, e.message
                        );
                    }
                    crate::agent::refresh::merge(config, &estate, None)
                }
                None => (config, std::collections::HashMap::new()),
            };
            if let Some(name) = &chain {
                if !config.chains.iter().any(|c| &c.name == name) {
                    let whole = config::load(&path).ok();
                    match whole.filter(|w| w.chains.iter().any(|c| &c.name == name)) {
                        Some(_) => eprintln!(
                            "hopwatch: chain {name:?} belongs to shard {}/{}, not {}",
                            config::shard::owner(name, config.agent.shard.count),
                            config.agent.shard.count,
                            config.agent.shard
                        ),
                        None => eprintln!("hopwatch: no chain named {name:?} in the config"),
                    }
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            }
            let prober = crate::agent::prober_for(&config, &crate::auth::Registry::new())?;
            let report =
                crate::check::check(&config, &prober, chain.as_deref(), &facts, log_wait).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::check::render_table(&report));
            }
            for unjudged in &report.errors {
                eprintln!(
                    "hopwatch: chain {:?} could not be judged: {}",
                    unjudged.chain, unjudged.error
                );
            }
            Ok(if !report.errors.is_empty() {
                ExitCode::from(EXIT_USAGE)
            } else if report.chains.iter().all(|c| c.up) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Run {
            config: path,
            listen,
            shard,
            vantage,
        } => {
            let place = config::Placement {
                shard: shard.shard,
                vantage,
            };
            let config = match load_quietly(&path, &place) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            crate::agent::run::log_warnings(&config);
            let listen = listen.unwrap_or(config.agent.listen);
            let running = crate::agent::start(config, listen, Vec::new()).await?;
            crate::agent::run::run_until_stopped(running, &path, place).await
        }
        Command::Echo {
            listen,
            delay,
            proxy_protocol,
            require_proxy_protocol,
            allow,
            status,
            status_path,
        } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let prober = crate::probe::Prober::new(
                crate::probe::tls::TlsConfigs::new([]).map_err(anyhow::Error::msg)?,
            );
            let options = crate::echo::EchoOptions {
                delay: delay.unwrap_or_default(),
                identity: crate::ecs::identity(&prober).await,
                proxy_protocol,
                require_proxy_protocol,
                allow,
                status,
                status_path,
            };
            let allow: Vec<String> = options.allow.iter().map(ToString::to_string).collect();
            tracing::info!(listen = %listener.local_addr()?, delay = ?options.delay, proxy_protocol, ?allow, "hopwatch echo listening");
            let (stop, stop_rx) = tokio::sync::watch::channel(false);
            let server = tokio::spawn(crate::echo::serve(listener, options, stop_rx));
            shutdown_signal().await;
            let _ = stop.send(true);
            let _ = server.await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen } => demo(listen).await,
        Command::Explain { walk, config, json } => {
            let mut options = crate::discover::Options::from(walk);
            if let Some(file) = &config {
                let loaded = match load(file, &config::Placement::default()) {
                    Ok(c) => c,
                    Err(code) => return Ok(code),
                };
                let Some(d) = loaded.discovery else {
                    eprintln!(
                        "hopwatch explain: {} has no [discovery]: explain reads the chains AWS holds",
                        file.display()
                    );
                    return Ok(ExitCode::from(EXIT_USAGE));
                };
                options.region = options.region.or(d.region);
                options.endpoint_url = options.endpoint_url.or(d.endpoint_url);
                if options.apis.is_empty() {
                    options.apis = d.apis;
                }
                if options.stages.is_empty() {
                    options.stages = d.stages;
                }
                options.path = options.path.or(d.path);
                if options.methods.is_empty() {
                    options.methods = d.methods;
                }
                if options.path_params.is_empty() {
                    options.path_params = d.path_params;
                }
            }
            let estate = crate::discover::walk_once(&options).await;
            let explained = crate::discover::explain::Explained {
                chains: estate
                    .chains
                    .iter()
                    .map(|c| crate::discover::explain::judge(c, &estate.network))
                    .collect(),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&explained)?);
            } else {
                print!("{}", crate::discover::explain::render::table(&explained));
            }
            say_walk_errors("explain", &estate.errors, "");
            // A rule that blocks is a finding even when other facts could not be read; what
            // could not be read is never called missing (exit 2, not 1).
            Ok(if explained.blocked() {
                ExitCode::from(1)
            } else if explained.unknown() || !estate.errors.is_empty() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Discover { walk, output } => {
            let options = crate::discover::Options::from(walk);
            let estate = crate::discover::walk_once(&options).await;
            let header = crate::discover::render::Header {
                endpoint_url: options.endpoint_url.clone(),
                apis: options.apis.clone(),
                stages: options.stages.clone(),
            };
            let text = crate::discover::render::config(&estate, &header);
            // What discovery writes must load as it is; an env reference would be a bug here.
            let loads = config::load_str("discovered.toml", &text, &|_| None);
            if let (false, Err(err)) = (estate.chains.is_empty(), loads) {
                eprintln!("hopwatch discover: the config it made does not load (a bug):\n{err}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            match &output {
                Some(path) => std::fs::write(path, &text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{text}"),
            }
            say_walk_errors("discover", &estate.errors, " (the walk went on without it)");
            for u in &estate.unbuilt {
                eprintln!(
                    "hopwatch discover: not probed: {} {}: {}",
                    u.api, u.route, u.why
                );
            }
            for c in &estate.chains {
                if let Some(why) = &c.disabled {
                    eprintln!(
                        "hopwatch discover: written commented out: {}: {why}",
                        c.name
                    );
                }
            }
            for w in &estate.warnings {
                eprintln!("hopwatch discover: warning: {w}");
            }
            eprintln!(
                "hopwatch discover: {} chain(s) in {}{}",
                estate.chains.len(),
                estate.region,
                if estate.unbuilt.is_empty() {
                    String::new()
                } else {
                    format!(", {} integration(s) not probed", estate.unbuilt.len())
                }
            );
            // Nothing found, a walk that missed part of the region, or an integration that
            // could not be made a chain is not a clean result.
            Ok(
                if estate.errors.is_empty()
                    && estate.unbuilt.is_empty()
                    && !estate.chains.is_empty()
                {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                },
            )
        }
    }
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn demo(listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let chain = crate::demo::start().await?;
    let config = config::load_str("demo.toml", &chain.config_toml, &|_| None)
        .map_err(|e| anyhow::anyhow!("the built-in demo config is invalid:\n{e}"))?;
    let tty = std::io::stdout().is_terminal();
    let banner = Arc::new(Mutex::new(String::new()));
    let printer_banner = banner.clone();
    // The table shows each round as it is, not the debounced states: a fault shows at once.
    let table = crate::export::FnSink(move |observed: &crate::record::Observation| {
        let raw = crate::record::Observation::raw(observed.round.clone());
        let report = crate::check::Report {
            shard: None,
            chains: vec![crate::check::ChainReport::new(&raw)],
            errors: Vec::new(),
        };
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[2J\x1b[H");
        }
        out.push_str(&printer_banner.lock().map(|b| b.clone()).unwrap_or_default());
        out.push_str(&crate::check::render_table(&report));
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    });
    let running = crate::agent::start(config, listen, vec![Arc::new(table)])
        .await
        .with_context(|| {
            "is another hopwatch demo running? pass --listen 127.0.0.1:0 for any free port"
        })?;
    {
        let mut text = format!(
            "hopwatch demo: a T2 chain on loopback (gateway {} -> nlb {} -> alb {} -> targets {}, {})\n\
             metrics: http://{}/metrics\n\
             type `break NAME` or `fix NAME` (parts: gateway, nlb, alb, target-a, target-b; links: gateway-nlb, nlb-alb, alb-targets), Ctrl-C to stop\n",
            chain.addrs[0], chain.addrs[1], chain.addrs[2], chain.addrs[3], chain.addrs[4], running.metrics_addr
        );
        if chain.single_address {
            text.push_str("note: this OS has only 127.0.0.1, so parts differ by port and every hop sees 127.0.0.1\n");
        }
        text.push('\n');
        print!("{text}");
        if let Ok(mut b) = banner.lock() {
            *b = text;
        }
    }
    let faults = chain.faults.clone();
    let console = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["break", part] | ["fix", part] => {
                    let broken = words[0] == "break";
                    if faults.set(part, broken) {
                        println!("{} {part}", if broken { "broke" } else { "fixed" });
                    } else {
                        println!("no part or link named {part:?}");
                    }
                }
                [] => {}
                _ => println!("commands: break NAME, fix NAME"),
            }
        }
    });
    shutdown_signal().await;
    console.abort();
    running.shutdown().await;
    chain.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `--help` is the reference a user reaches first: every command and every flag of every
    /// command says what it is.
    #[test]
    fn every_flag_of_every_command_has_help() {
        let mut missing = Vec::new();
        let root = Cli::command();
        let mut commands: Vec<&clap::Command> = vec![&root];
        commands.extend(root.get_subcommands());
        for command in commands {
            let name = command.get_name();
            if name != root.get_name()
                && command
                    .get_about()
                    .is_none_or(|a| a.to_string().trim().is_empty())
            {
                missing.push(format!("{name} (the command itself)"));
            }
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                // clap's own --help and --version carry their text.
                if ["help", "version"].contains(&id) {
                    continue;
                }
                if arg
                    .get_help()
                    .is_none_or(|h| h.to_string().trim().is_empty())
                {
                    missing.push(format!("{name} --{}", arg.get_long().unwrap_or(id)));
                }
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}

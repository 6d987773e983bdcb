//! A secret referenced from the config (`headers = { "x-api-key" = "${...}" }`) never appears
//! in any output of hopwatch: `validate`, `check` (table and JSON), the agent's logs at trace
//! level (human and JSON), `/metrics`, EMF lines, error messages of a broken config, nor in
//! what `hopwatch echo` answers or logs. A unique value is planted in the environment and
//! every channel is searched for it, with hops that pass and hops that fail every way (refused,
//! silent, an unexpected status, a body that doesn't match, a response that isn't HTTP). The
//! same for auth's secrets (issue 24): client secrets, access tokens, AWS secret keys and
//! session tokens, and SigV4 signatures.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");
/// The environment variable the config references.
const VAR: &str = "HW_TEST_SECRET_API_KEY";

/// A value found nowhere else: a hit can only be a leak.
fn planted() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("hwsecret{}x{nanos:09}", std::process::id())
}

/// Fails naming the channel if `text` holds the secret.
fn assert_clean(channel: &str, text: &str, secret: &str) {
    assert!(
        !text.contains(secret),
        "the secret leaked into {channel}:\n{}",
        text.lines()
            .filter(|l| l.contains(secret))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn assert_output_clean(what: &str, out: &Output, secret: &str) {
    assert_clean(
        &format!("{what} stdout"),
        &String::from_utf8_lossy(&out.stdout),
        secret,
    );
    assert_clean(
        &format!("{what} stderr"),
        &String::from_utf8_lossy(&out.stderr),
        secret,
    );
}

/// Request heads the reflector received: proof that the secret really was sent.
type Received = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// How a reflecting server gives the request back.
#[derive(Clone, Copy)]
enum Reflect {
    /// 200 with the whole request head as its body.
    Body,
    /// 500 with the `x-api-key` it was sent as `x-amzn-ErrorType`, request id and `Server`:
    /// the evidence a broken gateway's reason quotes.
    ErrorHeaders,
}

/// A server that reflects the request it received: a hop that hands the secret back (in its
/// body, or in the error headers hopwatch quotes) must not make hopwatch print it.
async fn reflector(received: Received, how: Reflect) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let received = received.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                if let Ok(mut all) = received.lock() {
                    all.extend_from_slice(&head);
                }
                let response = match how {
                    Reflect::Body => [
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            head.len()
                        )
                        .into_bytes(),
                        head,
                    ]
                    .concat(),
                    Reflect::ErrorHeaders => {
                        let text = String::from_utf8_lossy(&head);
                        let key = text
                            .lines()
                            .find_map(|l| l.strip_prefix("x-api-key: "))
                            .unwrap_or("none");
                        format!(
                            "HTTP/1.1 500 Internal Server Error\r\nx-amzn-ErrorType: {key}\r\nx-amzn-RequestId: {key}\r\nServer: {key}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .into_bytes()
                    }
                };
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Servers for hops that fail each way.
struct Targets {
    echo: SocketAddr,
    reflector: SocketAddr,
    refused: SocketAddr,
    silent: SocketAddr,
    status_500: SocketAddr,
    not_http: SocketAddr,
}

async fn targets(received: Received) -> Targets {
    let silent = raw_server(|stream| async move {
        // Holds the connection without a word until the probe gives up.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    })
    .await;
    let not_http = raw_server(|stream| respond(stream, b"SSH-2.0-OpenSSH_9.6\r\n".to_vec())).await;
    Targets {
        echo: refused_port(),
        reflector: reflector(received.clone(), Reflect::Body).await,
        refused: refused_port(),
        silent,
        status_500: reflector(received, Reflect::ErrorHeaders).await,
        not_http,
    }
}

/// Every hop sends the secret; the chain fails at several hops in different ways while the
/// target (`hopwatch echo`) passes. EMF lines go to `emf`.
fn config(t: &Targets, emf: &Path) -> String {
    let headers = format!(
        r#"headers = {{ "x-api-key" = "${{{VAR}}}", "Authorization" = "Bearer ${{{VAR}}}" }}"#
    );
    format!(
        r#"
[agent]
interval = "400ms"
timeout = "300ms"

[[chain]]
name = "secret-chain"
kind = "custom"

  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{status_500}/prod/orders"
  {headers}
  health_url = "http://{refused}/health"

  [[chain.hop]]
  name = "nlb"
  role = "nlb"
  url = "http://{silent}/"
  {headers}

  [[chain.hop]]
  name = "alb"
  role = "alb"
  url = "http://{reflector}/"
  {headers}
  expect_body = "^never matches$"

  [[chain.hop]]
  name = "legacy"
  role = "alb"
  url = "http://{not_http}/"
  {headers}

  [[chain.hop]]
  name = "down"
  role = "nlb"
  url = "http://{refused}/"
  {headers}

  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{echo}/health"
  {headers}
  expect_source = ["127.0.0.0/8"]

# Blamed on its gateway, whose error headers hand the API key back: the reason quotes them.
[[chain]]
name = "error-chain"
kind = "custom"

  [[chain.hop]]
  name = "gateway"
  role = "gateway"
  url = "http://{status_500}/prod/orders"
  {headers}

  [[chain.hop]]
  name = "target"
  role = "target"
  url = "http://{echo}/health"
  {headers}

[cloudwatch]
mode = "emf"
flush_interval = "1s"
emf_output = "{emf}"
"#,
        status_500 = t.status_500,
        refused = t.refused,
        silent = t.silent,
        reflector = t.reflector,
        not_http = t.not_http,
        echo = t.echo,
        emf = emf.display(),
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hopwatch-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `hopwatch ARGS` to completion with the secret in the environment and every log on.
async fn hopwatch(args: Vec<String>, secret: String) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env(VAR, &secret)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .output()
            .expect("run hopwatch")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_secret_appears_in_no_output() {
    let secret = planted();
    let dir = temp_dir("secrets");
    let received = Received::default();
    let t = targets(received.clone()).await;

    // The target: `hopwatch echo`, logging at trace level into a file we search too.
    let echo_log = dir.join("echo.log");
    let _echo = Kill(
        Command::new(BIN)
            .args(["echo", "--listen", &t.echo.to_string()])
            .env("RUST_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&echo_log).expect("echo log"))
            .spawn()
            .expect("start echo"),
    );
    wait_for("hopwatch echo to answer", Duration::from_secs(10), || {
        http_get(t.echo, "/").is_ok_and(|(s, _)| s == 200)
    })
    .await;

    let emf = dir.join("emf.log");
    let config_path = dir.join("hopwatch.toml");
    std::fs::write(&config_path, config(&t, &emf)).expect("config");
    let config_arg = config_path.display().to_string();

    let out = hopwatch(
        vec!["validate".into(), "--config".into(), config_arg.clone()],
        secret.clone(),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_output_clean("validate", &out, &secret);

    let out = hopwatch(
        vec!["check".into(), "--config".into(), config_arg.clone()],
        secret.clone(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "the chain is down: {out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("500 with x-amzn-ErrorType <redacted>"),
        "the reason quotes the error header, redacted:\n{table}"
    );
    for failure in [
        "http_status",
        "timeout",
        "body_mismatch",
        "protocol",
        "connect_refused",
    ] {
        assert!(table.contains(failure), "check shows {failure}:\n{table}");
    }
    assert_output_clean("check", &out, &secret);

    let out = hopwatch(
        vec![
            "--log-format".into(),
            "json".into(),
            "check".into(),
            "--json".into(),
            "--config".into(),
            config_arg.clone(),
        ],
        secret.clone(),
    )
    .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json: {e}: {out:?}"));
    let hops = report["chains"][0]["hops"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let target = hops
        .iter()
        .find(|h| h["name"] == "target")
        .cloned()
        .unwrap_or_default();
    assert_eq!(target["result"], "ok", "the echo target passes: {target}");
    assert!(
        target["source"]["peer"].is_string(),
        "the echo answered: {target}"
    );
    assert_output_clean("check --json", &out, &secret);

    // The agent, at trace level with JSON logs, until EMF lines and /metrics cover every hop.
    let listen = refused_port();
    let run_log = dir.join("run.log");
    let run_out = dir.join("run.out");
    let mut agent = Kill(
        Command::new(BIN)
            .args([
                "--log-format",
                "json",
                "run",
                "--listen",
                &listen.to_string(),
                "--config",
                &config_arg,
            ])
            .env(VAR, &secret)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&run_out).expect("run out"))
            .stderr(std::fs::File::create(&run_log).expect("run log"))
            .spawn()
            .expect("start the agent"),
    );
    let mut scrapes = String::new();
    let hops = ["gateway", "nlb", "alb", "legacy", "down", "target"];
    wait_for(
        "EMF lines and metrics of every hop",
        Duration::from_secs(30),
        || {
            if let Ok((200, metrics)) = http_get(listen, "/metrics") {
                scrapes.push_str(&metrics);
            }
            let emf_text = std::fs::read_to_string(&emf).unwrap_or_default();
            hops.iter()
                .all(|h| emf_text.contains(&format!("\"Hop\":\"{h}\"")))
                && emf_text.contains("SourceIp")
                && hops.iter().all(|h| {
                    scrapes.contains(&format!(
                        "hopwatch_probes_total{{chain=\"secret-chain\",hop=\"{h}\""
                    ))
                })
        },
    )
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.0.try_wait().ok().flatten().is_none() {
        assert!(
            Instant::now() < deadline,
            "the agent did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let logs = read(&run_log);
    assert!(
        logs.contains("hop state changed"),
        "the agent logged at all:\n{logs:.2000}"
    );
    assert_clean("the agent's logs (trace, JSON)", &logs, &secret);
    assert_clean("the agent's stdout", &read(&run_out), &secret);
    assert_clean("/metrics", &scrapes, &secret);
    assert_clean("EMF lines", &read(&emf), &secret);
    assert_clean("hopwatch echo's logs (trace)", &read(&echo_log), &secret);

    // The test is not vacuous: the secret was expanded and sent.
    let sent = received.lock().map(|r| r.clone()).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&sent).contains(&format!("x-api-key: {secret}")),
        "the hops were sent the secret"
    );

    // The same at trace level in the human log format, once more.
    let out = hopwatch(
        vec![
            "check".into(),
            "--chain".into(),
            "secret-chain".into(),
            "--config".into(),
            config_arg,
        ],
        secret.clone(),
    )
    .await;
    assert_output_clean("check (human logs)", &out, &secret);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_echo_does_not_reflect_the_secret_header() {
    let secret = planted();
    let addr = refused_port();
    let _echo = echo_process(addr);
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nx-api-key: {secret}\r\nAuthorization: Bearer {secret}\r\nConnection: close\r\n\r\n"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let sent = std::net::TcpStream::connect(addr).and_then(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(request.as_bytes())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        match sent {
            Ok(answer) => break answer,
            Err(e) => {
                assert!(Instant::now() < deadline, "echo never answered: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_clean("the echo's answer", &answer, &secret);
}

/// Broken configs whose problems sit right next to the secret: every command that loads them
/// reports the problem (exit 2) without quoting the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_near_the_secret_do_not_quote_it() {
    let secret = planted();
    let dir = temp_dir("secrets-errors");
    let hop = |extra: &str| {
        format!(
            "[[chain]]\nname = \"c\"\nkind = \"custom\"\n  [[chain.hop]]\n  name = \"t\"\n  role = \"target\"\n  url = \"http://127.0.0.1:9/\"\n{extra}\n"
        )
    };
    let cases = [
        // The expanded value is refused (a newline follows the secret).
        ("bad-value", hop(&format!("  headers = {{ \"x-api-key\" = \"${{{VAR}_NL}}\" }}"))),
        // The header name is refused; its value is the secret.
        ("bad-name", hop(&format!("  headers = {{ \"bad name\" = \"${{{VAR}}}\" }}"))),
        // Other problems on the hop and the line that carries the secret.
        (
            "same-hop",
            hop(&format!(
                "  headers = {{ \"x-api-key\" = \"${{{VAR}}}\", \"x-b\" = 1 }}\n  timeout = \"forever\"\n  method = \"get\""
            )),
        ),
        // A TOML syntax error on the secret's line.
        ("syntax", hop(&format!("  headers = {{ \"x-api-key\" = \"${{{VAR}}}\" "))),
        // A URL with a ${...} reference: refused (URLs are printed as written, never expanded).
        (
            "url-reference",
            format!(
                "[[chain]]\nname = \"c\"\nkind = \"custom\"\n  [[chain.hop]]\n  name = \"t\"\n  role = \"target\"\n  url = \"http://127.0.0.1:9/?key=${{{VAR}}}\"\n"
            ),
        ),
    ];
    for (name, text) in cases {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, &text).expect("write");
        for command in ["validate", "check", "run"] {
            let args = vec![
                command.to_string(),
                "--config".to_string(),
                path.display().to_string(),
            ];
            let out = tokio::task::spawn_blocking({
                let secret = secret.clone();
                move || {
                    Command::new(BIN)
                        .args(&args)
                        .env(VAR, &secret)
                        .env(format!("{VAR}_NL"), format!("{secret}\nX-Injected: 1"))
                        .env("RUST_LOG", "trace")
                        .stdin(Stdio::null())
                        .output()
                        .expect("run")
                }
            })
            .await
            .expect("join");
            assert_eq!(out.status.code(), Some(2), "{name} {command}: {out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&format!("{name}.toml:")),
                "{name} {command} names file:line:column:\n{stderr}"
            );
            assert_output_clean(&format!("{command} of {name}.toml"), &out, &secret);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Auth's secrets (issue 24) appear in no output either: the OAuth 2.0 client secret, the
/// access tokens the endpoint issued, the AWS secret key and session token (static ones from
/// the environment for `check`, ECS-style ones the default chain fetches for the agent), and
/// every signature the gateway accepted. Hops hand the `Authorization` header and the session
/// token back in the error headers a reason quotes (`/reflect`), a client is refused, and the
/// agent logs at trace level, in JSON, with EMF on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_secrets_appear_in_no_output() {
    use common::authgw::{self, Gateway};
    let Some(python) = authgw::python() else {
        return authgw::skip("auth_secrets_appear_in_no_output");
    };
    let base = planted();
    let (secret_key, session_token, client_secret) = (
        format!("{base}awssecret"),
        format!("{base}sessiontoken"),
        format!("{base}clientsecret"),
    );
    let key = format!("AKIDHOPWATCHSECRETS:{secret_key}:{session_token}");
    let gw = Gateway::start(
        &python,
        &[
            "--key",
            &key,
            "--client",
            &format!("client:{client_secret}"),
            "--token-lifetime",
            "3",
            "--creds-lifetime",
            "3",
        ],
        None,
    );
    let dir = temp_dir("auth-secrets");
    let emf = dir.join("emf.log");
    let a = gw.addr;
    let sigv4 = r#"auth = { sigv4 = { region = "eu-west-1" } }"#;
    let oauth2 = |client: &str| {
        format!(
            r#"auth = {{ oauth2 = {{ token_url = "http://{a}/oauth2/token", client_id = "{client}", client_secret = "${{{VAR}}}", client_auth = "body" }} }}"#
        )
    };
    let chain = |name: &str, path: &str, auth: &str| {
        format!(
            "[[chain]]\nname = \"{name}\"\nkind = \"custom\"\n  [[chain.hop]]\n  name = \"gateway\"\n  role = \"gateway\"\n  url = \"http://{a}{path}\"\n  {auth}\n  [[chain.hop]]\n  name = \"target\"\n  role = \"target\"\n  url = \"http://{a}/plain\"\n\n"
        )
    };
    let config = format!(
        "[agent]\ninterval = \"400ms\"\ntimeout = \"300ms\"\n\n{}{}{}{}{}[cloudwatch]\nmode = \"emf\"\nflush_interval = \"1s\"\nemf_output = \"{}\"\n",
        chain("iam", "/signed/orders", sigv4),
        chain("iam-reflect", "/reflect/orders", sigv4),
        chain("jwt", "/bearer/orders", &oauth2("client")),
        chain("jwt-reflect", "/reflect/orders", &oauth2("client")),
        chain("jwt-refused", "/bearer/orders", &oauth2("stranger")),
        emf.display(),
    );
    let config_path = dir.join("hopwatch.toml");
    std::fs::write(&config_path, &config).expect("config");
    let config_arg = config_path.display().to_string();
    let run = |args: Vec<String>, ecs: bool| {
        let mut command = Command::new(BIN);
        command
            .args(&args)
            .env_clear()
            .env(VAR, &client_secret)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null());
        if ecs {
            command.env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://{a}/ecs-credentials"),
            );
        } else {
            command
                .env("AWS_ACCESS_KEY_ID", "AKIDHOPWATCHSECRETS")
                .env("AWS_SECRET_ACCESS_KEY", &secret_key)
                .env("AWS_SESSION_TOKEN", &session_token);
        }
        command
    };
    let mut outputs: Vec<(String, String)> = Vec::new();
    for args in [
        vec!["validate", "--config", &config_arg],
        vec!["check", "--config", &config_arg],
        vec![
            "--log-format",
            "json",
            "check",
            "--json",
            "--config",
            &config_arg,
        ],
    ] {
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        let out = run(args.clone(), false).output().expect("run");
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            outputs.push((
                format!("{} {stream}", args.join(" ")),
                String::from_utf8_lossy(bytes).to_string(),
            ));
        }
    }
    let table = &outputs[2].1;
    assert!(
        table.contains("500 with x-amzn-ErrorType <redacted>"),
        "the reflected Authorization is quoted redacted:\n{table}"
    );
    assert!(table.contains("agent_credentials"), "{table}");

    // The agent, with ECS-style credentials (the default chain fetches them over HTTP).
    let listen = refused_port();
    let run_log = dir.join("run.log");
    let mut agent = Kill(
        run(
            vec![
                "--log-format".into(),
                "json".into(),
                "run".into(),
                "--listen".into(),
                listen.to_string(),
                "--config".into(),
                config_arg.clone(),
            ],
            true,
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&run_log).expect("run log"))
        .spawn()
        .expect("start the agent"),
    );
    let mut scrapes = String::new();
    wait_for(
        "a token refreshed, credentials renewed, EMF of every chain",
        Duration::from_secs(30),
        || {
            if let Ok((200, m)) = http_get(listen, "/metrics") {
                scrapes.push_str(&m);
            }
            let emf_text = std::fs::read_to_string(&emf).unwrap_or_default();
            gw.count("token_fetches") >= 3
                && gw.count("creds_issued") >= 2
                && ["iam", "iam-reflect", "jwt", "jwt-reflect", "jwt-refused"]
                    .iter()
                    .all(|c| emf_text.contains(&format!("\"Chain\":\"{c}\"")))
                && scrapes.contains("code=\"agent_credentials\"")
        },
    )
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.0.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the agent did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outputs.push((
        "the agent's logs (trace, JSON)".into(),
        std::fs::read_to_string(&run_log).unwrap_or_default(),
    ));
    outputs.push(("/metrics".into(), scrapes));
    outputs.push((
        "EMF lines".into(),
        std::fs::read_to_string(&emf).unwrap_or_default(),
    ));

    let stats = gw.stats();
    let list = |key: &str| -> Vec<String> {
        stats[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let mut secrets = vec![
        secret_key.clone(),
        session_token.clone(),
        client_secret.clone(),
    ];
    secrets.extend(list("issued_tokens"));
    secrets.extend(list("signature_list"));
    secrets.extend(list("issued_secrets"));
    // Not vacuous: every kind was sent and accepted.
    assert!(list("issued_tokens").len() >= 3, "{stats:#}");
    assert!(list("signature_list").len() >= 2, "{stats:#}");
    assert!(list("issued_secrets").len() >= 4, "{stats:#}");
    assert!(stats["bearer_ok"].as_u64() > Some(0) && stats["token_refused"].as_u64() > Some(0));
    for (channel, text) in &outputs {
        for secret in &secrets {
            assert_clean(channel, text, secret);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! LocalStack (the real `localstack-core`: CloudWatch, or the services a test names) bound to
//! 127.0.0.1, started and killed by the test that needs it, and the real SDK pointed at it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};

/// The Python that has LocalStack installed: `HOPWATCH_LOCALSTACK_PYTHON`, else the repo's
/// `.venv` that `scripts/test` makes.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HOPWATCH_LOCALSTACK_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let has_localstack = Command::new(&venv)
        .args(["-c", "import localstack.runtime.main"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    has_localstack.then_some(venv)
}

/// Says why LocalStack tests can't run; a failure where the suite must run everything
/// (`scripts/test` sets `HOPWATCH_REQUIRE_LOCALSTACK=1`).
pub fn skip(test: &str) {
    let why =
        "no Python with localstack-core (run scripts/test, or set HOPWATCH_LOCALSTACK_PYTHON)";
    if std::env::var_os("HOPWATCH_REQUIRE_LOCALSTACK").is_some() {
        panic!("{test} cannot run: {why} (HOPWATCH_REQUIRE_LOCALSTACK is set)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// One LocalStack process; killed (its whole process group) when dropped.
pub struct LocalStack {
    python: PathBuf,
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
    services: &'static [&'static str],
}

impl LocalStack {
    /// A LocalStack that will listen on `addr` (on 127.0.0.1), not yet started.
    pub fn new(python: PathBuf, addr: SocketAddr, tag: &str) -> LocalStack {
        assert!(addr.ip().is_loopback(), "LocalStack binds loopback only");
        let dir = std::env::temp_dir().join(format!(
            "hopwatch-localstack-{tag}-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).expect("localstack dir");
        LocalStack {
            python,
            addr,
            dir,
            child: None,
            starts: 0,
            services: &["cloudwatch"],
        }
    }

    /// Runs `services` (LocalStack's names: `cloudwatch`, `logs`) instead of CloudWatch alone.
    pub fn with_services(mut self, services: &'static [&'static str]) -> LocalStack {
        self.services = services;
        self
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the process and waits until every service answers (at most 90 s).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        // A fresh state directory per start: LocalStack keeps CloudWatch data in SQLite under
        // the temp dir (shared by every instance otherwise), and a restart must forget it, so
        // that whatever a restarted instance holds is provably what was sent after it came back.
        let state = self.dir.join(format!("start-{}", self.starts));
        std::fs::create_dir_all(&state).expect("state dir");
        let log = self.dir.join(format!("localstack-{}.log", self.starts));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        use std::os::unix::process::CommandExt;
        let child = Command::new(&self.python)
            .args(["-m", "localstack.runtime.main"])
            // hypercorn honours the host in GATEWAY_LISTEN; the default server binds 0.0.0.0.
            .env("GATEWAY_SERVER", "hypercorn")
            .env("GATEWAY_LISTEN", self.addr.to_string())
            .env("SERVICES", self.services.join(","))
            .env("EAGER_SERVICE_LOADING", "1")
            .env("DISABLE_EVENTS", "1")
            .env("DNS_ADDRESS", "0")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .env("TMPDIR", &state)
            .env("LOCALSTACK_VOLUME_DIR", state.join("volume"))
            .env("FILESYSTEM_ROOT", state.join("fs"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("start LocalStack");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("LocalStack exited ({status}) before it was ready:\n{text}");
                }
            }
            let addr = self.addr;
            let health = tokio::task::spawn_blocking(move || {
                super::http_get(addr, "/_localstack/health").map(|(_, body)| body)
            })
            .await
            .expect("join");
            if let Ok(body) = health {
                let ready = |service: &&str| {
                    body.contains(&format!("\"{service}\": \"running\""))
                        || body.contains(&format!("\"{service}\": \"available\""))
                };
                if self.services.iter().all(ready) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "LocalStack not ready after 90 s; log in {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills it at once (SIGKILL to its process group): an outage, everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The whole process group this test created: LocalStack and anything it spawned.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The real SDK, pointed at this LocalStack with its dummy credentials.
    pub fn client(&self) -> aws_sdk_cloudwatch::Client {
        let config = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        aws_sdk_cloudwatch::Client::from_conf(config)
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

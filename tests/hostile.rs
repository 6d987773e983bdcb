//! Hostile and broken targets, all in one place. Each is a real server on 127.0.0.1 (or a
//! resolver inside a network namespace the test makes) that misbehaves in one way, and each test
//! asserts the exact outcome class, that the probe ends at its timeout and not later (or well
//! before it, when the target gives itself away), and that what a target sends cannot make the
//! prober read without bound. The last test runs the agent against all of them at once beside a
//! healthy chain, whose rounds must stay on time.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hopwatch::probe::{tls::TlsConfigs, Outcome, ProbeResult, Prober};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How much later than its timeout a probe may end: scheduling noise on a loaded two-core
/// machine, far less than any second read, retry or resolver timeout would add.
const MARGIN: Duration = Duration::from_millis(500);

fn prober() -> Prober {
    Prober::new(TlsConfigs::new([]).expect("tls"))
}

async fn probe(url: &str, extra: &str) -> ProbeResult {
    prober().probe(&hop(url, extra), None).await
}

/// Ended by its timeout: not before it, and not more than [`MARGIN`] after.
fn assert_at_timeout(r: &ProbeResult, timeout: Duration) {
    assert!(
        r.total >= timeout && r.total <= timeout + MARGIN,
        "took {:?} with a timeout of {timeout:?} ({:?})",
        r.total,
        r.detail
    );
}

/// The target gave itself away: the probe ends on that, long before its timeout.
fn assert_early(r: &ProbeResult, timeout: Duration) {
    assert!(
        r.total < timeout / 2,
        "took {:?}; it should not wait for its timeout of {timeout:?} ({:?})",
        r.total,
        r.detail
    );
}

/// Starts a server that runs `behave` on each accepted socket, before reading anything.
async fn accepting<F, Fut>(behave: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(behave(stream));
        }
    });
    addr
}

/// Reads and discards until the peer hangs up. A server that holds a connection this way lives
/// exactly as long as the probe does, so nothing it starts outlives the test.
async fn hold<S: AsyncRead + Unpin>(mut stream: S) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hostile servers, one function each; the per-case tests and the agent test share them.

/// Accepts, reads the request, and never answers.
async fn never_answers() -> SocketAddr {
    raw_server(hold).await
}

/// A valid response, written one byte per second.
async fn head_one_byte_per_second() -> SocketAddr {
    raw_server(|mut stream| async move {
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await
}

/// A chunked body that never ends, five bytes every 50 ms: always something arriving, never
/// the end, never near the body bound.
async fn endless_trickle() -> SocketAddr {
    raw_server(|mut stream| async move {
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        while stream.write_all(b"5\r\nhello\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
const GIB: u64 = 1 << 30;

/// A server that sends as much body as the socket takes, counting what the kernel accepted and
/// noting when it stopped (the probe hung up, or it sent everything).
struct Flood {
    addr: SocketAddr,
    written: Arc<AtomicU64>,
    stopped: Arc<Mutex<Option<Instant>>>,
}

/// `Content-Length: 1073741824`, streamed from one static 64 KiB chunk: the test never holds
/// the gigabyte, and neither may the prober.
async fn gigabyte_body() -> Flood {
    flood(
        format!("HTTP/1.1 200 OK\r\nContent-Length: {GIB}\r\n\r\n"),
        false,
    )
    .await
}

/// A chunked body with no end, as fast as the socket takes it.
async fn endless_flood() -> Flood {
    flood(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
        true,
    )
    .await
}

async fn flood(head: String, chunked: bool) -> Flood {
    let written = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(Mutex::new(None));
    let (w, s) = (written.clone(), stopped.clone());
    let addr = raw_server(move |mut stream| {
        let (w, s, head) = (w.clone(), s.clone(), head.clone());
        async move {
            let mut sent = 0u64;
            if stream.write_all(head.as_bytes()).await.is_ok() {
                while chunked || sent < GIB {
                    if chunked && stream.write_all(b"10000\r\n").await.is_err() {
                        break;
                    }
                    // `write`, not `write_all`: count exactly what the kernel took.
                    let mut rest = &CHUNK[..];
                    while !rest.is_empty() {
                        match stream.write(rest).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                sent += n as u64;
                                w.fetch_add(n as u64, Ordering::Relaxed);
                                rest = &rest[n..];
                            }
                        }
                    }
                    if !rest.is_empty() || (chunked && stream.write_all(b"\r\n").await.is_err()) {
                        break;
                    }
                }
            }
            *s.lock().expect("lock") = Some(Instant::now());
        }
    })
    .await;
    Flood {
        addr,
        written,
        stopped,
    }
}

/// Status lines no HTTP/1.x client may accept, each with an otherwise valid response.
const MALFORMED_STATUS_LINES: [&[u8]; 6] = [
    b"HTTP/1.1 2OO OK\r\n",
    b"HTTP/1.1 20 OK\r\n",
    b"HTTP/1.1 2000 OK\r\n",
    b"HTTP/1.1200 OK\r\n",
    b"HTTP/3.0 200 OK\r\n",
    // Another protocol's banner on an HTTP port.
    b"SSH-2.0-OpenSSH_9.2\r\n",
];

async fn malformed_status(line: &'static [u8]) -> SocketAddr {
    raw_server(move |stream| {
        let mut response = line.to_vec();
        response.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
        respond(stream, response)
    })
    .await
}

/// 10,000 response headers, each `width` bytes long with its CRLF.
async fn ten_thousand_headers(width: usize) -> SocketAddr {
    let mut response = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..10_000 {
        let name = format!("x{i}");
        let value = "v".repeat(width.saturating_sub(name.len() + 4).max(1));
        response.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    response.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
    raw_server(move |stream| respond(stream, response.clone())).await
}

/// Promises 100,000 bytes, sends a few, then resets.
async fn reset_mid_body() -> SocketAddr {
    raw_server(|mut stream| async move {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial body")
            .await;
        let _ = stream.flush().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        reset(stream);
    })
    .await
}

/// An HTTP/1.0 answer with neither `Content-Length` nor chunking: the body ends when the server
/// closes, if it ever does.
const HTTP10: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from HTTP/1.0";

async fn http10_then_close() -> SocketAddr {
    raw_server(|stream| respond(stream, HTTP10.to_vec())).await
}

async fn http10_never_closing() -> SocketAddr {
    raw_server(|mut stream| async move {
        if stream.write_all(HTTP10).await.is_ok() {
            hold(stream).await;
        }
    })
    .await
}

/// Accepts the TCP connection, reads the ClientHello, and never answers it.
async fn stalled_tls_handshake() -> SocketAddr {
    accepting(hold).await
}

/// A certificate authority, its PEM written where a hop's `ca_file` can name it.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    file: PathBuf,
}

fn ca(dir: &Path) -> Ca {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hopwatch hostile test CA");
    let cert = params.self_signed(&key).expect("ca");
    let file = dir.join("ca.pem");
    std::fs::write(&file, cert.pem()).expect("write ca");
    Ca {
        issuer: rcgen::Issuer::new(params, key),
        file,
    }
}

/// What is wrong with a TLS target's certificate; each has exactly one fault.
#[derive(Debug, Clone, Copy)]
enum BadCert {
    /// Signed by the trusted CA, for the right name, but expired in 2021.
    Expired,
    /// Right name, in date, signed by nobody the prober trusts.
    SelfSigned,
    /// Signed by the trusted CA, in date, for another name.
    WrongName,
}

/// A TLS server on 127.0.0.1 presenting a certificate with `fault` (the probe asks for the name
/// `localhost`), answering `200 ok` to anyone who accepts it.
async fn tls_target(fault: BadCert, ca: &Ca) -> SocketAddr {
    let key = rcgen::KeyPair::generate().expect("key");
    let name = match fault {
        BadCert::WrongName => "orders.internal",
        _ => "localhost",
    };
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    // A subject of its own: with rcgen's default (the same for every certificate), or one a
    // system root also has (this machine trusts a "CN=localhost"), a self-signed certificate looks
    // issued by that CA and fails as a bad signature instead of an unknown issuer.
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("hopwatch hostile test {fault:?} {}", std::process::id()),
    );
    if let BadCert::Expired = fault {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = match fault {
        BadCert::SelfSigned => params.self_signed(&key),
        _ => params.signed_by(&key, &ca.issuer),
    }
    .expect("cert");
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.serialize_der().into()))
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    accepting(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(stream).await {
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                let _ = tls.shutdown().await;
            }
        }
    })
    .await
}

/// Hop keys for a TLS target: its name, and the CA that signed it.
fn tls_keys(ca: &Ca) -> String {
    format!(
        "  tls_server_name = \"localhost\"\n  ca_file = \"{}\"\n",
        ca.file.display()
    )
}

/// A directory removed when the test lets go of it.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("hopwatch-hostile-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// One test per hostile behaviour.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_and_never_answers_is_timeout_at_the_deadline() {
    let addr = never_answers().await;
    let timeout = Duration::from_millis(500);
    let r = probe(&format!("http://{addr}/"), "timeout = \"500ms\"").await;
    assert_eq!(r.outcome, Outcome::Timeout, "{:?}", r.detail);
    assert_at_timeout(&r, timeout);
    assert!(r.phases.connect.is_some(), "it did connect");
    assert!(r.phases.ttfb.is_none(), "not one byte came back");
    assert_eq!(
        r.detail.as_deref(),
        Some("timed out after 500ms waiting for the first response byte")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_one_byte_per_second_is_timeout_at_the_deadline() {
    let addr = head_one_byte_per_second().await;
    let timeout = Duration::from_millis(2500);
    let r = probe(&format!("http://{addr}/"), "timeout = \"2500ms\"").await;
    assert_eq!(r.outcome, Outcome::Timeout, "{:?}", r.detail);
    // Every byte that arrives must not restart the clock: the timeout bounds the whole probe.
    assert_at_timeout(&r, timeout);
    assert!(r.phases.ttfb.is_some(), "the first byte did arrive");
    assert_eq!(r.status, None, "no complete head, no status");
    assert_eq!(
        r.detail.as_deref(),
        Some("timed out after 2500ms waiting for the response")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_with_no_end_is_timeout_when_slow_and_too_large_when_fast() {
    let slow = endless_trickle().await;
    let timeout = Duration::from_secs(1);
    let r = probe(&format!("http://{slow}/"), "timeout = \"1s\"").await;
    assert_eq!(r.outcome, Outcome::Timeout, "{:?}", r.detail);
    assert_at_timeout(&r, timeout);
    assert_eq!(
        r.detail.as_deref(),
        Some("timed out after 1s waiting for the response")
    );

    let fast = endless_flood().await;
    let timeout = Duration::from_secs(4);
    let r = probe(&format!("http://{}/", fast.addr), "timeout = \"4s\"").await;
    assert_eq!(r.outcome, Outcome::TooLarge, "{:?}", r.detail);
    assert_early(&r, timeout);
    assert_eq!(r.body.len(), 64 * 1024, "kept exactly max_body");
    let stopped = fast.stopped.clone();
    wait_for(
        "the endless server to notice the probe hung up",
        Duration::from_secs(5),
        || stopped.lock().expect("lock").is_some(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_body_is_cut_at_max_body() {
    let server = gigabyte_body().await;
    let timeout = Duration::from_secs(4);
    let r = probe(&format!("http://{}/", server.addr), "timeout = \"4s\"").await;
    let probe_end = Instant::now();
    assert_eq!(r.outcome, Outcome::TooLarge, "{:?}", r.detail);
    assert_eq!(r.status, Some(200));
    assert_eq!(r.body.len(), 64 * 1024, "kept exactly max_body");
    assert_early(&r, timeout);
    // The prober hung up at the bound: the server's next writes fail once the socket buffers
    // are full, long before it could send a gigabyte.
    let stopped = server.stopped.clone();
    wait_for(
        "the server to notice the probe hung up",
        Duration::from_secs(5),
        || stopped.lock().expect("lock").is_some(),
    )
    .await;
    let written = server.written.load(Ordering::Relaxed);
    let after = server
        .stopped
        .lock()
        .expect("lock")
        .map(|at| at.saturating_duration_since(probe_end))
        .unwrap_or_default();
    println!(
        "1 GiB body: probe ended after {:?} with {} body bytes kept; the server wrote {written} bytes ({:.2}% of 1 GiB) and stopped {after:?} after the probe",
        r.total,
        r.body.len(),
        written as f64 * 100.0 / GIB as f64
    );
    assert!(
        written < 32 << 20,
        "the server wrote {written} bytes: the prober read far past its bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_status_line_is_protocol() {
    let timeout = Duration::from_secs(4);
    for line in MALFORMED_STATUS_LINES {
        let addr = malformed_status(line).await;
        let r = probe(&format!("http://{addr}/"), "timeout = \"4s\"").await;
        let shown = String::from_utf8_lossy(line);
        assert_eq!(r.outcome, Outcome::Protocol, "{shown:?}: {:?}", r.detail);
        assert_eq!(r.status, None, "{shown:?}");
        assert_early(&r, timeout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_headers_are_too_large_not_a_crash() {
    let timeout = Duration::from_secs(4);
    // 60 KB of short headers fits the 64 KiB head buffer but not the 100-header bound;
    // 240 KB of longer ones overflows the buffer first. Either bound ends the read.
    for width in [6, 24] {
        let addr = ten_thousand_headers(width).await;
        let r = probe(&format!("http://{addr}/"), "timeout = \"4s\"").await;
        assert_eq!(
            r.outcome,
            Outcome::TooLarge,
            "width {width}: {:?}",
            r.detail
        );
        assert_eq!(r.status, None);
        assert_early(&r, timeout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_in_the_middle_of_the_body_is_reset() {
    let addr = reset_mid_body().await;
    let timeout = Duration::from_secs(4);
    let r = probe(&format!("http://{addr}/"), "timeout = \"4s\"").await;
    assert_eq!(r.outcome, Outcome::Reset, "{:?}", r.detail);
    assert_eq!(
        r.status, None,
        "a half-read response has no verdict on status"
    );
    assert_early(&r, timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_self_signed_and_wrong_name_certificates_are_tls() {
    let dir = TempDir::new("certs");
    let ca = ca(&dir.0);
    let prober = Prober::new(TlsConfigs::new([ca.file.as_path()]).expect("tls"));
    let timeout = Duration::from_secs(4);
    for (fault, says) in [
        (BadCert::Expired, "certificate expired"),
        (BadCert::SelfSigned, "UnknownIssuer"),
        (BadCert::WrongName, "not valid for name"),
    ] {
        let addr = tls_target(fault, &ca).await;
        let hop = hop(
            &format!("https://{addr}/"),
            &format!("timeout = \"4s\"\n{}", tls_keys(&ca)),
        );
        let r = prober.probe(&hop, None).await;
        assert_eq!(r.outcome, Outcome::Tls, "{fault:?}: {:?}", r.detail);
        // The one fault each certificate has is the one reported: nothing else was wrong.
        let detail = r.detail.clone().unwrap_or_default();
        assert!(detail.contains(says), "{fault:?}: {detail}");
        assert!(r.phases.connect.is_some() && r.phases.tls.is_none());
        assert_early(&r, timeout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshake_is_timeout_at_the_deadline() {
    let addr = stalled_tls_handshake().await;
    let timeout = Duration::from_millis(700);
    let r = probe(
        &format!("https://{addr}/"),
        "timeout = \"700ms\"\ntls_server_name = \"localhost\"",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Timeout, "{:?}", r.detail);
    assert_at_timeout(&r, timeout);
    assert!(r.phases.connect.is_some() && r.phases.tls.is_none());
    assert_eq!(
        r.detail.as_deref(),
        Some("timed out after 700ms waiting for the TLS handshake")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_without_length_ends_at_close_or_at_the_timeout() {
    let addr = http10_then_close().await;
    let timeout = Duration::from_secs(4);
    let r = probe(&format!("http://{addr}/"), "timeout = \"4s\"").await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.detail);
    assert_eq!(
        &r.body[..],
        b"hello from HTTP/1.0",
        "the body runs to the close"
    );
    assert!(r.phases.transfer.is_some());
    assert_early(&r, timeout);

    // The same answer from a server that never closes has no end.
    let addr = http10_never_closing().await;
    let timeout = Duration::from_millis(700);
    let r = probe(&format!("http://{addr}/"), "timeout = \"700ms\"").await;
    assert_eq!(r.outcome, Outcome::Timeout, "{:?}", r.detail);
    assert_at_timeout(&r, timeout);
    assert_eq!(
        r.detail.as_deref(),
        Some("timed out after 700ms waiting for the response")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_right_after_accept_is_reset() {
    let timeout = Duration::from_secs(4);
    let before_request = accepting(|stream| async move { drop(stream) }).await;
    let after_request = raw_server(|stream| async move { drop(stream) }).await;
    let with_rst = accepting(|stream| async move { reset(stream) }).await;
    for (how, addr) in [
        ("FIN before the request", before_request),
        ("FIN after the request", after_request),
        ("RST", with_rst),
    ] {
        let r = probe(&format!("http://{addr}/"), "timeout = \"4s\"").await;
        assert_eq!(r.outcome, Outcome::Reset, "{how}: {:?}", r.detail);
        assert_early(&r, timeout);
    }
}

// ---------------------------------------------------------------------------------------------
// DNS. The prober resolves with getaddrinfo, which reads /etc/resolv.conf: these tests run
// again inside a namespace whose resolv.conf names 127.0.0.1:53 of that namespace, where the
// test itself plays the resolver (or leaves the port closed).

/// Set in the copy of this binary that runs inside the namespace.
const INSIDE: &str = "HOPWATCH_HOSTILE_NETNS";

fn inside_namespace() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Runs this binary's test `test` again inside a namespace made for it and asserts that it
/// passed. The resolver is glibc's default (5 s per try, 2 tries) pointed at 127.0.0.1.
/// Whatever the run leaves inside the namespace is killed by PID before it is deleted.
fn run_in_namespace(test: &str, tag: &str) {
    let ns = Netns::new(tag);
    let dir = format!("/etc/netns/{}", ns.name);
    std::fs::write(format!("{dir}/resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv.conf");
    // Names go to files, then DNS, whatever the host's own nsswitch.conf says.
    std::fs::write(
        format!("{dir}/nsswitch.conf"),
        "passwd: files\ngroup: files\nhosts: files dns\n",
    )
    .expect("nsswitch.conf");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = ns
        .command(exe.to_str().expect("utf-8 path"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, &ns.name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rerun the test in the namespace");
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let end = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let leftovers = Command::new("ip")
        .args(["netns", "pids", &ns.name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    for pid in leftovers.split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    print!("{out}");
    eprint!("{err}");
    let status = status.unwrap_or_else(|| panic!("{test} in {} took over 120 s", ns.name));
    assert!(
        status.success() && out.contains("test result: ok. 1 passed"),
        "{test} failed inside {} ({status})",
        ns.name
    );
    assert!(
        leftovers.trim().is_empty(),
        "{test} left processes behind in {}: {leftovers}",
        ns.name
    );
    let name = ns.name.clone();
    drop(ns);
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&name),
        "namespace {name} left behind"
    );
}

/// A runtime the test shuts down without waiting: a getaddrinfo call the resolver never
/// answers keeps its blocking thread for glibc's 10 s, after the probe has long given up.
fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Names under this domain get NXDOMAIN from [`resolver`].
const NX: &str = "nx.hopwatch.test";
/// Names under this domain get no answer at all.
const SILENT: &str = "silent.hopwatch.test";

/// The namespace's resolver on 127.0.0.1:53, counting the queries for each behaviour.
struct Resolver {
    nx: Arc<AtomicUsize>,
    silent: Arc<AtomicUsize>,
}

async fn resolver() -> Resolver {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:53")
        .await
        .expect("bind 127.0.0.1:53 inside the namespace");
    let nx = Arc::new(AtomicUsize::new(0));
    let silent = Arc::new(AtomicUsize::new(0));
    let (n, s) = (nx.clone(), silent.clone());
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let Some((name, end)) = question(&buf[..len]) else {
                continue;
            };
            if name.ends_with(SILENT) {
                s.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            n.fetch_add(1, Ordering::SeqCst);
            let _ = socket.send_to(&nxdomain(&buf[..end]), from).await;
        }
    });
    Resolver { nx, silent }
}

/// The name asked in a DNS query and where its question ends.
fn question(packet: &[u8]) -> Option<(String, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let end = at + 4; // QTYPE and QCLASS
    (packet.len() >= end).then(|| (labels.join("."), end))
}

/// The answer "no such name" to `query` (its header and question only).
fn nxdomain(query: &[u8]) -> Vec<u8> {
    let mut reply = query.to_vec();
    reply[2] = 0x80 | (query[2] & 0x79); // QR, the query's opcode and RD
    reply[3] = 0x80 | 0x03; // RA, RCODE 3 = NXDOMAIN
    reply[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    reply
}

#[test]
fn dns_name_that_does_not_exist_is_dns_at_once() {
    const TEST: &str = "dns_name_that_does_not_exist_is_dns_at_once";
    if !inside_namespace() {
        if !can_use_namespaces() {
            return skip(TEST, "needs root, ip and nft");
        }
        return run_in_namespace(TEST, "nxdomain");
    }
    let rt = runtime(2);
    rt.block_on(async {
        let resolver = resolver().await;
        let timeout = Duration::from_secs(4);
        let r = probe(&format!("http://orders.{NX}/"), "timeout = \"4s\"").await;
        assert_eq!(r.outcome, Outcome::Dns, "{:?}", r.detail);
        assert_early(&r, timeout);
        assert!(r.phases.connect.is_none() && r.remote.is_none());
        assert!(
            resolver.nx.load(Ordering::SeqCst) >= 1,
            "the resolver was asked, and said no"
        );
        println!("NXDOMAIN: dns after {:?} ({:?})", r.total, r.detail);
    });
    rt.shutdown_background();
}

#[test]
fn dns_resolver_that_never_answers_is_dns_at_the_timeout() {
    const TEST: &str = "dns_resolver_that_never_answers_is_dns_at_the_timeout";
    if !inside_namespace() {
        if !can_use_namespaces() {
            return skip(TEST, "needs root, ip and nft");
        }
        return run_in_namespace(TEST, "dnssilent");
    }
    let rt = runtime(2);
    rt.block_on(async {
        let resolver = resolver().await;
        // glibc would wait 10 s (5 s per try, 2 tries); the probe must not.
        let timeout = Duration::from_secs(1);
        let r = probe(&format!("http://orders.{SILENT}/"), "timeout = \"1s\"").await;
        assert_eq!(r.outcome, Outcome::Dns, "{:?}", r.detail);
        assert_at_timeout(&r, timeout);
        assert_eq!(
            r.detail.as_deref(),
            Some("timed out after 1s waiting for the DNS lookup")
        );
        assert!(
            resolver.silent.load(Ordering::SeqCst) >= 1,
            "the resolver was asked, and kept quiet"
        );
        println!("silent resolver: dns after {:?}", r.total);
    });
    rt.shutdown_background();
}

#[test]
fn dns_resolver_not_listening_is_dns_at_once() {
    const TEST: &str = "dns_resolver_not_listening_is_dns_at_once";
    if !inside_namespace() {
        if !can_use_namespaces() {
            return skip(TEST, "needs root, ip and nft");
        }
        return run_in_namespace(TEST, "dnsdown");
    }
    let rt = runtime(2);
    rt.block_on(async {
        // Nothing on 127.0.0.1:53: the query draws an ICMP port unreachable.
        let timeout = Duration::from_secs(4);
        let r = probe(&format!("http://orders.{NX}/"), "timeout = \"4s\"").await;
        assert_eq!(r.outcome, Outcome::Dns, "{:?}", r.detail);
        assert_early(&r, timeout);
        assert!(r.phases.connect.is_none());
    });
    rt.shutdown_background();
}

// ---------------------------------------------------------------------------------------------
// All of them at once, in the running agent.

/// One hostile chain of the agent test: its single hop's URL and extra keys, and the class every
/// one of its probes must get.
struct Case {
    name: &'static str,
    url: String,
    extra: String,
    expect: Outcome,
}

/// Starts one server for every hostile behaviour above (on the current runtime).
async fn every_hostile_target(ca: &Ca) -> Vec<Case> {
    let http = |addr: SocketAddr| format!("http://{addr}/");
    let tls = |addr: SocketAddr| format!("https://{addr}/");
    let case = |name, url, expect| Case {
        name,
        url,
        extra: String::new(),
        expect,
    };
    let mut cases = vec![
        case(
            "never-answers",
            http(never_answers().await),
            Outcome::Timeout,
        ),
        case(
            "head-byte-per-second",
            http(head_one_byte_per_second().await),
            Outcome::Timeout,
        ),
        case(
            "endless-trickle",
            http(endless_trickle().await),
            Outcome::Timeout,
        ),
        case(
            "endless-flood",
            http(endless_flood().await.addr),
            Outcome::TooLarge,
        ),
        case(
            "gigabyte-body",
            http(gigabyte_body().await.addr),
            Outcome::TooLarge,
        ),
        case(
            "malformed-status",
            http(malformed_status(MALFORMED_STATUS_LINES[0]).await),
            Outcome::Protocol,
        ),
        case(
            "ten-thousand-headers",
            http(ten_thousand_headers(24).await),
            Outcome::TooLarge,
        ),
        case(
            "reset-mid-body",
            http(reset_mid_body().await),
            Outcome::Reset,
        ),
        Case {
            extra: "  tls_server_name = \"localhost\"\n".to_string(),
            ..case(
                "tls-stall",
                tls(stalled_tls_handshake().await),
                Outcome::Timeout,
            )
        },
        case(
            "http10-never-closing",
            http(http10_never_closing().await),
            Outcome::Timeout,
        ),
        case(
            "close-after-accept",
            http(accepting(|stream| async move { drop(stream) }).await),
            Outcome::Reset,
        ),
        case("dns-nxdomain", format!("http://orders.{NX}/"), Outcome::Dns),
        case(
            "dns-silent",
            format!("http://orders.{SILENT}/"),
            Outcome::Dns,
        ),
    ];
    for (name, fault) in [
        ("tls-expired", BadCert::Expired),
        ("tls-self-signed", BadCert::SelfSigned),
        ("tls-wrong-name", BadCert::WrongName),
    ] {
        cases.push(Case {
            name,
            url: tls(tls_target(fault, ca).await),
            extra: tls_keys(ca),
            expect: Outcome::Tls,
        });
    }
    cases
}

/// What the agent test's observer keeps of a round.
struct Seen {
    chain: String,
    started: Instant,
    lag: Duration,
    results: Vec<(Outcome, Duration)>,
}

/// The value of one series in a Prometheus text exposition.
fn series(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn hostile_chains_leave_a_healthy_chain_on_schedule() {
    const TEST: &str = "hostile_chains_leave_a_healthy_chain_on_schedule";
    if !inside_namespace() {
        if !can_use_namespaces() {
            return skip(TEST, "needs root, ip and nft");
        }
        return run_in_namespace(TEST, "sched");
    }
    const HEALTHY_EVERY: Duration = Duration::from_millis(250);
    const HOSTILE_TIMEOUT: Duration = Duration::from_millis(800);
    let dir = TempDir::new("sched");
    let ca = ca(&dir.0);
    // The hostile servers get a runtime of their own, as they would be other machines: their
    // work must not be what delays the agent, or the test would measure itself.
    let servers = runtime(1);
    let (cases, resolver) = servers.block_on(async {
        let resolver = resolver().await;
        (every_hostile_target(&ca).await, resolver)
    });
    let echo = refused_port();
    let _echo = echo_process(echo);

    let mut text = format!(
        "[agent]\ninterval = \"1s\"\ntimeout = \"{}ms\"\n\n",
        HOSTILE_TIMEOUT.as_millis()
    );
    for case in &cases {
        text.push_str(&format!(
            "[[chain]]\nname = \"{}\"\nkind = \"custom\"\n  [[chain.hop]]\n  name = \"target\"\n  role = \"target\"\n  url = \"{}\"\n{}\n",
            case.name, case.url, case.extra
        ));
    }
    text.push_str(&format!(
        "[[chain]]\nname = \"healthy\"\nkind = \"custom\"\ninterval = \"{}ms\"\ntimeout = \"200ms\"\n  [[chain.hop]]\n  name = \"target\"\n  role = \"target\"\n  url = \"http://{echo}/\"\n",
        HEALTHY_EVERY.as_millis()
    ));

    let agent = runtime(2);
    agent.block_on(async {
        wait_for("hopwatch echo to answer", Duration::from_secs(10), || {
            http_get(echo, "/").is_ok()
        })
        .await;
        let rounds = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let keep = rounds.clone();
        let observer = hopwatch::export::FnSink(move |observed: &hopwatch::record::Observation| {
            let round = &observed.round;
            keep.lock().expect("lock").push(Seen {
                chain: round.chain.name.clone(),
                started: round.started,
                lag: round.lag(),
                results: round
                    .probed
                    .results
                    .iter()
                    .map(|r| (r.outcome, r.total))
                    .collect(),
            });
        });
        let running = hopwatch::agent::start(
            config(&text),
            "127.0.0.1:0".parse().expect("addr"),
            vec![Arc::new(observer)],
        )
        .await
        .expect("start");

        // Scrape /metrics as Prometheus would, from a thread of its own, noting when the healthy
        // chain's ok counter moves.
        let metrics_addr = running.metrics_addr;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scraping = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let ok = "hopwatch_probes_total{chain=\"healthy\",hop=\"target\",result=\"ok\"}";
                let mut moves: Vec<(Instant, f64)> = Vec::new();
                let mut last = String::new();
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((200, body)) = http_get(metrics_addr, "/metrics") {
                        let value = series(&body, ok).unwrap_or(0.0);
                        if moves.last().is_none_or(|(_, v)| *v != value) {
                            moves.push((Instant::now(), value));
                        }
                        last = body;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (moves, last)
            })
        };

        let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
        let seen = rounds.clone();
        wait_for(
            "three rounds of every hostile chain and twelve of the healthy one",
            Duration::from_secs(30),
            || {
                let seen = seen.lock().expect("lock");
                let count = |name: &str| seen.iter().filter(|r| r.chain == name).count();
                names.iter().all(|n| count(n) >= 3) && count("healthy") >= 12
            },
        )
        .await;
        stop.store(true, Ordering::SeqCst);
        let (moves, metrics) = tokio::task::spawn_blocking(move || scraping.join())
            .await
            .expect("join")
            .expect("scraper");
        running.shutdown().await;

        let rounds = rounds.lock().expect("lock");
        // Every hostile probe got its class, and none outlived its timeout.
        for case in &cases {
            for round in rounds.iter().filter(|r| r.chain == case.name) {
                let (outcome, total) = round.results[0];
                assert_eq!(outcome, case.expect, "{}", case.name);
                assert!(
                    total <= HOSTILE_TIMEOUT + MARGIN,
                    "{}: a probe took {total:?}",
                    case.name
                );
            }
        }
        // The healthy chain: every round passed, started on time, one interval after the last.
        let healthy: Vec<&Seen> = rounds.iter().filter(|r| r.chain == "healthy").collect();
        let worst_lag = healthy.iter().map(|r| r.lag).max().unwrap_or_default();
        let worst_gap = healthy
            .windows(2)
            .map(|w| w[1].started - w[0].started)
            .max()
            .unwrap_or_default();
        let all_lag = rounds.iter().map(|r| r.lag).max().unwrap_or_default();
        println!(
            "{} rounds ({} healthy): healthy worst lag {worst_lag:?}, worst gap {worst_gap:?}; worst lag of any chain {all_lag:?}; peak RSS {} MiB",
            rounds.len(),
            healthy.len(),
            peak_rss_kib() / 1024
        );
        assert!(
            healthy.iter().all(|r| r.results[0].0 == Outcome::Ok),
            "a healthy round failed"
        );
        assert!(
            worst_lag < Duration::from_millis(100),
            "a healthy round started {worst_lag:?} late"
        );
        assert!(
            worst_gap < HEALTHY_EVERY + Duration::from_millis(100),
            "healthy rounds {worst_gap:?} apart; the interval is {HEALTHY_EVERY:?}"
        );

        // The same from /metrics: the ok counter moved every round, and no round of any chain
        // started more than 100 ms late.
        let stall = moves
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .unwrap_or_default();
        let moved = moves.last().map(|m| m.1).unwrap_or(0.0);
        println!(
            "/metrics: healthy ok counter reached {moved}, longest without moving {stall:?}"
        );
        assert!(
            moved >= 12.0,
            "the healthy ok counter only reached {moved}"
        );
        assert!(
            stall < HEALTHY_EVERY + Duration::from_millis(150),
            "the healthy ok counter stood still for {stall:?}"
        );
        let count = series(&metrics, "hopwatch_schedule_lag_seconds_count").unwrap_or(0.0);
        let within =
            series(&metrics, "hopwatch_schedule_lag_seconds_bucket{le=\"0.1\"}").unwrap_or(-1.0);
        assert!(count >= 12.0, "lag observed for {count} rounds");
        assert_eq!(within, count, "some rounds started over 100 ms late");
        assert_eq!(
            series(&metrics, "hopwatch_rounds_dropped_total"),
            Some(0.0)
        );
        for case in &cases {
            let probes = format!(
                "hopwatch_probes_total{{chain=\"{}\",hop=\"target\",result=\"{}\"}}",
                case.name, case.expect
            );
            assert!(
                series(&metrics, &probes).unwrap_or(0.0) >= 1.0,
                "{probes} missing from /metrics"
            );
        }
        assert!(resolver.nx.load(Ordering::SeqCst) >= 1);
        assert!(resolver.silent.load(Ordering::SeqCst) >= 1);
        // A gigabyte was offered every round; none of it may have stayed in memory.
        assert!(
            peak_rss_kib() < 256 * 1024,
            "peak RSS {} MiB",
            peak_rss_kib() / 1024
        );
    });
    agent.shutdown_background();
    servers.shutdown_background();
}

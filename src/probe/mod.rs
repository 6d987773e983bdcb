//! One HTTP(S) probe of one hop, with phase timings and a closed outcome class.
//!
//! The client is built from hyper's HTTP/1 connection API on a socket this module opens itself,
//! because a pooled client (reqwest) hides exactly what we measure: DNS, connect and TLS.

pub mod cloudmap;
pub mod proxy;
pub mod tls;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, CONNECTION, HOST, USER_AGENT};

const TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::auth::{AuthError, Authorization, Sent};
use crate::config::Hop;

/// What a probe came to. A small closed set: metrics are labelled with it, never with error
/// text, so the number of series stays bounded whatever a target does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Expected status and body.
    Ok,
    /// The host name did not resolve.
    Dns,
    /// The connection was actively refused (RST to the SYN): nothing listens there.
    ConnectRefused,
    /// No answer to the SYN within the timeout, or no route: a security group or NACL drop.
    ConnectTimeout,
    /// TLS handshake or certificate failure.
    Tls,
    /// Connected, but the whole exchange did not finish within the timeout.
    Timeout,
    /// The connection was reset or closed before the response was complete.
    Reset,
    /// A complete response with a status outside the expected set.
    HttpStatus,
    /// Expected status, but the body did not match `expect_body`.
    BodyMismatch,
    /// The peer did not speak valid HTTP/1.x.
    Protocol,
    /// The response head or body exceeded its bound.
    TooLarge,
    /// A `cloudmap://` hop: Cloud Map's `DiscoverInstances` answered with no instance.
    NoInstances,
    /// Not sent: the agent could not get the credentials the hop's `auth` needs (no AWS
    /// credentials, AssumeRole failed, the token endpoint refused or failed). The agent's
    /// failure, not the hop's.
    AgentCredentials,
}

impl Outcome {
    /// Every class, in a stable order (for pre-registering series and for docs).
    pub const ALL: [Outcome; 13] = [
        Outcome::Ok,
        Outcome::Dns,
        Outcome::ConnectRefused,
        Outcome::ConnectTimeout,
        Outcome::Tls,
        Outcome::Timeout,
        Outcome::Reset,
        Outcome::HttpStatus,
        Outcome::BodyMismatch,
        Outcome::Protocol,
        Outcome::TooLarge,
        Outcome::NoInstances,
        Outcome::AgentCredentials,
    ];

    /// Every class in the order of its name: the order CloudWatch datums and EMF's `Results`
    /// list them in.
    pub const BY_NAME: [Outcome; 13] = [
        Outcome::AgentCredentials,
        Outcome::BodyMismatch,
        Outcome::ConnectRefused,
        Outcome::ConnectTimeout,
        Outcome::Dns,
        Outcome::HttpStatus,
        Outcome::NoInstances,
        Outcome::Ok,
        Outcome::Protocol,
        Outcome::Reset,
        Outcome::Timeout,
        Outcome::Tls,
        Outcome::TooLarge,
    ];

    /// Position in [`Outcome::ALL`]: counts by class are arrays indexed by it.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Dns => "dns",
            Outcome::ConnectRefused => "connect_refused",
            Outcome::ConnectTimeout => "connect_timeout",
            Outcome::Tls => "tls",
            Outcome::Timeout => "timeout",
            Outcome::Reset => "reset",
            Outcome::HttpStatus => "http_status",
            Outcome::BodyMismatch => "body_mismatch",
            Outcome::Protocol => "protocol",
            Outcome::TooLarge => "too_large",
            Outcome::NoInstances => "no_instances",
            Outcome::AgentCredentials => "agent_credentials",
        }
    }

    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::Outcome;

    /// Every probe is a spawned task whose future is allocated whole: a large state machine
    /// (an SDK call awaited inline) costs every probe, not just the hops that need it. At
    /// 10,000 hops, 433cba2's inline Cloud Map call doubled the agent's heap (61 -> 123 MiB).
    /// In a test build: 12,424 bytes with that call inline, 3,400 with it boxed.
    #[test]
    fn a_probe_future_stays_small() {
        let text = "[[chain]]\nname = \"x\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"h\"\nrole = \"target\"\nurl = \"http://127.0.0.1:1/\"\n";
        let config = match crate::config::load_str("t.toml", text, &|_| None) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let prober = super::Prober::new(super::tls::TlsConfigs::new([]).expect("no CA files"));
        let size = std::mem::size_of_val(&prober.probe(&config.chains[0].hops[0], None));
        println!("probe future: {size} bytes");
        assert!(size < 6144, "probe future is {size} bytes");
    }

    #[test]
    fn index_and_name_order_cover_every_class() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i, "{o}");
        }
        let names: Vec<&str> = Outcome::BY_NAME.iter().map(|o| o.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            names, sorted,
            "BY_NAME is sorted by name and has no duplicate"
        );
        assert_eq!(names.len(), Outcome::ALL.len());
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so widths and alignment in format strings apply (the `check` table).
        f.pad(self.as_str())
    }
}

/// The phases of one probe. Each is `None` when it did not happen (no DNS for an IP literal, no
/// TLS for `http://`, no connect phases on a reused connection) or did not complete.
///
/// They are measured between consecutive marks on one clock, so the phases that completed add
/// up to the total: `dns + connect + tls + ttfb + transfer == total` on success.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    pub dns: Option<Duration>,
    pub connect: Option<Duration>,
    pub tls: Option<Duration>,
    /// From the connection being ready (request about to be written) to the first response byte.
    pub ttfb: Option<Duration>,
    /// From the first response byte to the end of the body.
    pub transfer: Option<Duration>,
}

/// Names of the phases as used in the `phase` label and in JSON.
pub const PHASE_NAMES: [&str; 5] = ["dns", "connect", "tls", "ttfb", "transfer"];

impl Phases {
    /// The phases in [`PHASE_NAMES`] order.
    pub fn as_array(&self) -> [Option<Duration>; 5] {
        [self.dns, self.connect, self.tls, self.ttfb, self.transfer]
    }
}

/// Response headers a diagnosis needs (brief §3); everything else is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// `Server` (`awselb/2.0` marks an ALB-made error).
    pub server: Option<String>,
    /// First value of `x-amzn-ErrorType` (API Gateway).
    pub error_type: Option<String>,
    /// `x-amzn-RequestId` or `apigw-requestid`: `$context.requestId` in the stage's logs.
    pub request_id: Option<String>,
    /// `x-amz-apigw-id`: `$context.extendedRequestId`, unique where a client could set the
    /// request id (REST).
    pub extended_request_id: Option<String>,
    /// The `message` of a JSON error body (`{"message": "Forbidden"}`), as API Gateway writes
    /// its own answers; read from failed answers only, cut to 128 characters.
    pub message: Option<String>,
    /// The failed answer's body was a JSON object holding `message` and nothing else: the
    /// shape of API Gateway's default responses.
    pub message_only: bool,
    /// `Content-Type`, cut to 128 characters.
    pub content_type: Option<String>,
    /// Some header was `x-amzn-Remapped-*`: API Gateway renames the backend's headers that
    /// clash with its own, so the answer came from behind the gateway.
    pub remapped: bool,
    /// The TLS alert the peer ended the connection with (`CertificateRequired`, ...).
    pub tls_alert: Option<String>,
}

/// Everything one probe learnt.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub outcome: Outcome,
    /// HTTP status when a response head arrived.
    pub status: Option<u16>,
    /// From the start of the probe to its end (success, failure or timeout).
    pub total: Duration,
    pub phases: Phases,
    /// Wall-clock start, for timestamps in exports.
    pub started_at: SystemTime,
    /// The address connected to.
    pub remote: Option<SocketAddr>,
    pub evidence: Evidence,
    /// The body as read, at most `max_body` bytes.
    pub body: Bytes,
    /// Human detail for logs and `check` output. Never a metric label.
    pub detail: Option<String>,
    /// The `X-Amzn-Trace-Id` sent (`Root=1-<epoch>-<random>`): an ALB keeps it and logs it,
    /// so one probe can be found in access logs and in the target's own logs.
    pub trace_id: String,
    /// The earliest `notAfter` in the certificate chain the server presented (TLS hops whose
    /// handshake completed); `None` for plain HTTP or a failed handshake.
    pub cert_not_after: Option<SystemTime>,
}

/// A fresh X-Ray style trace id for a probe started at `at`: the epoch second in hex and 96
/// random bits, the format ALB and API Gateway accept and propagate.
pub fn trace_id(at: SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "Root=1-{:08x}-{:08x}{:016x}",
        secs as u32,
        fastrand::u32(..),
        fastrand::u64(..)
    )
}

/// Where a probe was when it stopped, so a timeout can be classified by phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Dns,
    Connect,
    Tls,
    Exchange,
}

/// Marks of one probe, filled in as it goes; read after a timeout cancelled the work.
struct Marks {
    start: Instant,
    dns: Option<Instant>,
    connect: Option<Instant>,
    tls: Option<Instant>,
    /// When the request was handed to the connection.
    ready: Option<Instant>,
    /// Shared with the connection's I/O wrapper, which sets it on the first byte read.
    first_byte: Arc<FirstByte>,
    stage: Stage,
    remote: Option<SocketAddr>,
    /// The earliest `notAfter` of the certificates the server presented on this connection.
    cert_not_after: Option<SystemTime>,
}

/// When response bytes came off the socket, as nanoseconds after `base` (0 = not yet): the
/// first one, and the latest. Marked where the bytes are read, inside the connection's task, so
/// that handing them on to the probe (a task switch, slow on a busy host) is not counted as
/// time the network took.
struct FirstByte {
    base: Instant,
    nanos: AtomicU64,
    last: AtomicU64,
}

impl FirstByte {
    fn new(base: Instant) -> Arc<Self> {
        Arc::new(FirstByte {
            base,
            nanos: AtomicU64::new(0),
            last: AtomicU64::new(0),
        })
    }
    fn mark(&self) {
        let nanos = (self.base.elapsed().as_nanos() as u64).max(1);
        if self.nanos.load(Ordering::Relaxed) == 0 {
            let _ = self
                .nanos
                .compare_exchange(0, nanos, Ordering::Relaxed, Ordering::Relaxed);
        }
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }
    fn reset(&self) {
        self.nanos.store(0, Ordering::Relaxed);
        self.last.store(0, Ordering::Relaxed);
    }
    fn at(&self, nanos: &AtomicU64) -> Option<Instant> {
        match nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n)),
        }
    }
    fn get(&self) -> Option<Instant> {
        self.at(&self.nanos)
    }
    /// When the latest response bytes were read.
    fn last(&self) -> Option<Instant> {
        self.at(&self.last)
    }
}

/// A stream that notes when the first response byte arrives.
struct Timed<S> {
    inner: S,
    first_byte: Arc<FirstByte>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.first_byte.mark();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The task driving one HTTP/1 connection. Aborted when the probe is done with it (or was
/// cancelled by its timeout). It keeps the connection's own error: when a peer ends the
/// connection before the request is written (a TLS 1.3 server refusing the client
/// certificate sends its alert only after the client's handshake completed), the request
/// side sees no more than "connection was not ready", and the alert is only in here.
struct ConnTask(Option<JoinHandle<Option<Failure>>>);

impl ConnTask {
    /// What ended the connection, if it has ended or ends within a short grace. The request
    /// side has already seen the connection gone, so its task is finishing; the bound only
    /// guards against a connection that is, against that evidence, still alive.
    async fn failure(&mut self) -> Option<Failure> {
        let handle = self.0.as_mut()?;
        let ended = tokio::time::timeout(Duration::from_millis(250), handle).await;
        match ended {
            Ok(result) => {
                self.0 = None;
                result.ok().flatten()
            }
            Err(_) => None,
        }
    }
}

impl Drop for ConnTask {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

/// A kept-alive connection, for hops with `reuse_connections`.
struct Kept {
    sender: http1::SendRequest<Full<Bytes>>,
    first_byte: Arc<FirstByte>,
    remote: SocketAddr,
    task: ConnTask,
    /// What the handshake presented: a reused connection still reports the certificate it
    /// is protected by.
    cert_not_after: Option<SystemTime>,
}

/// Per-hop state kept between probes: the open connection when reuse is on.
#[derive(Default)]
pub struct HopConn {
    kept: Mutex<Option<Kept>>,
}

/// Probes hops. Cheap to clone; holds the TLS configs built at start, and the Cloud Map client
/// of `cloudmap://` hops (made on first use).
#[derive(Clone)]
pub struct Prober {
    tls: tls::TlsConfigs,
    user_agent: http::HeaderValue,
    cloudmap: Arc<cloudmap::CloudMap>,
    /// The credentials of hops with `auth` (none: such a hop's probe is not sent).
    auth: crate::auth::Handles,
}

/// Why a probe stopped early: its class, a human detail, and the TLS alert the peer sent, if
/// one ended it.
struct Failure(Outcome, String, Option<String>);

impl Prober {
    /// Builds a prober able to reach every hop of the given config (loads each `ca_file`).
    pub fn new(tls: tls::TlsConfigs) -> Self {
        Self::with_cloudmap(tls, cloudmap::Endpoint::default())
    }

    /// A prober whose `cloudmap://` hops ask Cloud Map at `endpoint`.
    pub fn with_cloudmap(tls: tls::TlsConfigs, endpoint: cloudmap::Endpoint) -> Self {
        Prober {
            tls,
            user_agent: http::HeaderValue::from_static(concat!(
                "hopwatch/",
                env!("CARGO_PKG_VERSION")
            )),
            cloudmap: Arc::new(cloudmap::CloudMap::new(endpoint)),
            auth: crate::auth::Handles::default(),
        }
    }

    /// The same prober, authenticating the hops with `auth` from `handles` (made by the
    /// agent's [`crate::auth::Registry`], so every prober of the agent shares its caches).
    pub fn with_auth(mut self, handles: crate::auth::Handles) -> Self {
        self.auth = handles;
        self
    }

    /// Every address of a hop: its host's DNS answers (each load balancer node), or, for a
    /// `cloudmap://` hop, the instances `DiscoverInstances` returns. Bounded by the hop's
    /// timeout; `None` when nothing came back.
    pub async fn addresses(&self, hop: &Hop) -> Option<Vec<SocketAddr>> {
        if let Some(name) = &hop.url.cloudmap {
            // Boxed: an SDK call's future is large, and every hop's would carry it inline.
            let discover = self.cloudmap.discover(name, hop.url.port, hop.timeout);
            return match Box::pin(discover).await {
                cloudmap::Discovered::Instances(a) if !a.is_empty() => Some(a),
                _ => None,
            };
        }
        if let Some(ip) = hop.url.ip() {
            return Some(vec![SocketAddr::new(ip, hop.url.port)]);
        }
        let lookup = tokio::net::lookup_host((hop.url.host.as_str(), hop.url.port));
        let addrs = tokio::time::timeout(hop.timeout, lookup).await.ok()?.ok()?;
        let mut found: Vec<SocketAddr> = addrs.collect();
        found.sort();
        found.dedup();
        (!found.is_empty()).then_some(found)
    }

    /// A `cloudmap://` hop: passes when `DiscoverInstances` returns at least one instance.
    async fn discover(&self, hop: &Hop, trace: String) -> ProbeResult {
        let started_at = SystemTime::now();
        let start = Instant::now();
        let name = hop.url.cloudmap.clone().unwrap_or_default();
        let (namespace, service) = (&name.namespace, &name.service);
        let found = self
            .cloudmap
            .discover(&name, hop.url.port, hop.timeout)
            .await;
        let (outcome, status, detail) = match found {
            cloudmap::Discovered::Instances(a) if a.is_empty() => (
                Outcome::NoInstances,
                None,
                Some(format!(
                    "DiscoverInstances returned no instance of {service} in {namespace}"
                )),
            ),
            cloudmap::Discovered::Instances(_) => (Outcome::Ok, None, None),
            cloudmap::Discovered::Failed(status, why, how) => {
                let outcome = match how {
                    cloudmap::Failure::Answered => Outcome::HttpStatus,
                    cloudmap::Failure::Timeout => Outcome::Timeout,
                    cloudmap::Failure::Unreachable => Outcome::ConnectTimeout,
                };
                (outcome, status, Some(why))
            }
        };
        ProbeResult {
            outcome,
            status,
            total: start.elapsed(),
            phases: Phases::default(),
            started_at,
            remote: None,
            evidence: Evidence::default(),
            body: Bytes::new(),
            detail,
            trace_id: trace,
            cert_not_after: None,
        }
    }

    /// Probes `hop` once. Never fails: every failure is a classified [`ProbeResult`].
    /// `reuse` is the hop's connection state when connection reuse is on.
    pub async fn probe(&self, hop: &Hop, reuse: Option<&HopConn>) -> ProbeResult {
        let started_at = SystemTime::now();
        // The id actually sent: a configured header of that name replaces ours.
        let trace = hop
            .headers
            .iter()
            .find(|h| h.name == TRACE_ID)
            .map(|h| match h.value.to_str() {
                // Never copy a secret into exports.
                Ok(v) if !h.value.is_sensitive() => v.to_string(),
                _ => "<configured>".to_string(),
            })
            .unwrap_or_else(|| trace_id(started_at));
        if hop.url.cloudmap.is_some() {
            // Boxed: the SDK call's future is kilobytes, and inline it would make every probe
            // task that large (a heap that fragmented to twice its size at 10,000 hops).
            return Box::pin(self.discover(hop, trace)).await;
        }
        // Credentials first, outside the probe's own clock: a wait on a token endpoint is not
        // the hop's latency. Cached, this takes microseconds; it waits (at most the hop's
        // timeout) only when nothing usable is cached. Boxed, as the Cloud Map call above.
        let authorization = match &hop.auth {
            None => None,
            Some(auth) => {
                let asked = Instant::now();
                match Box::pin(self.auth.authorize(auth, hop.timeout)).await {
                    Ok(authorization) => Some(authorization),
                    Err(error) => return not_sent(started_at, asked.elapsed(), &error, trace),
                }
            }
        };
        let start = Instant::now();
        let mut marks = Marks {
            start,
            dns: None,
            connect: None,
            tls: None,
            ready: None,
            first_byte: FirstByte::new(start),
            stage: Stage::Dns,
            remote: None,
            cert_not_after: None,
        };
        let deadline = tokio::time::Instant::from_std(start + hop.timeout);
        let work = self.run(hop, reuse, &mut marks, &trace, authorization.as_ref());
        let outcome = tokio::time::timeout_at(deadline, work).await;
        let exchanged = matches!(outcome, Ok(Ok(_)));
        // A complete answer ended when its last bytes came off the socket.
        let end = match marks.first_byte.last() {
            Some(last) if exchanged && last >= start => last,
            _ => Instant::now(),
        };
        let (outcome, status, evidence, body, detail) = match outcome {
            Ok(Ok(done)) => (
                done.outcome,
                Some(done.status),
                done.evidence,
                done.body,
                done.detail,
            ),
            Ok(Err(Failure(class, detail, alert))) => {
                let evidence = Evidence {
                    tls_alert: alert,
                    ..Evidence::default()
                };
                (class, None, evidence, Bytes::new(), Some(detail))
            }
            Err(_elapsed) => {
                let (class, what) = match marks.stage {
                    Stage::Dns => (Outcome::Dns, "DNS lookup"),
                    Stage::Connect => (Outcome::ConnectTimeout, "TCP connect"),
                    Stage::Tls => (Outcome::Timeout, "TLS handshake"),
                    Stage::Exchange if marks.first_byte.get().is_some() => {
                        (Outcome::Timeout, "response")
                    }
                    Stage::Exchange => (Outcome::Timeout, "first response byte"),
                };
                let detail = format!(
                    "timed out after {} waiting for the {what}",
                    crate::config::duration::format_duration(hop.timeout)
                );
                (class, None, Evidence::default(), Bytes::new(), Some(detail))
            }
        };
        let phases = marks.phases(end, exchanged);
        if let Some(kept) = reuse {
            if !outcome.is_ok() {
                // Never reuse a connection that just failed: the next probe starts clean.
                *kept.kept.lock().await = None;
            }
        }
        ProbeResult {
            outcome,
            status,
            total: end - start,
            phases,
            started_at,
            remote: marks.remote,
            evidence,
            body,
            detail,
            trace_id: trace,
            cert_not_after: marks.cert_not_after,
        }
    }

    async fn run(
        &self,
        hop: &Hop,
        reuse: Option<&HopConn>,
        marks: &mut Marks,
        trace: &str,
        auth: Option<&Authorization<'_>>,
    ) -> Result<Exchange, Failure> {
        if let Some(conn) = reuse {
            let mut guard = conn.kept.lock().await;
            if let Some(kept) = guard.as_mut() {
                if kept.sender.is_ready() {
                    marks.stage = Stage::Exchange;
                    marks.remote = Some(kept.remote);
                    marks.cert_not_after = kept.cert_not_after;
                    kept.first_byte.reset();
                    // Reused connections measure first byte on their own clock base.
                    marks.first_byte = kept.first_byte.clone();
                    marks.ready = Some(Instant::now());
                    let (request, sent) = self.request(hop, false, trace, auth)?;
                    return exchange(&mut kept.sender, &mut kept.task, request, hop, &sent).await;
                }
                *guard = None;
            }
            let (mut sender, mut task, remote) = self.connect(hop, marks).await?;
            marks.ready = Some(Instant::now());
            let (request, sent) = self.request(hop, false, trace, auth)?;
            let result = exchange(&mut sender, &mut task, request, hop, &sent).await;
            if result.is_ok() {
                *guard = Some(Kept {
                    sender,
                    first_byte: marks.first_byte.clone(),
                    remote,
                    task,
                    cert_not_after: marks.cert_not_after,
                });
            }
            return result;
        }
        let (mut sender, mut task, _) = self.connect(hop, marks).await?;
        marks.ready = Some(Instant::now());
        let (request, sent) = self.request(hop, true, trace, auth)?;
        exchange(&mut sender, &mut task, request, hop, &sent).await
    }

    /// The request of one probe, authenticated when the hop has `auth`, and the secrets that
    /// put on it (to keep out of what the probe reports).
    fn request(
        &self,
        hop: &Hop,
        close: bool,
        trace: &str,
        auth: Option<&Authorization<'_>>,
    ) -> Result<(Request<Full<Bytes>>, Sent), Failure> {
        let mut builder = Request::builder()
            .method(hop.method.clone())
            .uri(hop.url.path_and_query.as_str());
        let headers = builder.headers_mut().ok_or_else(|| {
            Failure(
                Outcome::Protocol,
                "request could not be built".to_string(),
                None,
            )
        })?;
        headers.insert(USER_AGENT, self.user_agent.clone());
        if close {
            headers.insert(CONNECTION, http::HeaderValue::from_static("close"));
        }
        match http::HeaderValue::from_str(&hop.url.authority) {
            Ok(host) => {
                headers.insert(HOST, host);
            }
            Err(_) => return Err(Failure(Outcome::Protocol, "invalid Host".to_string(), None)),
        }
        if let Ok(trace) = http::HeaderValue::from_str(trace) {
            headers.insert(TRACE_ID, trace);
        }
        if let Some((_, content_type)) = &hop.body {
            headers.insert(http::header::CONTENT_TYPE, content_type.clone());
        }
        // Configured headers last, so a user can override Host, User-Agent or the trace id.
        for header in &hop.headers {
            headers.insert(header.name.clone(), header.value.clone());
        }
        let body = hop
            .body
            .as_ref()
            .map(|(b, _)| b.clone())
            .unwrap_or_default();
        let mut request = builder.body(Full::new(body.clone())).map_err(|e| {
            Failure(
                Outcome::Protocol,
                format!("request could not be built: {e}"),
                None,
            )
        })?;
        // Last: a signature covers the request as it will be sent (its Host, its headers, its
        // body), dated now.
        let sent = match auth {
            None => Sent::default(),
            Some(auth) => auth
                .apply(&mut request, &body)
                .map_err(|e| Failure(Outcome::AgentCredentials, format!("not sent: {e}"), None))?,
        };
        Ok((request, sent))
    }

    async fn connect(
        &self,
        hop: &Hop,
        marks: &mut Marks,
    ) -> Result<(http1::SendRequest<Full<Bytes>>, ConnTask, SocketAddr), Failure> {
        marks.stage = Stage::Dns;
        let addr = match hop.url.ip() {
            Some(ip) => SocketAddr::new(ip, hop.url.port),
            None => {
                let found = tokio::net::lookup_host((hop.url.host.as_str(), hop.url.port))
                    .await
                    .map_err(|e| Failure(Outcome::Dns, format!("{}: {e}", hop.url.host), None))?;
                let addr = found.into_iter().next().ok_or_else(|| {
                    Failure(Outcome::Dns, format!("{}: no address", hop.url.host), None)
                })?;
                marks.dns = Some(Instant::now());
                addr
            }
        };
        marks.remote = Some(addr);
        marks.stage = Stage::Connect;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Failure(classify_connect(&e), format!("connect {addr}: {e}"), None))?;
        // Latency probes must not wait on Nagle.
        let _ = tcp.set_nodelay(true);
        marks.connect = Some(Instant::now());
        if let Some(version) = hop.send_proxy_protocol {
            let mut tcp = tcp;
            let local = tcp
                .local_addr()
                .map_err(|e| Failure(Outcome::Reset, format!("connect {addr}: {e}"), None))?;
            let header = proxy::header(version, local, addr);
            tokio::io::AsyncWriteExt::write_all(&mut tcp, &header)
                .await
                .map_err(|e| {
                    Failure(
                        classify_connect(&e),
                        format!("PROXY header to {addr}: {e}"),
                        None,
                    )
                })?;
            return self.secure(hop, tcp, addr, marks).await;
        }
        self.secure(hop, tcp, addr, marks).await
    }

    /// TLS when the hop's URL says so, then the HTTP/1 connection.
    async fn secure(
        &self,
        hop: &Hop,
        tcp: TcpStream,
        addr: SocketAddr,
        marks: &mut Marks,
    ) -> Result<(http1::SendRequest<Full<Bytes>>, ConnTask, SocketAddr), Failure> {
        if !hop.url.tls {
            let (sender, task) = handshake(tcp, marks.first_byte.clone()).await?;
            marks.stage = Stage::Exchange;
            return Ok((sender, task, addr));
        }
        marks.stage = Stage::Tls;
        let name = hop
            .tls_server_name
            .as_deref()
            .unwrap_or(hop.url.host.trim_start_matches('[').trim_end_matches(']'));
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| Failure(Outcome::Tls, format!("server name {name:?}: {e}"), None))?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.get(hop));
        let stream = connector.connect(server_name, tcp).await.map_err(|e| {
            Failure(
                classify_tls(&e),
                format!("TLS handshake: {e}"),
                alert_of(&e),
            )
        })?;
        marks.tls = Some(Instant::now());
        marks.cert_not_after = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(tls::earliest_not_after);
        let (sender, task) = handshake(stream, marks.first_byte.clone()).await?;
        marks.stage = Stage::Exchange;
        Ok((sender, task, addr))
    }
}

impl Marks {
    fn phases(&self, end: Instant, complete: bool) -> Phases {
        let mut last = self.start;
        let mut step = |mark: Option<Instant>| {
            mark.map(|at| {
                let d = at.saturating_duration_since(last);
                last = at;
                d
            })
        };
        let dns = step(self.dns);
        let connect = step(self.connect);
        let tls = step(self.tls);
        // The gap between the TLS mark and the request being handed over is tiny but real;
        // it belongs to time-to-first-byte so that the phases add up to the total.
        let first_byte = self.first_byte.get();
        let ttfb = match (self.ready, first_byte) {
            (Some(_), Some(at)) => step(Some(at)),
            _ => None,
        };
        let transfer = match (ttfb, complete) {
            (Some(_), true) => step(Some(end)),
            _ => None,
        };
        Phases {
            dns,
            connect,
            tls,
            ttfb,
            transfer,
        }
    }
}

async fn handshake<S>(
    stream: S,
    first_byte: Arc<FirstByte>,
) -> Result<(http1::SendRequest<Full<Bytes>>, ConnTask), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Timed {
        inner: stream,
        first_byte,
    });
    let (sender, conn) = http1::Builder::new()
        .max_headers(100)
        .max_buf_size(64 * 1024)
        .handshake(io)
        .await
        .map_err(|e| Failure(classify_hyper(&e), e.to_string(), alert_of(&e)))?;
    let task = tokio::spawn(async move {
        conn.await
            .err()
            .map(|e| Failure(classify_hyper(&e), describe_hyper(&e), alert_of(&e)))
    });
    Ok((sender, ConnTask(Some(task))))
}

/// What a completed HTTP exchange gave.
struct Exchange {
    outcome: Outcome,
    status: u16,
    evidence: Evidence,
    body: Bytes,
    detail: Option<String>,
}

async fn exchange(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    task: &mut ConnTask,
    request: Request<Full<Bytes>>,
    hop: &Hop,
    sent: &Sent,
) -> Result<Exchange, Failure> {
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => {
            let own = Failure(classify_hyper(&e), describe_hyper(&e), alert_of(&e));
            // A request that never left says nothing of why; the connection's end does.
            if own.2.is_none() && (e.is_canceled() || e.is_closed()) {
                if let Some(ended) = task.failure().await {
                    return Err(ended);
                }
            }
            return Err(own);
        }
    };
    let status = response.status().as_u16();
    let mut evidence = evidence(response.headers());
    // A hop that hands back a token or a signature (in an error header) must not get it
    // reported: the reason quotes evidence, and reasons are exported.
    evidence.scrub(sent);
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    let mut too_large = false;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Failure(classify_hyper(&e), describe_hyper(&e), alert_of(&e)))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > hop.max_body {
                let room = hop.max_body - buf.len();
                buf.extend_from_slice(&data[..room]);
                too_large = true;
                break;
            }
            buf.extend_from_slice(&data);
        }
    }
    let body = buf.freeze();
    if !hop.expect_status.contains(status) {
        if let Some((message, alone)) = error_message(&body) {
            evidence.message = Some(if sent.overlaps(&message) {
                REDACTED.to_string()
            } else {
                message
            });
            evidence.message_only = alone;
        }
    }
    let (outcome, detail) = if too_large {
        (
            Outcome::TooLarge,
            Some(format!("body exceeds max_body ({} bytes)", hop.max_body)),
        )
    } else if !hop.expect_status.contains(status) {
        (
            Outcome::HttpStatus,
            Some(format!("unexpected status {status}")),
        )
    } else if let Some(re) = &hop.expect_body {
        if re.is_match(&String::from_utf8_lossy(&body)) {
            (Outcome::Ok, None)
        } else {
            (
                Outcome::BodyMismatch,
                Some(format!("body does not match {:?}", re.as_str())),
            )
        }
    } else {
        (Outcome::Ok, None)
    };
    Ok(Exchange {
        outcome,
        status,
        evidence,
        body,
        detail,
    })
}

/// What a scrubbed piece of evidence reads.
const REDACTED: &str = "<redacted>";

impl Evidence {
    /// Replaces every piece of evidence that holds a secret the probe sent.
    fn scrub(&mut self, sent: &Sent) {
        for field in [
            &mut self.server,
            &mut self.error_type,
            &mut self.request_id,
            &mut self.extended_request_id,
            &mut self.message,
            &mut self.content_type,
        ] {
            if field.as_deref().is_some_and(|t| sent.overlaps(t)) {
                *field = Some(REDACTED.to_string());
            }
        }
    }
}

/// A probe the agent did not send: it has no credentials for the hop's `auth`.
fn not_sent(
    started_at: SystemTime,
    waited: Duration,
    error: &AuthError,
    trace: String,
) -> ProbeResult {
    ProbeResult {
        outcome: Outcome::AgentCredentials,
        status: None,
        total: waited,
        phases: Phases::default(),
        started_at,
        remote: None,
        evidence: Evidence::default(),
        body: Bytes::new(),
        detail: Some(format!("not sent: {error}")),
        trace_id: trace,
        // No handshake: nothing was sent.
        cert_not_after: None,
    }
}

fn evidence(headers: &HeaderMap) -> Evidence {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(128).collect::<String>())
    };
    Evidence {
        server: text("server"),
        // API Gateway may send two comma-separated values; the first is the one that matters.
        error_type: text("x-amzn-errortype")
            .map(|v| v.split([',', ':']).next().unwrap_or("").trim().to_string()),
        request_id: text("x-amzn-requestid").or_else(|| text("apigw-requestid")),
        extended_request_id: text("x-amz-apigw-id"),
        content_type: text("content-type"),
        remapped: headers
            .keys()
            .any(|k| k.as_str().starts_with("x-amzn-remapped-")),
        ..Evidence::default()
    }
}

/// The `message` (or `Message`) string of a small JSON error body: API Gateway's own answers
/// carry one (`{"message": "Forbidden"}`, `{"Message": "User is not authorized ..."}`), and
/// whether it was the body's only key, as in the gateway's default responses.
fn error_message(body: &[u8]) -> Option<(String, bool)> {
    if body.len() > 4096 || !body.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    let text = doc
        .get("message")
        .or_else(|| doc.get("Message"))?
        .as_str()?;
    Some((text.chars().take(128).collect(), doc.len() == 1))
}

/// The alert a TLS peer ended the connection with (`CertificateRequired`, `BadCertificate`,
/// ...), found anywhere in an error's chain: what tells a missing or refused client
/// certificate from other TLS failures.
fn alert_of(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(err);
    while let Some(e) = current {
        let inner = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .or_else(|| e.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::AlertReceived(alert)) = inner {
            return Some(format!("{alert:?}"));
        }
        current = e.source();
    }
    None
}

fn classify_connect(err: &io::Error) -> Outcome {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::ConnectRefused,
        io::ErrorKind::ConnectionReset => Outcome::Reset,
        // No route / host unreachable: the SYN went nowhere, which is what a dropped packet
        // looks like to the user too.
        _ => Outcome::ConnectTimeout,
    }
}

fn classify_tls(err: &io::Error) -> Outcome {
    if let Some(inner) = err.get_ref() {
        if inner.downcast_ref::<rustls::Error>().is_some() {
            return Outcome::Tls;
        }
    }
    match err.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => Outcome::Reset,
        // EOF during the handshake or garbage instead of a ServerHello: the TLS exchange failed.
        _ => Outcome::Tls,
    }
}

fn io_source<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}

fn classify_hyper(err: &hyper::Error) -> Outcome {
    if err.is_parse_too_large() {
        return Outcome::TooLarge;
    }
    if err.is_parse() || err.is_parse_status() {
        return Outcome::Protocol;
    }
    if let Some(io) = io_source(err) {
        if io
            .get_ref()
            .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some())
        {
            return Outcome::Tls;
        }
        return match io.kind() {
            io::ErrorKind::TimedOut => Outcome::Timeout,
            io::ErrorKind::InvalidData => Outcome::Protocol,
            _ => Outcome::Reset,
        };
    }
    if err.is_incomplete_message() || err.is_closed() || err.is_canceled() {
        return Outcome::Reset;
    }
    // An early EOF in a length-delimited body reaches us as a body error with no io source.
    if err.to_string().contains("incomplete") || err.to_string().contains("end of file") {
        return Outcome::Reset;
    }
    Outcome::Protocol
}

fn describe_hyper(err: &hyper::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

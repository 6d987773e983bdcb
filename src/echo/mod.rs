//! `hopwatch echo`: the responder a team places at its targets. It answers every request with
//! what it saw of the connection (TCP peer, its own address, the forwarding headers, who it is),
//! so the agent learns the source address each target sees.

pub mod proxy_protocol;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::Cidr;
use crate::wire::{EchoReply, Identity, ProxyReport};

/// Longest `--delay` accepted: it exists for tests and benchmarks, not to simulate outages.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Request bodies beyond this are refused with 413.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Request head (line and headers) bound; hyper's smallest allowed buffer. A longer head is
/// answered 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Reflected values (method, path, header values) are cut to this many characters.
pub const MAX_REFLECTED: usize = 1024;
/// Connections served at once; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 4096;
/// Requests answered on one keep-alive connection; the last is answered with
/// `Connection: close` (nginx's `keepalive_requests` default). Load balancers reconnect.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 1000;
/// Time allowed for a request head, counted from the end of the previous answer (so it is
/// also the idle timeout of a keep-alive connection).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request body once its head has arrived.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Echo responder settings.
#[derive(Debug, Clone, Default)]
pub struct EchoOptions {
    /// Delay before each answer (bounded by [`MAX_DELAY`]).
    pub delay: Duration,
    pub identity: Identity,
    /// Expect PROXY protocol headers (v1 or v2, possibly stacked) before each connection's
    /// first request, as an NLB target group with proxy protocol v2 sends them.
    pub proxy_protocol: bool,
    /// With `proxy_protocol`: close connections that start without a PROXY header, as nginx's
    /// `listen … proxy_protocol` does (a target that only takes traffic through its NLB).
    pub require_proxy_protocol: bool,
    /// Source ranges allowed to connect; empty allows every source. Checked against the TCP
    /// peer (behind a load balancer, its node), before anything is read.
    pub allow: Vec<Cidr>,
    /// Answer with this status instead of 200 (the reply body unchanged): an application
    /// failing on its own, for the lab and for trying alerts out.
    pub status: Option<StatusCode>,
    /// With `status`: only for request paths that start with this prefix (`/prod/`): an
    /// application failing only on the path the gateway sends.
    pub status_path: Option<String>,
}

impl EchoOptions {
    /// Whether a connection from `peer` may be served. IPv4-mapped IPv6 peers (a dual-stack
    /// listener) are checked as the IPv4 address they are.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(peer))
    }
}

impl From<&proxy_protocol::Header> for ProxyReport {
    fn from(h: &proxy_protocol::Header) -> Self {
        ProxyReport {
            version: h.version,
            command: match h.command {
                proxy_protocol::Command::Local => "local".to_string(),
                proxy_protocol::Command::Proxy => "proxy".to_string(),
            },
            src: h.src.map(|a| a.to_string()),
            dst: h.dst.map(|a| a.to_string()),
            vpce_id: h.vpce_id.clone(),
        }
    }
}

/// The first value of one of the reflected headers, cut to [`MAX_REFLECTED`] characters.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| cut(&String::from_utf8_lossy(v.as_bytes())))
}

/// Sleeps `delay` precisely. Tokio's timer has millisecond ticks and fires up to a tick late,
/// which would blur a target meant to have a known latency; the coarse part is slept on the
/// timer and the last stretch on a blocking thread: the OS's fine sleep, then a short spin
/// past its wake-up slack (about 50 µs on Linux).
async fn precise_sleep(delay: Duration) {
    const FINE: Duration = Duration::from_millis(2);
    const SPIN: Duration = Duration::from_micros(150);
    let deadline = Instant::now() + delay;
    if delay > FINE {
        tokio::time::sleep_until((deadline - FINE).into()).await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        let rest = deadline.saturating_duration_since(Instant::now());
        if rest > SPIN {
            std::thread::sleep(rest - SPIN);
        }
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
    })
    .await;
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn cut(text: &str) -> String {
    text.chars().take(MAX_REFLECTED).collect()
}

async fn answer(
    request: Request<Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
    proxy: Arc<Vec<ProxyReport>>,
    options: Arc<EchoOptions>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    // Drain (bounded in size and time) so the connection stays usable; the content is not
    // reflected.
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_REQUEST_BODY).collect()).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                br#"{"error":"request body too large"}"#.to_vec(),
            );
        }
        // Cut short (the client closed) or malformed chunking: hyper closes the connection.
        Ok(Err(_)) => {
            return json(
                StatusCode::BAD_REQUEST,
                br#"{"error":"incomplete request body"}"#.to_vec(),
            );
        }
        Err(_) => {
            let mut response = json(
                StatusCode::REQUEST_TIMEOUT,
                br#"{"error":"request body too slow"}"#.to_vec(),
            );
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            return response;
        }
    }
    let start = Instant::now();
    if !options.delay.is_zero() {
        precise_sleep(options.delay).await;
    }
    let reply = EchoReply {
        service: "hopwatch-echo".to_string(),
        peer: peer.to_string(),
        local: local.to_string(),
        method: cut(parts.method.as_str()),
        path: cut(parts.uri.path_and_query().map_or("/", |p| p.as_str())),
        host: header(&parts.headers, "host"),
        x_forwarded_for: header(&parts.headers, "x-forwarded-for"),
        x_forwarded_proto: header(&parts.headers, "x-forwarded-proto"),
        x_forwarded_port: header(&parts.headers, "x-forwarded-port"),
        x_amzn_trace_id: header(&parts.headers, "x-amzn-trace-id"),
        proxy_protocol: proxy.as_ref().clone(),
        delay_us: if options.delay.is_zero() {
            0
        } else {
            start.elapsed().as_micros() as u64
        },
        identity: options.identity.clone(),
    };
    let mut body = serde_json::to_vec(&reply).unwrap_or_default();
    body.push(b'\n');
    let failing = options.status.filter(|_| {
        options
            .status_path
            .as_deref()
            .is_none_or(|prefix| reply.path.starts_with(prefix))
    });
    json(failing.unwrap_or(StatusCode::OK), body)
}

/// Bytes of PROXY headers accepted before the first request: AWS sends well under 1 KiB.
const MAX_PROXY_BYTES: usize = 8 * 1024;
/// How long a client may take to send its PROXY headers.
const PROXY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the PROXY headers at the start of a connection. Returns them and the bytes read past
/// them (the start of the first request). `Err` means a broken header: drop the connection,
/// as a proxy-protocol server must.
async fn read_proxy_headers(
    stream: &mut TcpStream,
) -> Result<(Vec<proxy_protocol::Header>, Vec<u8>), String> {
    use proxy_protocol::{looks_like_header, parse_stacked, ParseError};
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        match parse_stacked(&buf) {
            // A complete header followed by something else: the request has begun.
            Ok((headers, used)) if used < buf.len() => {
                let rest = buf.split_off(used);
                return Ok((headers, rest));
            }
            Ok(_) | Err(ParseError::Incomplete) => {}
            // No header at all: a client that doesn't speak PROXY (a direct probe).
            Err(ParseError::Invalid(_)) if !looks_like_header(&buf) => {
                return Ok((Vec::new(), buf))
            }
            Err(ParseError::Invalid(why)) => return Err(why),
        }
        if buf.len() >= MAX_PROXY_BYTES {
            return Err(format!(
                "more than {MAX_PROXY_BYTES} bytes of PROXY headers"
            ));
        }
        let n = tokio::io::AsyncReadExt::read(stream, &mut chunk)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            // EOF: whatever headers came are all there is (a TCP health check ends here).
            return match parse_stacked(&buf) {
                Ok((headers, used)) => Ok((headers, buf.split_off(used))),
                Err(_) => Ok((Vec::new(), buf)),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A stream that first yields bytes already read from it.
struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl tokio::io::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one accepted connection.
pub async fn serve_connection(mut stream: TcpStream, options: Arc<EchoOptions>) {
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (headers, prefix) = if options.proxy_protocol {
        match tokio::time::timeout(PROXY_TIMEOUT, read_proxy_headers(&mut stream)).await {
            Ok(Ok((headers, _))) if headers.is_empty() && options.require_proxy_protocol => {
                tracing::debug!(%peer, "echo: closing a connection without the PROXY header it requires");
                return;
            }
            Ok(Ok(read)) => read,
            Ok(Err(why)) => {
                tracing::debug!(%peer, why, "echo: dropping a connection with a broken PROXY header");
                return;
            }
            Err(_) => return,
        }
    } else {
        (Vec::new(), Vec::new())
    };
    let proxy = Arc::new(headers.iter().map(ProxyReport::from).collect::<Vec<_>>());
    let served = Arc::new(AtomicUsize::new(0));
    let service = service_fn(move |req| {
        let options = options.clone();
        let proxy = proxy.clone();
        let served = served.clone();
        async move {
            let mut response = answer(req, peer, local, proxy, options).await;
            if served.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_REQUESTS_PER_CONNECTION {
                // hyper closes the connection after an answer that says so.
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    });
    let io = Prefixed {
        prefix: Bytes::from(prefix),
        inner: stream,
    };
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        // A client may send its request and shut down its side (HTTP/1.0 style, `nc -N`):
        // it still gets the answer.
        .half_close(true)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// Accepts connections until `stop` turns true.
pub async fn serve(listener: TcpListener, options: EchoOptions, mut stop: watch::Receiver<bool>) {
    let options = Arc::new(options);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((stream, peer)) if options.allows(peer.ip()) => stream,
            Ok((stream, peer)) => {
                // Closed before reading anything: a source outside --allow learns nothing.
                tracing::debug!(%peer, "echo: closing a connection from outside --allow");
                drop(stream);
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "echo: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let options = options.clone();
        tokio::spawn(async move {
            serve_connection(stream, options).await;
            drop(permit);
        });
    }
}

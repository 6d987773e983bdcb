//! `hopwatch demo`: a private integration shaped like T2 (REST API → VPC link → NLB → ALB →
//! targets), built in-process on loopback, watched by a real agent. No AWS, no root.
//!
//! Each part listens on its own 127.0.0.x address and connects onward *from* that address, so
//! every hop sees a real upstream address, as in a VPC: the target's TCP peer is the ALB, and
//! the ALB's `X-Forwarded-For` names the NLB.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::echo::EchoOptions;
use crate::wire::Identity;

/// The parts of the demo chain, outermost first.
pub const PARTS: [&str; 5] = ["gateway", "nlb", "alb", "target-a", "target-b"];

/// How long the demo gateway waits for its integration (API Gateway: 29 s; shortened so the
/// demo shows a 504 before the agent's own timeout).
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the demo ALB waits for a target (an ALB: 10 s to connect; shortened likewise).
const ALB_TIMEOUT: Duration = Duration::from_millis(1500);
/// Bound on a response body relayed by a demo proxy.
const RELAY_LIMIT: usize = 1 << 20;

/// The links between parts, outermost first. A broken link drops traffic silently, the way a
/// security group without the rule does: the part on its outer side waits, then times out.
pub const LINKS: [&str; 3] = ["gateway-nlb", "nlb-alb", "alb-targets"];

/// Switches that break a part (it resets every connection it accepts, as if nothing listened)
/// or a link (its packets are dropped).
#[derive(Debug, Default)]
pub struct Faults {
    broken: [AtomicBool; 5],
    dropped: [AtomicBool; 3],
}

impl Faults {
    /// Breaks or mends a part or a link by name; false when there is no such name.
    pub fn set(&self, name: &str, broken: bool) -> bool {
        if let Some(i) = PARTS.iter().position(|p| *p == name) {
            self.broken[i].store(broken, Ordering::Relaxed);
        } else if let Some(i) = LINKS.iter().position(|l| *l == name) {
            self.dropped[i].store(broken, Ordering::Relaxed);
        } else {
            return false;
        }
        true
    }
    fn is_broken(&self, index: usize) -> bool {
        self.broken[index].load(Ordering::Relaxed)
    }
    fn is_dropped(&self, link: usize) -> bool {
        self.dropped[link].load(Ordering::Relaxed)
    }
}

/// The running demo chain.
pub struct DemoChain {
    /// The agent config that watches it (TOML, loaded through the normal path).
    pub config_toml: String,
    /// `gateway`, `nlb`, `alb`, `target-a`, `target-b` listen addresses.
    pub addrs: [SocketAddr; 5],
    pub faults: Arc<Faults>,
    /// Set when the OS has only 127.0.0.1: parts are told apart by port, not address.
    pub single_address: bool,
    tasks: Vec<JoinHandle<()>>,
}

impl DemoChain {
    /// Stops every part.
    pub async fn shutdown(self) {
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn bind(ip: IpAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(ip, 0)).await
}

/// Binds one listener per part, on 127.0.0.2–6 when the OS routes all of 127/8 to loopback
/// (Linux does), else all on 127.0.0.1.
async fn listeners() -> anyhow::Result<(Vec<TcpListener>, bool)> {
    let mut out = Vec::new();
    for i in 0..PARTS.len() {
        match bind(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))).await {
            Ok(l) => out.push(l),
            Err(_) => {
                let mut out = Vec::new();
                for _ in 0..PARTS.len() {
                    out.push(bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?);
                }
                return Ok((out, true));
            }
        }
    }
    Ok((out, false))
}

/// Connects to `to` from `from`'s address, as a load balancer node connects onward from its own IP.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Closes a connection with RST instead of FIN: what a host with nothing listening, or a
/// broken load balancer node, answers.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Starts the demo chain.
pub async fn start() -> anyhow::Result<DemoChain> {
    let (listeners, single_address) = listeners().await?;
    let mut addrs = [SocketAddr::from(([127, 0, 0, 1], 0)); 5];
    for (slot, l) in addrs.iter_mut().zip(&listeners) {
        *slot = l.local_addr()?;
    }
    let faults = Arc::new(Faults::default());
    let mut tasks = Vec::new();
    let mut listeners = listeners.into_iter();
    let mut next = || {
        listeners
            .next()
            .ok_or_else(|| anyhow::anyhow!("listener missing"))
    };

    let gateway = L7 {
        style: Style::Gateway,
        me: addrs[0].ip(),
        upstreams: vec![addrs[1]],
        faults: faults.clone(),
        index: 0,
        link: 0,
        counter: Arc::default(),
    };
    tasks.push(tokio::spawn(gateway.serve(next()?)));
    tasks.push(tokio::spawn(nlb(
        next()?,
        addrs[1].ip(),
        addrs[2],
        faults.clone(),
    )));
    let alb = L7 {
        style: Style::Alb,
        me: addrs[2].ip(),
        upstreams: vec![addrs[3], addrs[4]],
        faults: faults.clone(),
        index: 2,
        link: 2,
        counter: Arc::default(),
    };
    tasks.push(tokio::spawn(alb.serve(next()?)));
    for index in [3, 4] {
        let listener = next()?;
        let options = EchoOptions {
            delay: Duration::ZERO,
            identity: Identity {
                hostname: PARTS[index].to_string(),
                ..Identity::default()
            },
            ..EchoOptions::default()
        };
        tasks.push(tokio::spawn(echo_part(
            listener,
            options,
            faults.clone(),
            index,
        )));
    }

    let url = |a: SocketAddr| format!("http://{a}/orders");
    let config_toml = format!(
        r#"# The demo chain: T2 of the brief, REST API → VPC link v1 → NLB → ALB → targets.
[agent]
interval = "3s"
timeout = "1500ms"

[[chain]]
name = "demo-orders"
kind = "rest-nlb-alb"
timeout = "1800ms"

  [[chain.hop]]
  name = "gateway"
  url = "{}"
  timeout = "2500ms"

  [[chain.hop]]
  name = "nlb"
  url = "{}"

  [[chain.hop]]
  name = "alb"
  url = "{}"

  [[chain.hop]]
  name = "target"
  url = "{}"
"#,
        url(addrs[0]),
        url(addrs[1]),
        url(addrs[2]),
        url(addrs[3])
    );
    Ok(DemoChain {
        config_toml,
        addrs,
        faults,
        single_address,
        tasks,
    })
}

async fn echo_part(listener: TcpListener, options: EchoOptions, faults: Arc<Faults>, index: usize) {
    let options = Arc::new(options);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if faults.is_broken(index) {
            reset(stream);
            continue;
        }
        tokio::spawn(crate::echo::serve_connection(stream, options.clone()));
    }
}

/// The NLB: plain TCP relay to the ALB, connecting from its own address.
async fn nlb(listener: TcpListener, me: IpAddr, alb: SocketAddr, faults: Arc<Faults>) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        if faults.is_broken(1) {
            reset(inbound);
            continue;
        }
        let dropped = faults.is_dropped(1);
        tokio::spawn(async move {
            if dropped {
                // SYNs to the ALB vanish: hold the client until it gives up.
                let mut sink = [0u8; 1024];
                while let Ok(Ok(n)) = tokio::time::timeout(
                    Duration::from_secs(30),
                    tokio::io::AsyncReadExt::read(&mut inbound, &mut sink),
                )
                .await
                {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
            match connect_from(me, alb).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                // An NLB whose target refuses resets the client connection.
                Err(_) => reset(inbound),
            }
        });
    }
}

#[derive(Clone, Copy)]
enum Style {
    /// Answers integration failures the way API Gateway does.
    Gateway,
    /// Appends X-Forwarded-For and answers failures the way an ALB does.
    Alb,
}

#[derive(Clone)]
struct L7 {
    style: Style,
    me: IpAddr,
    upstreams: Vec<SocketAddr>,
    faults: Arc<Faults>,
    index: usize,
    /// The link this part sends onward through (index into [`LINKS`]).
    link: usize,
    counter: Arc<AtomicUsize>,
}

enum UpstreamError {
    Timeout,
    Failed,
}

static REQUESTS: AtomicU64 = AtomicU64::new(1);

fn request_id() -> String {
    let n = REQUESTS.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{t:08x}-0000-4000-8000-{n:012x}")
}

impl L7 {
    async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            if self.faults.is_broken(self.index) {
                reset(stream);
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move {
                let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
                let service = service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, Infallible>(me.handle(req, peer, local_port).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        port: u16,
    ) -> Response<Full<Bytes>> {
        let (parts, _body) = req.into_parts();
        let mut upstream_req = Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
        if let Some(headers) = upstream_req.headers_mut() {
            for (name, value) in &parts.headers {
                if name != http::header::CONNECTION {
                    headers.append(name.clone(), value.clone());
                }
            }
            if let Style::Alb = self.style {
                let xff = match parts
                    .headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                {
                    Some(prior) => format!("{prior}, {}", peer.ip()),
                    None => peer.ip().to_string(),
                };
                if let Ok(v) = HeaderValue::from_str(&xff) {
                    headers.insert("x-forwarded-for", v);
                }
                headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
                if let Ok(v) = HeaderValue::from_str(&port.to_string()) {
                    headers.insert("x-forwarded-port", v);
                }
                let trace = format!(
                    "Root=1-{:08x}-{:024x}",
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    REQUESTS.fetch_add(1, Ordering::Relaxed)
                );
                if let Ok(v) = HeaderValue::from_str(&trace) {
                    headers.insert("x-amzn-trace-id", v);
                }
            }
        }
        let Ok(upstream_req) = upstream_req.body(Empty::<Bytes>::new()) else {
            return self.error(UpstreamError::Failed);
        };
        let target =
            self.upstreams[self.counter.fetch_add(1, Ordering::Relaxed) % self.upstreams.len()];
        let limit = match self.style {
            Style::Gateway => GATEWAY_TIMEOUT,
            Style::Alb => ALB_TIMEOUT,
        };
        let dropped = self.faults.is_dropped(self.link);
        let relayed = tokio::time::timeout(limit, async {
            if dropped {
                // The onward link drops packets: the connection never completes.
                std::future::pending::<()>().await;
            }
            self.relay(target, upstream_req).await
        })
        .await;
        let mut response = match relayed {
            Ok(Ok(response)) => response,
            Ok(Err(())) => self.error(UpstreamError::Failed),
            Err(_) => self.error(UpstreamError::Timeout),
        };
        if let Style::Gateway = self.style {
            let id = request_id();
            if let Ok(v) = HeaderValue::from_str(&id) {
                response.headers_mut().insert("x-amzn-requestid", v);
            }
            response.headers_mut().insert(
                "x-amz-apigw-id",
                HeaderValue::from_static("hopwatchDemoId="),
            );
        }
        response
    }

    async fn relay(
        &self,
        target: SocketAddr,
        req: Request<Empty<Bytes>>,
    ) -> Result<Response<Full<Bytes>>, ()> {
        let stream = connect_from(self.me, target).await.map_err(|_| ())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| ())?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let result = async {
            let response = sender.send_request(req).await.map_err(|_| ())?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, RELAY_LIMIT)
                .collect()
                .await
                .map_err(|_| ())?
                .to_bytes();
            let mut out = Response::from_parts(parts, Full::new(body));
            out.headers_mut().remove(http::header::TRANSFER_ENCODING);
            out.headers_mut().remove(http::header::CONNECTION);
            Ok(out)
        }
        .await;
        driver.abort();
        result
    }

    fn error(&self, error: UpstreamError) -> Response<Full<Bytes>> {
        let (status, body, headers): (StatusCode, &str, &[(&str, &str)]) = match (self.style, error)
        {
            (Style::Gateway, UpstreamError::Failed) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"message": "Internal server error"}"#,
                &[
                    ("x-amzn-errortype", "InternalServerErrorException"),
                    ("content-type", "application/json"),
                ],
            ),
            (Style::Gateway, UpstreamError::Timeout) => (
                StatusCode::GATEWAY_TIMEOUT,
                r#"{"message": "Endpoint request timed out"}"#,
                &[
                    ("x-amzn-errortype", "InternalServerErrorException"),
                    ("content-type", "application/json"),
                ],
            ),
            (Style::Alb, UpstreamError::Failed) => (
                StatusCode::BAD_GATEWAY,
                "<html><body><center><h1>502 Bad Gateway</h1></center></body></html>\n",
                &[("server", "awselb/2.0"), ("content-type", "text/html")],
            ),
            (Style::Alb, UpstreamError::Timeout) => (
                StatusCode::GATEWAY_TIMEOUT,
                "<html><body><center><h1>504 Gateway Time-out</h1></center></body></html>\n",
                &[("server", "awselb/2.0"), ("content-type", "text/html")],
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        for (name, value) in headers {
            response
                .headers_mut()
                .insert(*name, HeaderValue::from_static(value));
        }
        response
    }
}

//! The agent's HTTP endpoint: `/metrics`, `/-/healthy`, `/-/ready`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use super::prometheus::Metrics;
use super::Sink;
use crate::config::Chain;
use crate::record::Observation;

/// At most this many scrape connections at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;

/// What the endpoint serves.
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    /// True once every chain has completed a round: before that `/metrics` says little.
    pub ready: AtomicBool,
}

impl Endpoint {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Endpoint {
            metrics,
            ready: AtomicBool::new(false),
        })
    }
}

/// Turns `/-/ready` on once every chain configured at start has completed a round.
pub struct Readiness {
    endpoint: Arc<Endpoint>,
    /// Chains that have not completed a round yet.
    waiting: Mutex<HashSet<String>>,
}

impl Readiness {
    pub fn new(endpoint: Arc<Endpoint>, chains: &[Arc<Chain>]) -> Self {
        Readiness {
            endpoint,
            waiting: Mutex::new(chains.iter().map(|c| c.name.clone()).collect()),
        }
    }

    fn settle(&self, waiting: &HashSet<String>) {
        if waiting.is_empty() && !self.endpoint.ready.swap(true, Ordering::Relaxed) {
            tracing::info!("every chain has completed a round; ready");
        }
    }
}

impl Sink for Readiness {
    fn observe(&self, observation: &Observation) {
        if self.endpoint.ready.load(Ordering::Relaxed) {
            return;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.remove(&observation.round.chain.name);
        self.settle(&waiting);
    }

    /// A chain removed before its first round is no longer waited for.
    fn set_chains(&self, chains: &[Arc<Chain>]) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.retain(|name| chains.iter().any(|c| &c.name == name));
        self.settle(&waiting);
    }
}

/// A body written elsewhere in parts (the `/metrics` exposition), ending when the writer does.
struct Parts(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Parts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|part| part.map(|b| Ok(Frame::data(b))))
    }
}

type Body = Either<Full<Bytes>, Parts>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(endpoint: Arc<Endpoint>, request: Request<Incoming>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => {
            // Rendering thousands of hops takes milliseconds: off the thread that times probes,
            // in parts streamed as they are written, so no scrape holds the whole text.
            let metrics = endpoint.metrics.clone();
            let (tx, rx) = mpsc::channel::<Bytes>(2);
            tokio::task::spawn_blocking(move || {
                metrics.render_parts(|part| tx.blocking_send(Bytes::from(part)).is_ok());
            });
            let mut response = Response::new(Either::Right(Parts(rx)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/-/healthy" => text(StatusCode::OK, "hopwatch is healthy\n"),
        "/-/ready" if endpoint.ready.load(Ordering::Relaxed) => {
            text(StatusCode::OK, "hopwatch is ready\n")
        }
        "/-/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "hopwatch is starting: not every chain has completed a round\n",
        ),
        "/" => text(
            StatusCode::OK,
            "hopwatch\n  /metrics    Prometheus exposition\n  /-/healthy  liveness\n  /-/ready    readiness\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(err) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %err, "accept failed on the metrics listener");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let endpoint = endpoint.clone();
                async move { Ok::<_, Infallible>(handle(endpoint, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
            drop(permit);
        });
    }
}

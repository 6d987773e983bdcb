//! One HTTP/1.1 POST to a token endpoint, over TLS with the system's trust store (or plain
//! HTTP to a loopback address, which validation alone allows), its answer bounded.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::HopUrl;

/// The most of an answer read: a token response is a few kilobytes.
const MAX_ANSWER: usize = 64 * 1024;

/// What the endpoint answered.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Why no answer came.
pub enum Transport {
    /// Nothing within the bound.
    Timeout,
    /// Connection, TLS or HTTP failed; the text says which (no request data in it).
    Failed(String),
}

/// The system trust store, loaded once: a token endpoint is public (Cognito's, an IdP's).
fn tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS versions: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

/// POSTs `body` to `url` with `headers`, all of it within `timeout`.
pub async fn post(
    url: &HopUrl,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: String,
    timeout: Duration,
) -> Result<Answer, Transport> {
    tokio::time::timeout(timeout, exchange(url, headers, body))
        .await
        .map_err(|_| Transport::Timeout)?
        .map_err(Transport::Failed)
}

async fn exchange(
    url: &HopUrl,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: String,
) -> Result<Answer, String> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((host, url.port))
        .await
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut request = Request::post(url.path_and_query.as_str())
        .header(http::header::HOST, url.authority.as_str())
        .header(
            http::header::USER_AGENT,
            concat!("hopwatch/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::CONNECTION, "close")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request could not be built: {e}"))?;
    request.headers_mut().extend(headers);
    if !url.tls {
        return send(tcp, request).await;
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("server name {host:?}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls()?)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {host}: {e}"))?;
    send(stream, request).await
}

async fn send<S>(stream: S, request: Request<Full<Bytes>>) -> Result<Answer, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(128).collect());
        let mut body = response.into_body();
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > MAX_ANSWER {
                    return Err(format!("answer larger than {MAX_ANSWER} bytes"));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Answer {
            status,
            content_type,
            body: buf.freeze(),
        })
    }
    .await;
    driver.abort();
    result
}

//! The probe against real servers on 127.0.0.1 that really behave each way: a working target,
//! refused and dropped connections, wrong statuses and bodies, phase timings that add up, and a
//! delayed target measured to within a millisecond. Targets that misbehave (hang, dribble, flood,
//! reset, break TLS or DNS) are in tests/hostile.rs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hopwatch::echo::EchoOptions;
use hopwatch::probe::{tls::TlsConfigs, Outcome, ProbeResult, Prober};
use hopwatch::wire::Identity;
use tokio::io::AsyncWriteExt;

fn prober() -> Prober {
    Prober::new(TlsConfigs::new([]).expect("tls"))
}

async fn probe(url: &str, extra: &str) -> ProbeResult {
    let hop = hop(url, extra);
    prober().probe(&hop, None).await
}

async fn echo(delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = tokio::sync::watch::channel(false);
    // Leaked on purpose: the server lives as long as the test process.
    std::mem::forget(stop);
    let options = EchoOptions {
        delay,
        identity: Identity::default(),
        ..EchoOptions::default()
    };
    tokio::spawn(hopwatch::echo::serve(listener, options, rx));
    addr
}

fn assert_adds_up(r: &ProbeResult) {
    let sum: Duration = r.phases.as_array().iter().flatten().sum();
    let diff = sum.abs_diff(r.total);
    assert!(
        diff <= Duration::from_micros(50),
        "phases {:?} add up to {sum:?}, total is {:?}",
        r.phases,
        r.total
    );
}

#[tokio::test]
async fn ok_phases_add_up_to_the_total() {
    let addr = echo(Duration::from_millis(5)).await;
    let r = probe(&format!("http://{addr}/health"), "").await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.detail);
    assert_eq!(r.status, Some(200));
    assert!(r.phases.dns.is_none(), "an IP literal needs no DNS");
    assert!(r.phases.tls.is_none(), "plain HTTP has no TLS phase");
    assert!(r.phases.connect.is_some() && r.phases.ttfb.is_some() && r.phases.transfer.is_some());
    assert_adds_up(&r);
    let reply: hopwatch::wire::EchoReply = serde_json::from_slice(&r.body).expect("echo JSON");
    assert_eq!(reply.path, "/health");
    assert!(reply.peer.starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn dns_phase_is_measured_for_host_names() {
    let addr = echo(Duration::ZERO).await;
    // "localhost" resolves from /etc/hosts: no query leaves the machine.
    let r = probe(&format!("http://localhost:{}/", addr.port()), "").await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.detail);
    assert!(r.phases.dns.is_some());
    assert_adds_up(&r);
}

#[tokio::test]
async fn refused_port_is_connect_refused() {
    let r = probe(&format!("http://{}/", refused_port()), "").await;
    assert_eq!(r.outcome, Outcome::ConnectRefused, "{:?}", r.detail);
    assert!(r.phases.connect.is_none());
}

#[tokio::test]
async fn full_accept_queue_drops_syns_and_is_connect_timeout() {
    // Linux drops a SYN when the listener's accept queue is full, as a security group drops
    // it: no RST, no answer. Fill a backlog-1 listener that never accepts.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(1).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let r = probe(&format!("http://{addr}/"), "timeout = \"500ms\"").await;
    assert_eq!(r.outcome, Outcome::ConnectTimeout, "{:?}", r.detail);
    assert!(
        r.total >= Duration::from_millis(500) && r.total < Duration::from_millis(700),
        "{:?}",
        r.total
    );
}

#[tokio::test]
async fn wrong_status_is_http_status() {
    let addr = raw_server(|stream| {
        respond(stream, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nServer: awselb/2.0\r\n\r\ndown".to_vec())
    })
    .await;
    let r = probe(&format!("http://{addr}/"), "").await;
    assert_eq!(r.outcome, Outcome::HttpStatus);
    assert_eq!(r.status, Some(503));
    assert_eq!(r.evidence.server.as_deref(), Some("awselb/2.0"));
    assert_eq!(&r.body[..], b"down");
    // The same answer passes when 503 is expected.
    let r = probe(&format!("http://{addr}/"), "expect_status = [503]").await;
    assert_eq!(r.outcome, Outcome::Ok);
}

#[tokio::test]
async fn gateway_error_type_keeps_the_first_value() {
    let addr = raw_server(|stream| {
        respond(stream, b"HTTP/1.1 500 Internal Server Error\r\nx-amzn-ErrorType: InternalServerErrorException:http://internal.amazon.com/coral/com.amazon.coral.service/,Other\r\nContent-Length: 36\r\n\r\n{\"message\": \"Internal server error\"}".to_vec())
    })
    .await;
    let r = probe(&format!("http://{addr}/"), "").await;
    assert_eq!(r.outcome, Outcome::HttpStatus);
    assert_eq!(
        r.evidence.error_type.as_deref(),
        Some("InternalServerErrorException")
    );
}

#[tokio::test]
async fn body_not_matching_is_body_mismatch() {
    let addr = raw_server(|stream| {
        respond(
            stream,
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nstarting".to_vec(),
        )
    })
    .await;
    let r = probe(&format!("http://{addr}/"), "expect_body = \"^ready$\"").await;
    assert_eq!(r.outcome, Outcome::BodyMismatch);
    let r = probe(&format!("http://{addr}/"), "expect_body = \"^start\"").await;
    assert_eq!(r.outcome, Outcome::Ok);
}

/// A TLS server on 127.0.0.1 with a certificate for `names`, signed by a CA written to `ca_pem`.
async fn tls_server(names: &[&str]) -> (std::net::SocketAddr, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let mut buf = [0u8; 4096];
                    let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (addr, ca.pem())
}

#[tokio::test]
async fn trusted_certificate_times_the_tls_phase() {
    let (addr, ca) = tls_server(&["localhost"]).await;
    let dir = std::env::temp_dir().join(format!("hopwatch-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca).expect("write ca");
    let extra = format!("ca_file = \"{}\"", ca_path.display());
    let hop = hop(&format!("https://localhost:{}/", addr.port()), &extra);
    let prober = Prober::new(TlsConfigs::new([ca_path.as_path()]).expect("tls"));
    let r = prober.probe(&hop, None).await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.detail);
    assert!(r.phases.tls.is_some());
    assert_adds_up(&r);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn reused_connection_skips_connect_phases() {
    let addr = echo(Duration::ZERO).await;
    let hop = hop(&format!("http://{addr}/"), "");
    let conn = hopwatch::probe::HopConn::default();
    let prober = prober();
    let first = prober.probe(&hop, Some(&conn)).await;
    let second = prober.probe(&hop, Some(&conn)).await;
    assert_eq!((first.outcome, second.outcome), (Outcome::Ok, Outcome::Ok));
    assert!(first.phases.connect.is_some());
    assert!(
        second.phases.connect.is_none(),
        "second probe reused the connection"
    );
    assert_adds_up(&second);
    let a: hopwatch::wire::EchoReply = serde_json::from_slice(&first.body).expect("json");
    let b: hopwatch::wire::EchoReply = serde_json::from_slice(&second.body).expect("json");
    assert_eq!(a.peer, b.peer, "same client port: same connection");
}

#[tokio::test]
async fn every_probe_sends_its_own_trace_id_and_records_the_one_sent() {
    let addr = echo(Duration::ZERO).await;
    let url = format!("http://{addr}/");
    let seen = |r: &ProbeResult| {
        hopwatch::source::seen(&r.body)
            .map(|_| serde_json::from_slice::<serde_json::Value>(&r.body).expect("json"))
            .and_then(|v| v["x_amzn_trace_id"].as_str().map(str::to_string))
    };
    let a = probe(&url, "").await;
    let b = probe(&url, "").await;
    assert_eq!(a.outcome, Outcome::Ok);
    assert!(
        a.trace_id.starts_with("Root=1-") && a.trace_id.len() == 40,
        "{}",
        a.trace_id
    );
    assert_ne!(a.trace_id, b.trace_id, "one id per probe");
    assert_eq!(
        seen(&a).as_deref(),
        Some(a.trace_id.as_str()),
        "the target got what was recorded"
    );
    // The epoch second in the id is the probe's start.
    let secs = u64::from_str_radix(&a.trace_id[7..15], 16).expect("hex");
    let started = a
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert_eq!(secs, started);

    let own = probe(
        &url,
        "  headers = { \"X-Amzn-Trace-Id\" = \"Root=1-5f84c7a9-0123456789abcdef01234567\" }",
    )
    .await;
    assert_eq!(own.trace_id, "Root=1-5f84c7a9-0123456789abcdef01234567");
    assert_eq!(seen(&own).as_deref(), Some(own.trace_id.as_str()));
}

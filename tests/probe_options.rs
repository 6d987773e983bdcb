//! Probe options for endpoints that ask more of a client: a PROXY protocol header first (a
//! target behind an NLB with proxy protocol v2), and a client certificate (mutual TLS on an
//! API Gateway custom domain or an ALB listener in verify mode). Real servers on 127.0.0.1:
//! `hopwatch echo` reading PROXY headers, and a rustls server that verifies client certificates.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hopwatch::echo::EchoOptions;
use hopwatch::probe::{tls::TlsConfigs, Outcome, Prober};
use hopwatch::wire::EchoReply;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An echo that reads PROXY headers and closes connections that bring none.
async fn proxy_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(stop);
    let options = EchoOptions {
        proxy_protocol: true,
        require_proxy_protocol: true,
        ..EchoOptions::default()
    };
    tokio::spawn(hopwatch::echo::serve(listener, options, rx));
    addr
}

fn prober() -> Prober {
    Prober::new(TlsConfigs::new([]).expect("tls"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_names_the_connection_as_it_is() {
    let addr = proxy_echo().await;
    for version in ["v1", "v2"] {
        let hop = common::hop(
            &format!("http://{addr}/"),
            &format!("send_proxy_protocol = \"{version}\""),
        );
        let r = prober().probe(&hop, None).await;
        assert_eq!(r.outcome, Outcome::Ok, "{version}: {:?}", r.detail);
        let reply: EchoReply = serde_json::from_slice(&r.body).expect("echo reply");
        let header = reply.proxy_protocol.first().expect("a PROXY header");
        assert_eq!(header.version, if version == "v1" { 1 } else { 2 });
        assert_eq!(header.command, "proxy");
        // The header tells the truth of the connection: the agent's own source, the target.
        assert_eq!(
            header.src.as_deref(),
            Some(reply.peer.as_str()),
            "{version}"
        );
        assert_eq!(
            header.dst.as_deref(),
            Some(reply.local.as_str()),
            "{version}"
        );
    }
    // Without one, a target that requires it closes the connection: what the agent's direct
    // probe of a target behind such an NLB sees.
    let plain = common::hop(&format!("http://{addr}/"), "");
    let r = prober().probe(&plain, None).await;
    assert_eq!(r.outcome, Outcome::Reset, "{:?}", r.detail);
}

/// A CA and the certificates it signs, as PEM files in a scratch folder.
struct Pki {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_der: CertificateDer<'static>,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        Self::valid_until(tag, None)
    }

    /// A CA whose own certificate expires on `until` (rcgen's default otherwise).
    fn valid_until(tag: &str, until: Option<(i32, u8, u8)>) -> Pki {
        let dir = std::env::temp_dir().join(format!("hopwatch-pki-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        if let Some((y, m, d)) = until {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("hopwatch {tag} CA"));
        let cert = params.self_signed(&key).expect("ca");
        std::fs::write(dir.join("ca.pem"), cert.pem()).expect("ca.pem");
        Pki {
            dir,
            ca_der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `name` signed by this CA: (cert PEM path, key PEM path, DER, key).
    fn issue(&self, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>, rcgen::KeyPair) {
        self.issue_until(name, None)
    }

    /// [`Pki::issue`], expiring on `until`.
    fn issue_until(
        &self,
        name: &str,
        until: Option<(i32, u8, u8)>,
    ) -> (PathBuf, PathBuf, CertificateDer<'static>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
        if let Some((y, m, d)) = until {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        let cert = params.signed_by(&key, &self.issuer).expect("cert");
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).expect("cert");
        std::fs::write(&k, key.serialize_pem()).expect("key");
        (c, k, cert.der().clone(), key)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS server on 127.0.0.1 for `localhost` that requires a client certificate signed by
/// `clients`, answering `200 ok` to those it accepts.
async fn mtls_server(server: &Pki, clients: &Pki) -> SocketAddr {
    let (_, _, der, key) = server.issue("localhost");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(clients.ca_der.clone()).expect("client CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![der], PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("server config");
    common::tls::serve_with(config).await
}

fn keys(ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let mut text = format!(
        "timeout = \"3s\"\ntls_server_name = \"localhost\"\nca_file = \"{}\"\n",
        ca.display()
    );
    if let Some((cert, key)) = client {
        text.push_str(&format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    text
}

/// One probe of `url` with the hop keys `extra`, by a prober built for that hop (its CA and
/// client certificate loaded, as the agent does).
async fn probe(url: &str, extra: String) -> hopwatch::probe::ProbeResult {
    let config = common::config(&format!(
        "[[chain]]\nname = \"x\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"h\"\nrole = \"target\"\nurl = \"{url}\"\n{extra}"
    ));
    let prober =
        hopwatch::agent::prober_for(&config, &hopwatch::auth::Registry::new()).expect("prober");
    prober.probe(&config.chains[0].hops[0], None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_without_and_with_a_stranger_certificate() {
    let server_pki = Pki::new("server");
    let client_pki = Pki::new("clients");
    let stranger_pki = Pki::new("stranger");
    let addr = mtls_server(&server_pki, &client_pki).await;
    let url = format!("https://{addr}/");
    let (cert, key, _, _) = client_pki.issue("agent");
    let (bad_cert, bad_key, _, _) = stranger_pki.issue("agent");

    let ok = probe(&url, keys(&server_pki.ca_file(), Some((&cert, &key)))).await;
    assert_eq!(ok.outcome, Outcome::Ok, "{:?}", ok.detail);

    let missing = probe(&url, keys(&server_pki.ca_file(), None)).await;
    assert_eq!(missing.outcome, Outcome::Tls, "{:?}", missing.detail);
    assert_eq!(
        missing.evidence.tls_alert.as_deref(),
        Some("CertificateRequired"),
        "{:?}",
        missing.detail
    );

    let stranger = probe(
        &url,
        keys(&server_pki.ca_file(), Some((&bad_cert, &bad_key))),
    )
    .await;
    assert_eq!(stranger.outcome, Outcome::Tls, "{:?}", stranger.detail);
    assert!(
        stranger.evidence.tls_alert.is_some(),
        "a refused certificate ends with an alert: {:?}",
        stranger.detail
    );
}

/// A server that answers 200 with the request it read, head and body, as text.
async fn recording_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then as many body bytes as Content-Length says.
                let (head_end, length) = loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    read.extend_from_slice(&buf[..n]);
                    if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&read[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while read.len() < head_end + length {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    read.extend_from_slice(&buf[..n]);
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    read.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.write_all(&read).await;
            });
        }
    });
    addr
}

/// A route that takes only POST, opted into: the method, the body and its type go out as
/// configured, with a Content-Length, as API Gateway would forward them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_goes_out_with_its_method_and_type() {
    let addr = recording_server().await;
    let hop = common::hop(
        &format!("http://{addr}/prod/orders"),
        "method = \"POST\"\nbody = '{\"sku\":\"probe\"}'\nbody_content_type = \"application/json; charset=utf-8\"",
    );
    let r = prober().probe(&hop, None).await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.detail);
    let seen = String::from_utf8_lossy(&r.body).to_string();
    assert!(seen.starts_with("POST /prod/orders HTTP/1.1\r\n"), "{seen}");
    let lower = seen.to_ascii_lowercase();
    assert!(
        lower.contains("\r\ncontent-type: application/json; charset=utf-8\r\n"),
        "{seen}"
    );
    assert!(lower.contains("\r\ncontent-length: 15\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n\r\n{\"sku\":\"probe\"}"), "{seen}");

    // Without a type, JSON is said.
    let hop = common::hop(
        &format!("http://{addr}/prod/orders"),
        "method = \"PUT\"\nbody = \"{}\"",
    );
    let r = prober().probe(&hop, None).await;
    let seen = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
    assert!(seen.starts_with("put /prod/orders"), "{seen}");
    assert!(
        seen.contains("\r\ncontent-type: application/json\r\n"),
        "{seen}"
    );
}

/// The expiry a hop's certificates give, as the agent exports it and `check` prints it: the
/// earliest `notAfter` of the chain presented (here the CA's, before the leaf's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_earliest_certificate_expiry_is_exported_and_checked() {
    // The CA expires 2030-06-01T00:00:00Z, the leaf 2031-03-04.
    const CA_EXPIRES: u64 = 1_906_502_400;
    let pki = Pki::valid_until("expiry", Some((2030, 6, 1)));
    let (_, _, leaf, key) = pki.issue_until("localhost", Some((2031, 3, 4)));
    let addr = common::tls::serve(vec![leaf, pki.ca_der.clone()], &key).await;
    let url = format!("https://localhost:{}/", addr.port());
    let extra = format!(
        "timeout = \"3s\"\nca_file = \"{}\"\n",
        pki.ca_file().display()
    );

    let r = probe(&url, extra).await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.detail);
    let epoch = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    assert_eq!(r.cert_not_after.map(epoch), Some(CA_EXPIRES));
    let plain = prober()
        .probe(
            &common::hop(&format!("http://{addr}/"), "timeout = \"1s\""),
            None,
        )
        .await;
    assert_eq!(plain.cert_not_after, None);

    // A running agent exports it; check prints it with the days left.
    let listen = common::refused_port();
    let config = pki.dir.join("expiry.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"{listen}\"\ninterval = \"1s\"\ntimeout = \"800ms\"\n\n[[chain]]\nname = \"custom-domain\"\nkind = \"custom\"\n  [[chain.hop]]\n  name = \"gateway\"\n  role = \"gateway\"\n  url = \"{url}\"\n  ca_file = \"{}\"\n",
            pki.ca_file().display()
        ),
    )
    .expect("config");
    let bin = env!("CARGO_BIN_EXE_hopwatch");
    let _agent = common::Kill(
        std::process::Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the agent"),
    );
    let series = format!(
        "hopwatch_tls_certificate_expiry_timestamp_seconds{{address=\"\",chain=\"custom-domain\",hop=\"gateway\"}} {CA_EXPIRES}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = tokio::task::spawn_blocking(move || common::http_get(listen, "/metrics"))
            .await
            .expect("scrape task")
            .map(|(_, body)| body)
            .unwrap_or_default();
        if text.lines().any(|l| l == series) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {series} within 20 s:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["check", "--json", "--config"])
            .arg(&config)
            .output()
            .expect("run check")
    })
    .await
    .expect("check task");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check JSON");
    let hop = &doc["chains"][0]["hops"][0];
    assert_eq!(hop["tls_certificate_expiry"], CA_EXPIRES, "{doc:#}");
    let now = epoch(std::time::SystemTime::now()) as f64;
    let days = hop["tls_certificate_days_left"]
        .as_f64()
        .expect("days left");
    assert!(
        (days - (CA_EXPIRES as f64 - now) / 86_400.0).abs() < 0.2,
        "{days} days left"
    );
}

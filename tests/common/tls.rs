//! A real TLS server on 127.0.0.1 for `localhost`, with certificates whose `notAfter` a test
//! chooses: what a hop's certificate expiry is checked against.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA (its PEM written to `dir/ca.pem`) and a `localhost` leaf it signed, each expiring on
/// the date given: the chain as a server presents it (leaf first) and the leaf's key.
pub fn ca_and_leaf(
    dir: &Path,
    ca_until: (i32, u8, u8),
    leaf_until: (i32, u8, u8),
) -> (PathBuf, Vec<CertificateDer<'static>>, rcgen::KeyPair) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.not_after = rcgen::date_time_ymd(ca_until.0, ca_until.1, ca_until.2);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "hopwatch test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("ca.pem");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    leaf.not_after = rcgen::date_time_ymd(leaf_until.0, leaf_until.1, leaf_until.2);
    let leaf = leaf.signed_by(&key, &issuer).expect("leaf");
    (
        ca_file,
        vec![leaf.der().clone(), ca_cert.der().clone()],
        key,
    )
}

/// Serves `chain` (leaf first) with `key` on 127.0.0.1, answering `200 ok` to each request.
pub async fn serve(chain: Vec<CertificateDer<'static>>, key: &rcgen::KeyPair) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("server config");
    serve_with(config).await
}

/// Serves `config` on 127.0.0.1, answering `200 ok` to each request whose handshake it accepts.
pub async fn serve_with(config: rustls::ServerConfig) -> SocketAddr {
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
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

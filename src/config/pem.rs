//! PEM files a config names (`ca_file`), read once at validation so a bad file is a config
//! error with its line and column, and again by the prober that uses them.

use std::path::Path;

use rustls::pki_types::CertificateDer;

/// Reads a PEM bundle and returns its certificates, or why it can't be used.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_string());
    }
    Ok(certs)
}

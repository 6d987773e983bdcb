//! TLS client settings for probes (rustls with the ring provider).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};

use crate::config::pem::read_ca_file;

/// The system trust store, loaded once per process: it costs milliseconds and never changes
/// while the agent runs.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for err in &found.errors {
            tracing::warn!(error = %err, "could not read part of the system trust store");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "loaded system trust store");
        roots
    })
}

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The provider supports the safe default versions, so this cannot fail in practice; fall
    // back to an empty-root config rather than panic if it ever does.
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring provider supports the default TLS versions");
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    // Probes speak HTTP/1.1 only; advertising it keeps ALB/nginx from picking h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One TLS config per distinct trust store, built before probing starts.
#[derive(Clone)]
pub struct TlsConfigs {
    default: Arc<ClientConfig>,
    by_ca_file: HashMap<PathBuf, Arc<ClientConfig>>,
}

impl TlsConfigs {
    /// Builds the default config and one per `ca_file` (system roots plus that bundle).
    pub fn new<'a>(ca_files: impl IntoIterator<Item = &'a Path>) -> Result<Self, String> {
        let mut by_ca_file = HashMap::new();
        for path in ca_files {
            if by_ca_file.contains_key(path) {
                continue;
            }
            let mut roots = system_roots().clone();
            for cert in read_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
            }
            by_ca_file.insert(path.to_path_buf(), client_config(roots));
        }
        Ok(TlsConfigs {
            default: client_config(system_roots().clone()),
            by_ca_file,
        })
    }

    /// The config for a hop with the given `ca_file`.
    pub fn get(&self, ca_file: Option<&Path>) -> Arc<ClientConfig> {
        ca_file
            .and_then(|p| self.by_ca_file.get(p))
            .unwrap_or(&self.default)
            .clone()
    }
}

//! TLS client settings for probes (rustls with the ring provider).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};

use crate::config::pem::{read_ca_file, read_cert_chain, read_key};
use crate::config::{ClientAuth, Hop};

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

fn client_config(
    roots: RootCertStore,
    client: Option<&ClientAuth>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The provider supports the safe default versions, so this cannot fail in practice.
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let chain =
                read_cert_chain(&auth.cert).map_err(|e| format!("{} {e}", auth.cert.display()))?;
            let key = read_key(&auth.key).map_err(|e| format!("{} {e}", auth.key.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "{}: unusable client certificate or key: {e}",
                    auth.cert.display()
                )
            })?
        }
    };
    // Probes speak HTTP/1.1 only; advertising it keeps ALB/nginx from picking h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a hop's TLS config depends on: its extra CA bundle and its client certificate.
type Key = (Option<PathBuf>, Option<ClientAuth>);

/// One TLS config per distinct trust store and client certificate, built before probing starts.
#[derive(Clone)]
pub struct TlsConfigs {
    default: Arc<ClientConfig>,
    configs: HashMap<Key, Arc<ClientConfig>>,
}

impl TlsConfigs {
    /// Builds the default config and one per `ca_file` (system roots plus that bundle).
    pub fn new<'a>(ca_files: impl IntoIterator<Item = &'a Path>) -> Result<Self, String> {
        Self::build(ca_files.into_iter().map(|p| (Some(p.to_path_buf()), None)))
    }

    /// Builds every config the hops need (their health checks included): one per distinct
    /// `ca_file` and client certificate.
    pub fn for_hops<'a>(hops: impl IntoIterator<Item = &'a Hop>) -> Result<Self, String> {
        let keys = hops.into_iter().flat_map(|hop| {
            std::iter::once(hop)
                .chain(hop.health.as_deref())
                .map(|h| (h.ca_file.clone(), h.client_auth.clone()))
        });
        Self::build(keys)
    }

    fn build(keys: impl IntoIterator<Item = Key>) -> Result<Self, String> {
        let mut configs = HashMap::new();
        for key in keys {
            if key == (None, None) || configs.contains_key(&key) {
                continue;
            }
            let mut roots = system_roots().clone();
            if let Some(path) = &key.0 {
                for cert in read_ca_file(path).map_err(|e| format!("{} {e}", path.display()))? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
                }
            }
            let config = client_config(roots, key.1.as_ref())?;
            configs.insert(key, config);
        }
        Ok(TlsConfigs {
            default: client_config(system_roots().clone(), None)?,
            configs,
        })
    }

    /// The config for a hop.
    pub fn get(&self, hop: &Hop) -> Arc<ClientConfig> {
        let key = (hop.ca_file.clone(), hop.client_auth.clone());
        self.configs.get(&key).unwrap_or(&self.default).clone()
    }
}

//! TLS client settings for probes (rustls with the ring provider).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

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

/// The earliest `notAfter` of the certificates a server presented (its whole chain): when the
/// first of them expires, the hop stops answering TLS clients that verify.
pub fn earliest_not_after(chain: &[rustls::pki_types::CertificateDer<'_>]) -> Option<SystemTime> {
    chain.iter().filter_map(|c| not_after(c.as_ref())).min()
}

/// One DER element: (tag, contents, the rest after it).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits say how many length bytes follow (at most 4 here: a
        // certificate is never 4 GiB).
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `notAfter` of one X.509 certificate (RFC 5280 §4.1): Certificate → tbsCertificate →
/// [version] serialNumber signature issuer validity{notBefore, notAfter}.
fn not_after(cert: &[u8]) -> Option<SystemTime> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = der(certificate)? else {
        return None;
    };
    // The version is an explicit [0] tag, present in v2 and v3 certificates.
    if tbs.first() == Some(&0xa0) {
        tbs = der(tbs)?.2;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        tbs = der(tbs)?.2;
    }
    let (SEQUENCE, validity, _) = der(tbs)? else {
        return None;
    };
    let (_, _, rest) = der(validity)?;
    let (tag, time, _) = der(rest)?;
    x509_time(tag, time)
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), the
/// two forms RFC 5280 §4.1.2.5 allows, always in UTC with seconds.
fn x509_time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if digits.len() == 12 => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        0x18 if digits.len() == 14 => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn both_time_forms_are_read_as_rfc_5280_says() {
        // 2049-12-31T23:59:59Z as UTCTime, 2050-01-01T00:00:00Z as GeneralizedTime.
        assert_eq!(x509_time(0x17, b"491231235959Z"), Some(at(2_524_607_999)));
        assert_eq!(x509_time(0x18, b"20500101000000Z"), Some(at(2_524_608_000)));
        // 1970 and a leap day.
        assert_eq!(x509_time(0x17, b"700101000000Z"), Some(at(0)));
        assert_eq!(x509_time(0x18, b"20240229120000Z"), Some(at(1_709_208_000)));
        for bad in [
            &b"491231235959"[..],
            b"4912312359Z",
            b"20501301000000Z",
            b"2050010100000aZ",
        ] {
            assert_eq!(x509_time(0x18, bad), None, "{bad:?}");
            assert_eq!(x509_time(0x17, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_earliest_not_after_of_real_certificates() {
        let make = |(y, m, d): (i32, u8, u8)| {
            let mut params =
                rcgen::CertificateParams::new(vec!["hop.test".to_string()]).expect("params");
            params.not_before = rcgen::date_time_ymd(2026, 1, 1);
            params.not_after = rcgen::date_time_ymd(y, m, d);
            let key = rcgen::KeyPair::generate().expect("key");
            params.self_signed(&key).expect("cert").der().clone()
        };
        let (short, long) = (make((2026, 1, 31)), make((2027, 2, 5)));
        // 2026-01-31 and 2027-02-05, midnight UTC.
        assert_eq!(not_after(short.as_ref()), Some(at(1_769_817_600)));
        assert_eq!(not_after(long.as_ref()), Some(at(1_801_785_600)));
        assert_eq!(
            earliest_not_after(&[long.clone(), short.clone()]),
            Some(at(1_769_817_600))
        );
        assert_eq!(earliest_not_after(&[]), None);
        // Cut short anywhere: nothing, never a panic.
        for n in 0..short.len() {
            let _ = not_after(&short.as_ref()[..n]);
        }
    }
}

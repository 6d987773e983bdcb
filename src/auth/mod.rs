//! The agent's own credentials for hops with `auth`: AWS credentials to sign probes with SigV4
//! (`sigv4`), OAuth 2.0 access tokens from the client credentials grant (`oauth2`).
//!
//! Below the probe: it only hands the probe what to put on a request. One [`Registry`] per
//! agent keeps one cache per distinct setting, shared by every hop, chain and reload that uses
//! it ([`Registry::handles`]); a cache lives as long as some prober holds it. The probe asks its
//! [`Handles`] before sending; without credentials it does not send, and says why
//! ([`AuthError`], the `agent_credentials` outcome): the agent's failure, not the chain's.

mod cache;
mod http;
pub mod oauth2;
pub mod sigv4;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use crate::config::duration::format_duration;
use crate::config::{Auth, OAuth2};

pub use cache::{backoff, refresh_ahead, stale_ahead};

/// How a hop authenticates, as the `method` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// AWS credentials, to sign with SigV4.
    SigV4,
    /// An OAuth 2.0 access token.
    OAuth2,
}

impl Method {
    /// Every method, in label order.
    pub const ALL: [Method; 2] = [Method::SigV4, Method::OAuth2];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::SigV4 => "sigv4",
            Method::OAuth2 => "oauth2",
        }
    }

    /// What it fetches, for messages.
    fn fetches(self) -> &'static str {
        match self {
            Method::SigV4 => "AWS credentials",
            Method::OAuth2 => "the OAuth 2.0 token",
        }
    }
}

/// Why a probe went without its credentials. The text names what failed and never holds a
/// secret (no token, key, signature or client secret, and no text a token endpoint chose).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The SDK's default chain (environment, profile, web identity, ECS task role, IMDS) found
    /// no credentials.
    #[error("no AWS credentials: {0}")]
    NoCredentials(String),
    /// STS refused AssumeRole (`refused`), or could not be asked.
    #[error("AssumeRole of {role} failed: {why}")]
    AssumeRole {
        role: String,
        why: String,
        refused: bool,
    },
    /// The token endpoint refused the client (400, 401 or 403), with its RFC 6749 §5.2 error
    /// code when it gave a known one.
    #[error("the token endpoint {url} refused the client: {status}{}", code.map(|c| format!(" {c}")).unwrap_or_default())]
    Refused {
        url: String,
        status: u16,
        code: Option<&'static str>,
    },
    /// The token endpoint could not be reached, or failed (5xx, an unexpected status).
    #[error("the token endpoint {url} failed: {why}")]
    Failed { url: String, why: String },
    /// The token endpoint answered, but with no usable token.
    #[error("the token endpoint {url} answered no usable token: {why}")]
    Malformed { url: String, why: String },
    /// A fetch took longer than its bound.
    #[error("fetching {} took longer than {}", method.fetches(), format_duration(*after))]
    Timeout { method: Method, after: Duration },
    /// What a fetch got lives too short to be used.
    #[error("{} came with a lifetime of {}, too short to use", method.fetches(), format_duration(*lifetime))]
    ShortLived { method: Method, lifetime: Duration },
    /// A fetch is still in flight after the probe's own timeout.
    #[error("still fetching {} after the probe's {} timeout", method.fetches(), format_duration(*waited))]
    NotReady { method: Method, waited: Duration },
    /// The request could not be signed.
    #[error("the request could not be signed: {0}")]
    Signing(String),
    /// The prober was built without this hop's credentials (a bug).
    #[error("the prober has no credentials for this hop's auth")]
    NoSource,
}

impl AuthError {
    /// The `result` label of a failed fetch: `refused` (the credential's issuer said no),
    /// `timeout`, or `error`.
    fn result(&self) -> FetchResult {
        match self {
            AuthError::Refused { .. } | AuthError::AssumeRole { refused: true, .. } => {
                FetchResult::Refused
            }
            AuthError::Timeout { .. } => FetchResult::Timeout,
            _ => FetchResult::Error,
        }
    }
}

/// What a fetch came to, as the `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    /// Got it.
    Ok,
    /// The issuer said no: a token endpoint's 400/401/403, STS's AccessDenied.
    Refused,
    /// Anything else: unreachable, a 5xx, an answer with no usable token, no credentials.
    Error,
    /// No answer within the fetch's bound.
    Timeout,
}

impl FetchResult {
    /// Every result, in label order.
    pub const ALL: [FetchResult; 4] = [
        FetchResult::Ok,
        FetchResult::Refused,
        FetchResult::Error,
        FetchResult::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchResult::Ok => "ok",
            FetchResult::Refused => "refused",
            FetchResult::Error => "error",
            FetchResult::Timeout => "timeout",
        }
    }
}

/// Fetches of credentials since the agent started, by method and result: plain counters an
/// exporter reads (`hopwatch_auth_fetches_total`). A failing refresh ahead of expiry shows
/// here before any probe goes without a token.
#[derive(Debug, Default)]
pub struct FetchCounts {
    counts: [[AtomicU64; 4]; 2],
}

impl FetchCounts {
    fn count(&self, method: Method, error: Option<&AuthError>) {
        let result = error.map_or(FetchResult::Ok, AuthError::result);
        let m = Method::ALL.iter().position(|x| *x == method).unwrap_or(0);
        let r = FetchResult::ALL
            .iter()
            .position(|x| *x == result)
            .unwrap_or(0);
        self.counts[m][r].fetch_add(1, Ordering::Relaxed);
    }

    /// Every (method, result) and its count.
    pub fn snapshot(&self) -> Vec<(Method, FetchResult, u64)> {
        let mut out = Vec::with_capacity(8);
        for (m, method) in Method::ALL.iter().enumerate() {
            for (r, result) in FetchResult::ALL.iter().enumerate() {
                out.push((*method, *result, self.counts[m][r].load(Ordering::Relaxed)));
            }
        }
        out
    }
}

/// What identifies one cache: SigV4 credentials depend on the region and the role, not on the
/// signing name; a token on every OAuth 2.0 setting (the secret included: a rotated secret
/// fetches anew).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Aws((String, Option<String>, Option<String>)),
    // Boxed: the OAuth 2.0 settings are four times the size of the AWS key.
    OAuth2(Box<OAuth2>),
}

/// One cache of credentials.
enum Source {
    Aws(Arc<cache::Cached<aws_credential_types::Credentials>>),
    OAuth2(Arc<cache::Cached<::http::HeaderValue>>),
}

/// Every credentials cache of one agent, by setting. Hands out [`Handles`]; keeps nothing
/// alive itself, so a setting no prober uses any more is dropped with its cache.
#[derive(Default)]
pub struct Registry {
    sources: Mutex<HashMap<Key, Weak<Source>>>,
    counts: Arc<FetchCounts>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The fetch counts of every cache it made.
    pub fn counts(&self) -> Arc<FetchCounts> {
        self.counts.clone()
    }

    /// Handles for `auths` (a config's hops'): the running cache of each setting that has one,
    /// a new (empty, lazy) cache for the others. A reload that keeps a setting keeps its cache,
    /// its token and its credentials.
    pub fn handles<'a>(&self, auths: impl IntoIterator<Item = &'a Auth>) -> Handles {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.retain(|_, weak| weak.strong_count() > 0);
        let mut map = HashMap::new();
        for auth in auths {
            if map.contains_key(auth) {
                continue;
            }
            let key = match auth {
                Auth::SigV4(s) => Key::Aws(s.credentials_key()),
                Auth::OAuth2(o) => Key::OAuth2(Box::new(o.clone())),
            };
            let source = match sources.get(&key).and_then(Weak::upgrade) {
                Some(source) => source,
                None => {
                    let source = Arc::new(match auth {
                        Auth::SigV4(s) => Source::Aws(sigv4::credentials(s, self.counts.clone())),
                        Auth::OAuth2(o) => Source::OAuth2(oauth2::tokens(o, self.counts.clone())),
                    });
                    sources.insert(key, Arc::downgrade(&source));
                    source
                }
            };
            map.insert(auth.clone(), source);
        }
        Handles(Arc::new(map))
    }
}

/// The credentials caches of one prober, by the hop setting that uses each. Cheap to clone.
#[derive(Clone, Default)]
pub struct Handles(Arc<HashMap<Auth, Arc<Source>>>);

impl Handles {
    /// What to authenticate a probe of a hop with `auth`: waits at most `wait` when nothing
    /// usable is cached (the first probe, or after a failure's backoff), never otherwise.
    pub async fn authorize<'a>(
        &self,
        auth: &'a Auth,
        wait: Duration,
    ) -> Result<Authorization<'a>, AuthError> {
        match (auth, self.0.get(auth).map(|s| &**s)) {
            (Auth::SigV4(settings), Some(Source::Aws(cache))) => Ok(Authorization::SigV4 {
                credentials: cache.get(wait).await?,
                settings,
            }),
            (Auth::OAuth2(_), Some(Source::OAuth2(cache))) => {
                Ok(Authorization::Bearer(cache.get(wait).await?))
            }
            _ => Err(AuthError::NoSource),
        }
    }
}

/// The credentials of one probe, to apply to its request.
pub enum Authorization<'a> {
    /// Sign with these credentials, for this region and service.
    SigV4 {
        credentials: aws_credential_types::Credentials,
        settings: &'a crate::config::SigV4,
    },
    /// Send this `Authorization: Bearer …` value (marked sensitive).
    Bearer(::http::HeaderValue),
}

impl Authorization<'_> {
    /// Puts the credentials on `request` (whose body is `body`): a fresh signature dated now, or
    /// the bearer token. Returns the secrets it added, so the probe can keep them out of
    /// everything it reports.
    pub fn apply<B>(
        &self,
        request: &mut ::http::Request<B>,
        body: &[u8],
    ) -> Result<Sent, AuthError> {
        match self {
            Authorization::SigV4 {
                credentials,
                settings,
            } => sigv4::sign(request, body, credentials, settings, SystemTime::now()),
            Authorization::Bearer(value) => {
                request
                    .headers_mut()
                    .insert(::http::header::AUTHORIZATION, value.clone());
                let text = value.to_str().unwrap_or_default();
                let token = text.strip_prefix("Bearer ").unwrap_or(text);
                Ok(Sent(vec![text.to_string(), token.to_string()]))
            }
        }
    }
}

/// Secrets a probe sent because of its auth: the `Authorization` value, the signature, the
/// session token, the bearer token.
#[derive(Debug, Default)]
pub struct Sent(Vec<String>);

impl Sent {
    /// Whether `text` (something a hop answered) holds one of them, or is a piece of one long
    /// enough to mean something: then it must not be reported.
    pub fn overlaps(&self, text: &str) -> bool {
        self.0.iter().filter(|s| !s.is_empty()).any(|secret| {
            text.contains(secret.as_str()) || (text.len() >= 8 && secret.contains(text))
        })
    }
}

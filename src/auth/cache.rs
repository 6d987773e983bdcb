//! One cached credential (AWS credentials, an OAuth 2.0 token) shared by every probe that needs
//! it: fetched once at a time (single flight), refreshed ahead of its expiry in the background,
//! and after a failure not asked again before a backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{AuthError, FetchCounts, Method};

/// What a fetch got: the value and how long it lives from now (`None`: not said).
pub struct Fresh<T> {
    /// The credential.
    pub value: T,
    /// How long it lives from now; `None`: the cache's default for its kind.
    pub lifetime: Option<Duration>,
}

/// A fetch of the value, as the cache calls it.
pub type Fetch<T> = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Fresh<T>, AuthError>> + Send>> + Send + Sync,
>;

/// The most a value is refreshed ahead of its expiry. AWS's IMDS makes new role credentials
/// available at least five minutes before the old ones expire
/// (docs.aws.amazon.com/AWSEC2/latest/UserGuide/iam-roles-for-amazon-ec2.html); the same margin
/// covers an authorizer whose clock runs a little ahead of the agent's.
const MAX_REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// The most a value is kept from being sent before its expiry: a request must still carry a
/// live credential when the gateway checks it, a flight of at most a probe's timeout.
const MAX_STALE_AHEAD: Duration = Duration::from_secs(30);
/// A value that lives less than this is refused: it would be stale before it could be used, and
/// fetching it again at once would be a fetch per probe.
pub const MIN_LIFETIME: Duration = Duration::from_secs(1);
/// Backoff after failed fetches: 1 s, doubling, at most a minute.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// When to refresh, before expiry, a value that lives `lifetime`: a quarter of its life ahead,
/// at most [`MAX_REFRESH_AHEAD`]. A probe that finds it due starts the refresh in the
/// background and goes on with the current value, so no probe waits for it while the token
/// endpoint answers within that margin; and a quarter of a life keeps the fetches at about
/// one per lifetime (4/3 of one, for short-lived tokens).
pub fn refresh_ahead(lifetime: Duration) -> Duration {
    (lifetime / 4).min(MAX_REFRESH_AHEAD)
}

/// How long before expiry a value is no longer sent: a tenth of its life, at most
/// [`MAX_STALE_AHEAD`]. Between refresh and stale, a failing refresh is retried while the value
/// still serves.
pub fn stale_ahead(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_STALE_AHEAD)
}

/// The wait before fetching again after `failures` failed fetches in a row.
pub fn backoff(failures: u32) -> Duration {
    let doubled = Duration::from_secs(1).saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF)
}

struct Held<T> {
    value: T,
    refresh_at: Instant,
    stale_at: Instant,
}

struct State<T> {
    held: Option<Held<T>>,
    /// The last failure and when a fetch may be tried again.
    failed: Option<(AuthError, Instant)>,
    failures: u32,
    fetching: bool,
}

/// One cached credential.
pub struct Cached<T> {
    method: Method,
    /// Assumed when a fetch does not say how long its value lives.
    default_lifetime: Duration,
    /// Bound on one fetch, whatever the probes waiting on it.
    fetch_timeout: Duration,
    fetch: Fetch<T>,
    state: Mutex<State<T>>,
    /// Bumped after every fetch, so waiting probes look again.
    done: watch::Sender<u64>,
    counts: Arc<FetchCounts>,
}

impl<T: Clone + Send + Sync + 'static> Cached<T> {
    /// An empty cache of one credential: nothing is fetched until [`Cached::get`] needs it.
    pub fn new(
        method: Method,
        default_lifetime: Duration,
        fetch_timeout: Duration,
        fetch: Fetch<T>,
        counts: Arc<FetchCounts>,
    ) -> Arc<Self> {
        Arc::new(Cached {
            method,
            default_lifetime,
            fetch_timeout,
            fetch,
            state: Mutex::new(State {
                held: None,
                failed: None,
                failures: 0,
                fetching: false,
            }),
            done: watch::channel(0).0,
            counts,
        })
    }

    /// The current value, waiting at most `wait` for a fetch when none is usable. Never
    /// fetches when a usable value is held: a value due for refresh starts one refresh in the
    /// background and is returned meanwhile. After a failure the same error is returned,
    /// without asking, until the backoff ends.
    pub async fn get(self: &Arc<Self>, wait: Duration) -> Result<T, AuthError> {
        let deadline = Instant::now() + wait;
        loop {
            let mut changed = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let may_fetch =
                    !state.fetching && state.failed.as_ref().is_none_or(|(_, retry)| now >= *retry);
                if let Some(held) = state.held.as_ref().filter(|h| now < h.stale_at) {
                    let value = held.value.clone();
                    if now >= held.refresh_at && may_fetch {
                        self.start(&mut state);
                    }
                    return Ok(value);
                }
                if may_fetch {
                    self.start(&mut state);
                } else if let (false, Some((error, _))) = (state.fetching, &state.failed) {
                    return Err(error.clone());
                }
                // Subscribed under the lock: the fetch stores its result under it too, so its
                // signal cannot come between this look and the wait.
                self.done.subscribe()
            };
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(AuthError::NotReady {
                    method: self.method,
                    waited: wait,
                });
            }
        }
    }

    fn start(self: &Arc<Self>, state: &mut State<T>) {
        state.fetching = true;
        let this = Arc::clone(self);
        // Its own task: a probe that stops waiting (its timeout) does not cancel the fetch
        // every other probe of the same credential waits on.
        tokio::spawn(async move {
            let fetched = match tokio::time::timeout(this.fetch_timeout, (this.fetch)()).await {
                Ok(result) => result,
                Err(_) => Err(AuthError::Timeout {
                    method: this.method,
                    after: this.fetch_timeout,
                }),
            };
            let fetched = fetched.and_then(|fresh| {
                let lifetime = fresh.lifetime.unwrap_or(this.default_lifetime);
                if lifetime < MIN_LIFETIME {
                    return Err(AuthError::ShortLived {
                        method: this.method,
                        lifetime,
                    });
                }
                Ok((fresh.value, lifetime))
            });
            this.counts.count(this.method, fetched.as_ref().err());
            let now = Instant::now();
            {
                let mut state = this.state.lock().unwrap_or_else(|e| e.into_inner());
                state.fetching = false;
                match fetched {
                    Ok((value, lifetime)) => {
                        let expires = now + lifetime;
                        state.held = Some(Held {
                            value,
                            refresh_at: expires - refresh_ahead(lifetime),
                            stale_at: expires - stale_ahead(lifetime),
                        });
                        state.failed = None;
                        state.failures = 0;
                    }
                    Err(error) => {
                        tracing::warn!(auth = this.method.as_str(), %error, "could not get credentials");
                        state.failures = state.failures.saturating_add(1);
                        state.failed = Some((error, now + backoff(state.failures)));
                    }
                }
            }
            this.done.send_modify(|n| *n = n.wrapping_add(1));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn margins_scale_with_the_lifetime_and_are_capped() {
        let s = Duration::from_secs;
        assert_eq!(refresh_ahead(s(3600)), s(300));
        assert_eq!(stale_ahead(s(3600)), s(30));
        assert_eq!(refresh_ahead(s(4)), s(1));
        assert_eq!(stale_ahead(s(3)), Duration::from_millis(300));
        assert!(refresh_ahead(s(900)) > stale_ahead(s(900)));
        assert_eq!(backoff(1), s(1));
        assert_eq!(backoff(3), s(4));
        assert_eq!(backoff(40), s(60));
    }

    /// A fetch that counts its calls and gives `lifetime`, or fails while `fail` is set.
    fn counting(
        lifetime: Duration,
        fail: Arc<std::sync::atomic::AtomicBool>,
        calls: Arc<AtomicU32>,
    ) -> Fetch<u32> {
        Box::new(move || {
            let (fail, calls) = (fail.clone(), calls.clone());
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if fail.load(Ordering::SeqCst) {
                    Err(AuthError::NoCredentials("refused in the test".into()))
                } else {
                    Ok(Fresh {
                        value: n,
                        lifetime: Some(lifetime),
                    })
                }
            })
        })
    }

    /// Many waiters share one fetch; a value is refreshed once, in the background, a quarter of
    /// its life before expiry while the old one keeps serving; a failure is returned without
    /// asking again until its backoff ends; a refresh that fails leaves the held value serving
    /// until it goes stale. Paused time: every sleep is decided at once, none waited for.
    #[tokio::test(start_paused = true)]
    async fn single_flight_refresh_ahead_and_backoff() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let calls = Arc::new(AtomicU32::new(0));
        let cache = Cached::new(
            Method::OAuth2,
            Duration::from_secs(300),
            Duration::from_secs(10),
            counting(Duration::from_secs(40), fail.clone(), calls.clone()),
            Arc::new(FetchCounts::default()),
        );
        let wait = Duration::from_secs(5);
        let many: Vec<_> = (0..20)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.get(wait).await })
            })
            .collect();
        for h in many {
            assert_eq!(h.await.expect("join"), Ok(1));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch for 20 waiters");
        // Refresh due at 30 s (a quarter of 40 s ahead): the first get after it returns the
        // old value at once and starts one refresh.
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(cache.get(wait).await, Ok(1));
        assert_eq!(
            cache.get(wait).await,
            Ok(1),
            "the refresh is still in flight"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(cache.get(wait).await, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // Refreshes fail from now on: the held value serves until stale (36 s), then the
        // error is returned, and not asked again before its backoff.
        fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(
            cache.get(wait).await,
            Ok(2),
            "due, refresh started, old value"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            cache.get(wait).await,
            Ok(2),
            "refresh failed, not stale yet"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let asked = calls.load(Ordering::SeqCst);
        let stale = cache.get(wait).await;
        assert!(stale.is_err(), "stale and the refresh failed: {stale:?}");
        let again = cache.get(wait).await;
        assert_eq!(again, stale, "the same error, within the backoff");
        assert!(calls.load(Ordering::SeqCst) <= asked + 1);
        fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            cache.get(wait).await.is_ok(),
            "asked again after the backoff"
        );
    }

    /// A probe gives up on a fetch slower than its wait; the fetch goes on, and the next probe
    /// gets its value without a new fetch.
    #[tokio::test(start_paused = true)]
    async fn a_slow_fetch_outlives_the_probe_that_started_it() {
        let calls = Arc::new(AtomicU32::new(0));
        let c2 = calls.clone();
        let fetch: Fetch<u32> = Box::new(move || {
            let calls = c2.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(Fresh {
                    value: calls.fetch_add(1, Ordering::SeqCst) + 1,
                    lifetime: None,
                })
            })
        });
        let cache = Cached::new(
            Method::SigV4,
            Duration::from_secs(900),
            Duration::from_secs(10),
            fetch,
            Arc::new(FetchCounts::default()),
        );
        let first = cache.get(Duration::from_secs(1)).await;
        assert!(
            matches!(first, Err(AuthError::NotReady { .. })),
            "{first:?}"
        );
        assert_eq!(cache.get(Duration::from_secs(5)).await, Ok(1));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

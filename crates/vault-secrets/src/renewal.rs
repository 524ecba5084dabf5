//! The session: one task that holds the client token and keeps it alive.
//!
//! It logs in, renews the token at about two thirds of its TTL (with jitter), logs in
//! again when a renewal is refused, when the token's max TTL is near, or when a caller
//! reports the token rejected and a look-up confirms it; every error backs off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, AuthAnswer, Login};
use crate::backoff::Backoff;
use crate::client::{Call, Transport};
use crate::error::Error;

/// Share of the remaining TTL after which the token is renewed: a uniform draw in this range.
pub(crate) const RENEW_AT: (f64, f64) = (0.6, 0.733);

/// Least time between acting on a lease and its expiry, when the TTL is long enough.
pub(crate) const EXPIRY_MARGIN: Duration = Duration::from_secs(2);

/// The token held right now, as seen by every task that calls Vault.
#[derive(Clone, Default)]
pub(crate) struct TokenSlot {
    /// `None` until the first login succeeds.
    pub token: Option<Arc<SecretString>>,
    /// Bumped on each login: lets a caller report which token was rejected.
    pub generation: u64,
}

/// What the session reports about itself (for readiness pages and logs).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SessionStatus {
    /// A token is held and was valid at last contact.
    pub logged_in: bool,
    /// When the token held expires (`None`: no token, or one that never expires).
    pub expires_at: Option<Instant>,
    /// Successful logins since start.
    pub logins: u64,
    /// The last error, cleared by the next success.
    pub last_error: Option<String>,
    /// Failed login or renewal attempts since the last success.
    pub consecutive_failures: u32,
}

/// The lease of the token held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Lease {
    pub obtained_at: Instant,
    /// Zero: the token never expires.
    pub ttl: Duration,
    pub renewable: bool,
    /// The TTL granted at login: a renewal that grants less than two thirds of it means
    /// the max TTL is near.
    pub login_ttl: Duration,
}

impl Lease {
    pub fn expires_at(&self) -> Option<Instant> {
        (!self.ttl.is_zero()).then(|| self.obtained_at + self.ttl)
    }
}

/// What to do next with a held token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Plan {
    /// Renew at this moment.
    RenewAt(Instant),
    /// Log in again at this moment, while the current token still works.
    ReloginAt(Instant),
    /// The token never expires: nothing to do until a caller reports it rejected.
    Hold,
}

/// Decides when to act on a lease. Pure: the random draw comes in as `rng`.
pub(crate) fn plan(lease: &Lease, can_relogin: bool, rng: &mut impl Rng) -> Plan {
    if lease.ttl.is_zero() {
        return Plan::Hold;
    }
    let share = rng.random_range(RENEW_AT.0..=RENEW_AT.1);
    // At least `EXPIRY_MARGIN` before expiry when the TTL allows, at half of it otherwise:
    // short tokens leave the calls in flight time to finish with the old token.
    let margin = EXPIRY_MARGIN.min(lease.ttl / 2);
    let at = lease.obtained_at + lease.ttl.mul_f64(share).min(lease.ttl - margin);
    // A renewal that granted clearly less than the login did was capped by the max TTL.
    let near_max_ttl = lease.ttl < lease.login_ttl.mul_f64(2.0 / 3.0);
    if can_relogin && (!lease.renewable || near_max_ttl) {
        Plan::ReloginAt(at)
    } else if lease.renewable {
        Plan::RenewAt(at)
    } else {
        Plan::Hold
    }
}

/// The session's states. Each says what happens next.
enum State {
    /// No usable token. Next: `Holding` after a successful login, `LoginBackoff` on error.
    LoggingIn,
    /// A login failed. Next: `LoggingIn` at the instant (or earlier: never).
    LoginBackoff(Instant),
    /// A token is held. Next, at the planned moment: `Renewing` or `LoggingIn`; on a
    /// rejection report confirmed by a look-up: `LoginBackoff` (re-logins for that reason
    /// back off on their own).
    Holding(Lease),
    /// Renewing the token. Next: `Holding` with the new lease; `LoggingIn` when Vault
    /// refuses (the token is gone; `LoginBackoff` for a static token, which can only be
    /// looked up again); `RenewBackoff` on a transient error, or `LoginBackoff` when the
    /// token would expire before the retry.
    Renewing(Lease),
    /// A renewal failed transiently. Next: `Renewing` at the instant.
    RenewBackoff(Lease, Instant),
}

/// A 403 a refresh task got: with which token, on which secret.
pub(crate) struct Rejection {
    pub generation: u64,
    pub path: String,
}

/// Handles to the session task, held by the [`crate::Vault`] handle.
pub(crate) struct Session {
    pub token: watch::Receiver<TokenSlot>,
    pub status: watch::Receiver<SessionStatus>,
    /// Callers report a 403 from Vault.
    pub rejected: mpsc::Sender<Rejection>,
}

/// Starts the session task; it ends when `shutdown` is cancelled.
pub(crate) fn spawn(auth: Auth, transport: Arc<Transport>, shutdown: CancellationToken) -> Session {
    let (token_tx, token) = watch::channel(TokenSlot::default());
    let (status_tx, status) = watch::channel(SessionStatus::default());
    let (rejected, rejected_rx) = mpsc::channel(16);
    let task = SessionTask {
        auth,
        transport,
        token_tx,
        status_tx,
        rejected_rx,
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        rejections: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
        verified: HashMap::new(),
    };
    tokio::spawn(async move {
        tokio::select! {
            () = task.run() => {}
            () = shutdown.cancelled() => {}
        }
    });
    Session { token, status, rejected }
}

struct SessionTask {
    auth: Auth,
    transport: Arc<Transport>,
    /// Sender of the current token; receivers: every refresh task and one-off call.
    token_tx: watch::Sender<TokenSlot>,
    /// Sender of the status; receivers: the `Vault` handle's status readers.
    status_tx: watch::Sender<SessionStatus>,
    /// Receiver of rejection reports; senders: the refresh tasks. Never closes while the
    /// `Vault` handle lives.
    rejected_rx: mpsc::Receiver<Rejection>,
    backoff: Backoff,
    /// Delays the re-logins caused by rejection reports; reset by a successful renewal.
    /// A policy that denies both a watched path and `lookup-self` makes every fresh
    /// token look revoked: this keeps that from turning into a login loop.
    rejections: Backoff,
    /// Per secret path: the token generation a look-up found alive after a 403 there,
    /// and when. Further reports for that path and token are ignored for
    /// [`VERIFIED_FOR`] (a path the policy denies would otherwise cost one look-up per
    /// refresh); a 403 on any other path is looked into at once.
    verified: HashMap<String, (u64, Instant)>,
}

/// How long a look-up that found the token alive answers later rejection reports.
const VERIFIED_FOR: Duration = Duration::from_secs(60);

impl SessionTask {
    async fn run(mut self) {
        let mut state = State::LoggingIn;
        loop {
            state = match state {
                State::LoggingIn => self.login().await,
                State::LoginBackoff(until) => {
                    self.wait_recording_ttl(until).await;
                    State::LoggingIn
                }
                State::Holding(lease) => self.hold(lease).await,
                State::Renewing(lease) => self.renew(lease).await,
                State::RenewBackoff(lease, until) => {
                    self.wait_recording_ttl(until).await;
                    State::Renewing(lease)
                }
            };
        }
    }

    /// Sleeps until `until`, keeping the TTL-left gauge current (it reaches 0 when the
    /// token held expires during an outage).
    async fn wait_recording_ttl(&self, until: Instant) {
        loop {
            record_ttl_left(self.status_tx.borrow().expires_at);
            let step = Instant::now() + Duration::from_secs(15);
            if step >= until {
                return tokio::time::sleep_until(until).await;
            }
            tokio::time::sleep_until(step).await;
        }
    }

    async fn login(&mut self) -> State {
        let method = self.auth.method();
        match self.auth.login(&self.transport).await {
            Ok(login) => {
                metrics::counter!("vault_logins_total", "method" => method, "outcome" => "ok").increment(1);
                tracing::info!(method, policies = ?login.policies, ttl = ?login.ttl, renewable = login.renewable, "logged in to vault");
                if login.policies.iter().any(|p| p == "root") {
                    tracing::warn!(
                        "the vault token has the root policy: use a least-privilege login outside development"
                    );
                }
                self.backoff.reset();
                let lease = Lease {
                    obtained_at: Instant::now(),
                    ttl: login.ttl,
                    renewable: login.renewable,
                    login_ttl: login.ttl,
                };
                self.publish(login, lease);
                State::Holding(lease)
            }
            Err(e) => {
                metrics::counter!("vault_logins_total", "method" => method, "outcome" => "error").increment(1);
                let delay = self.backoff.next_delay(&mut rand::rng());
                tracing::warn!(method, error = %e, retry_in = ?delay, "vault login failed");
                self.record_error(&e);
                State::LoginBackoff(Instant::now() + delay)
            }
        }
    }

    fn publish(&self, login: Login, lease: Lease) {
        self.token_tx.send_modify(|slot| {
            slot.token = Some(Arc::new(login.token));
            slot.generation += 1;
        });
        self.status_tx.send_modify(|s| {
            s.logged_in = true;
            s.expires_at = lease.expires_at();
            s.logins += 1;
            s.last_error = None;
            s.consecutive_failures = 0;
        });
        record_ttl_left(lease.expires_at());
    }

    fn record_error(&self, e: &Error) {
        let text = e.to_string();
        self.status_tx.send_modify(|s| {
            s.last_error = Some(text);
            s.consecutive_failures += 1;
        });
    }

    async fn hold(&mut self, lease: Lease) -> State {
        let plan = plan(&lease, self.auth.can_relogin(), &mut rand::rng());
        let (at, next) = match plan {
            Plan::RenewAt(at) => (Some(at), State::Renewing(lease)),
            Plan::ReloginAt(at) => (Some(at), State::LoggingIn),
            Plan::Hold => (None, State::Holding(lease)),
        };
        let generation = self.token_tx.borrow().generation;
        let mut ttl_tick = tokio::time::interval(Duration::from_secs(15));
        loop {
            tokio::select! {
                () = sleep_until_or_forever(at) => return next,
                _ = ttl_tick.tick() => record_ttl_left(lease.expires_at()),
                Some(rejected) = self.rejected_rx.recv() => {
                    let recently_verified = self
                        .verified
                        .get(&rejected.path)
                        .is_some_and(|&(g, at)| g == generation && at.elapsed() < VERIFIED_FOR);
                    if rejected.generation != generation || recently_verified {
                        continue;
                    }
                    if !self.token_is_gone().await {
                        self.verified.insert(rejected.path, (generation, Instant::now()));
                        continue;
                    }
                    let delay = self.rejections.next_delay(&mut rand::rng());
                    tracing::warn!(retry_in = ?delay, "vault no longer accepts the token (revoked or expired): logging in again");
                    self.status_tx.send_modify(|s| {
                        s.logged_in = false;
                        s.expires_at = None;
                        s.last_error = Some("vault no longer accepts the token (revoked or expired)".into());
                    });
                    return State::LoginBackoff(Instant::now() + delay);
                }
            }
        }
    }

    /// A 403 may mean a missing capability or a dead token: a look-up tells them apart.
    async fn token_is_gone(&self) -> bool {
        let Some(token) = self.token_tx.borrow().token.clone() else { return true };
        let lookup = self.transport.send(Call::get("token_lookup", "auth/token/lookup-self", &token)).await;
        matches!(lookup, Err(Error::PermissionDenied { .. } | Error::Rejected { status: 400, .. }))
    }

    async fn renew(&mut self, lease: Lease) -> State {
        let Some(token) = self.token_tx.borrow().token.clone() else { return State::LoggingIn };
        let body = json!({ "increment": lease.login_ttl.as_secs() });
        let call = Call::post("token_renew", "auth/token/renew-self", Some(&token), &body);
        match self.transport.json::<AuthAnswer>(call).await {
            Ok(answer) => {
                metrics::counter!("vault_token_renewals_total", "outcome" => "ok").increment(1);
                self.backoff.reset();
                self.rejections.reset();
                let renewed = Lease {
                    obtained_at: Instant::now(),
                    ttl: Duration::from_secs(answer.auth.lease_duration),
                    renewable: answer.auth.renewable,
                    login_ttl: lease.login_ttl,
                };
                tracing::debug!(ttl = ?renewed.ttl, "renewed the vault token");
                self.status_tx.send_modify(|s| {
                    s.logged_in = true;
                    s.expires_at = renewed.expires_at();
                    s.last_error = None;
                    s.consecutive_failures = 0;
                });
                record_ttl_left(renewed.expires_at());
                State::Holding(renewed)
            }
            Err(e) if !e.is_transient() => {
                metrics::counter!("vault_token_renewals_total", "outcome" => "refused").increment(1);
                tracing::warn!(error = %e, "vault refused to renew the token: logging in again");
                self.record_error(&e);
                self.status_tx.send_modify(|s| {
                    s.logged_in = false;
                    s.expires_at = None;
                });
                if self.auth.can_relogin() {
                    State::LoggingIn
                } else {
                    // A static token: "logging in" looks it up again, with backoff.
                    State::LoginBackoff(Instant::now() + self.backoff.next_delay(&mut rand::rng()))
                }
            }
            Err(e) => {
                metrics::counter!("vault_token_renewals_total", "outcome" => "error").increment(1);
                let delay = self.backoff.next_delay(&mut rand::rng());
                tracing::warn!(error = %e, retry_in = ?delay, "vault token renewal failed");
                self.record_error(&e);
                let retry_at = Instant::now() + delay;
                match lease.expires_at() {
                    // The token would expire before the retry: log in again just before.
                    Some(expiry) if retry_at >= expiry && self.auth.can_relogin() => {
                        State::LoginBackoff(retry_at.min(expiry - Duration::from_secs(1)).max(Instant::now()))
                    }
                    _ => State::RenewBackoff(lease, retry_at),
                }
            }
        }
    }
}

/// The token's TTL left now, 0 without a token or for one that never expires; kept
/// current every 15 s in every state.
fn record_ttl_left(expires_at: Option<Instant>) {
    let left = expires_at.map_or(Duration::ZERO, |end| end.saturating_duration_since(Instant::now()));
    metrics::gauge!("vault_token_ttl_seconds").set(left.as_secs_f64());
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn lease(ttl: u64, login_ttl: u64, renewable: bool) -> Lease {
        Lease {
            obtained_at: Instant::now(),
            ttl: Duration::from_secs(ttl),
            renewable,
            login_ttl: Duration::from_secs(login_ttl),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renews_at_about_two_thirds_of_the_ttl() {
        let mut rng = StdRng::seed_from_u64(3);
        let l = lease(3600, 3600, true);
        for _ in 0..1000 {
            let Plan::RenewAt(at) = plan(&l, true, &mut rng) else { panic!("expected a renewal") };
            let secs = (at - l.obtained_at).as_secs_f64();
            assert!((2160.0..=2639.0).contains(&secs), "renewal after {secs} s");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_spreads_the_renewal_moments() {
        let mut rng = StdRng::seed_from_u64(4);
        let l = lease(3600, 3600, true);
        let moments: std::collections::BTreeSet<_> = (0..100)
            .map(|_| match plan(&l, true, &mut rng) {
                Plan::RenewAt(at) => (at - l.obtained_at).as_secs(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(moments.len() > 50, "only {} distinct moments", moments.len());
    }

    #[tokio::test(start_paused = true)]
    async fn logs_in_again_when_the_max_ttl_is_near() {
        let mut rng = StdRng::seed_from_u64(5);
        assert!(matches!(plan(&lease(900, 3600, true), true, &mut rng), Plan::ReloginAt(_)));
        assert!(matches!(plan(&lease(2000, 3600, true), true, &mut rng), Plan::ReloginAt(_)));
        assert!(matches!(plan(&lease(3000, 3600, true), true, &mut rng), Plan::RenewAt(_)));
        assert!(matches!(plan(&lease(3600, 3600, false), true, &mut rng), Plan::ReloginAt(_)));
        // A static token cannot log in again: renew while it can, then hold.
        assert!(matches!(plan(&lease(900, 3600, true), false, &mut rng), Plan::RenewAt(_)));
        assert_eq!(plan(&lease(900, 3600, false), false, &mut rng), Plan::Hold);
    }

    /// The hot-loop bug of Vault's Go lifetime watcher (hashicorp/vault#26382): a dropped
    /// backoff made failed calls retry at once. Ten simulated minutes of an outage here
    /// may cost at most what the backoff floor allows, and in practice far fewer.
    #[tokio::test(start_paused = true)]
    async fn a_ten_minute_outage_causes_no_hot_loop() {
        use crate::client::TransportConfig;
        // Nothing listens on port 1: every login attempt fails at once.
        let transport = Transport::new(TransportConfig {
            addresses: vec!["http://127.0.0.1:1".parse().unwrap()],
            ca_pem: None,
            identity_pem: None,
            namespace: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        })
        .unwrap();
        let auth = Auth::AppRole(crate::AppRole::new("role", SecretString::from("secret")));
        let shutdown = CancellationToken::new();
        let session = spawn(auth, Arc::new(transport), shutdown.clone());
        let outage = Duration::from_secs(600);
        tokio::time::sleep(outage).await;
        let status = session.status.borrow().clone();
        shutdown.cancel();
        let attempts = status.consecutive_failures;
        eprintln!("10 simulated minutes of outage: {attempts} login attempts");
        // Backoff: floor 0.5 s, doubling, cap 30 s. The floor alone bounds it to 1200;
        // the doubling to 6 attempts up to the cap, then one per 0.5–30 s.
        let floor_bound = (outage.as_secs_f64() / 0.5) as u32;
        assert!(attempts >= 10, "only {attempts} attempts: the session gave up");
        assert!(attempts <= floor_bound, "{attempts} attempts in 10 minutes: a hot loop");
        assert!(attempts <= 150, "{attempts} attempts: the backoff does not grow");
        assert!(!status.logged_in && status.last_error.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn short_tokens_are_acted_on_well_before_expiry() {
        let mut rng = StdRng::seed_from_u64(8);
        for (ttl, latest) in [(4, 2.0), (3, 1.5), (10, 7.33)] {
            let l = lease(ttl, 3600, true);
            for _ in 0..100 {
                let (Plan::RenewAt(at) | Plan::ReloginAt(at)) = plan(&l, true, &mut rng) else { panic!("no action") };
                let secs = (at - l.obtained_at).as_secs_f64();
                assert!(secs <= latest + 1e-6, "ttl {ttl} s: acts after {secs} s, later than {latest} s");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_that_never_expires_is_held() {
        assert_eq!(plan(&lease(0, 0, false), true, &mut StdRng::seed_from_u64(6)), Plan::Hold);
    }
}

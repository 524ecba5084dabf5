//! The secret cache: one background task per watched secret keeps its value fresh;
//! readers borrow the latest value without waiting.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rand::Rng;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::client::Transport;
use crate::error::{Error, Result};
use crate::kv::{self, KvPath};
use crate::renewal::{Rejection, TokenSlot};

/// Default interval between two checks of a secret's version.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
/// Default bound on how long a value is served without Vault confirming it.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(600);

/// A value read from Vault, with where it came from. Its `Debug` shows the version and
/// times, never the value.
pub struct Versioned<T> {
    value: T,
    version: u64,
    generation: u64,
    fetched_at: Instant,
    lease_ends: Option<Instant>,
}

impl<T> std::fmt::Debug for Versioned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Versioned")
            .field("version", &self.version)
            .field("generation", &self.generation)
            .field("fetched_at", &self.fetched_at)
            .field("lease_ends", &self.lease_ends)
            .finish_non_exhaustive()
    }
}

impl<T> Versioned<T> {
    fn from_read(read: kv::Read<T>, generation: u64, now: Instant) -> Arc<Self> {
        let lease_ends = read.lease.map(|l| now + l);
        Arc::new(Self { value: read.value, version: read.version, generation, fetched_at: now, lease_ends })
    }

    /// The value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The KV v2 version it was read at.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Counts the values published for this secret since the watch began, from 1.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When it was read from Vault.
    pub fn fetched_at(&self) -> Instant {
        self.fetched_at
    }

    /// When the lease Vault attached to it ends, if it attached one: the value is never
    /// served after that.
    pub fn lease_ends(&self) -> Option<Instant> {
        self.lease_ends
    }
}

/// The state of one watched secret, published by its refresh task.
struct Entry<T> {
    value: Option<Arc<Versioned<T>>>,
    /// When Vault last confirmed that `value` is current.
    confirmed_at: Option<Instant>,
    /// The last refresh's failure, cleared by the next success.
    problem: Option<Error>,
    /// Whether a refresh attempt has finished (with a value or an error).
    attempted: bool,
    /// Capabilities the token lacks for this secret, from the preflight check.
    missing_capabilities: Vec<String>,
}

impl<T> Default for Entry<T> {
    fn default() -> Self {
        Self { value: None, confirmed_at: None, problem: None, attempted: false, missing_capabilities: Vec::new() }
    }
}

/// How fresh a watched secret is, for readiness pages.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SecretStatus {
    /// The secret's `mount/path`.
    pub path: String,
    /// Whether [`Watched::current`] returns a value right now.
    pub ready: bool,
    /// The version held, if any.
    pub version: Option<u64>,
    /// Time since Vault last confirmed the value held.
    pub age: Option<Duration>,
    /// Why the last refresh failed, if it did.
    pub problem: Option<String>,
    /// Capabilities the token lacks for this secret, like `read on secret/data/app/x`.
    pub missing_capabilities: Vec<String>,
}

/// What every handle of one watch shares. Dropping the last one stops the refresh task.
struct Shared<T> {
    path: String,
    max_stale: Duration,
    rx: watch::Receiver<Entry<T>>,
    /// Cancelled on drop: ends the refresh task.
    stop: CancellationToken,
    /// Keeps the session (and thus the token) alive while the secret is watched.
    _owner: Arc<dyn Send + Sync>,
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The watches alive in one session, so that two watches of the same secret and type
/// share one refresh task: one in-flight fetch per path however many callers wait.
pub(crate) type Registry = Mutex<HashMap<(KvPath, TypeId), Weak<dyn Any + Send + Sync>>>;

/// A secret kept up to date in the background, typed through serde.
///
/// Cloning is cheap; every clone sees the same value. The refresh task stops when the
/// last handle is dropped.
pub struct Watched<T> {
    shared: Arc<Shared<T>>,
    /// This handle's own receiver, so [`Watched::changed`] tracks what this handle saw.
    rx: watch::Receiver<Entry<T>>,
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone(), rx: self.shared.rx.clone() }
    }
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("path", &self.shared.path)
            .field("max_stale", &self.shared.max_stale)
            .finish_non_exhaustive()
    }
}

impl<T> Watched<T> {
    /// The latest value. Never waits on Vault.
    ///
    /// Errors: [`Error::NotFound`] when Vault says the secret does not exist (even if a
    /// value was cached before); [`Error::Stale`] when Vault has not confirmed the value
    /// for longer than `max_stale`, or its lease has ended; [`Error::Pending`] or the
    /// first fetch's error before any value arrived.
    pub fn current(&self) -> Result<Arc<Versioned<T>>> {
        let result = self.evaluate(&self.rx.borrow());
        let outcome = if result.is_ok() { "hit" } else { "miss" };
        metrics::counter!("vault_cache_reads_total", "outcome" => outcome).increment(1);
        result
    }

    fn evaluate(&self, entry: &Entry<T>) -> Result<Arc<Versioned<T>>> {
        let path = || self.shared.path.clone();
        match (&entry.value, &entry.problem) {
            (_, Some(e @ Error::NotFound { .. })) => Err(e.clone()),
            (Some(v), _) => {
                let now = Instant::now();
                let age = entry.confirmed_at.map_or(Duration::MAX, |at| now.saturating_duration_since(at));
                let lease_over = v.lease_ends.is_some_and(|end| now >= end);
                if age <= self.shared.max_stale && !lease_over {
                    Ok(v.clone())
                } else {
                    Err(Error::Stale { path: path(), age })
                }
            }
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(Error::Pending { path: path() }),
        }
    }

    /// Waits for the first refresh attempt to finish (or the first login to fail), then
    /// answers like [`Watched::current`]. For start-up code; request handlers use
    /// `current`. While Vault cannot be reached at all, the first attempt can take as long
    /// as the connect and request timeouts of every address.
    pub async fn ready(&self) -> Result<Arc<Versioned<T>>> {
        let mut rx = self.shared.rx.clone();
        let _ = rx.wait_for(|e| e.attempted).await;
        self.evaluate(&rx.borrow())
    }

    /// Freshness of the value, for readiness reports.
    pub fn status(&self) -> SecretStatus {
        let entry = self.rx.borrow();
        let current = self.evaluate(&entry);
        SecretStatus {
            path: self.shared.path.clone(),
            ready: current.is_ok(),
            version: entry.value.as_ref().map(|v| v.version),
            age: entry.confirmed_at.map(|at| at.elapsed()),
            problem: current.err().or_else(|| entry.problem.clone()).map(|e| e.to_string()),
            missing_capabilities: entry.missing_capabilities.clone(),
        }
    }

    /// Waits until a new value is published, the secret is removed, or its health
    /// changes; then read [`Watched::current`]. Returns `Err` once the watch has stopped.
    pub async fn changed(&mut self) -> Result<()> {
        self.rx.changed().await.map_err(|_| Error::Pending { path: self.shared.path.clone() })
    }

    /// The secret's `mount/path`.
    pub fn path(&self) -> &str {
        &self.shared.path
    }
}

/// Settings of one watch; made by [`crate::Vault::kv`].
#[must_use = "call .watch() to start watching"]
pub struct KvWatch<T> {
    pub(crate) at: KvPath,
    pub(crate) refresh_every: Duration,
    pub(crate) max_stale: Duration,
    pub(crate) ctx: RefreshContext,
    pub(crate) owner: Arc<dyn Send + Sync>,
    pub(crate) _type: PhantomData<fn() -> T>,
}

/// What a refresh task needs from the session.
#[derive(Clone)]
pub(crate) struct RefreshContext {
    pub transport: Arc<Transport>,
    pub token: watch::Receiver<TokenSlot>,
    pub rejected: mpsc::Sender<Rejection>,
    pub shutdown: CancellationToken,
    pub registry: Arc<Registry>,
    pub session: watch::Receiver<crate::renewal::SessionStatus>,
}

impl<T: DeserializeOwned + Send + Sync + 'static> KvWatch<T> {
    /// How often to check the secret's version (default 30 s, ±10 % jitter).
    pub fn refresh_every(mut self, every: Duration) -> Self {
        self.refresh_every = every.max(Duration::from_millis(100));
        self
    }

    /// How long a value may be served without Vault confirming it (default 10 min).
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// Starts the refresh task and returns the handle. If this session already watches
    /// the same secret as the same type, the handle joins that watch (and its settings).
    /// Must be called inside a tokio runtime.
    pub fn watch(self) -> Watched<T> {
        let key = (self.at.clone(), TypeId::of::<T>());
        let mut registry = self.ctx.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = registry.get(&key).and_then(Weak::upgrade).and_then(|s| s.downcast::<Shared<T>>().ok()) {
            return Watched { rx: shared.rx.clone(), shared };
        }
        registry.retain(|_, weak| weak.strong_count() > 0);
        let (tx, rx) = watch::channel(Entry::default());
        let stop = self.ctx.shutdown.child_token();
        let task = Refresher {
            path: self.at.to_string(),
            at: self.at,
            every: self.refresh_every,
            ctx: self.ctx.clone(),
            tx,
            generation: 0,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            last_logged: None,
        };
        tokio::spawn(task.run(stop.clone()));
        let shared =
            Arc::new(Shared { path: key.0.to_string(), max_stale: self.max_stale, rx, stop, _owner: self.owner });
        let erased: Arc<dyn Any + Send + Sync> = shared.clone();
        registry.insert(key, Arc::downgrade(&erased));
        Watched { rx: shared.rx.clone(), shared }
    }
}

/// What one refresh attempt found.
enum Fetched<T> {
    /// The version held is still current.
    Unchanged,
    /// A new version.
    New(kv::Read<T>),
    /// The same version read again for a fresh lease: replaces the value quietly.
    Reread(kv::Read<T>),
}

/// The least time between two attempts of a refresh task, even when a new token arrives.
const RETRY_FLOOR: Duration = Duration::from_millis(500);

/// The refresh task of one secret.
struct Refresher<T> {
    at: KvPath,
    path: String,
    every: Duration,
    ctx: RefreshContext,
    /// Sender of the secret's state; receivers: the `Watched` handles. The task ends
    /// when the last handle is dropped or the session shuts down (`stop`).
    tx: watch::Sender<Entry<T>>,
    generation: u64,
    backoff: Backoff,
    /// The last failure as logged, to log each change once.
    last_logged: Option<String>,
}

impl<T: DeserializeOwned + Send + Sync + 'static> Refresher<T> {
    async fn run(mut self, stop: CancellationToken) {
        tokio::select! {
            () = self.refresh_loop() => {}
            () = stop.cancelled() => {}
        }
    }

    async fn refresh_loop(&mut self) {
        let mut preflight_done = false;
        loop {
            let Some(slot) = self.token().await else { return };
            let Some(token) = slot.token else { return };
            if !preflight_done {
                preflight_done = self.preflight(&token).await;
            }
            let result = self.fetch(&token).await;
            if matches!(result, Err(Error::PermissionDenied { .. })) {
                // Maybe the token was revoked: the session checks and logs in again.
                let _ = self.ctx.rejected.try_send(Rejection { generation: slot.generation, path: self.path.clone() });
            }
            let ok = self.publish(result);
            let wait = self.next_wait(ok);
            self.record_gauges();
            let mut token_rx = self.ctx.token.clone();
            let new_token = async { token_rx.wait_for(|s| s.generation != slot.generation).await.is_ok() };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // After a failure, a new token (a fresh login) is worth an earlier retry.
                true = new_token, if !ok => tokio::time::sleep(RETRY_FLOOR).await,
            }
        }
    }

    /// How long to wait before the next attempt: the refresh interval (±10 %), shortened
    /// to two thirds of what is left of a lease; after a failure, the backoff, at most the
    /// interval and at least the floor.
    fn next_wait(&mut self, ok: bool) -> Duration {
        if !ok {
            return self.backoff.next_delay(&mut rand::rng()).min(self.every).max(RETRY_FLOOR);
        }
        self.backoff.reset();
        let every = self.every.mul_f64(rand::rng().random_range(0.9..=1.1));
        let lease_ends = self.tx.borrow().value.as_ref().and_then(|v| v.lease_ends);
        let lease_left = lease_ends.map(|end| end.saturating_duration_since(Instant::now()).mul_f64(2.0 / 3.0));
        lease_left.map_or(every, |left| every.min(left.max(RETRY_FLOOR)))
    }

    /// Waits for the session's first token. While logins fail, the watch reports "not
    /// logged in" (so [`Watched::ready`] returns). `None` once the session is gone.
    async fn token(&mut self) -> Option<TokenSlot> {
        let mut session = self.ctx.session.clone();
        loop {
            let slot = self.ctx.token.borrow_and_update().clone();
            if slot.token.is_some() {
                return Some(slot);
            }
            let login_failed = session.borrow_and_update().last_error.is_some();
            if login_failed {
                self.publish(Err(Error::NotLoggedIn));
            }
            tokio::select! {
                changed = self.ctx.token.changed() => changed.ok()?,
                changed = session.changed() => changed.ok()?,
            }
        }
    }

    /// Checks the version; reads the data only when it changed. No side effects.
    ///
    /// A token that may read the data but not the metadata (the seed's policy granted
    /// only `secret/data/app/*`) still works: the data is read every time and compared
    /// by version, at the cost of one data read per refresh.
    async fn fetch(&self, token: &SecretString) -> Result<Fetched<T>> {
        let transport = &self.ctx.transport;
        let (known, lease_ends) = {
            let entry = self.tx.borrow();
            (entry.value.as_ref().map(|v| v.version), entry.value.as_ref().and_then(|v| v.lease_ends))
        };
        // A leased value is read again before its lease ends, even if its version stays.
        let lease_due = lease_ends.is_some_and(|end| end.saturating_duration_since(Instant::now()) < self.every * 2);
        let current = match kv::current_version(transport, token, &self.at).await {
            Ok(version) => Some(version),
            Err(Error::PermissionDenied { .. }) => None,
            Err(e) => return Err(e),
        };
        if current.is_some() && current == known && !lease_due {
            return Ok(Fetched::Unchanged);
        }
        let read = kv::read::<T>(transport, token, &self.at).await?;
        Ok(match (Some(read.version) == known, lease_due) {
            (false, _) => Fetched::New(read),
            (true, true) => Fetched::Reread(read),
            (true, false) => Fetched::Unchanged,
        })
    }

    /// Publishes one attempt's result. Subscribers are woken for a new value, a removal,
    /// a change of problem, and the first attempt; a mere confirmation wakes nobody.
    /// Returns whether Vault answered (a "not found" is an answer).
    fn publish(&mut self, result: Result<Fetched<T>>) -> bool {
        let now = Instant::now();
        let (fetched, problem) = match result {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        self.log_problem(problem.as_ref());
        let answered = problem.as_ref().is_none_or(|e| matches!(e, Error::NotFound { .. }));
        let mut new_version = None;
        let current_generation = self.generation;
        let generation = current_generation + 1;
        let previous = self.tx.borrow().value.as_ref().map(|v| v.version);
        self.tx.send_if_modified(|entry| {
            let mut notify = !entry.attempted
                || entry.problem.as_ref().map(Error::to_string) != problem.as_ref().map(Error::to_string);
            entry.attempted = true;
            match fetched {
                Some(Fetched::Unchanged) => entry.confirmed_at = Some(now),
                Some(Fetched::New(read)) => {
                    new_version = Some(read.version);
                    entry.value = Some(Versioned::from_read(read, generation, now));
                    entry.confirmed_at = Some(now);
                    notify = true;
                }
                Some(Fetched::Reread(read)) => {
                    entry.value = Some(Versioned::from_read(read, current_generation, now));
                    entry.confirmed_at = Some(now);
                }
                None if matches!(problem, Some(Error::NotFound { .. })) => {
                    notify |= entry.value.take().is_some();
                    entry.confirmed_at = Some(now);
                }
                None => {}
            }
            entry.problem = problem;
            notify
        });
        if let Some(version) = new_version {
            self.generation = generation;
            tracing::info!(path = %self.path, version, ?previous, "fetched secret");
        }
        answered
    }

    /// Asks Vault which capabilities the token lacks for this secret; logs each once.
    /// Returns whether the check could be made.
    async fn preflight(&mut self, token: &SecretString) -> bool {
        match kv::missing_capabilities(&self.ctx.transport, token, &self.at).await {
            Ok(missing) => {
                for capability in &missing {
                    tracing::warn!(path = %self.path, capability = %capability, "the vault token lacks a capability");
                }
                self.tx.send_if_modified(|entry| {
                    entry.missing_capabilities = missing;
                    false
                });
                true
            }
            Err(e) => {
                tracing::warn!(path = %self.path, error = %e, "cannot check the token's capabilities");
                !e.is_transient()
            }
        }
    }

    /// Logs a failure only when it changes, so an outage is one warning, not one per retry.
    fn log_problem(&mut self, problem: Option<&Error>) {
        let text = problem.map(Error::to_string);
        if text != self.last_logged {
            match &text {
                Some(e) => tracing::warn!(path = %self.path, error = %e, "cannot refresh secret"),
                None => tracing::info!(path = %self.path, "secret refresh works"),
            }
            self.last_logged = text;
        }
    }

    fn record_gauges(&self) {
        let entry = self.tx.borrow();
        let now = Instant::now();
        let path = self.path.clone();
        if let Some(v) = &entry.value {
            metrics::gauge!("vault_secret_version", "path" => path.clone()).set(v.version as f64);
            if let Some(end) = v.lease_ends {
                let left = end.saturating_duration_since(now);
                metrics::gauge!("vault_lease_ttl_seconds", "path" => path.clone()).set(left.as_secs_f64());
            }
        }
        if let Some(at) = entry.confirmed_at {
            metrics::gauge!("vault_secret_age_seconds", "path" => path)
                .set(now.saturating_duration_since(at).as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle on a hand-fed entry, as a refresh task would publish it.
    fn watched(max_stale: Duration) -> (watch::Sender<Entry<&'static str>>, Watched<&'static str>) {
        let (tx, rx) = watch::channel(Entry::default());
        let shared = Arc::new(Shared {
            path: "secret/app/x".into(),
            max_stale,
            rx: rx.clone(),
            stop: CancellationToken::new(),
            _owner: Arc::new(()),
        });
        (tx, Watched { shared, rx })
    }

    fn value(version: u64, lease: Option<Duration>) -> Option<Arc<Versioned<&'static str>>> {
        let now = Instant::now();
        Some(Arc::new(Versioned {
            value: "v",
            version,
            generation: version,
            fetched_at: now,
            lease_ends: lease.map(|l| now + l),
        }))
    }

    fn unavailable() -> Error {
        Error::Unreachable { address: "https://vault".into(), detail: "connection refused".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_value_is_served_through_an_outage_until_max_stale() {
        let (tx, w) = watched(Duration::from_secs(600));
        assert!(matches!(w.current(), Err(Error::Pending { .. })));
        tx.send_modify(|e| {
            e.value = value(1, None);
            e.confirmed_at = Some(Instant::now());
        });
        // Vault goes away: every refresh fails from now on.
        tx.send_modify(|e| e.problem = Some(unavailable()));
        tokio::time::advance(Duration::from_secs(599)).await;
        assert_eq!(w.current().expect("still fresh enough").version(), 1);
        assert!(w.status().ready);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(w.current(), Err(Error::Stale { .. })));
        let status = w.status();
        assert!(!status.ready && status.problem.is_some_and(|p| p.contains("stale")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leased_value_is_never_served_past_its_lease() {
        let (tx, w) = watched(Duration::from_secs(600));
        tx.send_modify(|e| {
            e.value = value(1, Some(Duration::from_secs(60)));
            e.confirmed_at = Some(Instant::now());
        });
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(w.current().is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(w.current(), Err(Error::Stale { .. })), "served past the lease end");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_secret_is_not_served_even_if_cached() {
        let (tx, w) = watched(Duration::from_secs(600));
        tx.send_modify(|e| {
            e.value = value(3, None);
            e.confirmed_at = Some(Instant::now());
            e.problem = Some(Error::NotFound { path: "secret/metadata/app/x".into() });
        });
        assert!(matches!(w.current(), Err(Error::NotFound { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn subscribers_wake_for_a_new_value_and_read_it() {
        let (tx, mut w) = watched(Duration::from_secs(600));
        let waiter = tokio::spawn(async move {
            w.changed().await.expect("watch alive");
            w.current().map(|v| (v.version(), v.generation()))
        });
        tx.send_modify(|e| {
            e.value = value(2, None);
            e.confirmed_at = Some(Instant::now());
        });
        assert_eq!(waiter.await.unwrap().unwrap(), (2, 2));
    }
}

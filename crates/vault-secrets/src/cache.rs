//! The secret cache: one background task per watched secret keeps its value fresh;
//! readers borrow the latest value without waiting.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::client::Transport;
use crate::error::{Error, Result};
use crate::kv::{self, KvPath};
use crate::renewal::TokenSlot;

/// Default interval between two checks of a secret's version.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
/// Default bound on how long a value is served without Vault confirming it.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(600);

/// A value read from Vault, with where it came from.
#[derive(Debug)]
pub struct Versioned<T> {
    value: T,
    version: u64,
    generation: u64,
    fetched_at: Instant,
}

impl<T> Versioned<T> {
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
}

/// The state of one watched secret, published by its refresh task.
struct Entry<T> {
    value: Option<Arc<Versioned<T>>>,
    /// When Vault last confirmed that `value` is current.
    confirmed_at: Option<Instant>,
    /// The last refresh's failure, cleared by the next success.
    problem: Option<Error>,
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
}

/// A secret kept up to date in the background, typed through serde.
///
/// Cloning is cheap; every clone sees the same value. The refresh task stops when the
/// last clone is dropped.
pub struct Watched<T> {
    path: Arc<str>,
    max_stale: Duration,
    rx: watch::Receiver<Entry<T>>,
    /// Keeps the session (and thus the token) alive while the secret is watched.
    _owner: Arc<dyn Send + Sync>,
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Self { path: self.path.clone(), max_stale: self.max_stale, rx: self.rx.clone(), _owner: self._owner.clone() }
    }
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("path", &self.path).field("max_stale", &self.max_stale).finish_non_exhaustive()
    }
}

impl<T> Watched<T> {
    /// The latest value. Never waits on Vault.
    ///
    /// Errors: [`Error::NotFound`] when Vault says the secret does not exist (even if a
    /// value was cached before); [`Error::Stale`] when Vault has not confirmed the value
    /// for longer than `max_stale`; [`Error::Pending`] or the first fetch's error before
    /// any value arrived.
    pub fn current(&self) -> Result<Arc<Versioned<T>>> {
        let entry = self.rx.borrow();
        let result = match (&entry.value, &entry.problem) {
            (_, Some(e @ Error::NotFound { .. })) => Err(e.clone()),
            (Some(v), _) => {
                let age = entry.confirmed_at.map_or(Duration::MAX, |at| at.elapsed());
                if age <= self.max_stale {
                    Ok(v.clone())
                } else {
                    Err(Error::Stale { path: self.path.to_string(), age })
                }
            }
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(Error::Pending { path: self.path.to_string() }),
        };
        let outcome = if result.is_ok() { "hit" } else { "miss" };
        metrics::counter!("vault_cache_reads_total", "outcome" => outcome).increment(1);
        result
    }

    /// Freshness of the value, for readiness reports.
    pub fn status(&self) -> SecretStatus {
        let current = self.current();
        let entry = self.rx.borrow();
        SecretStatus {
            path: self.path.to_string(),
            ready: current.is_ok(),
            version: entry.value.as_ref().map(|v| v.version),
            age: entry.confirmed_at.map(|at| at.elapsed()),
            problem: current.err().or_else(|| entry.problem.clone()).map(|e| e.to_string()),
        }
    }

    /// Waits until a new value (or a removal) is published; then read [`Watched::current`].
    /// Returns `Err` once the refresh task has stopped.
    pub async fn changed(&mut self) -> Result<(), Error> {
        self.rx.changed().await.map_err(|_| Error::Pending { path: self.path.to_string() })
    }

    /// The secret's `mount/path`.
    pub fn path(&self) -> &str {
        &self.path
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
    pub rejected: mpsc::Sender<u64>,
    pub shutdown: CancellationToken,
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

    /// Starts the refresh task and returns the handle. Must be called inside a tokio runtime.
    pub fn watch(self) -> Watched<T> {
        let (tx, rx) = watch::channel(Entry { value: None, confirmed_at: None, problem: None });
        let path: Arc<str> = self.at.to_string().into();
        let task = Refresher {
            at: self.at,
            every: self.refresh_every,
            ctx: self.ctx.clone(),
            tx,
            generation: 0,
            last_logged: None,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        };
        tokio::spawn(task.run());
        Watched { path, max_stale: self.max_stale, rx, _owner: self.owner }
    }
}

/// The refresh task of one secret.
struct Refresher<T> {
    at: KvPath,
    every: Duration,
    ctx: RefreshContext,
    /// Sender of the secret's state; receivers: the `Watched` clones. The task ends when
    /// they are all dropped or the session shuts down.
    tx: watch::Sender<Entry<T>>,
    generation: u64,
    backoff: Backoff,
    /// The last failure as logged, to log each change once.
    last_logged: Option<String>,
}

impl<T: DeserializeOwned + Send + Sync + 'static> Refresher<T> {
    async fn run(mut self) {
        let shutdown = self.ctx.shutdown.clone();
        let tx = self.tx.clone();
        tokio::select! {
            () = self.refresh_loop() => {}
            () = shutdown.cancelled() => {}
            () = tx.closed() => {}
        }
    }

    async fn refresh_loop(&mut self) {
        let path = self.at.to_string();
        loop {
            let Ok(slot) = self.ctx.token.wait_for(|s| s.token.is_some()).await.map(|s| s.clone()) else { return };
            let token = slot.token.expect("waited for a token");
            let outcome = self.refresh_once(&token).await;
            let wait = match &outcome {
                Ok(()) => {
                    self.backoff.reset();
                    self.every.mul_f64(rand::rng().random_range(0.9..=1.1))
                }
                Err(e) => {
                    if matches!(e, Error::PermissionDenied { .. }) {
                        // Maybe the token was revoked: the session checks and logs in again.
                        let _ = self.ctx.rejected.try_send(slot.generation);
                    }
                    self.backoff.next_delay(&mut rand::rng()).min(self.every)
                }
            };
            self.record_problem(&path, outcome.err());
            if let Some(v) = self.tx.borrow().value.as_ref() {
                metrics::gauge!("vault_secret_version", "path" => path.clone()).set(v.version as f64);
            }
            let failed = self.tx.borrow().problem.is_some();
            let mut token_rx = self.ctx.token.clone();
            token_rx.mark_unchanged();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // After a failure, a new token (a fresh login) is worth an immediate retry.
                Ok(()) = token_rx.changed(), if failed => {}
            }
        }
    }

    /// Checks the version; reads and publishes the value when it changed.
    async fn refresh_once(&mut self, token: &secrecy::SecretString) -> Result<()> {
        let transport = &self.ctx.transport;
        let known = self.tx.borrow().value.as_ref().map(|v| v.version);
        let version = match kv::current_version(transport, token, &self.at).await {
            Ok(v) => v,
            Err(e @ Error::NotFound { .. }) => {
                let had_value = self.tx.borrow().value.is_some();
                self.tx.send_if_modified(|entry| {
                    entry.value = None;
                    entry.confirmed_at = Some(Instant::now());
                    entry.problem = Some(e.clone());
                    had_value
                });
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if Some(version) == known {
            self.tx.send_if_modified(|entry| {
                entry.confirmed_at = Some(Instant::now());
                false
            });
            return Ok(());
        }
        let (value, version) = kv::read::<T>(transport, token, &self.at).await?;
        self.generation += 1;
        let versioned = Arc::new(Versioned { value, version, generation: self.generation, fetched_at: Instant::now() });
        tracing::info!(path = %self.at, version, previous = ?known, "fetched secret");
        self.tx.send_modify(|entry| {
            entry.value = Some(versioned);
            entry.confirmed_at = Some(Instant::now());
        });
        Ok(())
    }

    /// Stores the last refresh's failure; logs only when it changes, so an outage is one
    /// warning, not one per retry.
    fn record_problem(&mut self, path: &str, problem: Option<Error>) {
        let text = problem.as_ref().map(|e| e.to_string());
        if text != self.last_logged {
            match &text {
                Some(e) => tracing::warn!(path, error = %e, "cannot refresh secret"),
                None => tracing::info!(path, "secret refresh works again"),
            }
            self.last_logged = text;
        }
        self.tx.send_if_modified(|entry| {
            entry.problem = problem;
            // A removal is a change subscribers hear about; the problem text is not.
            false
        });
    }
}

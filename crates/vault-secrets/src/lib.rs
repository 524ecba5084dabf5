//! Secrets from HashiCorp Vault or OpenBao for long-running services.
//!
//! A [`Vault`] is a session: it logs in (AppRole with a response-wrapped secret_id, or
//! a token in development), keeps the token alive in a background task, and serves
//! secrets from memory. A [`Watched`] secret is refreshed by its own background task;
//! reading it never waits on Vault, so a request handler can call
//! [`Watched::current`] on every request.
//!
//! ```no_run
//! # async fn demo() -> vault_secrets::Result<()> {
//! use secrecy::SecretString;
//! use vault_secrets::{AppRole, Vault};
//!
//! #[derive(serde::Deserialize)]
//! struct Database {
//!     host: String,
//!     password: SecretString,
//! }
//!
//! let vault = Vault::builder()
//!     .addresses(["https://127.0.0.1:8200"])
//!     .ca_cert_pem(std::fs::read("ca.pem").unwrap())
//!     .auth(AppRole::wrapped("role-id", SecretString::from("wrapping-token")))
//!     .build()?;
//! let db = vault.kv::<Database>("secret", "app/database").watch();
//! // Later, in a handler: no await, no Vault call.
//! let now = db.current()?;
//! println!("database at {}", now.value().host);
//! # Ok(()) }
//! ```
//!
//! # Lifecycle
//!
//! - **Login** happens in the background right after [`VaultBuilder::build`]; if Vault is
//!   down, it is retried with exponential backoff (full jitter above a floor, capped).
//! - **Renewal**: the token is renewed at 60–73 % of its remaining TTL, and at least 2 s
//!   before it expires. When Vault refuses
//!   a renewal, or the granted TTL shows the max TTL is near, the session logs in again
//!   while the old token still works.
//! - **AppRole re-login** reuses the secret_id unwrapped at the first login: give the role
//!   `secret_id_num_uses = 0` and a `secret_id_ttl` of `0` or longer than the process
//!   lives (and bind it with `secret_id_bound_cidrs`). A secret_id that Vault no longer
//!   accepts cannot be replaced from inside the process: restart it with a fresh wrapped
//!   secret_id, as `make start` does.
//! - **Revocation**: a 403 on a secret read is reported to the session, which looks the
//!   token up; if Vault no longer knows it, the session logs in again at once.
//! - **Errors** back off exponentially with full jitter above a floor of 0.5 s, capped at
//!   30 s, reset after a success: a long outage costs a few dozen attempts, never a hot
//!   loop.
//! - **Single flight**: one refresh task per secret and type in a session; every
//!   [`KvWatch::watch`] of the same secret joins it, so a thousand callers on a cold cache
//!   cause one read ([`Watched::ready`] waits for it).
//! - **Preflight**: before the first read, `sys/capabilities-self` tells which needed
//!   capabilities the token lacks; each is logged once and shown in
//!   [`SecretStatus::missing_capabilities`].
//! - **Failover**: with several addresses, one that refuses, times out, is sealed or is a
//!   standby (429, 5xx, redirect) is skipped; the last one that answered is tried first.
//! - **Refresh**: each watched secret's version is read from KV v2 metadata every
//!   `refresh_every` (default 30 s, ±10 % jitter); the data is read only when the version
//!   changed, and the new value is published to [`Watched::changed`] subscribers.
//! - **Staleness**: when Vault cannot be reached, the last value is served until Vault
//!   has not confirmed it for `max_stale` (default 10 min); then reads fail with
//!   [`Error::Stale`]. A secret Vault reports deleted fails with [`Error::NotFound`]. A
//!   value read with a lease is read again before its lease ends, and never served past it.
//!
//! The `examples/axum_service.rs` program shows the whole use in an axum service.
//!
//! # Layout
//!
//! - `vault`: the [`Vault`] handle and its builder; wires the pieces below.
//! - `client`: the transport: TLS, timeouts, failover across addresses, metrics per call.
//! - `auth`: login methods, one file each ([`AppRole`], [`StaticToken`]).
//! - `renewal`: the session task, an explicit state machine around the token's lease.
//! - `backoff`: exponential backoff with jitter, floor and cap.
//! - `kv`: KV v2 metadata and data reads.
//! - `cache`: [`Watched`] secrets, their refresh tasks and the per-session registry that
//!   makes watches of one secret share a task.
//! - `error`: the one [`Error`] enum.
//!
//! The library reads no environment variable, installs no logger and handles no signal:
//! the application does.

mod auth;
mod backoff;
mod cache;
mod client;
mod error;
mod kv;
mod renewal;
mod vault;

pub use auth::{AppRole, Auth, StaticToken};
pub use cache::{DEFAULT_MAX_STALE, DEFAULT_REFRESH, KvWatch, SecretStatus, Versioned, Watched};
pub use error::{Error, Result};
pub use kv::KvPath;
pub use renewal::SessionStatus;
pub use secrecy;
pub use vault::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, Vault, VaultBuilder};

//! The `Vault` handle and its builder.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::auth::Auth;
use crate::cache::{DEFAULT_MAX_STALE, DEFAULT_REFRESH, KvWatch, RefreshContext, Registry};
use crate::client::{Transport, TransportConfig};
use crate::error::{Error, Result};
use crate::kv::KvPath;
use crate::renewal::{self, Session, SessionStatus};

/// Default time allowed to open a connection to one address.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time allowed for one request to one address.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A session with Vault: a token kept alive in the background, and the secrets watched
/// through it. Cheap to clone. When the last clone and the last [`crate::Watched`] made
/// from it are dropped, the background tasks stop.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Arc<Transport>,
    session: Session,
    shutdown: CancellationToken,
    registry: Arc<Registry>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("session", &*self.inner.session.status.borrow()).finish_non_exhaustive()
    }
}

impl Vault {
    /// Starts configuring a session.
    pub fn builder() -> VaultBuilder {
        VaultBuilder::default()
    }

    /// Watches a KV v2 secret: `mount` like `secret`, `path` like `app/database`.
    /// Configure the returned [`KvWatch`], then call [`KvWatch::watch`].
    pub fn kv<T: DeserializeOwned + Send + Sync + 'static>(&self, mount: &str, path: &str) -> KvWatch<T> {
        KvWatch {
            at: KvPath::new(mount, path),
            refresh_every: DEFAULT_REFRESH,
            max_stale: DEFAULT_MAX_STALE,
            ctx: RefreshContext {
                transport: self.inner.transport.clone(),
                token: self.inner.session.token.clone(),
                rejected: self.inner.session.rejected.clone(),
                shutdown: self.inner.shutdown.clone(),
                registry: self.inner.registry.clone(),
                session: self.inner.session.status.clone(),
            },
            owner: self.inner.clone(),
            _type: PhantomData,
        }
    }

    /// The session's state: logged in or not, token expiry, last error.
    pub fn status(&self) -> SessionStatus {
        self.inner.session.status.borrow().clone()
    }

    /// Stops the background tasks now (they also stop when the last handle is dropped).
    /// Calling it twice is harmless.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }
}

/// Configures a [`Vault`] session.
#[derive(Default)]
pub struct VaultBuilder {
    addresses: Vec<String>,
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<SecretString>,
    namespace: Option<String>,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    auth: Option<Auth>,
}

impl VaultBuilder {
    /// One or more Vault addresses, like `https://vault-a:8200`. Calls go to the one that
    /// answered last; one that cannot serve is skipped for the next.
    pub fn addresses<I, S>(mut self, addresses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.addresses.extend(addresses.into_iter().map(|a| a.as_ref().trim().to_owned()));
        self
    }

    /// The CA certificate(s) that signed Vault's TLS certificate, PEM. When given, only
    /// these are trusted.
    pub fn ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// A client certificate and its private key, PEM, for TLS client authentication.
    pub fn client_identity_pem(mut self, pem: SecretString) -> Self {
        self.identity_pem = Some(pem);
        self
    }

    /// A Vault Enterprise / OpenBao namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Time allowed to connect to one address (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Time allowed for one request to one address (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How to log in.
    pub fn auth(mut self, auth: impl Into<Auth>) -> Self {
        self.auth = Some(auth.into());
        self
    }

    /// Checks the settings and starts the session task. Does not wait for Vault: the
    /// first login happens in the background. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<Vault> {
        let addresses = self
            .addresses
            .iter()
            .filter(|a| !a.is_empty())
            .enumerate()
            .map(|(i, a)| parse_address(i + 1, a))
            .collect::<Result<Vec<_>>>()?;
        let auth = self.auth.ok_or_else(|| Error::Config("no authentication method given".into()))?;
        let transport = Arc::new(Transport::new(TransportConfig {
            addresses,
            ca_pem: self.ca_pem,
            identity_pem: self.identity_pem,
            namespace: self.namespace.filter(|n| !n.is_empty()),
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            request_timeout: self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
        })?);
        let shutdown = CancellationToken::new();
        let session = renewal::spawn(auth, transport.clone(), shutdown.clone());
        Ok(Vault { inner: Arc::new(Inner { transport, session, shutdown, registry: Arc::default() }) })
    }
}

/// Parses the `n`-th address. Messages name it by position only: a malformed address
/// may hold credentials.
fn parse_address(n: usize, address: &str) -> Result<Url> {
    let url = Url::parse(address).map_err(|e| Error::Config(format!("vault address {n} is not a URL ({e})")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(Error::Config(format!("vault address {n} must be http(s)://host[:port]")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config(format!("vault address {n} must not hold credentials")));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_http_urls() {
        assert!(parse_address(1, "https://127.0.0.1:8200").is_ok());
        assert!(parse_address(1, "127.0.0.1:8200").is_err());
        assert!(parse_address(1, "ftp://vault").is_err());
        let err = parse_address(2, "https://user:hunter2@vault:8200").unwrap_err().to_string();
        assert!(err.contains("address 2") && !err.contains("hunter2"), "{err}");
    }
}

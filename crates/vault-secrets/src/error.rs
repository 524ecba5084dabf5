//! The crate's one error type.

use std::time::Duration;

/// Everything that can go wrong talking to Vault.
///
/// Messages are short and never contain a secret value: Vault's own error strings,
/// paths, addresses and status codes only.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration given to the builder is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A TLS handshake failed (unknown CA, wrong host name, expired certificate...).
    #[error("tls error talking to {address}: {detail}")]
    Tls {
        /// The Vault address that was tried.
        address: String,
        /// The TLS library's explanation.
        detail: String,
    },

    /// No connection could be made, or the request timed out.
    #[error("cannot reach vault at {address}: {detail}")]
    Unreachable {
        /// The Vault address that was tried.
        address: String,
        /// What the HTTP client reported.
        detail: String,
    },

    /// Vault answered but cannot serve: sealed, standby without a leader, rate limited, 5xx.
    #[error("vault at {address} is unavailable ({status}): {message}")]
    Unavailable {
        /// The Vault address that answered.
        address: String,
        /// The HTTP status code.
        status: u16,
        /// Vault's error messages, joined.
        message: String,
    },

    /// Vault refused the call with 403: a missing capability or an invalid token.
    #[error("permission denied on {path}")]
    PermissionDenied {
        /// The API path, without the `/v1/` prefix.
        path: String,
    },

    /// Nothing at this path (404).
    #[error("nothing found at {path}")]
    NotFound {
        /// The API path, without the `/v1/` prefix.
        path: String,
    },

    /// Vault rejected the request (4xx other than 403 and 404).
    #[error("vault rejected the request to {path} ({status}): {message}")]
    Rejected {
        /// The API path, without the `/v1/` prefix.
        path: String,
        /// The HTTP status code.
        status: u16,
        /// Vault's error messages, joined.
        message: String,
    },

    /// Vault's answer did not have the expected shape. Only the location of the mismatch
    /// is kept, never the offending value, which may be secret.
    #[error("unexpected response from {path}: mismatch at `{location}` ({category})")]
    Decode {
        /// The API path, without the `/v1/` prefix.
        path: String,
        /// Where in the document the mismatch is, like `data.data.port`.
        location: String,
        /// The kind of mismatch: syntax, data, eof or io.
        category: &'static str,
    },

    /// A login cannot succeed without the operator: a used or expired wrapped secret_id,
    /// a wrapping token that holds something else.
    #[error("cannot log in: {reason}")]
    Login {
        /// What is wrong and what to do.
        reason: String,
    },

    /// No value of this secret has been fetched yet.
    #[error("no value of {path} fetched from vault yet")]
    Pending {
        /// The secret's path.
        path: String,
    },

    /// No token is available yet: the first login has not succeeded.
    #[error("not logged in to vault yet")]
    NotLoggedIn,

    /// The cached value is older than the configured staleness bound.
    #[error("cached value of {path} is stale ({age:?} old) and vault cannot be reached")]
    Stale {
        /// The secret's path.
        path: String,
        /// How old the last confirmation from Vault is.
        age: Duration,
    },
}

impl Error {
    /// Whether trying again later (or at another address) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::Unavailable { .. }
                | Error::NotLoggedIn
                | Error::Pending { .. }
                | Error::Stale { .. }
        )
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

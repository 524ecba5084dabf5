//! Authentication methods: how the session obtains a token.

mod approle;
mod token;

pub use approle::AppRole;
pub use token::StaticToken;

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::client::Transport;
use crate::error::Result;

/// How to log in to Vault.
#[derive(Debug)]
#[non_exhaustive]
pub enum Auth {
    /// A token given from outside. For development only: it cannot be renewed past its
    /// max TTL and there is no way to log in again once it expires.
    Token(StaticToken),
    /// AppRole: a role_id and a secret_id, the latter ideally response-wrapped.
    AppRole(AppRole),
}

impl Auth {
    /// Short name for logs and metrics.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Auth::Token(_) => "token",
            Auth::AppRole(_) => "approle",
        }
    }

    /// Whether a new token can be obtained when the current one is lost.
    pub(crate) fn can_relogin(&self) -> bool {
        !matches!(self, Auth::Token(_))
    }

    pub(crate) async fn login(&mut self, transport: &Transport) -> Result<Login> {
        match self {
            Auth::Token(t) => t.login(transport).await,
            Auth::AppRole(a) => a.login(transport).await,
        }
    }
}

impl From<StaticToken> for Auth {
    fn from(t: StaticToken) -> Self {
        Auth::Token(t)
    }
}

impl From<AppRole> for Auth {
    fn from(a: AppRole) -> Self {
        Auth::AppRole(a)
    }
}

/// A token just obtained, with its lease.
pub(crate) struct Login {
    pub token: SecretString,
    /// Zero for a token that never expires.
    pub ttl: Duration,
    pub renewable: bool,
    pub policies: Vec<String>,
}

/// The `auth` block of a login or renewal answer.
#[derive(Deserialize)]
pub(crate) struct AuthBlock {
    pub client_token: SecretString,
    #[serde(default)]
    pub policies: Vec<String>,
    pub lease_duration: u64,
    pub renewable: bool,
}

#[derive(Deserialize)]
pub(crate) struct AuthAnswer {
    pub auth: AuthBlock,
}

impl From<AuthBlock> for Login {
    fn from(a: AuthBlock) -> Self {
        Login {
            token: a.client_token,
            ttl: Duration::from_secs(a.lease_duration),
            renewable: a.renewable,
            policies: a.policies,
        }
    }
}

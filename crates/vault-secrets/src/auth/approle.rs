//! AppRole login with a role_id and a (response-wrapped) secret_id.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::{AuthAnswer, Login};
use crate::client::{Call, Transport};
use crate::error::{Error, Result};

/// AppRole credentials.
///
/// With [`AppRole::wrapped`], the secret_id arrives as a single-use wrapping token: it is
/// unwrapped at the first login and the secret_id is kept in memory for later logins
/// (the role needs `secret_id_num_uses = 0` and a `secret_id_ttl` longer than the
/// process lives, or `0`). A wrapping token that was already used or has expired means
/// someone else may have read the secret_id: the login fails with Vault's message and
/// the operator must deliver a fresh one.
#[derive(Debug)]
pub struct AppRole {
    mount: String,
    role_id: String,
    secret_id: SecretId,
}

#[derive(Debug)]
enum SecretId {
    Wrapped(SecretString),
    Plain(SecretString),
}

impl AppRole {
    /// A role_id with a plain secret_id.
    pub fn new(role_id: impl Into<String>, secret_id: SecretString) -> Self {
        Self { mount: "approle".into(), role_id: role_id.into(), secret_id: SecretId::Plain(secret_id) }
    }

    /// A role_id with a response-wrapping token that holds the secret_id.
    pub fn wrapped(role_id: impl Into<String>, wrapping_token: SecretString) -> Self {
        Self { mount: "approle".into(), role_id: role_id.into(), secret_id: SecretId::Wrapped(wrapping_token) }
    }

    /// The mount path of the AppRole auth method (default `approle`).
    pub fn mount(mut self, mount: impl Into<String>) -> Self {
        self.mount = mount.into().trim_matches('/').to_owned();
        self
    }

    pub(crate) async fn login(&mut self, transport: &Transport) -> Result<Login> {
        let secret_id = match &self.secret_id {
            SecretId::Plain(secret_id) => secret_id.clone(),
            SecretId::Wrapped(wrapping_token) => {
                let secret_id = unwrap_secret_id(transport, wrapping_token).await?;
                tracing::info!("unwrapped the AppRole secret_id");
                self.secret_id = SecretId::Plain(secret_id.clone());
                secret_id
            }
        };
        let body = json!({ "role_id": self.role_id, "secret_id": secret_id.expose_secret() });
        let path = format!("auth/{}/login", self.mount);
        let answer: AuthAnswer = transport.json(Call::post("login", &path, None, &body)).await?;
        Ok(answer.auth.into())
    }
}

/// Unwraps a response-wrapped secret_id; the wrapping token is single-use.
///
/// The token is looked up first (an idempotent call): an already used or expired token,
/// or one that does not wrap an AppRole secret_id, is refused with a clear error before
/// anything is consumed. The unwrap itself is never sent twice once it may have reached
/// Vault.
async fn unwrap_secret_id(transport: &Transport, wrapping_token: &SecretString) -> Result<SecretString> {
    #[derive(Deserialize)]
    struct Lookup {
        data: LookupData,
    }
    #[derive(Deserialize)]
    struct LookupData {
        creation_path: String,
    }
    #[derive(Deserialize)]
    struct Unwrapped {
        data: Data,
    }
    #[derive(Deserialize)]
    struct Data {
        secret_id: SecretString,
    }
    let body = json!({ "token": wrapping_token.expose_secret() });
    let lookup: Lookup =
        transport.json(Call::post("unwrap_lookup", "sys/wrapping/lookup", None, &body)).await.map_err(|e| match e {
            Error::Rejected { .. } => Error::Login {
                reason: "the wrapped secret_id was already used or has expired: deliver a fresh one".into(),
            },
            e => e,
        })?;
    if !lookup.data.creation_path.ends_with("/secret-id") {
        return Err(Error::Login {
            reason: format!("the wrapping token holds {}, not an AppRole secret_id", lookup.data.creation_path),
        });
    }
    let body = json!({});
    let call = Call::post("unwrap", "sys/wrapping/unwrap", Some(wrapping_token), &body).single_use();
    let unwrapped: Unwrapped = transport.json(call).await?;
    Ok(unwrapped.data.secret_id)
}

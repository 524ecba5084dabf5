//! Login with a token handed in from outside (development only).

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::Login;
use crate::client::{Call, Transport};
use crate::error::Result;

/// A token given from outside, such as `VAULT_TOKEN`. Looked up at start to learn its TTL.
#[derive(Debug)]
pub struct StaticToken {
    token: SecretString,
}

impl StaticToken {
    /// Wraps a token.
    pub fn new(token: SecretString) -> Self {
        Self { token }
    }

    pub(crate) async fn login(&self, transport: &Transport) -> Result<Login> {
        #[derive(Deserialize)]
        struct Lookup {
            data: Data,
        }
        #[derive(Deserialize)]
        struct Data {
            ttl: u64,
            renewable: bool,
            #[serde(default)]
            policies: Vec<String>,
        }
        let lookup: Lookup = transport.json(Call::get("token_lookup", "auth/token/lookup-self", &self.token)).await?;
        Ok(Login {
            token: self.token.clone(),
            ttl: Duration::from_secs(lookup.data.ttl),
            renewable: lookup.data.renewable,
            policies: lookup.data.policies,
        })
    }
}

//! The shapes of the app's secrets in Vault.

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

/// `secret/app/database`: where the database is and how to log in to it.
#[derive(Debug, Deserialize)]
pub struct DatabaseSecret {
    /// Host name.
    pub host: String,
    /// TCP port; Vault's CLI stores numbers as strings, so both are accepted.
    #[serde(deserialize_with = "port")]
    pub port: u16,
    /// User name.
    pub username: String,
    /// Password: never leaves the process except towards the database.
    pub password: SecretString,
}

/// `secret/app/api`: an external API's endpoint and key.
#[derive(Debug, Deserialize)]
pub struct ApiSecret {
    /// The API's base URL.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The API key: never leaves the process except towards the API.
    #[serde(default)]
    pub api_key: Option<SecretString>,
}

impl ApiSecret {
    /// Both an endpoint and a non-empty key are present.
    pub fn is_configured(&self) -> bool {
        use secrecy::ExposeSecret;
        self.endpoint.as_deref().is_some_and(|e| !e.trim().is_empty())
            && self.api_key.as_ref().is_some_and(|k| !k.expose_secret().trim().is_empty())
    }
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Port::deserialize(d)? {
        Port::Number(n) => Ok(n),
        Port::Text(s) => s.trim().parse().map_err(|_| serde::de::Error::custom("port is not a number from 0 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_accepts_numbers_and_numeric_strings() {
        let a: DatabaseSecret =
            serde_json::from_str(r#"{"host":"h","port":"5432","username":"u","password":"p"}"#).unwrap();
        let b: DatabaseSecret =
            serde_json::from_str(r#"{"host":"h","port":5432,"username":"u","password":"p"}"#).unwrap();
        assert_eq!((a.port, b.port), (5432, 5432));
        assert!(
            serde_json::from_str::<DatabaseSecret>(r#"{"host":"h","port":"x","username":"u","password":"p"}"#).is_err()
        );
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let s: DatabaseSecret =
            serde_json::from_str(r#"{"host":"h","port":1,"username":"u","password":"hunter2-sample"}"#).unwrap();
        let a: ApiSecret = serde_json::from_str(r#"{"endpoint":"e","api_key":"key-sample-xyz"}"#).unwrap();
        let text = format!("{s:?} {a:?}");
        assert!(!text.contains("hunter2-sample") && !text.contains("key-sample-xyz"), "{text}");
        assert!(a.is_configured());
    }
}

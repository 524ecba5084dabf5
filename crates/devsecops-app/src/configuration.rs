//! Settings: command-line flags and environment variables, checked once at start.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use secrecy::SecretString;

/// The command line, with each flag's environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "devsecops-app",
    version,
    about = "A web service that takes every secret it uses from Vault/OpenBao at run time.",
    after_help = "Vault variables: VAULT_ADDR, VAULT_CACERT, VAULT_NAMESPACE and VAULT_TOKEN; the BAO_* \
                  names are read when the VAULT_* one is unset. VAULT_TOKEN is for development only: \
                  use AppRole (APP_ROLE_ID_FILE + APP_SECRET_ID_FILE) everywhere else."
)]
pub struct Settings {
    /// Vault address(es), comma-separated; the next is tried when one cannot serve
    /// [env: VAULT_ADDR, BAO_ADDR] [default: https://127.0.0.1:8200]
    #[arg(long, value_name = "URLS")]
    pub vault_addr: Option<String>,

    /// PEM file of the CA that signed Vault's certificate [env: VAULT_CACERT, BAO_CACERT]
    #[arg(long, value_name = "FILE")]
    pub vault_cacert: Option<PathBuf>,

    /// PEM file of a client certificate for TLS client authentication
    /// [env: VAULT_CLIENT_CERT, BAO_CLIENT_CERT]
    #[arg(long, value_name = "FILE")]
    pub vault_client_cert: Option<PathBuf>,

    /// PEM file of the client certificate's private key [env: VAULT_CLIENT_KEY, BAO_CLIENT_KEY]
    #[arg(long, value_name = "FILE")]
    pub vault_client_key: Option<PathBuf>,

    /// Vault namespace [env: VAULT_NAMESPACE, BAO_NAMESPACE]
    #[arg(long, value_name = "NAME")]
    pub vault_namespace: Option<String>,

    /// File holding the AppRole role_id
    #[arg(long, env = "APP_ROLE_ID_FILE", value_name = "FILE")]
    pub role_id_file: Option<PathBuf>,

    /// File holding the AppRole secret_id, response-wrapped unless --secret-id-wrapped=false
    #[arg(long, env = "APP_SECRET_ID_FILE", value_name = "FILE")]
    pub secret_id_file: Option<PathBuf>,

    /// Whether the secret_id file holds a wrapping token (unwrapped once at start)
    #[arg(long, env = "APP_SECRET_ID_WRAPPED", default_value_t = true, action = clap::ArgAction::Set)]
    pub secret_id_wrapped: bool,

    /// Mount path of the AppRole auth method
    #[arg(long, env = "APP_APPROLE_MOUNT", default_value = "approle")]
    pub approle_mount: String,

    /// Mount path of the KV v2 engine holding the app's secrets
    #[arg(long, env = "APP_KV_MOUNT", default_value = "secret")]
    pub kv_mount: String,

    /// Path of the database settings inside the KV mount
    #[arg(long, env = "APP_DATABASE_SECRET", default_value = "app/database")]
    pub database_secret: String,

    /// Path of the external API settings inside the KV mount
    #[arg(long, env = "APP_API_SECRET", default_value = "app/api")]
    pub api_secret: String,

    /// Address to listen on
    #[arg(long, env = "APP_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one)
    #[arg(long, env = "APP_PORT", default_value_t = 5000)]
    pub port: u16,

    /// How often each secret's version is checked in Vault, like 30s or 2m
    #[arg(long, env = "APP_REFRESH_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub refresh_interval: Duration,

    /// How long a secret may be served while Vault cannot confirm it
    #[arg(long, env = "APP_MAX_STALE", default_value = "10m", value_parser = parse_duration)]
    pub max_stale: Duration,

    /// Log filter, like info or devsecops_app=debug,info (RUST_LOG wins when set)
    #[arg(long, env = "APP_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format
    #[arg(long, env = "APP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// How the app logs in to Vault.
#[derive(Debug)]
pub enum Login {
    /// AppRole with a role_id and a secret_id, wrapped or not.
    AppRole {
        /// The mount of the AppRole method.
        mount: String,
        /// The role_id (not a secret on its own).
        role_id: String,
        /// The secret_id or the wrapping token holding it.
        secret_id: SecretString,
        /// Whether `secret_id` is a wrapping token.
        wrapped: bool,
    },
    /// A token (development only).
    Token(SecretString),
}

/// Checked settings, with the files they name read.
#[derive(Debug)]
pub struct AppConfig {
    /// Vault addresses.
    pub vault_addresses: Vec<String>,
    /// PEM of the CA that signed Vault's certificate.
    pub vault_ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, PEM, for TLS client authentication.
    pub vault_client_identity: Option<SecretString>,
    /// Vault namespace.
    pub vault_namespace: Option<String>,
    /// How to log in.
    pub login: Login,
    /// KV v2 mount.
    pub kv_mount: String,
    /// Path of the database settings.
    pub database_secret: String,
    /// Path of the external API settings.
    pub api_secret: String,
    /// Listen address.
    pub host: IpAddr,
    /// Listen port.
    pub port: u16,
    /// Refresh interval of each secret.
    pub refresh_interval: Duration,
    /// Staleness bound.
    pub max_stale: Duration,
}

/// A setting that cannot be used, named as the operator knows it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {problem}")]
pub struct SettingError {
    /// The flag or variable, like `APP_ROLE_ID_FILE`.
    pub setting: &'static str,
    /// What is wrong with it; never its value when it may be secret.
    pub problem: String,
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> SettingError {
    SettingError { setting, problem: problem.into() }
}

/// `VAULT_<name>`, else `BAO_<name>`.
fn vault_env(name: &str) -> Option<String> {
    env_var(&format!("VAULT_{name}")).or_else(|| env_var(&format!("BAO_{name}")))
}

/// Reads a variable, treating an empty one as unset.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// Checks the settings and reads the files they name. The only place that reads
    /// the environment besides clap.
    pub fn into_config(self) -> Result<AppConfig, SettingError> {
        let addr = self.vault_addr.or_else(|| vault_env("ADDR")).unwrap_or_else(|| "https://127.0.0.1:8200".into());
        let vault_addresses: Vec<String> =
            addr.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
        for (i, a) in vault_addresses.iter().enumerate() {
            // Named by position only: a malformed address may hold credentials.
            if !(a.starts_with("https://") || a.starts_with("http://")) {
                return Err(invalid("VAULT_ADDR", format!("address {} is not an http(s):// URL", i + 1)));
            }
        }
        if vault_addresses.is_empty() {
            return Err(invalid("VAULT_ADDR", "no address given"));
        }
        let cacert = self.vault_cacert.or_else(|| vault_env("CACERT").map(PathBuf::from));
        let vault_ca_pem = match cacert {
            Some(path) => Some(
                std::fs::read(&path)
                    .map_err(|e| invalid("VAULT_CACERT", format!("cannot read {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let client_cert = self.vault_client_cert.or_else(|| vault_env("CLIENT_CERT").map(PathBuf::from));
        let client_key = self.vault_client_key.or_else(|| vault_env("CLIENT_KEY").map(PathBuf::from));
        let vault_client_identity = match (client_cert, client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read_trimmed(&cert, "VAULT_CLIENT_CERT")?;
                pem.push('\n');
                pem.push_str(&read_trimmed(&key, "VAULT_CLIENT_KEY")?);
                Some(SecretString::from(pem))
            }
            (Some(_), None) => return Err(invalid("VAULT_CLIENT_KEY", "required with VAULT_CLIENT_CERT")),
            (None, Some(_)) => return Err(invalid("VAULT_CLIENT_CERT", "required with VAULT_CLIENT_KEY")),
            (None, None) => None,
        };
        let vault_namespace = self.vault_namespace.or_else(|| vault_env("NAMESPACE"));
        let login = match (self.role_id_file, self.secret_id_file) {
            (Some(role), Some(secret)) => Login::AppRole {
                mount: self.approle_mount,
                role_id: read_trimmed(&role, "APP_ROLE_ID_FILE")?,
                secret_id: SecretString::from(read_trimmed(&secret, "APP_SECRET_ID_FILE")?),
                wrapped: self.secret_id_wrapped,
            },
            (Some(_), None) => return Err(invalid("APP_SECRET_ID_FILE", "required with APP_ROLE_ID_FILE")),
            (None, Some(_)) => return Err(invalid("APP_ROLE_ID_FILE", "required with APP_SECRET_ID_FILE")),
            (None, None) => match vault_env("TOKEN") {
                Some(token) => Login::Token(SecretString::from(token)),
                None => {
                    return Err(invalid(
                        "APP_ROLE_ID_FILE",
                        "no way to log in to vault: set APP_ROLE_ID_FILE and APP_SECRET_ID_FILE (AppRole), \
                         or VAULT_TOKEN for development",
                    ));
                }
            },
        };
        if self.refresh_interval < Duration::from_millis(100) {
            return Err(invalid("APP_REFRESH_INTERVAL", "must be at least 100ms"));
        }
        if self.max_stale < self.refresh_interval {
            return Err(invalid("APP_MAX_STALE", "must not be shorter than APP_REFRESH_INTERVAL"));
        }
        for (setting, value) in [
            ("APP_KV_MOUNT", &self.kv_mount),
            ("APP_DATABASE_SECRET", &self.database_secret),
            ("APP_API_SECRET", &self.api_secret),
        ] {
            if value.trim_matches('/').is_empty() {
                return Err(invalid(setting, "must not be empty"));
            }
        }
        Ok(AppConfig {
            vault_addresses,
            vault_ca_pem,
            vault_client_identity,
            vault_namespace,
            login,
            kv_mount: self.kv_mount,
            database_secret: self.database_secret,
            api_secret: self.api_secret,
            host: self.host,
            port: self.port,
            refresh_interval: self.refresh_interval,
            max_stale: self.max_stale,
        })
    }
}

fn read_trimmed(path: &Path, setting: &'static str) -> Result<String, SettingError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| invalid(setting, format!("cannot read {}: {e}", path.display())))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid(setting, format!("{} is empty", path.display())));
    }
    Ok(text.to_owned())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use a duration like 30s, 2m or 1h)"))
}

//! The transport: HTTPS calls to one of several Vault addresses, with failover.

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::{Error, Result};

/// TLS and network settings of a [`Transport`].
#[derive(Debug, Clone)]
pub(crate) struct TransportConfig {
    pub addresses: Vec<Url>,
    pub ca_pem: Option<Vec<u8>>,
    pub identity_pem: Option<SecretString>,
    pub namespace: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// Sends Vault API calls. An address that cannot serve (connection error, timeout,
/// sealed, standby, 429, 5xx) is skipped for the next one; the address that answered
/// last is tried first next time. Each call tries every address at most once: retrying
/// later is the caller's job, with its own backoff.
#[derive(Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    addresses: Vec<Url>,
    /// Index into `addresses` of the address that answered last.
    preferred: AtomicUsize,
    namespace: Option<String>,
}

/// One API call. `path` is relative to `/v1/`.
pub(crate) struct Call<'a> {
    pub operation: &'static str,
    pub method: Method,
    pub path: &'a str,
    pub token: Option<&'a SecretString>,
    pub body: Option<&'a serde_json::Value>,
    /// Whether the call may be sent again after it may have reached Vault. False for
    /// single-use operations (unwrapping): those move to the next address only when the
    /// connection could not be made.
    pub retry_safe: bool,
}

impl<'a> Call<'a> {
    pub fn get(operation: &'static str, path: &'a str, token: &'a SecretString) -> Self {
        Self { operation, method: Method::GET, path, token: Some(token), body: None, retry_safe: true }
    }

    pub fn post(
        operation: &'static str,
        path: &'a str,
        token: Option<&'a SecretString>,
        body: &'a serde_json::Value,
    ) -> Self {
        Self { operation, method: Method::POST, path, token, body: Some(body), retry_safe: true }
    }

    /// Marks the call as single-use (see `retry_safe`).
    pub fn single_use(mut self) -> Self {
        self.retry_safe = false;
        self
    }
}

impl Transport {
    pub fn new(config: TransportConfig) -> Result<Self> {
        if config.addresses.is_empty() {
            return Err(Error::Config("no vault address given".into()));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vault-secrets/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Config(format!("CA certificate is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Config("CA certificate file holds no certificate".into()));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &config.identity_pem {
            let identity = reqwest::Identity::from_pem(pem.expose_secret().as_bytes())
                .map_err(|_| Error::Config("client certificate or key is not valid PEM".into()))?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, addresses: config.addresses, preferred: AtomicUsize::new(0), namespace: config.namespace })
    }

    /// Sends `call` and decodes a 2xx JSON answer into `T`.
    pub async fn json<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T> {
        let path = call.path.to_owned();
        let body = self.send(call).await?;
        decode(&path, &body)
    }

    /// Sends `call`; returns the body of a 2xx answer (empty for 204).
    pub async fn send(&self, call: Call<'_>) -> Result<bytes::Bytes> {
        let start = Instant::now();
        let result = self.send_with_failover(&call).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::NotFound { .. }) => "not_found",
            Err(Error::PermissionDenied { .. }) => "denied",
            Err(e) if e.is_transient() => "unavailable",
            Err(_) => "error",
        };
        metrics::counter!("vault_requests_total", "operation" => call.operation, "outcome" => outcome).increment(1);
        metrics::histogram!("vault_request_duration_seconds", "operation" => call.operation)
            .record(start.elapsed().as_secs_f64());
        result
    }

    async fn send_with_failover(&self, call: &Call<'_>) -> Result<bytes::Bytes> {
        let first = self.preferred.load(Ordering::Relaxed);
        let n = self.addresses.len();
        let mut last_error = None;
        for i in 0..n {
            let index = (first + i) % n;
            match self.send_once(&self.addresses[index], call).await {
                Err(Failure { error, reached }) if error.is_transient() || matches!(error, Error::Tls { .. }) => {
                    if reached && !call.retry_safe {
                        return Err(error);
                    }
                    if n > 1 {
                        tracing::debug!(address = %self.addresses[index], %error, "vault address cannot serve, trying the next");
                    }
                    last_error = Some(error);
                }
                answer => {
                    if index != first {
                        self.preferred.store(index, Ordering::Relaxed);
                    }
                    return answer.map_err(|f| f.error);
                }
            }
        }
        Err(last_error.expect("at least one address"))
    }

    async fn send_once(&self, base: &Url, call: &Call<'_>) -> Result<bytes::Bytes, Failure> {
        let address = base.as_str().trim_end_matches('/');
        let url = format!("{address}/v1/{}", call.path);
        let mut request = self.http.request(call.method.clone(), &url);
        if let Some(token) = call.token {
            request = request.header("X-Vault-Token", token.expose_secret());
        }
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = call.body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure { error: transport_error(address, &e), reached: !e.is_connect() })?;
        let status = response.status();
        let body =
            response.bytes().await.map_err(|e| Failure { error: transport_error(address, &e), reached: true })?;
        if status.is_success() {
            return Ok(body);
        }
        let message = vault_messages(&body);
        let path = call.path.to_owned();
        // A sealed or standby node (503) and a rate limit (429) refuse before acting.
        let reached = !matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS);
        let error = match status {
            StatusCode::FORBIDDEN => Error::PermissionDenied { path },
            StatusCode::NOT_FOUND => Error::NotFound { path },
            s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() || s.is_redirection() => {
                Error::Unavailable { address: address.to_owned(), status: s.as_u16(), message }
            }
            s => Error::Rejected { path, status: s.as_u16(), message },
        };
        Err(Failure { error, reached })
    }
}

/// A failed attempt at one address.
struct Failure {
    error: Error,
    /// Whether the request may have reached Vault (false: the connection failed).
    reached: bool,
}

/// Decodes a JSON answer, keeping only the location of a mismatch: serde's own message
/// may quote the offending value, which may be a secret.
pub(crate) fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let category = match e.inner().classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        };
        Error::Decode { path: path.to_owned(), location: e.path().to_string(), category }
    })
}

/// Vault's `{"errors": [...]}` joined; these never hold secret values.
fn vault_messages(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e.errors.join("; "),
        _ => "no error message".into(),
    }
}

fn transport_error(address: &str, e: &reqwest::Error) -> Error {
    let mut detail = String::new();
    let mut source: Option<&dyn std::error::Error> = e.source();
    while let Some(s) = source {
        if !detail.is_empty() {
            detail.push_str(": ");
        }
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if detail.is_empty() {
        detail = if e.is_timeout() { "timed out".into() } else { e.to_string() };
    }
    let tls = ["certificate", "Certificate", "tls", "TLS", "handshake"].iter().any(|w| detail.contains(w));
    if tls {
        Error::Tls { address: address.to_owned(), detail }
    } else {
        Error::Unreachable { address: address.to_owned(), detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Db {
        port: u16,
        password: SecretString,
    }

    #[test]
    fn decode_errors_name_the_field_but_never_the_value() {
        let err = decode::<Db>("secret/data/app", br#"{"port": 1, "password": 424242}"#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("password"), "{text}");
        assert!(!text.contains("424242"), "{text}");
    }

    #[test]
    fn vault_messages_are_joined() {
        assert_eq!(vault_messages(br#"{"errors":["a","b"]}"#), "a; b");
        assert_eq!(vault_messages(b"<html>"), "no error message");
    }
}

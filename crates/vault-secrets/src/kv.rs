//! KV version 2 reads: the current version from metadata, the data of a version.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::client::{Call, Transport};
use crate::error::{Error, Result};

/// A KV v2 secret's location: the engine's mount and the path inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KvPath {
    mount: String,
    path: String,
}

impl KvPath {
    /// `mount` is the engine's mount (like `secret`), `path` the secret's path inside it
    /// (like `app/database`).
    pub fn new(mount: &str, path: &str) -> Self {
        Self { mount: mount.trim_matches('/').to_owned(), path: path.trim_matches('/').to_owned() }
    }

    fn data(&self) -> String {
        format!("{}/data/{}", self.mount, self.path)
    }

    fn metadata(&self) -> String {
        format!("{}/metadata/{}", self.mount, self.path)
    }
}

impl std::fmt::Display for KvPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.mount, self.path)
    }
}

/// The live version of a secret, from its metadata: `Err(NotFound)` when the secret does
/// not exist or its current version is deleted or destroyed.
pub(crate) async fn current_version(transport: &Transport, token: &SecretString, at: &KvPath) -> Result<u64> {
    #[derive(Deserialize)]
    struct Answer {
        data: Metadata,
    }
    #[derive(Deserialize)]
    struct Metadata {
        current_version: u64,
        #[serde(default)]
        versions: HashMap<String, VersionMetadata>,
    }
    #[derive(Deserialize)]
    struct VersionMetadata {
        #[serde(default)]
        deletion_time: String,
        #[serde(default)]
        destroyed: bool,
    }
    let path = at.metadata();
    let answer: Answer = transport.json(Call::get("kv_metadata", &path, token)).await?;
    let meta = answer.data;
    let live = meta
        .versions
        .get(&meta.current_version.to_string())
        .is_some_and(|v| v.deletion_time.is_empty() && !v.destroyed);
    if meta.current_version == 0 || !live {
        return Err(Error::NotFound { path });
    }
    Ok(meta.current_version)
}

/// A secret's value as read.
pub(crate) struct Read<T> {
    pub value: T,
    pub version: u64,
    /// The lease Vault attached, if any (KV v2 normally attaches none).
    pub lease: Option<Duration>,
}

/// Reads the current version of a secret into `T`.
pub(crate) async fn read<T: DeserializeOwned>(
    transport: &Transport,
    token: &SecretString,
    at: &KvPath,
) -> Result<Read<T>> {
    #[derive(Deserialize)]
    #[serde(bound = "T: DeserializeOwned")]
    struct Answer<T> {
        #[serde(default)]
        lease_duration: u64,
        data: Data<T>,
    }
    #[derive(Deserialize)]
    #[serde(bound = "T: DeserializeOwned")]
    struct Data<T> {
        data: T,
        metadata: VersionMetadata,
    }
    #[derive(Deserialize)]
    struct VersionMetadata {
        version: u64,
    }
    let path = at.data();
    let answer: Answer<T> = transport.json(Call::get("kv_read", &path, token)).await?;
    let lease = (answer.lease_duration > 0).then(|| Duration::from_secs(answer.lease_duration));
    Ok(Read { value: answer.data.data, version: answer.data.metadata.version, lease })
}

/// The capabilities the token lacks among those a watch needs: `read` on the data and
/// the metadata path. Each entry reads like `read on secret/data/app/x`.
pub(crate) async fn missing_capabilities(
    transport: &Transport,
    token: &SecretString,
    at: &KvPath,
) -> Result<Vec<String>> {
    let paths = [at.data(), at.metadata()];
    let body = serde_json::json!({ "paths": paths });
    let call = Call::post("capabilities", "sys/capabilities-self", Some(token), &body);
    let answer: HashMap<String, serde_json::Value> = transport.json(call).await?;
    let missing = paths
        .into_iter()
        .filter(|path| {
            let caps = answer.get(path).and_then(|v| v.as_array()).cloned().unwrap_or_default();
            !caps.iter().any(|c| c == "read" || c == "root")
        })
        .map(|path| format!("read on {path}"))
        .collect();
    Ok(missing)
}

//! `GET /health`: liveness. Never looks at Vault.

use axum::Json;
use serde_json::{Value, json};

/// The process is up and serving.
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "healthy", "service": "devsecops-app", "version": env!("CARGO_PKG_VERSION") }))
}

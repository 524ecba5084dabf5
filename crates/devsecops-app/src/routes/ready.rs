//! `GET /ready`: readiness. Ready when every required secret is held and fresh enough.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use vault_secrets::SecretStatus;

use crate::state::AppState;

/// 200 when every secret is served from memory within its staleness bound, else 503.
/// `checks` names each secret and, when not ready, why; `vault` describes the session.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let secrets = [state.database.status(), state.api.status()];
    let all_ready = secrets.iter().all(|s| s.ready);
    let checks: Map<String, Value> = secrets.iter().map(|s| (format!("secret:{}", s.path), check(s))).collect();
    let session = state.vault.status();
    let vault = json!({
        "logged_in": session.logged_in,
        "token_ttl_seconds": session.expires_at.map(|at| at.saturating_duration_since(tokio::time::Instant::now()).as_secs()),
        "last_error": session.last_error,
    });
    let status = if all_ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "status": if all_ready { "ready" } else { "not_ready" }, "checks": checks, "vault": vault });
    (status, Json(body))
}

fn check(s: &SecretStatus) -> Value {
    let mut v = json!({
        "ready": s.ready,
        "version": s.version,
        "age_seconds": s.age.map(|a| a.as_secs()),
    });
    if let Some(problem) = &s.problem {
        v["problem"] = json!(problem);
    }
    if !s.missing_capabilities.is_empty() {
        v["missing_capabilities"] = json!(s.missing_capabilities);
    }
    v
}

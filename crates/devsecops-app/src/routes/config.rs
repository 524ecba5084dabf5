//! `GET /api/config`: whether the external API is configured, never the key.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// Whether an endpoint and a key are configured, and the endpoint.
pub async fn api_config(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let current = state.api.current()?;
    let api = current.value();
    Ok(Json(json!({
        "api_configured": api.is_configured(),
        "endpoint": api.endpoint,
        "version": current.version(),
    })))
}

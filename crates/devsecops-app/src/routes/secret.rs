//! `GET /api/secret`: the database connection info, never the password.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// Host, port and user name of the database, as stored in Vault, with the version read.
pub async fn secret(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let current = state.database.current()?;
    let db = current.value();
    Ok(Json(json!({
        "database": { "host": db.host, "port": db.port, "username": db.username },
        "source": "vault",
        "version": current.version(),
    })))
}

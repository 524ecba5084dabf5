//! An axum service that serves its database settings from Vault without awaiting Vault.
//! Run against `make start`: `source .stack/env`, then set ROLE_ID and WRAPPED_SECRET_ID.
use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use secrecy::{ExposeSecret, SecretString};
use vault_secrets::{AppRole, Vault, Watched};

#[derive(serde::Deserialize)]
struct Database {
    host: String,
    username: String,
    password: SecretString,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let vault = Vault::builder()
        .addresses(env("VAULT_ADDR")?.split(','))
        .ca_cert_pem(std::fs::read(env("VAULT_CACERT")?)?)
        .auth(AppRole::wrapped(env("ROLE_ID")?, SecretString::from(env("WRAPPED_SECRET_ID")?)))
        .build()?; // logs in and renews in the background
    let db: Watched<Database> = vault.kv("secret", "app/database").watch();
    let app = Router::new().route("/db", get(show)).with_state(db);
    axum::serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?, app).await?;
    Ok(())
}

async fn show(State(db): State<Watched<Database>>) -> Result<Json<serde_json::Value>, StatusCode> {
    let current = db.current().map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?; // memory only
    let d = current.value();
    let has_password = !d.password.expose_secret().is_empty();
    Ok(Json(serde_json::json!({ "host": d.host, "user": d.username, "has_password": has_password })))
}

//! Vault unreachable when the app starts: it serves /health, is not ready, then recovers.

use std::time::Duration;

use crate::helpers::{Fixture, Relay, TestApp, poll};

#[tokio::test]
async fn the_app_starts_without_vault_and_serves_once_vault_is_up() {
    let fixture = Fixture::new().await;
    let relay = Relay::closed(&fixture.vault.addr);
    let mut config = fixture.config().await;
    config.vault_addresses = vec![relay.addr.clone()];
    let app = TestApp::spawn(fixture, config).await;

    let (status, body) = app.get("/health").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = app.get("/api/secret").await;
    assert_eq!((status, body["error"].as_str()), (503, Some("vault_unavailable")), "{body}");

    relay.open().await;
    // Login backoff is capped at 30 s; in practice the next attempt comes within seconds.
    app.wait_ready(Duration::from_secs(45)).await;
    let body = poll(Duration::from_secs(5), || async {
        let (status, body) = app.get("/api/secret").await;
        (status == 200).then_some(body.clone()).ok_or(body)
    })
    .await
    .expect("secrets served after Vault came up");
    assert_eq!(body["database"]["host"], "db.test.internal");
    app.assert_no_secret_logged();
}

//! Vault unreachable when the app starts: it serves /health, is not ready, then recovers.

use std::time::Duration;

use crate::helpers::{Fixture, Relay, poll};

#[tokio::test]
async fn the_app_starts_without_vault_and_serves_once_vault_is_up() {
    let fixture = Fixture::new().await;
    let relay = Relay::closed(&fixture.vault.addr).await;
    let app = fixture.spawn_app_with(|c| c.vault_addresses = vec![relay.addr.clone()]).await;

    let (status, body) = app.get("/health").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = app.get("/api/secret").await;
    assert_eq!((status, body["error"].as_str()), (503, Some("vault_unavailable")), "{body}");

    relay.open();
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

#[tokio::test]
async fn cached_values_are_served_through_an_outage_until_max_stale_then_503() {
    let fixture = Fixture::new().await;
    let relay = Relay::closed(&fixture.vault.addr).await;
    relay.open();
    let app = fixture
        .spawn_app_with(|c| {
            c.vault_addresses = vec![relay.addr.clone()];
            c.refresh_interval = Duration::from_millis(300);
            c.max_stale = Duration::from_secs(5);
        })
        .await;
    app.wait_ready(Duration::from_secs(20)).await;

    relay.close();
    let cut = tokio::time::Instant::now();
    // Well inside the bound (the last confirmation is at most one interval old).
    while cut.elapsed() < Duration::from_secs(2) {
        let (status, body) = app.get("/api/secret").await;
        assert_eq!(status, 200, "failed {:?} into the outage: {body}", cut.elapsed());
    }
    let body = poll(Duration::from_secs(15), || async {
        let (status, body) = app.get("/api/secret").await;
        (status == 503).then_some(body.clone()).ok_or(body)
    })
    .await
    .expect("stale values stop being served");
    let stale_after = cut.elapsed();
    assert_eq!(body["error"], "vault_unavailable");
    let (status, ready) = app.get("/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(app.get("/health").await.0, 200);

    relay.open();
    let back = tokio::time::Instant::now();
    app.wait_ready(Duration::from_secs(20)).await;
    eprintln!(
        "max_stale 5s: served until {stale_after:?} after the cut, ready again {:?} after Vault returned",
        back.elapsed()
    );
    let warnings = crate::helpers::captured_logs()
        .lines()
        .filter(|l| l.contains("cannot refresh secret") && l.contains(&app.fixture.mount))
        .count();
    // One per change of error text: a cut in the middle of a request reads differently
    // from the refusals after it, so up to three per secret.
    assert!(warnings <= 6, "{warnings} warnings for one outage of two secrets: one per change expected");
    app.assert_no_secret_logged();
}

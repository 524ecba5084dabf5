//! The HTTP contract: health, readiness, the two resources, and the error cases.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Fixture, poll};

const READY: Duration = Duration::from_secs(20);

#[tokio::test]
async fn api_secret_serves_database_info_from_vault_but_never_the_password() {
    let app = Fixture::new().await.spawn_app().await;
    app.wait_ready(READY).await;
    let (status, body) = app.get("/api/secret").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], json!({ "host": "db.test.internal", "port": 5432, "username": "app_user" }));
    let raw = body.to_string();
    assert!(!raw.contains(&app.fixture.password), "the password is in the response");
    assert!(!raw.contains("password"), "a password field is in the response: {raw}");
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn api_config_says_whether_the_api_is_configured_but_never_the_key() {
    let app = Fixture::new().await.spawn_app().await;
    app.wait_ready(READY).await;
    let (status, body) = app.get("/api/config").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["api_configured"], true);
    assert_eq!(body["endpoint"], "https://api.test.internal");
    assert!(!body.to_string().contains(&app.fixture.api_key), "the API key is in the response");
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn health_and_ready_report_their_state() {
    let app = Fixture::new().await.spawn_app().await;
    let (status, body) = app.get("/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("healthy")));
    app.wait_ready(READY).await;
    let (_, body) = app.get("/ready").await;
    let check = &body["checks"][format!("secret:{}/app/database", app.fixture.mount)];
    assert_eq!(check["ready"], true, "{body}");
    assert_eq!(check["version"], 1, "{body}");
    assert_eq!(body["vault"]["logged_in"], true, "{body}");
}

#[tokio::test]
async fn unknown_route_and_wrong_method_get_json_errors() {
    let app = Fixture::new().await.spawn_app().await;
    let (status, body) = app.get("/no/such/route").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = app.request(Method::POST, "/api/secret").await;
    assert_eq!((status, body["error"].as_str()), (405, Some("method_not_allowed")), "{body}");
    let (status, body) = app.request(Method::DELETE, "/health").await;
    assert_eq!((status, body["error"].as_str()), (405, Some("method_not_allowed")), "{body}");
    let big = app.http.post(format!("{}/api/secret", app.base)).body(vec![b'x'; 100 * 1024]).send().await.unwrap();
    assert_eq!(big.status(), 413);
    assert_eq!(big.headers()["x-content-type-options"], "nosniff", "the middleware's own errors carry the headers");
    let body: serde_json::Value = big.json().await.expect("413 body is JSON");
    assert_eq!(body["error"], "payload_too_large", "{body}");
}

#[tokio::test]
async fn a_secret_missing_in_vault_is_404_secret_not_found() {
    let fixture = Fixture::empty().await;
    fixture.put("app/database", json!({ "host": "h", "port": 1, "username": "u", "password": fixture.password })).await;
    let app = fixture.spawn_app().await;
    let answer = poll(READY, || async {
        let (status, body) = app.get("/api/config").await;
        (status == 404).then_some(body.clone()).ok_or((status, body))
    })
    .await
    .expect("/api/config becomes 404");
    assert_eq!(answer["error"], "secret_not_found", "{answer}");
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, 503, "a missing required secret is not ready: {body}");
    let (status, _) = app.get("/api/secret").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_changed_value_is_served_within_the_refresh_interval_without_restart() {
    let app = Fixture::new().await.spawn_app_with(|c| c.refresh_interval = Duration::from_millis(500)).await;
    app.wait_ready(READY).await;
    // The deadline is ten refresh intervals: a value read only at start would never come.
    app.rotate_host("rotated.test.internal", Duration::from_secs(5)).await;
    let (_, body) = app.get("/api/secret").await;
    assert_eq!((body["database"]["port"].as_u64(), body["version"].as_u64()), (Some(6432), Some(2)), "{body}");
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn a_secret_with_the_wrong_shape_is_reported_without_its_values() {
    let fixture = Fixture::empty().await;
    // The password is a number and the port is not: decoding fails.
    fixture
        .put("app/database", json!({ "host": "h", "port": "not-a-port", "username": "u", "password": 987_654_321 }))
        .await;
    let app = fixture.spawn_app().await;
    let body = poll(READY, || async {
        let (status, body) = app.get("/api/secret").await;
        (status == 500).then_some(body.clone()).ok_or(body)
    })
    .await
    .expect("/api/secret reports the invalid secret");
    assert_eq!(body["error"], "secret_invalid");
    let (_, ready) = app.get("/ready").await;
    assert!(ready.to_string().contains("mismatch at"), "{ready}");
    let logs = crate::helpers::captured_logs();
    assert!(!logs.contains("987654321") && !logs.contains("not-a-port"), "a secret value reached the log");
}

#[tokio::test]
async fn a_cached_secret_deleted_in_vault_becomes_404_then_returns() {
    let app = Fixture::new().await.spawn_app_with(|c| c.refresh_interval = Duration::from_millis(300)).await;
    app.wait_ready(READY).await;
    let f = &app.fixture;
    // Soft-delete the current version of app/api: its metadata stays, its data is gone.
    f.vault.admin_ok(Method::DELETE, &format!("{}/data/app/api", f.mount), None).await;
    let body = poll(Duration::from_secs(5), || async {
        let (status, body) = app.get("/api/config").await;
        (status == 404).then_some(body.clone()).ok_or(body)
    })
    .await
    .expect("the deleted secret is no longer served");
    assert_eq!(body["error"], "secret_not_found");
    assert_eq!(app.get("/ready").await.0, 503);
    f.put("app/api", json!({ "endpoint": "https://api.test.internal", "api_key": f.api_key })).await;
    app.wait_ready(Duration::from_secs(5)).await;
    let (status, body) = app.get("/api/config").await;
    assert_eq!((status, body["version"].as_u64()), (200, Some(2)), "{body}");
}

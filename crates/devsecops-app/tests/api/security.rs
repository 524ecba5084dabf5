//! Authentication, least privilege, TLS and secrets in logs.

use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::{Fixture, env, poll};

#[tokio::test]
async fn the_app_logs_in_with_approle_and_reads_with_its_own_policy_never_root() {
    let app = Fixture::new().await.spawn_app().await;
    app.wait_ready(Duration::from_secs(20)).await;
    let f = &app.fixture;
    // The fixture's own writes (operator token) are updates; the app only reads.
    let reads: Vec<Value> = f
        .vault
        .audit_responses(&format!("{}/data/app/", f.mount))
        .into_iter()
        .filter(|e| e["request"]["operation"] == "read")
        .collect();
    assert!(!reads.is_empty(), "no read of the app's secrets in the audit log");
    for entry in &reads {
        let policies: Vec<&str> =
            entry["auth"]["policies"].as_array().expect("policies").iter().filter_map(Value::as_str).collect();
        assert!(policies.contains(&f.policy.as_str()), "read without the app's policy: {policies:?}");
        assert!(!policies.contains(&"root"), "read with a root token");
    }
    let logins = f.vault.audit_responses("auth/approle/login");
    assert!(
        logins.iter().any(|e| e["auth"]["policies"].as_array().is_some_and(|p| p.contains(&json!(f.policy)))),
        "no AppRole login with the app's policy in the audit log"
    );
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn the_app_policy_denies_everything_else() {
    let f = Fixture::new().await;
    f.put("other", json!({ "x": "y" })).await;
    let token = f.app_token().await;
    let v = &f.vault;
    let (status, _) = v.call(&token, Method::GET, &format!("{}/data/app/database", f.mount), None).await;
    assert_eq!(status, 200, "the app's own secret must be readable");
    let (status, _) = v.call(&token, Method::GET, &format!("{}/data/other", f.mount), None).await;
    assert_eq!(status, 403, "reading outside app/ must be denied");
    let body = json!({ "data": { "host": "evil" } });
    let (status, _) = v.call(&token, Method::POST, &format!("{}/data/app/database", f.mount), Some(body)).await;
    assert_eq!(status, 403, "writing the app's secret must be denied");
    let (status, _) = v.call(&token, Method::GET, "sys/policies/acl?list=true", None).await;
    assert_eq!(status, 403, "listing policies must be denied");
    let (status, _) = v.call(&token, Method::GET, "sys/policies/acl/default", None).await;
    assert_eq!(status, 403, "reading a policy must be denied");
}

#[tokio::test]
async fn a_wrong_ca_certificate_gives_a_clear_tls_error_and_not_ready() {
    let fixture = Fixture::new().await;
    let wrong_ca = std::fs::read(&fixture.vault.wrong_ca_file).expect("wrong CA");
    let app = fixture.spawn_app_with(|c| c.vault_ca_pem = Some(wrong_ca)).await;
    let error = app.wait_session_error("tls error").await;
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(app.get("/ready").await.0, 503);
    let (status, body) = app.get("/api/secret").await;
    assert_eq!((status, body["error"].as_str()), (503, Some("vault_unavailable")));
    assert!(crate::helpers::captured_logs().contains("tls error"), "the log does not name the TLS failure");
}

#[tokio::test]
async fn the_documented_sample_values_never_reach_the_log() {
    // The values `make start` writes into its throw-away Vault.
    let mut fixture = Fixture::empty().await;
    fixture.password = "secure_password_123".into();
    fixture.api_key = "sample_api_key_123".into();
    let f = &fixture;
    f.put(
        "app/database",
        json!({ "host": "postgresql.example.com", "port": "5432", "username": "app_user", "password": f.password }),
    )
    .await;
    f.put("app/api", json!({ "endpoint": "https://api.example.com", "api_key": f.api_key })).await;
    let app = fixture.spawn_app_with(|c| c.refresh_interval = Duration::from_millis(200)).await;
    app.wait_ready(Duration::from_secs(20)).await;
    for path in ["/api/secret", "/api/config", "/ready", "/health"] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.to_string().contains("secure_password_123") && !body.to_string().contains("sample_api_key_123"));
    }
    // A few refresh rounds, one of them with a new version.
    let f = &app.fixture;
    f.put("app/api", json!({ "endpoint": "https://api.example.com", "api_key": f.api_key, "note": "v2" })).await;
    poll(Duration::from_secs(5), || async {
        let (_, body) = app.get("/api/config").await;
        (body["version"] == 2).then_some(()).ok_or(body)
    })
    .await
    .expect("version 2 is served");
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn a_missing_capability_is_logged_once_and_shown_in_ready() {
    let fixture = Fixture::new().await;
    // The seed's policy: data only, no metadata, so versions cannot be checked cheaply.
    fixture
        .set_policy(
            r#"path "MOUNT/data/app/*" { capabilities = ["read", "list"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "sys/capabilities-self" { capabilities = ["update"] }"#,
        )
        .await;
    let app = fixture.spawn_app().await;
    // Reading the data still works: the library falls back from metadata to data reads.
    app.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(app.get("/api/secret").await.0, 200);
    let (_, ready) = app.get("/ready").await;
    let metadata = format!("read on {}/metadata/app/database", app.fixture.mount);
    let check = &ready["checks"][format!("secret:{}/app/database", app.fixture.mount)];
    assert_eq!(check["missing_capabilities"], json!([metadata]), "{ready}");
    let logged = crate::helpers::captured_logs()
        .lines()
        .filter(|l| l.contains("lacks a capability") && l.contains(&metadata))
        .count();
    assert_eq!(logged, 1, "the missing capability must be logged exactly once");
}

#[tokio::test]
async fn a_wrapped_secret_id_already_used_is_a_clear_error() {
    let fixture = Fixture::new().await;
    let mut config = fixture.config().await;
    // Someone unwrapped it before the app: the app must say so, not retry blindly.
    let devsecops_app::configuration::Login::AppRole { secret_id, .. } = &config.login else { unreachable!() };
    let (status, _) = fixture.vault.call(secret_id.expose_secret(), Method::POST, "sys/wrapping/unwrap", None).await;
    assert_eq!(status, 200);
    config.refresh_interval = Duration::from_millis(500);
    let app = crate::helpers::TestApp::spawn(fixture, config).await;
    app.wait_session_error("already used").await;
    assert_eq!(app.get("/ready").await.0, 503);
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_vault_requires_one() {
    let mtls = env("TEST_BAO_MTLS_ADDR");
    let pem = |name: &str| std::fs::read_to_string(env(name)).expect("read the client certificate");
    let identity = SecretString::from(format!("{}\n{}", pem("TEST_CLIENT_CERT"), pem("TEST_CLIENT_KEY")));
    let with = Fixture::new()
        .await
        .spawn_app_with(|c| {
            c.vault_addresses = vec![mtls.clone()];
            c.vault_client_identity = Some(identity);
        })
        .await;
    let without = Fixture::new().await.spawn_app_with(|c| c.vault_addresses = vec![mtls.clone()]).await;
    with.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(with.get("/api/secret").await.0, 200);
    let error = without.wait_session_error("").await;
    eprintln!("without a client certificate: {error}");
    assert_eq!(without.get("/ready").await.0, 503);
}

//! OpenBao goes away for 20 s while the app is under load: stopped (process gone) or
//! sealed (process up, answering 503). The app must keep answering from its cache, then
//! pick up a change made after OpenBao is back, without a restart.

use std::time::Duration;

use tokio::time::Instant;

use crate::helpers::{Fixture, Load, captured_logs, poll};
use crate::own_vault::OwnVault;

/// How long OpenBao stays unavailable (fixed by design: it is the scenario).
const OUTAGE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug)]
enum Outage {
    /// SIGTERM to the server, start it again after the outage, unseal.
    Stopped,
    /// `sys/seal`, then `sys/unseal` after the outage.
    Sealed,
}

async fn survive(outage: Outage) {
    let mut bao = OwnVault::ready().await;
    let fixture = Fixture::new_on(bao.test_vault()).await;
    let app = fixture.spawn_app_with(|c| c.refresh_interval = Duration::from_secs(1)).await;
    app.wait_ready(Duration::from_secs(30)).await;
    let secret_load = Load::start(&app.base, "/api/secret", 2);
    let health_load = Load::start(&app.base, "/health", 1);

    match outage {
        Outage::Stopped => bao.stop().await,
        Outage::Sealed => bao.seal().await,
    }
    let down = Instant::now();
    // The outage must be real for the app: /ready names a failed refresh (while the
    // cached value is still served) within a few refresh intervals.
    poll(Duration::from_secs(10), || async {
        let (_, body) = app.get("/ready").await;
        let problem = body["checks"].as_object().is_some_and(|c| c.values().any(|v| v.get("problem").is_some()));
        problem.then_some(()).ok_or(body)
    })
    .await
    .unwrap_or_else(|body| panic!("{outage:?}: /ready reports no refresh problem: {body}\n{}", app_warnings()));
    let noticed = down.elapsed();
    tokio::time::sleep(OUTAGE.saturating_sub(noticed)).await;
    match outage {
        Outage::Stopped => bao.restart().await,
        Outage::Sealed => bao.unseal().await,
    }
    let recovered_in = app.rotate_host("after-the-outage.test.internal", Duration::from_secs(30)).await;

    let secret = secret_load.stop().await;
    let health = health_load.stop().await;
    eprintln!(
        "chaos: {outage:?} {}s: sent={} failed={} recovered_in={:.1}s (health: sent={} failed={}; outage seen on /ready after {:.1}s)",
        OUTAGE.as_secs(),
        secret.sent,
        secret.failed,
        recovered_in.as_secs_f64(),
        health.sent,
        health.failed,
        noticed.as_secs_f64(),
    );
    assert!(secret.sent > 0 && health.sent > 0, "the load sent nothing");
    assert_eq!(secret.failed, 0, "{outage:?}: GET /api/secret failed during the outage\n{}", app_warnings());
    assert_eq!(health.failed, 0, "{outage:?}: GET /health failed during the outage");
    app.assert_no_secret_logged();
}

/// The last warnings and errors the app logged, for failure messages.
fn app_warnings() -> String {
    let logs = captured_logs();
    let lines: Vec<&str> =
        logs.lines().filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\"")).collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vault_stopped_for_20s_under_load() {
    survive(Outage::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vault_sealed_for_20s_under_load() {
    survive(Outage::Sealed).await;
}

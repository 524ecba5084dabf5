//! The test harness: a real OpenBao (started by `make test`), one KV mount, policy and
//! AppRole role per test, the real application on port 0, and the app's log captured.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use devsecops_app::Application;
use devsecops_app::configuration::{AppConfig, Login};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The OpenBao server the harness started, from the variables `make test` exports.
pub struct TestVault {
    pub addr: String,
    pub ca_file: PathBuf,
    pub wrong_ca_file: PathBuf,
    pub audit_log: PathBuf,
    token: String,
    http: reqwest::Client,
}

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests with `make test`"))
}

impl TestVault {
    /// The shared server of the run.
    pub fn from_env() -> Self {
        Self::new(
            env("TEST_BAO_ADDR"),
            PathBuf::from(env("TEST_BAO_CACERT")),
            env("TEST_BAO_TOKEN"),
            PathBuf::from(env("TEST_BAO_AUDIT_LOG")),
        )
    }

    /// Any server: its address, CA file, operator token and audit log.
    pub fn new(addr: String, ca_file: PathBuf, token: String, audit_log: PathBuf) -> Self {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_file).expect("read the CA")).expect("CA is PEM");
        let http = reqwest::Client::builder().add_root_certificate(ca).build().expect("http client");
        Self { addr, ca_file, wrong_ca_file: PathBuf::from(env("TEST_WRONG_CACERT")), audit_log, token, http }
    }

    /// A call with the operator token; returns the status and the JSON body (Null if none).
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(&self.token, method, path, body).await
    }

    /// A call with any token.
    pub async fn call(&self, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}/v1/{path}", self.addr)).header("X-Vault-Token", token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("vault answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn admin_ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, json) = self.admin(method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {json}");
        json
    }

    /// Audit log entries (responses only) whose request path starts with `prefix`.
    pub fn audit_responses(&self, prefix: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "response")
            .filter(|e| e["request"]["path"].as_str().is_some_and(|p| p.starts_with(prefix)))
            .collect()
    }
}

/// Secrets, policy and AppRole role of one test, in a KV mount of its own.
pub struct Fixture {
    pub vault: TestVault,
    pub mount: String,
    pub policy: String,
    pub role: String,
    pub password: String,
    pub api_key: String,
}

pub fn random_id() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

impl Fixture {
    /// A fresh mount with `app/database` and `app/api`, the project's policy rewritten
    /// for that mount, and an AppRole role bound to it.
    pub async fn new() -> Self {
        Self::new_on(TestVault::from_env()).await
    }

    /// [`Fixture::new`] on a given server.
    pub async fn new_on(vault: TestVault) -> Self {
        let f = Self::empty_on(vault).await;
        f.put(
            "app/database",
            json!({ "host": "db.test.internal", "port": "5432", "username": "app_user", "password": f.password }),
        )
        .await;
        f.put("app/api", json!({ "endpoint": "https://api.test.internal", "api_key": f.api_key })).await;
        f
    }

    /// The mount, policy and role, with no secret written yet.
    pub async fn empty() -> Self {
        Self::empty_on(TestVault::from_env()).await
    }

    /// [`Fixture::empty`] on a given server (which must have AppRole at `approle/`).
    pub async fn empty_on(vault: TestVault) -> Self {
        use reqwest::Method;
        let id = random_id();
        let mount = format!("kv-{id}");
        let policy = format!("devsecops-app-{id}");
        let role = format!("role-{id}");
        vault
            .admin_ok(
                Method::POST,
                &format!("sys/mounts/{mount}"),
                Some(json!({ "type": "kv", "options": { "version": "2" } })),
            )
            .await;
        let hcl = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/vault/policies/devsecops-app.hcl"),
        )
        .expect("read the app's policy");
        let hcl = hcl.replace("\"secret/", &format!("\"{mount}/"));
        vault.admin_ok(Method::PUT, &format!("sys/policies/acl/{policy}"), Some(json!({ "policy": hcl }))).await;
        vault
            .admin_ok(
                Method::POST,
                &format!("auth/approle/role/{role}"),
                Some(json!({
                    "token_policies": [policy],
                    "token_no_default_policy": true,
                    "token_ttl": "1h",
                    "token_max_ttl": "24h",
                    "secret_id_num_uses": 0,
                    "secret_id_ttl": 0,
                })),
            )
            .await;
        Self {
            vault,
            password: format!("pw-{}", random_id()),
            api_key: format!("key-{}", random_id()),
            mount,
            policy,
            role,
        }
    }

    /// Replaces the app's policy; `MOUNT` in `hcl` stands for this fixture's KV mount.
    pub async fn set_policy(&self, hcl: &str) {
        let hcl = hcl.replace("MOUNT", &self.mount);
        let path = format!("sys/policies/acl/{}", self.policy);
        self.vault.admin_ok(reqwest::Method::PUT, &path, Some(json!({ "policy": hcl }))).await;
    }

    pub async fn put(&self, path: &str, data: Value) {
        self.vault
            .admin_ok(reqwest::Method::POST, &format!("{}/data/{path}", self.mount), Some(json!({ "data": data })))
            .await;
    }

    pub async fn role_id(&self) -> String {
        let j =
            self.vault.admin_ok(reqwest::Method::GET, &format!("auth/approle/role/{}/role-id", self.role), None).await;
        j["data"]["role_id"].as_str().expect("role_id").to_owned()
    }

    /// A secret_id delivered the way `make start` delivers it: response-wrapped.
    pub async fn wrapped_secret_id(&self) -> String {
        let resp = self
            .vault
            .http
            .post(format!("{}/v1/auth/approle/role/{}/secret-id", self.vault.addr, self.role))
            .header("X-Vault-Token", &self.vault.token)
            .header("X-Vault-Wrap-TTL", "300s")
            .send()
            .await
            .expect("vault answers");
        let j: Value = resp.json().await.expect("json");
        j["wrap_info"]["token"].as_str().expect("wrapping token").to_owned()
    }

    /// A token of the app's role, obtained directly (for least-privilege checks).
    pub async fn app_token(&self) -> String {
        let j = self
            .vault
            .admin_ok(reqwest::Method::POST, &format!("auth/approle/role/{}/secret-id", self.role), None)
            .await;
        let secret_id = j["data"]["secret_id"].as_str().expect("secret_id").to_owned();
        let (status, j) = self
            .vault
            .call(
                "",
                reqwest::Method::POST,
                "auth/approle/login",
                Some(json!({ "role_id": self.role_id().await, "secret_id": secret_id })),
            )
            .await;
        assert_eq!(status, 200, "{j}");
        j["auth"]["client_token"].as_str().expect("token").to_owned()
    }

    /// The app's configuration against this fixture: AppRole with a wrapped secret_id.
    pub async fn config(&self) -> AppConfig {
        let role_id = self.role_id().await;
        let wrapped = self.wrapped_secret_id().await;
        AppConfig {
            vault_addresses: vec![self.vault.addr.clone()],
            vault_ca_pem: Some(std::fs::read(&self.vault.ca_file).expect("CA")),
            vault_client_identity: None,
            vault_namespace: None,
            login: Login::AppRole {
                mount: "approle".into(),
                role_id,
                secret_id: SecretString::from(wrapped),
                wrapped: true,
            },
            kv_mount: self.mount.clone(),
            database_secret: "app/database".into(),
            api_secret: "app/api".into(),
            host: "127.0.0.1".parse().unwrap(),
            port: 0,
            refresh_interval: Duration::from_secs(30),
            max_stale: Duration::from_secs(600),
        }
    }

    pub async fn spawn_app(self) -> TestApp {
        self.spawn_app_with(|_| {}).await
    }

    /// Starts the app with `tweak` applied to its configuration.
    pub async fn spawn_app_with(self, tweak: impl FnOnce(&mut AppConfig)) -> TestApp {
        let mut config = self.config().await;
        tweak(&mut config);
        TestApp::spawn(self, config).await
    }
}

/// The application, serving on a free port, and the fixture it reads.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub fixture: Fixture,
    /// The wrapping token the app was given: it must not be logged either.
    wrapping_token: Option<String>,
}

impl TestApp {
    pub async fn spawn(fixture: Fixture, config: AppConfig) -> Self {
        init_logs();
        let wrapping_token = match &config.login {
            Login::AppRole { secret_id, .. } => Some(secret_id.expose_secret().to_owned()),
            Login::Token(_) => None,
        };
        let app = Application::build(config).await.expect("application builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        Self { base, http: reqwest::Client::new(), fixture, wrapping_token }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path).await
    }

    pub async fn request(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let resp = self.http.request(method, format!("{}{path}", self.base)).send().await.expect("app answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Polls `/ready` until 200; panics with the last answer after `deadline`.
    pub async fn wait_ready(&self, deadline: Duration) {
        let body = poll(deadline, || async {
            let (status, body) = self.get("/ready").await;
            (status == 200).then_some(body.clone()).ok_or(body)
        })
        .await;
        if let Err(last) = body {
            panic!("app not ready after {deadline:?}: {last}");
        }
    }

    /// Polls `/ready` until the session's last error contains `needle` (any error for
    /// ""); returns that error. Panics with the last answer after 10 s.
    pub async fn wait_session_error(&self, needle: &str) -> String {
        let found = poll(Duration::from_secs(10), || async {
            let (_, body) = self.get("/ready").await;
            match body["vault"]["last_error"].as_str() {
                Some(e) if e.contains(needle) => Ok(e.to_owned()),
                _ => Err(body),
            }
        })
        .await;
        found.unwrap_or_else(|last| panic!("no session error containing {needle:?}: {last}"))
    }

    /// Writes a new version of `app/database` with `host`, and waits (up to `deadline`)
    /// until `/api/secret` serves it. Returns how long that took.
    pub async fn rotate_host(&self, host: &str, deadline: Duration) -> Duration {
        let f = &self.fixture;
        f.put("app/database", json!({ "host": host, "port": "6432", "username": "app_user", "password": f.password }))
            .await;
        let started = tokio::time::Instant::now();
        poll(deadline, || async {
            let (_, body) = self.get("/api/secret").await;
            (body["database"]["host"] == host).then_some(()).ok_or(body)
        })
        .await
        .unwrap_or_else(|last| panic!("{host} not served within {deadline:?}: {last}"));
        started.elapsed()
    }

    /// The test's secret values must not appear in anything the app logged.
    pub fn assert_no_secret_logged(&self) {
        let logs = captured_logs();
        assert!(!logs.is_empty(), "the app logged nothing: is the capture wired?");
        let secrets = [Some(&self.fixture.password), Some(&self.fixture.api_key), self.wrapping_token.as_ref()];
        for secret in secrets.into_iter().flatten() {
            assert!(!logs.contains(secret.as_str()), "a secret value appears in the app's log");
        }
    }
}

/// Calls `attempt` until it returns `Ok` or `deadline` passes; returns the last `Err`.
pub async fn poll<T, E, F, Fut>(deadline: Duration, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= end => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A loopback TCP relay in front of the real OpenBao. Its port stays bound for the whole
/// test (no other process can take it); while "closed" it accepts each connection and
/// drops it at once, which a client sees as Vault being unreachable.
pub struct Relay {
    pub addr: String,
    /// Replaced by `open`/`close`: while `Some`, connections are relayed; cancelling it
    /// cuts the relayed ones.
    relaying: Arc<Mutex<Option<tokio_util::sync::CancellationToken>>>,
}

impl Relay {
    /// Binds a free port, closed.
    pub async fn closed(target_addr: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = format!("https://{}", listener.local_addr().unwrap());
        let target = target_addr.trim_start_matches("https://").to_owned();
        let relaying: Arc<Mutex<Option<tokio_util::sync::CancellationToken>>> = Arc::default();
        let state = relaying.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Some(cut) = state.lock().unwrap().clone() else { continue };
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            () = cut.cancelled() => {}
                        }
                    }
                });
            }
        });
        Self { addr, relaying }
    }

    /// Starts relaying to the real server.
    pub fn open(&self) {
        *self.relaying.lock().unwrap() = Some(tokio_util::sync::CancellationToken::new());
    }

    /// Cuts every relayed connection and drops new ones.
    pub fn close(&self) {
        if let Some(cut) = self.relaying.lock().unwrap().take() {
            cut.cancel();
        }
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stdout().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

static LOGS: OnceLock<Capture> = OnceLock::new();

/// Captures everything the app and the library log, at the most verbose level, as JSON.
fn init_logs() {
    LOGS.get_or_init(|| {
        let capture = Capture::default();
        let filter = EnvFilter::new("devsecops_app=trace,vault_secrets=trace,tower_http=trace,reqwest=trace,info");
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(capture.clone()).init();
        capture
    });
}

pub fn captured_logs() -> String {
    LOGS.get().map(|c| String::from_utf8_lossy(&c.0.lock().unwrap()).into_owned()).unwrap_or_default()
}

/// Steady load on one route: `workers` tasks sending sequential GETs until stopped.
pub struct Load {
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<(u64, u64, Duration)>>,
}

/// What a load run saw.
#[derive(Debug, Clone, Copy)]
pub struct LoadReport {
    pub sent: u64,
    pub failed: u64,
    pub mean_latency: Duration,
}

impl Load {
    pub fn start(base: &str, path: &str, workers: usize) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let url = format!("{base}{path}");
        let tasks = (0..workers)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let (mut sent, mut failed, mut busy) = (0u64, 0u64, Duration::ZERO);
                    while !stop.is_cancelled() {
                        let started = std::time::Instant::now();
                        let response = http.get(&url).timeout(Duration::from_secs(15)).send().await;
                        let ok = matches!(response, Ok(r) if r.status() == 200);
                        busy += started.elapsed();
                        sent += 1;
                        failed += u64::from(!ok);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    (sent, failed, busy)
                })
            })
            .collect();
        Self { stop, tasks }
    }

    pub async fn stop(self) -> LoadReport {
        self.stop.cancel();
        let (mut sent, mut failed, mut busy) = (0, 0, Duration::ZERO);
        for task in self.tasks {
            let (s, f, b) = task.await.expect("load task");
            sent += s;
            failed += f;
            busy += b;
        }
        LoadReport { sent, failed, mean_latency: busy / u32::try_from(sent.max(1)).unwrap_or(u32::MAX) }
    }
}

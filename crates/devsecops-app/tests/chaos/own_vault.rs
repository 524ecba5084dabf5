//! A dedicated OpenBao server for one test: its own state directory, ports, raft storage
//! and audit log, so the test can stop, seal and restart it without touching the server
//! the other tests share. The TLS certificate of the shared server is reused, copied into
//! the server's directory (its SANs are 127.0.0.1 and localhost, valid on any loopback port).

use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestVault, env, poll};

/// How long a start, an unseal or a stop may take before the test fails.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// One OpenBao server process, owned by the test that created it.
pub struct OwnVault {
    pub addr: String,
    pub dir: PathBuf,
    pub ca_file: PathBuf,
    pub audit_log: PathBuf,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    unseal_key: Option<String>,
    root_token: Option<String>,
    http: reqwest::Client,
}

impl OwnVault {
    /// Writes the state directory and the configuration; nothing runs yet.
    pub fn new() -> Self {
        let bin = PathBuf::from(env("TEST_BAO_BIN"));
        let shared_tls = PathBuf::from(env("TEST_BAO_DIR")).join("tls");
        let dir = std::env::temp_dir().join(format!("chaos-bao-{}", crate::helpers::random_id()));
        for sub in ["", "bao", "bao/data", "logs"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).expect("create the state directory");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        }
        // A copy of the shared server's certificate, key and CA: the shared directory is
        // rebuilt by every `make test`, and a restart must find the files it started with.
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).expect("create tls/");
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        for file in ["ca.pem", "server.pem", "server-key.pem"] {
            std::fs::copy(shared_tls.join(file), tls.join(file)).unwrap_or_else(|e| panic!("copy {file}: {e}"));
        }
        let (api_port, cluster_port) = free_port_pair();
        let addr = format!("https://127.0.0.1:{api_port}");
        let audit_log = dir.join("logs/audit.log");
        let config = dir.join("bao/config.hcl");
        let text = config_hcl(&dir, &tls, api_port, cluster_port, &audit_log);
        std::fs::write(&config, text).expect("write config.hcl");
        let ca_file = tls.join("ca.pem");
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_file).expect("read the CA")).expect("CA is PEM");
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Self {
            addr,
            log: dir.join("logs/bao.log"),
            dir,
            ca_file,
            audit_log,
            bin,
            config,
            child: None,
            unseal_key: None,
            root_token: None,
            http,
        }
    }

    /// A new server, started, initialised, unsealed, active, with AppRole at `approle/`.
    pub async fn ready() -> Self {
        let mut vault = Self::new();
        vault.start().await;
        vault.init().await;
        vault.unseal().await;
        vault.enable_approle().await;
        vault
    }

    /// Spawns `bao server` and waits until its listener answers (any HTTP status).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "OpenBao is already running");
        let log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open bao.log");
        let child = Command::new(&self.bin)
            .arg("server")
            .arg(format!("-config={}", self.config.display()))
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        self.child = Some(child);
        let end = tokio::time::Instant::now() + STEP_DEADLINE;
        loop {
            if let Some(status) = self.exit_status() {
                panic!("OpenBao exited during start-up ({status}):\n{}", self.log_tail());
            }
            if self.health_code().await.is_some() {
                return;
            }
            if tokio::time::Instant::now() >= end {
                panic!("OpenBao does not answer on {} after {STEP_DEADLINE:?}:\n{}", self.addr, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `sys/init` with one key share; keeps the unseal key and the root token.
    pub async fn init(&mut self) {
        let (status, body) = self
            .call(Method::PUT, "sys/init", None, Some(json!({ "secret_shares": 1, "secret_threshold": 1 })))
            .await
            .expect("OpenBao answers sys/init");
        assert_eq!(status, 200, "sys/init: {body}");
        let key = body["keys_base64"][0].as_str().or_else(|| body["keys"][0].as_str()).expect("an unseal key");
        self.unseal_key = Some(key.to_owned());
        self.root_token = Some(body["root_token"].as_str().expect("a root token").to_owned());
    }

    /// `sys/unseal` with the key, then waits until `sys/health` says active (200).
    pub async fn unseal(&self) {
        let key = self.unseal_key.clone().expect("init() first");
        let (status, body) = self
            .call(Method::PUT, "sys/unseal", None, Some(json!({ "key": key })))
            .await
            .expect("OpenBao answers sys/unseal");
        assert_eq!(status, 200, "sys/unseal: {}", body["errors"]);
        assert_eq!(body["sealed"], false, "still sealed after sys/unseal");
        self.wait_active().await;
    }

    /// Polls `sys/health` until 200 (initialised, unsealed, active).
    pub async fn wait_active(&self) {
        let last = poll(STEP_DEADLINE, || async {
            match self.health_code().await {
                Some(200) => Ok(()),
                other => Err(other),
            }
        })
        .await;
        if let Err(code) = last {
            panic!("OpenBao not active after {STEP_DEADLINE:?} (sys/health: {code:?}):\n{}", self.log_tail());
        }
    }

    /// Enables the AppRole auth method at `approle/`.
    pub async fn enable_approle(&self) {
        let (status, body) =
            self.admin(Method::POST, "sys/auth/approle", Some(json!({ "type": "approle" }))).await.expect("answers");
        assert!((200..300).contains(&status), "enable approle: {status} {body}");
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL after the deadline).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let exited = poll(STEP_DEADLINE, || {
            let done = child.try_wait().expect("wait for OpenBao").is_some();
            async move { if done { Ok(()) } else { Err(()) } }
        })
        .await;
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("OpenBao (pid {pid}) did not exit within {STEP_DEADLINE:?} of SIGTERM");
        }
    }

    /// `sys/seal` with the root token.
    pub async fn seal(&self) {
        let (status, body) = self.admin(Method::PUT, "sys/seal", None).await.expect("OpenBao answers sys/seal");
        assert!((200..300).contains(&status), "sys/seal: {status} {body}");
        let (code, _) = self.call(Method::GET, "sys/seal-status", None, None).await.expect("answers");
        assert_eq!(code, 200);
    }

    /// Start the stopped server again and unseal it (its storage survives).
    pub async fn restart(&mut self) {
        self.start().await;
        self.unseal().await;
    }

    /// A [`TestVault`] on this server, for [`crate::helpers::Fixture::new_on`].
    pub fn test_vault(&self) -> TestVault {
        TestVault::new(
            self.addr.clone(),
            self.ca_file.clone(),
            self.root_token.clone().expect("init() first"),
            self.audit_log.clone(),
        )
    }

    /// The HTTP status of `sys/health`, or None when nothing answers.
    async fn health_code(&self) -> Option<u16> {
        self.call(Method::GET, "sys/health", None, None).await.map(|(status, _)| status)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
        let token = self.root_token.clone().expect("init() first");
        self.call(method, path, Some(&token), body).await
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Option<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}/v1/{path}", self.addr));
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().expect("wait for OpenBao"))
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for OwnVault {
    /// Nothing is left running, even when the test panicked. The state directory is kept
    /// after a failure (its log is the evidence) and removed otherwise.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("own OpenBao state kept for inspection: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Two distinct free loopback ports (API and cluster).
fn free_port_pair() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// The same shape as `bao_config` in scripts/lib.sh.
fn config_hcl(dir: &Path, tls: &Path, api_port: u16, cluster_port: u16, audit_log: &Path) -> String {
    let dir = dir.display();
    let tls = tls.display();
    let audit_log = audit_log.display();
    format!(
        r#"ui            = true
api_addr      = "https://127.0.0.1:{api_port}"
cluster_addr  = "https://127.0.0.1:{cluster_port}"

storage "raft" {{
  path    = "{dir}/bao/data"
  node_id = "bao-chaos-1"
}}

listener "tcp" {{
  address         = "127.0.0.1:{api_port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_cert_file   = "{tls}/server.pem"
  tls_key_file    = "{tls}/server-key.pem"
  tls_min_version = "tls12"
}}

audit "file" "file" {{
  options {{
    file_path = "{audit_log}"
  }}
}}
"#
    )
}

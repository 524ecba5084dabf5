//! Building the application: the Vault session, the watched secrets, the router, the listener.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Request, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use vault_secrets::{AppRole, Auth, StaticToken, Vault};

use crate::configuration::{AppConfig, Login};
use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;

/// Largest request body accepted.
const BODY_LIMIT: usize = 64 * 1024;
/// Longest a request may take before it is answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The Vault client settings are unusable (bad address, bad CA file...).
    #[error("vault settings (VAULT_ADDR, VAULT_CACERT, VAULT_CLIENT_CERT/KEY): {0}")]
    Vault(#[from] vault_secrets::Error),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A built application, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Starts the Vault session and the secret watches (without waiting for Vault) and
    /// binds the listener. Port 0 picks a free port.
    pub async fn build(config: AppConfig) -> Result<Self, StartupError> {
        let state = connect(&config)?;
        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Self { listener, router: router(state.clone()), state })
    }

    /// The port the listener is bound to.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// The state handlers see (the Vault session and the watched secrets).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains in-flight requests.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        tracing::info!(addr = ?self.listener.local_addr().ok(), "listening");
        let result = axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await;
        self.state.vault.shutdown();
        result
    }
}

/// Builds the Vault session and starts watching the app's secrets.
fn connect(config: &AppConfig) -> Result<AppState, vault_secrets::Error> {
    let auth: Auth = match &config.login {
        Login::AppRole { mount, role_id, secret_id, wrapped } => {
            let role = if *wrapped {
                AppRole::wrapped(role_id.clone(), secret_id.clone())
            } else {
                AppRole::new(role_id.clone(), secret_id.clone())
            };
            role.mount(mount.clone()).into()
        }
        Login::Token(token) => {
            tracing::warn!("logging in to vault with a static token: for development only, use AppRole elsewhere");
            StaticToken::new(token.clone()).into()
        }
    };
    let mut builder = Vault::builder().addresses(&config.vault_addresses).auth(auth);
    if let Some(pem) = &config.vault_ca_pem {
        builder = builder.ca_cert_pem(pem.clone());
    }
    if let Some(identity) = &config.vault_client_identity {
        builder = builder.client_identity_pem(identity.clone());
    }
    if let Some(namespace) = &config.vault_namespace {
        builder = builder.namespace(namespace.clone());
    }
    let vault = builder.build()?;
    let database = vault
        .kv(&config.kv_mount, &config.database_secret)
        .refresh_every(config.refresh_interval)
        .max_stale(config.max_stale)
        .watch();
    let api = vault
        .kv(&config.kv_mount, &config.api_secret)
        .refresh_every(config.refresh_interval)
        .max_stale(config.max_stale)
        .watch();
    Ok(AppState { vault, database, api })
}

/// The routes and the middleware around them. A plain function of the state, so tests
/// can drive it without a socket.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        })
        .on_response(DefaultOnResponse::new().level(Level::INFO));
    // Outermost first: every response, the middleware's own errors included, gets the
    // security headers and the request id.
    let middleware = ServiceBuilder::new()
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header_layer(header::CACHE_CONTROL, "no-store"))
        .layer(header_layer(header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"))
        .layer(header_layer(header::REFERRER_POLICY, "no-referrer"))
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(axum::middleware::map_response(crate::error::json_errors))
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal.into_response()))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT));
    Router::new()
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        .route("/api/secret", get(routes::secret))
        .route("/api/config", get(routes::api_config))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware)
        .with_state(state)
}

fn header_layer(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received: draining");
}

//! The service's error type and its JSON form.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every error a handler returns. Clients get a stable `error` code and a short
/// message; the log gets the whole cause.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route at this path.
    #[error("no such route")]
    RouteNotFound,
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A secret could not be served.
    #[error(transparent)]
    Secret(#[from] vault_secrets::Error),
    /// A handler panicked.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use vault_secrets::Error as V;
        match self {
            ApiError::RouteNotFound => (StatusCode::NOT_FOUND, "not_found", "no such route".into()),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route".into())
            }
            ApiError::Secret(V::NotFound { path }) => {
                (StatusCode::NOT_FOUND, "secret_not_found", format!("secret {path} does not exist in vault"))
            }
            ApiError::Secret(V::PermissionDenied { .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "vault_permission_denied",
                "the service is not allowed to read this secret".into(),
            ),
            ApiError::Secret(V::Decode { .. }) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "secret_invalid",
                "the secret in vault has an unexpected shape".into(),
            ),
            ApiError::Secret(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "vault_unavailable",
                "vault cannot be reached and no fresh value is cached".into(),
            ),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error".into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if status.is_server_error() {
            tracing::warn!(error = %self, code, "request failed");
        }
        let mut response = (status, Json(json!({ "error": code, "message": message }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        }
        response
    }
}

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
    /// The request took longer than the service allows.
    #[error("request timed out")]
    Timeout,
    /// The request body is larger than the service accepts.
    #[error("request body too large")]
    PayloadTooLarge,
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
            ApiError::Timeout => (StatusCode::REQUEST_TIMEOUT, "timeout", "the request took too long".into()),
            ApiError::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large".into())
            }
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error".into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        // Vault trouble is logged once per change by the refresh tasks, not per request.
        match &self {
            ApiError::Internal | ApiError::Secret(vault_secrets::Error::Decode { .. }) => {
                tracing::error!(error = %self, code, "request failed")
            }
            _ => tracing::debug!(error = %self, code, "request failed"),
        }
        let mut response = (status, Json(json!({ "error": code, "message": message }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        }
        response
    }
}

/// Gives the bodies the middleware makes on its own (408 from the timeout, 413 from the
/// body limit) the same JSON form as every other error.
pub async fn json_errors<B>(response: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = response.map(axum::body::Body::new);
    let replacement = match response.status() {
        StatusCode::REQUEST_TIMEOUT => ApiError::Timeout,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => return response,
    };
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json { response } else { replacement.into_response() }
}

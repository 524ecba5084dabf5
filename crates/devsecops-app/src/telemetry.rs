//! Logging set-up: JSON or text lines on stdout, filtered by level.

use tracing_subscriber::EnvFilter;

use crate::configuration::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level`.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v).map_err(|e| format!("invalid setting RUST_LOG: {e}"))?,
        _ => EnvFilter::try_new(level).map_err(|e| format!("invalid setting APP_LOG_LEVEL: {e}"))?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

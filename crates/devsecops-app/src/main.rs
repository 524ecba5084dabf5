//! The `devsecops-app` binary: parse settings, set up logging, serve.

use std::process::ExitCode;

use clap::Parser;
use devsecops_app::startup::shutdown_signal;
use devsecops_app::{Application, Settings, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse();
    if let Err(e) = telemetry::init(&settings.log_level, settings.log_format) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let config = match settings.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            tracing::error!(setting = e.setting, "{e}");
            return ExitCode::from(2);
        }
    };
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            tracing::error!("{e}");
            return ExitCode::from(match e {
                devsecops_app::startup::StartupError::Vault(_) => 2,
                devsecops_app::startup::StartupError::Bind { .. } => 1,
            });
        }
    };
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

//! The devsecops-app service: the seed's API, with every secret taken from Vault.
//!
//! # Layout
//!
//! - `configuration`: flags and environment variables, checked once ([`Settings`] →
//!   [`AppConfig`]).
//! - `startup`: the Vault session, the watched secrets, the router and its middleware
//!   ([`Application`]).
//! - `routes`: one module per resource; handlers read cached secrets, never Vault.
//! - `secrets`: the shapes of the secrets in Vault, with redacting types for values.
//! - `state`: what handlers can reach.
//! - `error`: [`ApiError`] and its JSON form with a stable `error` code.
//! - `telemetry`: the log subscriber.

pub mod configuration;
pub mod error;
pub mod routes;
pub mod secrets;
pub mod startup;
pub mod state;
pub mod telemetry;

pub use configuration::{AppConfig, Settings};
pub use error::ApiError;
pub use startup::Application;

//! One module per resource.

mod config;
mod health;
mod ready;
mod secret;

pub use config::api_config;
pub use health::health;
pub use ready::ready;
pub use secret::secret;

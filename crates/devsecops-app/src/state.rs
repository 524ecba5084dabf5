//! What every handler can reach.

use vault_secrets::{Vault, Watched};

use crate::secrets::{ApiSecret, DatabaseSecret};

/// Shared state: the Vault session and the watched secrets. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The session (for its status).
    pub vault: Vault,
    /// `secret/app/database`.
    pub database: Watched<DatabaseSecret>,
    /// `secret/app/api`.
    pub api: Watched<ApiSecret>,
}

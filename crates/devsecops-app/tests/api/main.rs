//! Black-box tests of the service against a real OpenBao server (run with `make test`).

mod contract;
mod helpers;
mod lifecycle;
mod security;
mod settings;
mod vault_outage;

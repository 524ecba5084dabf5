//! Chaos tests: the app under load while a dedicated OpenBao server is stopped or sealed
//! (run with `make test`; `scripts/test.sh -E 'binary(chaos)'` runs only these).

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod outage;
mod own_vault;

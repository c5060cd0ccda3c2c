//! mgpass: an OpenID Connect provider and rewards platform in one binary.
//!
//! A newcomer finds each concern by its folder: `http` (listener, routing, cookies,
//! errors), `oidc` (the protocol endpoints), `session`, `keys`, `store` (the only code
//! that knows the database), `admin` (operator commands and their local socket).

pub mod clock;
pub mod config;
pub mod crypto;
pub mod plugin;
pub mod store;
pub mod types;

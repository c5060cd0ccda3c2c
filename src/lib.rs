//! mgpass: an OpenID Connect provider and rewards platform in one binary.
//!
//! A newcomer finds each concern by its folder: `http` (listener, routing, cookies,
//! errors, pages), `oidc` (the protocol endpoints), `session` (sessions, passwords,
//! brute-force protection, global logout), `keys` (signing keys and JWKS), `store` (the
//! only code that knows the database), `admin` (operator commands and their local
//! socket), `outbox` (durable delivery of notifications).

pub mod admin;
pub mod app;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod oidc;
pub mod outbox;
pub mod partner;
pub mod plugin;
pub mod server;
pub mod session;
pub mod store;
pub mod types;
pub mod webhook;

/// Installs the process-wide rustls crypto provider (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

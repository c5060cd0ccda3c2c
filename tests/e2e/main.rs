//! End-to-end tests: the real server over TLS on 127.0.0.1, driven as relying apps,
//! browsers and operators drive it. One test binary for the whole suite.

mod bench;
mod browser;
mod crash;
mod foundation;
mod hostile;
mod login;
mod logout;
mod metrics;
mod partner;
mod plugins;
mod rewards;
mod support;

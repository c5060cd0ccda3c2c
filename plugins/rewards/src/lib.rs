//! The default mgpass rewards plugin (issue 7): earning rules, tiers, balances and
//! history, cashback redemptions and the payout callback, as a sandboxed guest.
//!
//! Everything but [`guest`] is plain Rust over the [`host::Host`] trait, tested natively
//! against an in-memory host; [`guest`] only converts between the WIT types and these.

pub mod caps;
pub mod cashback;
pub mod config;
pub mod host;
pub mod periods;
pub mod rules;
pub mod service;
pub mod signature;
pub mod tiers;

mod guest;

#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod testhost;

//! Counters operators and tests read (login outcomes, token issuance, deliveries).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub logins_throttled: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub refresh_reuse: AtomicU64,
    pub deliveries_ok: AtomicU64,
    pub delivery_failures: AtomicU64,
    pub deliveries_given_up: AtomicU64,
    pub rate_limited: AtomicU64,
}

impl Metrics {
    pub fn inc(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

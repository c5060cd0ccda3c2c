//! Per-client-IP rate limits with GCRA (the generic cell rate algorithm): one timestamp
//! per address, kept in a bounded cache so a flood of new addresses cannot exhaust
//! memory.

use crate::clock::SharedClock;
use moka::ops::compute::Op;
use moka::sync::Cache;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Partner,
    Api,
}

impl Bucket {
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Partner => "partner",
            Bucket::Api => "api",
        }
    }
}

/// The outcome of one check, with what the `RateLimit` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the next request would be allowed (when refused) or until the
    /// quota is whole again (when allowed).
    pub reset_secs: u64,
}

pub struct RateLimiter {
    clock: SharedClock,
    partner_per_minute: u32,
    api_per_minute: u32,
    /// Theoretical arrival time (µs) per bucket and address.
    tat: Cache<(Bucket, IpAddr), i64>,
}

/// The window, in microseconds: fine enough for limits of millions per minute.
const PERIOD_US: i64 = 60_000_000;

impl RateLimiter {
    pub fn new(clock: SharedClock, partner_per_minute: u32, api_per_minute: u32) -> RateLimiter {
        RateLimiter {
            clock,
            partner_per_minute,
            api_per_minute,
            tat: Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_micros(PERIOD_US as u64 * 2))
                .build(),
        }
    }

    /// Counts one request from `ip` against `bucket`.
    pub fn check(&self, bucket: Bucket, ip: IpAddr) -> Decision {
        let limit = match bucket {
            Bucket::Partner => self.partner_per_minute,
            Bucket::Api => self.api_per_minute,
        };
        let interval = (PERIOD_US / limit.max(1) as i64).max(1);
        let now = self.clock.now_ms() * 1000;
        let mut decision = Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_secs: 0,
        };
        // The read-modify-write is atomic per key, so concurrent requests from one
        // address cannot both take the last slot.
        self.tat.entry((bucket, ip)).and_compute_with(|current| {
            let tat = current.map_or(now, |e| e.into_value().max(now));
            let new_tat = tat + interval;
            let allow_at = new_tat - PERIOD_US;
            if now < allow_at {
                decision.reset_secs = ((allow_at - now + 999_999) / 1_000_000) as u64;
                Op::Nop
            } else {
                decision.allowed = true;
                decision.remaining = ((PERIOD_US - (new_tat - now)) / interval).max(0) as u32;
                decision.reset_secs = ((new_tat - now + 999_999) / 1_000_000) as u64;
                Op::Put(new_tat)
            }
        });
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn thirty_per_minute_then_retry_after() {
        let clock = ManualClock::new();
        let limiter = RateLimiter::new(clock.clone(), 30, 100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..30 {
            let d = limiter.check(Bucket::Partner, ip);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 29 - i);
        }
        let refused = limiter.check(Bucket::Partner, ip);
        assert!(!refused.allowed);
        assert_eq!(refused.reset_secs, 2, "one slot frees every 2 s");
        assert!(
            limiter.check(Bucket::Api, ip).allowed,
            "buckets are separate"
        );
        assert!(
            limiter
                .check(Bucket::Partner, "192.0.2.2".parse().unwrap())
                .allowed
        );
        clock.advance_secs(refused.reset_secs as i64);
        assert!(limiter.check(Bucket::Partner, ip).allowed);
        assert!(!limiter.check(Bucket::Partner, ip).allowed);
    }

    #[test]
    fn very_high_limits_are_not_capped_by_clock_resolution() {
        let clock = ManualClock::new();
        let limiter = RateLimiter::new(clock, 10_000_000, 10_000_000);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        // Far more than one per millisecond, all at the same instant.
        for i in 0..100_000 {
            assert!(limiter.check(Bucket::Api, ip).allowed, "request {i}");
        }
    }
}

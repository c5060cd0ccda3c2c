//! Brute-force protection for the login form.
//!
//! Three counters, each backing off exponentially once its free failures are spent:
//! per account *and* client IP (the real limit on guessing one password), per client IP
//! (one address trying many accounts), and per account from anywhere (a distributed
//! guess) — the last is capped at a short delay so an attacker cannot use it to lock the
//! real user out for long. A success clears the account's counters.

use crate::clock::SharedClock;
use moka::sync::Cache;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Clone, Copy, Default)]
struct Failures {
    count: u32,
    blocked_until_ms: i64,
}

pub struct LoginThrottle {
    clock: SharedClock,
    free: u32,
    max_backoff_ms: i64,
    by_account_ip: Cache<(String, IpAddr), Failures>,
    by_ip: Cache<IpAddr, Failures>,
    by_account: Cache<String, Failures>,
}

/// The cap on the account-wide delay: enough to slow a distributed guess, too short to
/// lock anyone out.
const ACCOUNT_WIDE_MAX_MS: i64 = 2_000;
/// Failures from anywhere before the account-wide delay starts.
const ACCOUNT_WIDE_FREE: u32 = 20;

fn cache<K, V>() -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(100_000)
        .time_to_idle(Duration::from_secs(3600))
        .build()
}

fn backoff_ms(failures: u32, free: u32, cap_ms: i64) -> i64 {
    if failures < free {
        return 0;
    }
    let exp = (failures - free).min(20);
    (1000i64 << exp).min(cap_ms)
}

impl LoginThrottle {
    pub fn new(clock: SharedClock, free_failures: u32, max_backoff: Duration) -> LoginThrottle {
        LoginThrottle {
            clock,
            free: free_failures,
            max_backoff_ms: max_backoff.as_millis() as i64,
            by_account_ip: cache(),
            by_ip: cache(),
            by_account: cache(),
        }
    }

    /// `Some(seconds)` to wait when this attempt must be refused without checking the
    /// password.
    pub fn check(&self, account: &str, ip: IpAddr) -> Option<u64> {
        let now = self.clock.now_ms();
        let account = account.to_lowercase();
        let until = [
            self.by_account_ip.get(&(account.clone(), ip)),
            self.by_ip.get(&ip),
            self.by_account.get(&account),
        ]
        .into_iter()
        .flatten()
        .map(|f| f.blocked_until_ms)
        .max()
        .unwrap_or(0);
        (until > now).then(|| ((until - now + 999) / 1000) as u64)
    }

    pub fn failed(&self, account: &str, ip: IpAddr) {
        let now = self.clock.now_ms();
        let account = account.to_lowercase();
        let bump = |f: Option<Failures>, free: u32, cap: i64| {
            let mut f = f.unwrap_or_default();
            f.count += 1;
            f.blocked_until_ms = now + backoff_ms(f.count, free, cap);
            f
        };
        let key = (account.clone(), ip);
        self.by_account_ip.insert(
            key.clone(),
            bump(self.by_account_ip.get(&key), self.free, self.max_backoff_ms),
        );
        self.by_ip.insert(
            ip,
            bump(self.by_ip.get(&ip), self.free * 4, self.max_backoff_ms),
        );
        self.by_account.insert(
            account.clone(),
            bump(
                self.by_account.get(&account),
                ACCOUNT_WIDE_FREE,
                ACCOUNT_WIDE_MAX_MS,
            ),
        );
    }

    pub fn succeeded(&self, account: &str, ip: IpAddr) {
        let account = account.to_lowercase();
        self.by_account_ip.invalidate(&(account.clone(), ip));
        self.by_account.invalidate(&account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn backs_off_then_recovers_and_spares_other_ips() {
        let clock = ManualClock::new();
        let t = LoginThrottle::new(clock.clone(), 3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(t.check("alice", a), None);
            t.failed("alice", a);
        }
        assert_eq!(t.check("alice", a), Some(1));
        assert_eq!(
            t.check("Alice", b),
            None,
            "another address is not locked out"
        );
        clock.advance_secs(1);
        assert_eq!(t.check("alice", a), None);
        t.failed("alice", a);
        assert_eq!(t.check("alice", a), Some(2), "backoff doubles");
        for _ in 0..20 {
            t.failed("alice", a);
        }
        assert_eq!(t.check("alice", a), Some(60), "capped at max_backoff");
        t.succeeded("alice", b);
        clock.advance_secs(60);
        assert_eq!(t.check("alice", a), None);
    }
}

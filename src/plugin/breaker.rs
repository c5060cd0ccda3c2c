//! A circuit breaker per plugin: after repeated failed calls the plugin is skipped for
//! a cool-down instead of failing every request slowly; then one trial call decides.

use std::sync::Mutex;

pub struct Breaker {
    threshold: u32,
    cooldown_ms: i64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    consecutive_failures: u32,
    open_until_ms: Option<i64>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown_ms: i64) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown_ms,
            state: Mutex::new(State::default()),
        }
    }

    /// Ok when a call may run; otherwise the milliseconds until it may.
    pub fn admit(&self, now_ms: i64) -> Result<(), i64> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.open_until_ms {
            Some(until) if now_ms < until => Err(until - now_ms),
            // Half-open: calls go through; the next failure reopens at once because
            // the failure count is still at the threshold.
            _ => Ok(()),
        }
    }

    pub fn record(&self, ok: bool, now_ms: i64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            *state = State::default();
            return;
        }
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        if state.consecutive_failures >= self.threshold {
            state.open_until_ms = Some(now_ms + self.cooldown_ms);
        }
    }

    /// Milliseconds left in the cool-down, if open.
    pub fn open_for(&self, now_ms: i64) -> Option<i64> {
        self.admit(now_ms).err()
    }
}

#[cfg(test)]
mod tests {
    use super::Breaker;

    #[test]
    fn breaker_opens_after_threshold_and_recloses_on_success() {
        let b = Breaker::new(3, 1000);
        b.record(false, 0);
        b.record(false, 0);
        assert!(b.admit(0).is_ok());
        b.record(false, 10);
        assert_eq!(b.admit(10), Err(1000));
        assert!(b.admit(1010).is_ok());
        b.record(false, 1010);
        assert_eq!(b.open_for(1010), Some(1000));
        b.record(true, 2010);
        assert!(b.admit(2010).is_ok());
        b.record(false, 2010);
        assert!(b.admit(2010).is_ok());
    }
}

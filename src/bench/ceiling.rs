//! `mgpass bench --ceiling`: the raw ES256 sign and verify rates through the server's
//! own key ring, on one core and on all of them. A code exchange signs twice (access
//! and ID token), so half the signing rate is the most code exchanges a box can issue.

use crate::keys::{Alg, KeyRing};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Ceiling {
    pub threads: usize,
    pub sign_per_s_one_core: f64,
    pub verify_per_s_one_core: f64,
    pub sign_per_s_all_cores: f64,
    pub verify_per_s_all_cores: f64,
}

impl Ceiling {
    pub fn table(&self) -> String {
        format!(
            "ES256 (josekit via KeyRing, access-token-sized claims)\n\
             {:<10}  {:>14}  {:>14}\n\
             {:<10}  {:>14.0}  {:>14.0}\n\
             {:<10}  {:>14.0}  {:>14.0}\n\
             sign µs (one core): {:.1}   verify µs (one core): {:.1}",
            "",
            "signs/s",
            "verifies/s",
            "1 thread",
            self.sign_per_s_one_core,
            self.verify_per_s_one_core,
            format!("{} threads", self.threads),
            self.sign_per_s_all_cores,
            self.verify_per_s_all_cores,
            1e6 / self.sign_per_s_one_core.max(1e-9),
            1e6 / self.verify_per_s_one_core.max(1e-9),
        )
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Counts how often `op` completes in `window` (bounded by time).
fn rate(window: Duration, mut op: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        for _ in 0..16 {
            if op() {
                n += 1;
            }
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

pub fn measure(window: Duration) -> Result<Ceiling, String> {
    let dir = std::env::temp_dir().join(crate::crypto::random_id("mgpass-bench-keys-"));
    let result = measure_in(&dir, window);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure_in(dir: &std::path::Path, window: Duration) -> Result<Ceiling, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let ring = KeyRing::open(dir, 3600, now).map_err(|e| e.to_string())?;
    let claims = json!({
        "iss": "https://localhost:8443",
        "sub": "usr_0123456789abcdef01234567",
        "aud": "bench-client",
        "client_id": "bench-client",
        "scope": "openid profile email offline_access",
        "iat": now,
        "exp": now + 600,
        "jti": "at_0123456789abcdef01234567",
        "sid": "sid_0123456789abcdef01234567",
    });
    let token = ring
        .sign(&claims, "at+jwt", Alg::ES256, now)
        .map_err(|e| e.to_string())?;
    ring.verify(&token, now).map_err(|e| e.to_string())?;
    let sign = || ring.sign(&claims, "at+jwt", Alg::ES256, now).is_ok();
    let verify = || ring.verify(&token, now).is_ok();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallel = |op: &(dyn Fn() -> bool + Sync)| -> f64 {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| rate(window, op))).collect();
            handles.into_iter().filter_map(|h| h.join().ok()).sum()
        })
    };
    Ok(Ceiling {
        threads,
        sign_per_s_one_core: rate(window, sign),
        verify_per_s_one_core: rate(window, verify),
        sign_per_s_all_cores: parallel(&sign),
        verify_per_s_all_cores: parallel(&verify),
    })
}

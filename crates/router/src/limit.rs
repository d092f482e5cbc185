//! Per-tenant rate limits: a token bucket per tenant, refilled continuously.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimits {
    /// Takes one request from `tenant`'s bucket of `rate` per second holding at most `burst`; on
    /// refusal, how long until one is available.
    pub fn check(&self, tenant: &str, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(tenant.to_string()).or_insert(Bucket { tokens: burst, last: now });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limits.check("a", 2.0, 3.0, t0).is_ok());
        }
        let wait = limits.check("a", 2.0, 3.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // Tenants do not share buckets.
        assert!(limits.check("b", 2.0, 3.0, t0).is_ok());
        assert!(limits.check("a", 2.0, 3.0, t0 + Duration::from_millis(500)).is_ok());
        assert!(limits.check("a", 2.0, 3.0, t0 + Duration::from_millis(500)).is_err());
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..5).filter(|_| limits.check("a", 2.0, 3.0, later).is_ok()).count(), 3);
    }
}

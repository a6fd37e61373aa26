//! Per-client request rates on the gateway: a token bucket per client, refilled at
//! its `rate` per second and holding one second's worth (at least one request).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Buckets by client name; a reload that changes a client's rate applies at its next
/// request (the bucket keeps its level, capped at the new burst).
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// May `client`, limited to `rate` requests per second, make one more now? When
    /// not, the seconds until it may.
    pub fn admit(&self, client: &str, rate: f64, now: Instant) -> Result<(), f64> {
        let burst = rate.max(1.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(client.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - bucket.tokens) / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.admit("a", 5.0, t0).is_ok());
        }
        let wait = limiter.admit("a", 5.0, t0).unwrap_err();
        assert!((wait - 0.2).abs() < 1e-9, "{wait}");
        assert!(
            limiter.admit("b", 5.0, t0).is_ok(),
            "buckets are per client"
        );
        assert!(
            limiter
                .admit("a", 5.0, t0 + Duration::from_millis(200))
                .is_ok()
        );
        assert!(
            limiter
                .admit("a", 5.0, t0 + Duration::from_millis(200))
                .is_err()
        );
    }
}

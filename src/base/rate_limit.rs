//! The token bucket that paces each connection's frames (`limits.frames_per_second`,
//! `limits.frame_burst`) and each API token's requests: a `governor` GCRA limiter owned by one
//! connection or token, with the waiting that pacing needs.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

/// `rate` events per second, bursts up to `burst`. The transports pace a connection's reading
/// with it ([`RateLimiter::pace`]): a frame over the rate is read later, not refused, so a client
/// resending its offline queue gets every frame through in order and a flood costs the server
/// nothing but the client's own TCP window.
pub struct RateLimiter {
    limiter: DefaultDirectRateLimiter,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        let per_second = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        RateLimiter { limiter: governor::RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)) }
    }

    /// Takes one token; when the bucket is empty, how long until one is free.
    pub fn check(&self) -> Result<(), Duration> {
        self.limiter.check().map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Takes one token, waiting for it when the bucket is empty (at most about `1 / rate`).
    pub async fn pace(&self) {
        while let Err(wait) = self.check() {
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let bucket = RateLimiter::new(10, 3);
        for _ in 0..3 {
            assert_eq!(bucket.check(), Ok(()));
        }
        let wait = bucket.check().expect_err("the burst is spent");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
    }
}

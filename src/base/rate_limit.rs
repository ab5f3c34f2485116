//! The token bucket that paces each connection's frames (`limits.frames_per_second`,
//! `limits.frame_burst`) and each API token's requests. Keyed budgets (logins, visitors'
//! sessions) use `governor`; this one is owned by a single connection or token, needs no lock,
//! and also answers how long until the next token, which pacing needs.

use std::time::{Duration, Instant};

/// A token bucket: `rate` frames per second, bursts up to `burst`. The transports pace a
/// connection's reading with it ([`RateLimiter::pace`]): a frame over the rate is read later, not
/// refused, so a client resending its offline queue gets every frame through in order and a flood
/// costs the server nothing but the client's own TCP window.
pub struct RateLimiter {
    tokens: f32,
    last_refill: Instant,
    rate: f32,
    burst: f32,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter { tokens: burst as f32, last_refill: Instant::now(), rate: rate as f32, burst: burst.max(1) as f32 }
    }

    /// Takes one token; false when the bucket is empty.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last_refill).as_secs_f32() * self.rate).min(self.burst);
        self.last_refill = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the bucket holds a whole token again (zero when it does now).
    pub fn time_to_next(&self) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f32(missing / self.rate.max(f32::MIN_POSITIVE))
    }

    /// Takes one token, waiting for it when the bucket is empty (at most about `1 / rate`).
    pub async fn pace(&mut self) {
        while !self.allow() {
            tokio::time::sleep(self.time_to_next().max(Duration::from_millis(1))).await;
        }
    }
}

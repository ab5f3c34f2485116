//! Limits on what anonymous visitors can make, so nobody fills the disk or the database without
//! signing in: new visitor sessions per client address, uploads (count and bytes) and offline
//! messages per client address and per visitor, each a budget per hour.
//!
//! Each budget is a keyed GCRA limiter from `governor`: a budget of N per hour allows a burst of
//! N and refills one every hour/N, so a normal visitor never meets it and a script meets it after
//! its first burst. Byte budgets take the upload's size at once (`check_key_n`). A refused request
//! gets the time until it would fit, for `Retry-After`. The per-site upload quota (total bytes
//! stored) lives in `uploads.rs`, where the bytes are counted in the same transaction as the file.
//!
//! Callers pass the client address as a plain `IpAddr`, so whoever works out the address (the
//! TCP peer today, a trusted proxy's header later) does not change these checks.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::base::config::LimitsConfig;

/// Keys a budget holds before [`VisitorLimits::forget_idle`] drops those whose budget is full
/// again (a full budget and a forgotten one behave the same).
const KEYS_KEPT_BEFORE_CLEANUP: usize = 10_000;

/// A request over one of the budgets.
#[derive(Debug, thiserror::Error)]
#[error("too many {what}; retry in {retry_after_secs} s")]
pub struct LimitExceeded {
    /// What was counted, for the message ("new visitor sessions from this address").
    pub what: &'static str,
    pub retry_after_secs: u64,
}

/// One budget per key: `per_hour` units an hour, all of them available at once.
struct HourlyBudget<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    what: &'static str,
}

impl<K: std::hash::Hash + Eq + Clone> HourlyBudget<K> {
    fn new(per_hour: u64, what: &'static str) -> HourlyBudget<K> {
        let per_hour = NonZeroU32::new(u32::try_from(per_hour).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        HourlyBudget { limiter: RateLimiter::dashmap(Quota::per_hour(per_hour)), what }
    }

    /// Takes `units` from `key`'s budget, or says how long until they fit.
    fn take(&self, key: &K, units: u64, clock: &DefaultClock) -> Result<(), LimitExceeded> {
        let units = NonZeroU32::new(u32::try_from(units).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        let refused = |wait: Duration| LimitExceeded { what: self.what, retry_after_secs: wait.as_secs().max(1) };
        match self.limiter.check_key_n(key, units) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(refused(not_until.wait_time_from(clock.now()))),
            // More than the whole budget at once: it never fits; a full hour is the honest wait.
            Err(_) => Err(refused(Duration::from_secs(3600))),
        }
    }

    fn forget_idle(&self) {
        if self.limiter.len() > KEYS_KEPT_BEFORE_CLEANUP {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }
}

/// Every anonymous-visitor budget of the server (`[limits]` in kefu.toml).
pub struct VisitorLimits {
    sessions_per_address: HourlyBudget<IpAddr>,
    uploads_per_address: HourlyBudget<IpAddr>,
    uploads_per_visitor: HourlyBudget<u64>,
    upload_bytes_per_address: HourlyBudget<IpAddr>,
    upload_bytes_per_visitor: HourlyBudget<u64>,
    offline_messages_per_address: HourlyBudget<IpAddr>,
    offline_messages_per_visitor: HourlyBudget<u64>,
    transcripts_per_visitor: HourlyBudget<u64>,
    password_resets_per_address: HourlyBudget<IpAddr>,
    password_resets_per_account: HourlyBudget<String>,
    clock: DefaultClock,
}

impl VisitorLimits {
    pub fn new(limits: &LimitsConfig) -> VisitorLimits {
        VisitorLimits {
            sessions_per_address: HourlyBudget::new(
                limits.visitor_sessions_per_address_per_hour,
                "new visitor sessions from this address",
            ),
            uploads_per_address: HourlyBudget::new(limits.uploads_per_address_per_hour, "uploads from this address"),
            uploads_per_visitor: HourlyBudget::new(limits.uploads_per_visitor_per_hour, "uploads from this visitor"),
            upload_bytes_per_address: HourlyBudget::new(
                limits.upload_bytes_per_address_per_hour,
                "uploaded bytes from this address",
            ),
            upload_bytes_per_visitor: HourlyBudget::new(
                limits.upload_bytes_per_visitor_per_hour,
                "uploaded bytes from this visitor",
            ),
            offline_messages_per_address: HourlyBudget::new(
                limits.offline_messages_per_address_per_hour,
                "offline messages from this address",
            ),
            offline_messages_per_visitor: HourlyBudget::new(
                limits.offline_messages_per_visitor_per_hour,
                "offline messages from this visitor",
            ),
            transcripts_per_visitor: HourlyBudget::new(
                limits.transcripts_per_visitor_per_hour,
                "transcripts emailed to this visitor",
            ),
            password_resets_per_address: HourlyBudget::new(
                limits.password_resets_per_address_per_hour,
                "password resets from this address",
            ),
            password_resets_per_account: HourlyBudget::new(
                limits.password_resets_per_address_per_hour.div_ceil(3),
                "password resets of this account",
            ),
            clock: DefaultClock::default(),
        }
    }

    /// Counts a session that will make a new visitor.
    pub fn new_session(&self, client_ip: IpAddr) -> Result<(), LimitExceeded> {
        self.sessions_per_address.take(&client_ip, 1, &self.clock)
    }

    /// Counts an upload of `n_bytes` by a visitor.
    pub fn upload(&self, client_ip: IpAddr, visitor_id: u64, n_bytes: u64) -> Result<(), LimitExceeded> {
        self.uploads_per_address.take(&client_ip, 1, &self.clock)?;
        self.uploads_per_visitor.take(&visitor_id, 1, &self.clock)?;
        self.upload_bytes_per_address.take(&client_ip, n_bytes, &self.clock)?;
        self.upload_bytes_per_visitor.take(&visitor_id, n_bytes, &self.clock)
    }

    /// Counts an offline message left by a visitor.
    pub fn offline_message(&self, client_ip: IpAddr, visitor_id: u64) -> Result<(), LimitExceeded> {
        self.offline_messages_per_address.take(&client_ip, 1, &self.clock)?;
        self.offline_messages_per_visitor.take(&visitor_id, 1, &self.clock)
    }

    /// Counts a transcript a visitor asked to have emailed.
    pub fn transcript(&self, visitor_id: u64) -> Result<(), LimitExceeded> {
        self.transcripts_per_visitor.take(&visitor_id, 1, &self.clock)
    }

    /// Counts a "forgot password" request (budgets per address and per account email).
    pub fn password_reset(&self, client_ip: IpAddr, email: &str) -> Result<(), LimitExceeded> {
        self.password_resets_per_address.take(&client_ip, 1, &self.clock)?;
        self.password_resets_per_account.take(&email.trim().to_lowercase(), 1, &self.clock)
    }

    /// Drops budgets that have refilled, once there are many, so memory stays bounded.
    pub fn forget_idle(&self) {
        self.sessions_per_address.forget_idle();
        self.uploads_per_address.forget_idle();
        self.uploads_per_visitor.forget_idle();
        self.upload_bytes_per_address.forget_idle();
        self.upload_bytes_per_visitor.forget_idle();
        self.offline_messages_per_address.forget_idle();
        self.offline_messages_per_visitor.forget_idle();
        self.transcripts_per_visitor.forget_idle();
        self.password_resets_per_address.forget_idle();
        self.password_resets_per_account.forget_idle();
    }
}

//! The systemd notification protocol (`sd_notify`), sent with the sd-notify crate.
//!
//! Under `Type=notify` systemd passes `NOTIFY_SOCKET`, a unix datagram socket. kefu sends
//! `READY=1` once its listener accepts connections, `WATCHDOG=1` periodically while its database
//! answers (`WatchdogSec=`), `STOPPING=1` when shutdown begins, and `EXTEND_TIMEOUT_USEC=` while
//! redb repairs a file after a crash, so a long repair is not killed by the start timeout. Without
//! `NOTIFY_SOCKET` every call does nothing. The crate ends each state with a newline and takes
//! `NOTIFY_SOCKET` as a path (systemd's own sockets are paths; an abstract `@name` is not reached).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use std::future::Future;

/// How much more start time each repair progress report asks systemd for: a minute, in microseconds.
const REPAIR_EXTENSION_USEC: u32 = 60_000_000;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to systemd; returns whether it was sent.
pub fn notify(state: &str) -> bool {
    send(&[NotifyState::Custom(state)])
}

/// Sends `states` to systemd if it listens; returns whether they were sent.
fn send(states: &[NotifyState]) -> bool {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return false;
    }
    match sd_notify::notify(states) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "notifying systemd failed");
            false
        }
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|interval| !interval.is_zero())
}

/// Pings the watchdog at half its interval while `healthy` answers (the server passes a read of
/// the database), until `shutdown`. A hung process stops pinging and systemd restarts it.
pub async fn run_watchdog<F, Checked, E>(interval: Duration, shutdown: CancellationToken, mut healthy: F)
where
    F: FnMut() -> Checked,
    Checked: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut ticks = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match healthy().await {
            Ok(_) => {
                send(&[NotifyState::Watchdog]);
            }
            Err(error) => tracing::error!(%error, "the database did not answer; not pinging the watchdog"),
        }
    }
}

/// Called by redb while it repairs the database: asks systemd for more start time.
pub fn on_repair_progress(progress: f64) {
    tracing::warn!(progress = format_args!("{:.0}%", progress * 100.0), "repairing the database after a crash");
    let status = format!("repairing the database ({:.0}%)", progress * 100.0);
    send(&[NotifyState::ExtendTimeoutUsec(REPAIR_EXTENSION_USEC), NotifyState::Status(&status)]);
}

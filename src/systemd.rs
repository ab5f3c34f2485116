//! The systemd notification protocol (`sd_notify`), written out because it is one datagram.
//!
//! Under `Type=notify` systemd passes `NOTIFY_SOCKET`, a unix datagram socket (a path, or an
//! abstract name starting with `@`). kefu sends `READY=1` once its listener accepts connections,
//! `WATCHDOG=1` periodically while its database answers (`WatchdogSec=`), `STOPPING=1` when
//! shutdown begins, and `EXTEND_TIMEOUT_USEC=` while redb repairs a file after a crash, so a
//! long repair is not killed by the start timeout. Without `NOTIFY_SOCKET` every call does nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::storage::Store;

/// How much more time each repair progress report asks systemd for.
pub const REPAIR_EXTENSION: Duration = Duration::from_secs(60);

/// Sends `state` (newline-separated `KEY=VALUE` lines) to systemd; returns whether it was sent.
pub fn notify(state: &str) -> bool {
    let Some(socket_name) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    match send(&socket_name, state) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "notifying systemd failed");
            false
        }
    }
}

#[cfg(target_os = "linux")]
fn send(socket_name: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let bytes = socket_name.as_bytes();
    let address = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(socket_name)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send(_socket_name: &std::ffi::OsStr, _state: &str) -> std::io::Result<()> {
    Ok(())
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|pid| pid.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval while the database answers a read, until `shutdown`.
/// A hung process stops pinging and systemd restarts it.
pub async fn run_watchdog(store: Store, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match store.read(|transaction| crate::storage::read_meta(transaction, "schema_version")).await {
            Ok(_) => {
                notify("WATCHDOG=1");
            }
            Err(error) => tracing::error!(%error, "the database did not answer; not pinging the watchdog"),
        }
    }
}

/// Called by redb while it repairs the database: asks systemd for more start time.
pub fn on_repair_progress(progress: f64) {
    tracing::warn!(progress = format_args!("{:.0}%", progress * 100.0), "repairing the database after a crash");
    notify(&format!(
        "EXTEND_TIMEOUT_USEC={}\nSTATUS=repairing the database ({:.0}%)",
        REPAIR_EXTENSION.as_micros(),
        progress * 100.0
    ));
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn sends_a_datagram_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");
    }
}

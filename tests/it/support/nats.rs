//! A private nats-server (Debian's `nats-server`) for a cluster test: started on a free port of
//! 127.0.0.1, killed when dropped. Without the binary, the test prints one line saying it was
//! skipped and why, and passes; `.ci/run` installs it.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CANDIDATES: &[&str] = &["/usr/sbin/nats-server", "/usr/bin/nats-server"];

pub struct NatsServer {
    pub port: u16,
    child: Child,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NatsServer {
    /// Starts a server, or `None` (with one line saying so) when nats-server is not installed.
    pub fn start(test: &str) -> Option<NatsServer> {
        let Some(binary) = CANDIDATES.iter().find(|path| Path::new(path).exists()) else {
            // Written to stderr itself, not through the captured output, so it always shows.
            let _ = writeln!(
                std::io::stderr(),
                "cluster test {test} skipped: nats-server is not installed (none of {CANDIDATES:?}; .ci/run installs Debian's nats-server)"
            );
            return None;
        };
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port();
        Some(NatsServer { port, child: spawn(binary, port) })
    }

    /// Kills the server (SIGKILL) for `down`, then starts a new one on the same port: every
    /// message in flight or published meanwhile is lost with the subscriptions, and the clients
    /// reconnect.
    pub async fn restart_after(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tokio::time::sleep(down).await;
        let binary = CANDIDATES.iter().find(|path| Path::new(path).exists()).expect("nats-server ran before");
        let port = self.port;
        let binary = binary.to_string();
        self.child = tokio::task::spawn_blocking(move || spawn(&binary, port)).await.expect("nats-server restarts");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Starts nats-server on `port` and waits until it accepts connections.
fn spawn(binary: &str, port: u16) -> Child {
    let mut child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = child.try_wait().ok().flatten();
        assert!(
            exited.is_none() && started.elapsed() < Duration::from_secs(20),
            "nats-server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

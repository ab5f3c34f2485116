//! The HTTP client of kefu's own tools (`kefu chat`, `kefu healthcheck`, the load generator of
//! `kefu bench`): they talk to the kefu they were pointed at, usually on loopback, so it has no
//! address guard, takes no proxy from the environment and follows no redirect: a request goes to
//! exactly the address the user gave. (The server's outbound client, for webhooks and model
//! endpoints, is another: it refuses private addresses.)

use std::time::Duration;

/// The longest wait for a connection, whatever the request's own timeout.
const MAX_CONNECT_TIME: Duration = Duration::from_secs(10);

/// A client whose requests each end after `timeout`.
pub fn tool_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a default TLS crypto provider (it is shared with the server, which
    // installs ring); installing it a second time is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIME))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
}

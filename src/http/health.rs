//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::server::AppState;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the database answers and the server is not shutting down.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match app.store.read(|transaction| crate::storage::read_meta(transaction, "schema_version")).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(error) => {
            tracing::error!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

/// The longest a probe waits for its whole answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `kefu healthcheck --url http://HOST:PORT/PATH`: one HTTP/1.0 GET over a plain TCP socket;
/// `Ok` on a 2xx status. It exists for container health checks, where there is no curl.
pub async fn probe(url: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("--url must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let address: std::net::SocketAddr = authority.parse().map_err(|_| {
        anyhow::anyhow!("--url must name an IP address and port, such as http://127.0.0.1:8080/healthz")
    })?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within {PROBE_TIMEOUT:?}"))??;
    let status_line = String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned();
    let status: u16 = status_line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    if (200..300).contains(&status) {
        println!("{status_line}");
        Ok(())
    } else {
        anyhow::bail!("{url} answered {status_line:?}")
    }
}

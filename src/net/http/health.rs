//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::net::AppState;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the database answers and the server is not shutting down.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match app.store.check_ready().await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(error) => {
            tracing::error!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

/// The longest a probe waits for its whole answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `kefu healthcheck --url http://HOST:PORT/PATH`: one HTTP/1.0 GET; `Ok` on a 2xx status. It
/// exists for container health checks, where there is no curl.
pub async fn probe(url: &str) -> anyhow::Result<()> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("--url must start with http://"))?;
    // An IP address only: a container's health check should not depend on name resolution.
    let authority = rest.split('/').next().unwrap_or_default();
    authority.parse::<std::net::SocketAddr>().map_err(|_| {
        anyhow::anyhow!("--url must name an IP address and port, such as http://127.0.0.1:8080/healthz")
    })?;
    let client = kefu_client::http::tool_client(PROBE_TIMEOUT)?;
    // HTTP/1.0, so the server answers in kind and the printed status line reads `HTTP/1.0 200 OK`.
    let response = match client.get(url).version(reqwest::Version::HTTP_10).send().await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => anyhow::bail!("{url} did not answer within {PROBE_TIMEOUT:?}"),
        Err(error) => return Err(error.into()),
    };
    let status = response.status();
    let status_line = match status.canonical_reason() {
        Some(reason) => format!("{:?} {} {reason}", response.version(), status.as_u16()),
        None => format!("{:?} {}", response.version(), status.as_u16()),
    };
    if status.is_success() {
        println!("{status_line}");
        Ok(())
    } else {
        anyhow::bail!("{url} answered {status_line:?}")
    }
}

//! `GET /metrics` on its own listener: the Prometheus text of [`crate::base::metrics::METRICS`].

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::base::metrics::{LiveValues, METRICS};
use crate::net::AppState;

/// `GET /metrics`.
async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let live = LiveValues { writer_queue: app.store.writer_queue_len(), outbound_queued: app.hub.n_queued_frames() };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], METRICS.render(&live))
}

/// Serves `/metrics` on `address` until `app` shuts down; returns the bound address.
/// A failure to bind is logged and leaves kefu running without metrics.
pub async fn serve(app: AppState, address: SocketAddr) -> Option<SocketAddr> {
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%address, %error, "metrics are unavailable: binding their listener failed");
            return None;
        }
    };
    let local_addr = listener.local_addr().ok()?;
    let shutdown = app.shutdown.clone();
    let router = Router::new().route("/metrics", get(metrics)).with_state(app.clone());
    app.tasks.spawn(async move {
        let served =
            axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
        if let Err(error) = served {
            tracing::warn!(%error, "the metrics listener stopped");
        }
    });
    Some(local_addr)
}

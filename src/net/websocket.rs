//! The WebSocket transport: upgrade checks, then one task per connection that reads frames,
//! writes the session's output and the outbound queue, keeps the heartbeat and enforces limits.
//!
//! Memory per idle connection is what the product's numbers hinge on, so the socket's buffers
//! are small (tungstenite's default read buffer alone is 128 KiB), the connection is one task,
//! and nothing is allocated per connection beyond its queue (empty while idle) and session. The
//! task's future is as large as its largest state, so the states it passes through rarely
//! (the opening: waiting for the hello and starting the session; handling a client frame; a
//! ping; finishing and closing) are boxed, allocated only while they run.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::base::rate_limit::RateLimiter;
use crate::chat::delivery::{ConnectionHandle, OutboundReceiver, Role};
use crate::net::AppState;
use crate::net::http::{error::ApiError, session_cookie_token};
use crate::net::session::{CloseReason, Entry, Session};
use crate::protocol::error_frame;
use crate::protocol::{self, ClientFrame, ErrorCode, ServerFrame, close_code};

/// Read buffer per connection. Frames larger than this are read in several steps; most chat
/// frames (`send` with a sentence or two, `typing`, `read`) are far smaller.
const READ_BUFFER_BYTES: usize = 512;

/// Write buffer per connection before a flush is forced.
const WRITE_BUFFER_BYTES: usize = 1024;

/// How long the close frame to a slow consumer may take to go out (after its write timed out)
/// before the connection is dropped without one.
const SLOW_CONSUMER_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// How long a closing connection waits for the client to answer its close frame. Until then it
/// reads and drops whatever the client still sends: a socket closed with unread input is reset,
/// and a reset can discard the last frames (a `goaway`, the close) before they reach the client.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
pub struct VisitorQuery {
    site: String,
}

/// `GET /ws/visitor?site=KEY`
pub async fn visitor_upgrade(
    State(app): State<AppState>,
    Query(query): Query<VisitorQuery>,
    client: crate::net::http::client_address::ClientAddress,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let site = app.sites.get(&query.site).await?.ok_or_else(|| ApiError::NotFound("no such site".into()))?;
    let origin = headers.get("origin").and_then(|value| value.to_str().ok());
    if !site.site.allows_origin(origin, &crate::net::http::own_origin(&headers)) {
        let _ = crate::net::http::visitor_api::refuse_origin(&app, &site.site.key, origin.unwrap_or_default());
        return Err(ApiError::Forbidden("this origin may not open visitor connections for the site".into()));
    }
    crate::net::http::visitors_api::refuse_blocked_address(&app, &site.site.key, client.ip()).await?;
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    upgrade_with(app, upgrade, Role::Visitor, Entry::Visitor { site, peer: Some(client.ip()), user_agent })
}

/// `GET /ws/agent`
pub async fn agent_upgrade(
    State(app): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let cookie_token = session_cookie_token(&headers);
    // A browser sends the cookie from any page; only kefu's own pages may use it on a socket.
    if cookie_token.is_some() {
        if let Some(origin) = headers.get("origin").and_then(|value| value.to_str().ok()) {
            if !origin.eq_ignore_ascii_case(&crate::net::http::own_origin(&headers)) {
                return Err(ApiError::Forbidden(
                    "agent connections with a session cookie must come from kefu's own origin".into(),
                ));
            }
        }
    }
    upgrade_with(app, upgrade, Role::Agent, Entry::Agent { cookie_token })
}

fn upgrade_with(app: AppState, upgrade: WebSocketUpgrade, role: Role, entry: Entry) -> Result<Response, ApiError> {
    let permit = app
        .connection_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable("too many connections".into()))?;
    let max_frame = app.config.limits.max_frame_bytes;
    let tasks = app.tasks.clone();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(max_frame.max(WRITE_BUFFER_BYTES) * 4)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| {
            // Boxed before the task starts, so the task's future never holds the opening's
            // state (the socket before the hello, the entry, the hello, the session's start).
            let opening = Box::pin(open(Connection::new(socket, &app.config.limits), app.clone(), role, entry));
            tasks.track_future(serve(opening, app, permit))
        })
        .into_response())
}

/// A connection whose session has started.
struct Opened {
    connection: Connection,
    session: Session,
    handle: ConnectionHandle,
    outbound: OutboundReceiver,
    first_frames: Vec<Bytes>,
}

/// Reads the hello and starts the session; `None` when the connection was closed instead.
async fn open(mut connection: Connection, app: AppState, role: Role, entry: Entry) -> Option<Opened> {
    let limits = &app.config.limits;
    let hello = tokio::select! {
        frame = tokio::time::timeout(Duration::from_secs(limits.hello_timeout_secs), connection.socket.recv()) => frame,
        _ = app.shutdown.cancelled() => {
            connection.close(CloseReason::new(close_code::RESTARTING, "shutting down")).await;
            return None;
        }
    };
    let refusal = match hello {
        Err(_) => CloseReason::new(close_code::HELLO_TIMEOUT, "no hello in time"),
        Ok(Some(Ok(Message::Text(text)))) => match protocol::decode_client_frame(&text) {
            Ok(ClientFrame::Hello(hello)) => {
                let (handle, outbound) = ConnectionHandle::new(role, limits.outbound_queue);
                match Session::start(app.clone(), entry, hello, handle.clone()).await {
                    Ok((session, first_frames)) => {
                        return Some(Opened { connection, session, handle, outbound, first_frames });
                    }
                    Err(reason) => reason,
                }
            }
            Ok(_) => CloseReason::new(close_code::BAD_HELLO, "the first frame must be hello"),
            Err(error) => CloseReason::new(close_code::BAD_HELLO, error.message),
        },
        Ok(Some(Err(error))) => close_reason_for(&error),
        Ok(Some(Ok(_))) => CloseReason::new(close_code::BAD_HELLO, "the first frame must be a text hello"),
        Ok(None) => return None,
    };
    connection.close(refusal).await;
    None
}

/// The connection's task: after the opening, reads frames, writes the session's output and the
/// outbound queue, and keeps the heartbeat until either side closes. Only what an idle
/// connection needs lives in this future; rare states are boxed while they run.
async fn serve(
    opening: std::pin::Pin<Box<impl Future<Output = Option<Opened>>>>,
    app: AppState,
    permit: OwnedSemaphorePermit,
) {
    let Some(Opened { mut connection, mut session, handle, mut outbound, first_frames }) = opening.await else {
        return;
    };
    let limits = &app.config.limits;
    let _counted = crate::base::metrics::METRICS.connection_opened(
        crate::base::metrics::Transport::WebSocket,
        match handle.role() {
            Role::Visitor => crate::base::metrics::Peer::Visitor,
            Role::Agent => crate::base::metrics::Peer::Agent,
        },
    );
    let mut out: Vec<Bytes> = first_frames;
    let rate = RateLimiter::new(limits.frames_per_second, limits.frame_burst);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(limits.heartbeat_secs));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    let idle_timeout = Duration::from_secs(limits.idle_timeout_secs);

    let ending = loop {
        if !out.is_empty() {
            if let Err(reason) = connection.write_all(&mut out).await {
                break reason.map_or(Ending::Gone, Ending::Close);
            }
        }
        tokio::select! {
            _ = app.shutdown.cancelled() => {
                out.push(ServerFrame::Goaway { reason: "shutdown", reconnect_after_ms: 1000 }.encode());
                let _ = connection.write_all(&mut out).await;
                break Ending::Close(CloseReason::new(close_code::RESTARTING, "server restarting; reconnect and resume"));
            }
            incoming = connection.socket.recv() => {
                connection.last_activity = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        // Over the rate, the frame waits (and so does reading the next one).
                        if rate.check().is_err() {
                            Box::pin(rate.pace()).await;
                        }
                        // Boxed: a frame's handling (a send waits for its commit) is large, and an
                        // idle connection should not carry its state.
                        Box::pin(session.on_frame(&text, &mut out)).await;
                    }
                    Some(Ok(Message::Binary(_))) => out.push(error_frame(ErrorCode::BadJson, "frames are JSON text messages", None)),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) => break Ending::ClientClosed,
                    None => break Ending::Gone,
                    Some(Err(error)) => break Ending::Close(close_reason_for(&error)),
                }
            }
            queued = outbound.recv() => {
                if let Err(reason) = session.take_outbound(queued, &mut outbound, &handle, &mut out) {
                    if reason.flushes_pending() {
                        let _ = connection.write_all(&mut out).await;
                    }
                    break Ending::Close(reason);
                }
                if session.has_pending_replays() {
                    Box::pin(session.replay_subscribed(&mut out)).await;
                }
            }
            _ = heartbeat.tick() => {
                if connection.last_activity.elapsed() >= idle_timeout {
                    break Ending::Close(CloseReason::new(close_code::IDLE_TIMEOUT, "idle too long"));
                }
                // Boxed: a ping every heartbeat is rare next to the time a connection idles.
                if !Box::pin(connection.send_one(Message::Ping(Bytes::new()), connection.write_timeout)).await {
                    break Ending::Gone;
                }
            }
        }
    };
    Box::pin(session.finish()).await;
    match ending {
        Ending::Close(reason) => Box::pin(connection.close(reason)).await,
        // Sends the answer to the client's close, which tungstenite has queued.
        Ending::ClientClosed => {
            let _ = Box::pin(tokio::time::timeout(connection.write_timeout, connection.socket.flush())).await;
        }
        Ending::Gone => {}
    }
    drop(permit);
}

/// How a connection's main loop ended.
enum Ending {
    /// The server closes the connection with this reason.
    Close(CloseReason),
    /// The client closed; tungstenite has queued the answer to its close frame.
    ClientClosed,
    /// The socket failed or ended.
    Gone,
}

struct Connection {
    socket: WebSocket,
    last_activity: Instant,
    /// How long one write may take (`limits.write_timeout_secs`).
    write_timeout: Duration,
}

impl Connection {
    fn new(socket: WebSocket, limits: &crate::base::config::LimitsConfig) -> Connection {
        Connection {
            socket,
            last_activity: Instant::now(),
            write_timeout: Duration::from_secs(limits.write_timeout_secs),
        }
    }

    /// Writes and flushes `frames`, emptying it. A client that takes nothing for the write
    /// timeout is a slow consumer: the close (4008) follows the frame already under way.
    async fn write_all(&mut self, frames: &mut Vec<Bytes>) -> Result<(), Option<CloseReason>> {
        let write = async {
            for frame in frames.drain(..) {
                let text = Utf8Bytes::try_from(frame).expect("server frames are JSON, hence UTF-8");
                self.socket.feed(Message::Text(text)).await?;
            }
            self.socket.flush().await
        };
        let written = tokio::time::timeout(self.write_timeout, write).await;
        frames.clear();
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                // Usually the client went away; a frame too big for the write buffer also ends
                // here, and would otherwise drop the connection with no trace.
                tracing::info!(%error, "writing to a WebSocket failed; the connection ends");
                Err(None)
            }
            Err(_) => Err(Some(CloseReason::slow_consumer())),
        }
    }

    /// Sends one message; false when the client is gone or does not take it in time.
    async fn send_one(&mut self, message: Message, patience: Duration) -> bool {
        matches!(tokio::time::timeout(patience, self.socket.send(message)).await, Ok(Ok(())))
    }

    /// Sends the close frame, then waits (briefly) for the client's answer to it. The frame goes
    /// after whatever frame is still partly written, so the client never sees a cut frame; a slow
    /// consumer gets longer for it, since its socket is full.
    async fn close(&mut self, reason: CloseReason) {
        let patience = if reason.flushes_pending() { self.write_timeout } else { SLOW_CONSUMER_CLOSE_GRACE };
        let frame = CloseFrame { code: reason.code, reason: Utf8Bytes::from(truncate_reason(&reason.reason)) };
        if !self.send_one(Message::Close(Some(frame)), patience).await {
            return;
        }
        let answered = async {
            while let Some(Ok(message)) = self.socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, answered).await;
    }
}

fn close_reason_for(error: &axum::Error) -> CloseReason {
    let text = error.to_string();
    if text.contains("Space limit exceeded")
        || text.contains("too long")
        || text.contains("too big")
        || text.contains("Message too")
        || text.contains("Frame too")
    {
        CloseReason::new(close_code::TOO_BIG, "frame too large")
    } else {
        CloseReason::new(close_code::BAD_HELLO, "protocol error")
    }
}

/// Close reasons are limited to 123 bytes by the WebSocket protocol.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

//! The bench's agents in the coordinator process: they count conversations assigned to them,
//! time visitor messages on arrival (visitor → agent latency) and answer some of them with a
//! timed message of their own (agent → visitor latency, measured by the visitors).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use anyhow::Context;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;

use super::client::{self, Endpoint, Http};

/// What all agents share with the coordinator.
#[derive(Default)]
pub struct AgentStats {
    /// Conversations assigned to one of the bench's agents.
    pub assigned: AtomicUsize,
    /// Visitor messages received while measuring.
    pub received: AtomicU64,
    /// Replies acknowledged.
    pub replies_acked: AtomicU64,
    pub errors: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    /// Visitor → agent messages: when each was sent (Unix microseconds) and its latency.
    pub v2a: Mutex<Vec<(u64, u32)>>,
    /// Agent send → ack latencies, microseconds.
    pub ack_us: Mutex<Vec<u32>>,
    /// Whether arrivals are timed (only during steps).
    pub measuring: AtomicBool,
}

impl AgentStats {
    fn error(&self, error: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().get_or_insert_with(|| error.to_string());
    }

    /// Takes the latencies gathered so far: visitor → agent (with send instants) and acks.
    pub fn take(&self) -> (Vec<(u64, u32)>, Vec<u32>) {
        (std::mem::take(&mut *self.v2a.lock()), std::mem::take(&mut *self.ack_us.lock()))
    }
}

/// Connects every agent; each answers one visitor message in `reply_every` (0: never).
pub async fn start(
    endpoint: &Endpoint,
    agents: &[(String, String)],
    reply_every: u64,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Arc<AgentStats>, Vec<tokio::task::JoinHandle<()>>)> {
    let stats = Arc::new(AgentStats::default());
    let mut tasks = Vec::new();
    let http = Http::new(endpoint.addr)?;
    for (number, (email, password)) in agents.iter().enumerate() {
        let token = if endpoint.bare { email.clone() } else { client::agent_login(&http, email, password).await? };
        let (ws, welcome) = client::ws_connect(endpoint, None, "/ws/agent", json!({ "type": "hello", "token": token }))
            .await
            .with_context(|| format!("connecting agent {email}"))?;
        let me = welcome.agent_id.context("a welcome without agent_id")?;
        let stats = stats.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(serve(ws, me, number, reply_every, stats, stop)));
    }
    Ok((stats, tasks))
}

async fn serve(
    mut ws: client::Ws,
    me: u64,
    number: usize,
    reply_every: u64,
    stats: Arc<AgentStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut received = 0u64;
    let mut replies = 0u64;
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => return,
            frame = client::next_frame(&mut ws) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return stats.error(format!("agent {me}: the server closed the connection")),
            Err(error) => return stats.error(format!("agent {me}: {error:#}")),
        };
        match frame.kind.as_str() {
            "conversation" => {
                let mine =
                    frame.conversation.as_ref().is_some_and(|conversation| conversation.assigned_agent == Some(me));
                if mine && frame.event.as_deref() == Some("assigned") {
                    stats.assigned.fetch_add(1, Ordering::Relaxed);
                }
            }
            "message" => {
                let from_visitor = frame.sender.as_ref().is_some_and(|sender| sender.kind == "visitor");
                if !from_visitor || !stats.measuring.load(Ordering::Relaxed) {
                    continue;
                }
                let Some(timed) = frame.text.as_deref().and_then(client::sent_and_latency) else { continue };
                stats.v2a.lock().push(timed);
                stats.received.fetch_add(1, Ordering::Relaxed);
                received += 1;
                if reply_every > 0 && received % reply_every == 0 {
                    replies += 1;
                    let reply = json!({
                        "type": "send",
                        "client_id": format!("a{number}-{replies}"),
                        "conversation_id": frame.conversation_id,
                        "text": client::timed_text(),
                    });
                    if let Err(error) = client::send_frame(&mut ws, &reply).await {
                        return stats.error(format!("agent {me}: {error:#}"));
                    }
                }
            }
            "ack" => {
                stats.replies_acked.fetch_add(1, Ordering::Relaxed);
                if let Some(latency) = frame.text.as_deref().and_then(client::latency_of) {
                    stats.ack_us.lock().push(latency);
                }
            }
            "error" => stats.error(format!("agent {me}: error frame {:?}: {:?}", frame.code, frame.message)),
            _ => {}
        }
    }
}

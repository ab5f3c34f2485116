//! A bare WebSocket relay on tokio-tungstenite: the floor `kefu bench relay` compares kefu with.
//! It speaks the bare protocol of bench/README.md and stores nothing.
//!
//! Usage: tungstenite-relay PORT [BUFFER_BYTES]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames queued for one connection.
const QUEUE: usize = 512;

#[derive(Default)]
struct State {
    next_id: u64,
    /// Visitor id (= conversation id) → its connection.
    visitors: HashMap<u64, mpsc::Sender<Utf8Bytes>>,
    /// Agent ids and connections, in connection order.
    agents: Vec<(u64, mpsc::Sender<Utf8Bytes>)>,
    /// Conversation → (assigned agent, last seq).
    conversations: HashMap<u64, (Option<u64>, u64)>,
    round_robin: usize,
}

type Shared = Arc<Mutex<State>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|port| port.parse().ok())
        .expect("usage: tungstenite-relay PORT [BUFFER_BYTES]");
    let buffer: usize = args.next().and_then(|bytes| bytes.parse().ok()).unwrap_or(1024);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let state: Shared = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let _ = serve(stream, state, buffer).await;
        });
    }
}

async fn serve(stream: TcpStream, state: Shared, buffer: usize) -> Result<(), Box<dyn std::error::Error>> {
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(buffer).write_buffer_size(0).max_message_size(Some(64 << 10));
    let mut agent = false;
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |request: &Request, response: Response| {
            agent = request.uri().path().starts_with("/ws/agent");
            Ok(response)
        },
        Some(config),
    )
    .await?;
    // hello → welcome
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(_))) => break,
            Some(Ok(_)) => continue,
            _ => return Ok(()),
        }
    }
    let (queue, mut outbound) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let id = {
        let mut state = state.lock().unwrap();
        state.next_id += 1;
        let id = state.next_id;
        if agent {
            state.agents.push((id, queue.clone()));
        } else {
            state.visitors.insert(id, queue.clone());
        }
        id
    };
    let welcome = if agent {
        json!({ "type": "welcome", "role": "agent", "agent_id": id, "conversations": [] })
    } else {
        json!({ "type": "welcome", "role": "visitor", "visitor_id": id, "conversations": [] })
    };
    ws.send(Message::text(welcome.to_string())).await?;
    let result: Result<(), Box<dyn std::error::Error>> = async {
        loop {
            tokio::select! {
                frame = outbound.recv() => match frame {
                    Some(frame) => ws.send(Message::Text(frame)).await?,
                    None => return Ok(()),
                },
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                        if frame["type"] == "send" {
                            relay(&state, id, agent, &frame);
                        } else if frame["type"] == "ping" {
                            let _ = queue.try_send(Utf8Bytes::from_static("{\"type\":\"pong\"}"));
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    .await;
    let mut state = state.lock().unwrap();
    if agent {
        state.agents.retain(|(agent_id, _)| *agent_id != id);
    } else {
        state.visitors.remove(&id);
    }
    result
}

/// Acks a `send` to its sender and delivers it to the other side of the conversation.
fn relay(state: &Shared, id: u64, agent: bool, frame: &Value) {
    let mut state = state.lock().unwrap();
    let state = &mut *state;
    let conversation = if agent { frame["conversation_id"].as_u64().unwrap_or(0) } else { id };
    let mut assigned_now = None;
    let entry = state.conversations.entry(conversation).or_insert((None, 0));
    if entry.0.is_none() && !state.agents.is_empty() {
        let (agent_id, sender) = state.agents[state.round_robin % state.agents.len()].clone();
        state.round_robin += 1;
        entry.0 = Some(agent_id);
        assigned_now = Some(sender);
    }
    entry.1 += 1;
    let (assigned, seq) = *entry;
    if let (Some(sender), Some(agent_id)) = (assigned_now, assigned) {
        let event = json!({ "type": "conversation", "event": "assigned",
            "conversation": { "id": conversation, "assigned_agent": agent_id, "status": "assigned" } });
        let _ = sender.try_send(event.to_string().into());
    }
    let ack = json!({ "type": "ack", "client_id": frame["client_id"], "conversation_id": conversation, "seq": seq,
        "duplicate": false, "text": frame["text"] });
    let message = json!({ "type": "message", "conversation_id": conversation, "seq": seq,
        "sender": { "kind": if agent { "agent" } else { "visitor" }, "id": id },
        "kind": "text", "text": frame["text"], "client_id": frame["client_id"] });
    let own = if agent { state.agents.iter().find(|(agent_id, _)| *agent_id == id).map(|(_, sender)| sender) } else { state.visitors.get(&id) };
    if let Some(own) = own {
        let _ = own.try_send(ack.to_string().into());
    }
    let other = if agent {
        state.visitors.get(&conversation)
    } else {
        assigned.and_then(|agent_id| state.agents.iter().find(|(id, _)| *id == agent_id).map(|(_, sender)| sender))
    };
    if let Some(other) = other {
        let _ = other.try_send(message.to_string().into());
    }
}

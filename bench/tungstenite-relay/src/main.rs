//! A bare WebSocket relay on tokio-tungstenite: the floor `kefu bench relay` compares kefu with.
//! It speaks the bare protocol of bench/README.md and stores nothing.
//!
//! Usage: tungstenite-relay PORT [BUFFER_BYTES]
//!
//! With `SERIAL_BATCH_US` or `SERIAL_MESSAGE_US` set, every `send` first passes one thread that
//! takes all that is queued as a batch and does that much CPU work for the batch and for each of
//! its messages before relaying them, as a store's single writer would; `SERIAL_WAIT_US` adds a
//! sleep per batch, as a sync waiting for the disk would; `BACKGROUND_MESSAGE_US`
//! adds work per message on a second thread at nice 10, as an apply behind the writer would.
//! The work is a fixed count of instructions, calibrated at start, so a host that slows the CPU
//! slows it as it slows real work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    let serial = SerialStage::from_env(&state);
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        let serial = serial.clone();
        tokio::spawn(async move {
            let _ = serve(stream, state, serial, buffer).await;
        });
    }
}

/// A `send` waiting for the serial stage: sender id, whether it is an agent, the frame.
type Pending = (u64, bool, Value);

/// Microseconds of work from the environment variable `name` (0 when unset).
fn micros_from_env(name: &str) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(0)
}

/// The optional single thread every `send` passes before it is relayed (module docs).
#[derive(Clone)]
struct SerialStage(Option<std::sync::mpsc::Sender<Pending>>);

impl SerialStage {
    fn from_env(state: &Shared) -> Self {
        let (batch_us, message_us) = (micros_from_env("SERIAL_BATCH_US"), micros_from_env("SERIAL_MESSAGE_US"));
        let wait = Duration::from_micros(micros_from_env("SERIAL_WAIT_US"));
        let background_us = micros_from_env("BACKGROUND_MESSAGE_US");
        if batch_us == 0 && message_us == 0 {
            return Self(None);
        }
        let work_per_us = calibrate_work_per_microsecond();
        eprintln!(
            "serial stage: {batch_us} µs a batch, {message_us} µs a message, {wait:?} waited a batch, {background_us} µs a message behind it; {work_per_us} work units a µs"
        );
        let background = (background_us > 0).then(|| {
            let (applied, to_apply) = std::sync::mpsc::channel::<usize>();
            std::thread::spawn(move || {
                // SAFETY: setpriority on this thread's own id changes only this thread's niceness.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
                for count in to_apply {
                    work(count as u64 * background_us * work_per_us);
                }
            });
            applied
        });
        let (queue, queued) = std::sync::mpsc::channel::<Pending>();
        let state = state.clone();
        std::thread::spawn(move || {
            while let Ok(first) = queued.recv() {
                let batch: Vec<Pending> = std::iter::once(first).chain(queued.try_iter()).collect();
                work((batch_us + batch.len() as u64 * message_us) * work_per_us);
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                for (id, agent, frame) in &batch {
                    relay(&state, *id, *agent, frame);
                }
                if let Some(background) = &background {
                    let _ = background.send(batch.len());
                }
            }
        });
        Self(Some(queue))
    }

    fn relay(&self, state: &Shared, id: u64, agent: bool, frame: Value) {
        match &self.0 {
            Some(queue) => {
                let _ = queue.send((id, agent, frame));
            }
            None => relay(state, id, agent, &frame),
        }
    }
}

/// `units` of fixed CPU work.
fn work(units: u64) {
    let mut accumulator = 0u64;
    for unit in 0..units {
        accumulator = std::hint::black_box(accumulator.wrapping_mul(6364136223846793005).wrapping_add(unit));
    }
    std::hint::black_box(accumulator);
}

/// Work units a microsecond takes: the fastest of several timed runs, so a slowed run at start
/// does not shrink the work.
fn calibrate_work_per_microsecond() -> u64 {
    const UNITS: u64 = 2_000_000;
    let fastest = (0..20)
        .map(|_| {
            let started = Instant::now();
            work(UNITS);
            started.elapsed()
        })
        .min()
        .unwrap_or(Duration::from_millis(1));
    (UNITS as f64 / fastest.as_secs_f64() / 1e6).max(1.0) as u64
}

async fn serve(
    stream: TcpStream,
    state: Shared,
    serial: SerialStage,
    buffer: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    stream.set_nodelay(true)?;
    let config =
        WebSocketConfig::default().read_buffer_size(buffer).write_buffer_size(0).max_message_size(Some(64 << 10));
    let mut agent = false;
    // The error type is tungstenite's handshake callback signature, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let note_role = |request: &Request, response: Response| {
        agent = request.uri().path().starts_with("/ws/agent");
        Ok(response)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(stream, note_role, Some(config)).await?;
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
                            serial.relay(&state, id, agent, frame);
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
    let own = if agent {
        state.agents.iter().find(|(agent_id, _)| *agent_id == id).map(|(_, sender)| sender)
    } else {
        state.visitors.get(&id)
    };
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

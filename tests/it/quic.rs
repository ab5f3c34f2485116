//! QUIC: the same protocol as the WebSocket, a stream per conversation, both encodings, resume,
//! the Rust client's offline queue, bad input, and a client written with another QUIC stack.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kefu::net::{framing, protobuf};
use kefu_client::{Client, ClientConfig, Encoding, Event, Trust};
use serde_json::{Value, json};

use crate::support::{FRAME_TIMEOUT, TestServer, history};

/// A QUIC connection driven frame by frame, with each stream under the test's control.
struct RawQuic {
    connection: quinn::Connection,
    control: quinn::SendStream,
    control_recv: framing::FrameReader<quinn::RecvStream>,
    encoding: Encoding,
    _endpoint: quinn::Endpoint,
}

/// One server→client conversation stream.
struct ConversationStream {
    recv: framing::FrameReader<quinn::RecvStream>,
    encoding: Encoding,
}

fn decode(encoding: Encoding, frame: &[u8]) -> Value {
    match encoding {
        Encoding::Json => serde_json::from_slice(frame).expect("frames are JSON"),
        Encoding::Protobuf => protobuf::server_frame_to_json(frame).expect("frames are Protobuf"),
    }
}

async fn read(recv: &mut framing::FrameReader<quinn::RecvStream>, encoding: Encoding) -> Value {
    let frame = tokio::time::timeout(FRAME_TIMEOUT, framing::read_frame(recv))
        .await
        .expect("a frame in time")
        .expect("a readable stream")
        .expect("a frame before the stream ends");
    decode(encoding, &frame)
}

impl ConversationStream {
    async fn next(&mut self) -> Value {
        read(&mut self.recv, self.encoding).await
    }
}

impl RawQuic {
    /// Connects; `stream_window` shrinks how much each stream may carry unread.
    async fn connect(server: &TestServer, encoding: Encoding, stream_window: Option<u32>) -> RawQuic {
        let mut config = kefu_client::quic_client_config(&Trust::Pin(server.quic_fingerprint.clone()), encoding)
            .expect("a client configuration");
        if let Some(window) = stream_window {
            let mut transport = quinn::TransportConfig::default();
            transport.stream_receive_window(quinn::VarInt::from_u32(window));
            config.transport_config(Arc::new(transport));
        }
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(config);
        let connection = endpoint.connect(server.quic_addr, "localhost").unwrap().await.expect("QUIC connects");
        let (control, control_recv) = connection.open_bi().await.unwrap();
        let control_recv = framing::reader(control_recv, 1 << 20);
        RawQuic { connection, control, control_recv, encoding, _endpoint: endpoint }
    }

    async fn visitor(server: &TestServer, encoding: Encoding, site: &str, token: &str) -> RawQuic {
        let mut raw = RawQuic::connect(server, encoding, None).await;
        raw.send(json!({"type": "hello", "role": "visitor", "site": site, "token": token})).await;
        raw.expect_control("welcome").await;
        raw
    }

    async fn send(&mut self, frame: Value) {
        let bytes = match self.encoding {
            Encoding::Json => Bytes::from(frame.to_string()),
            Encoding::Protobuf => protobuf::client_frame_from_json(&frame).unwrap(),
        };
        self.send_bytes(&bytes).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.control.write_all(&framing::prefix(bytes.len())).await.unwrap();
        self.control.write_all(bytes).await.unwrap();
    }

    async fn control(&mut self) -> Value {
        read(&mut self.control_recv, self.encoding).await
    }

    async fn expect_control(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.control().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    async fn next_stream(&self) -> ConversationStream {
        let recv = tokio::time::timeout(FRAME_TIMEOUT, self.connection.accept_uni())
            .await
            .expect("a stream in time")
            .expect("the connection is open");
        ConversationStream { recv: framing::reader(recv, 1 << 20), encoding: self.encoding }
    }

    /// The application close code the server ends the connection with.
    async fn close_code(&self) -> u64 {
        match tokio::time::timeout(FRAME_TIMEOUT, self.connection.closed()).await.expect("a close in time") {
            quinn::ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
            other => panic!("closed without an application code: {other}"),
        }
    }
}

/// The next frame of type `kind` from a client, skipping other events.
async fn next_of(client: &mut Client, kind: &str) -> Value {
    loop {
        let event = tokio::time::timeout(FRAME_TIMEOUT, client.next_event()).await.expect("an event in time");
        match event.expect("the client runs") {
            Event::Frame(frame) if frame["type"] == kind => return frame,
            Event::Connected(welcome) if kind == "welcome" => return welcome,
            _ => continue,
        }
    }
}

/// A WebSocket agent learns of its assignment and catches up; returns the conversation id.
async fn agent_takes(agent: &mut crate::support::Client, epoch: u64) -> u64 {
    let assigned = loop {
        let event = agent.expect("conversation").await;
        if event["event"] == "assigned" {
            break event;
        }
    };
    let conversation_id = assigned["conversation"]["id"].as_u64().unwrap();
    agent.send(json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 0, "epoch": epoch})).await;
    agent.expect("replayed").await;
    conversation_id
}

#[tokio::test]
async fn a_quic_visitor_and_a_websocket_agent_chat_and_the_reverse() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;

    // Visitor on QUIC (the Rust client), agent on WebSocket.
    let mut agent = server.agent(&agent_token).await;
    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = Client::connect(
        ClientConfig::visitor(&server.quic_url(), &site.key, &visitor_token).pin(&server.quic_fingerprint),
    );
    next_of(&mut visitor, "welcome").await;
    let ack = visitor.send(None, "Hello over QUIC").await.expect("acknowledged");
    assert_eq!((ack.seq, ack.duplicate), (1, false));
    let conversation_id = agent_takes(&mut agent, server.epoch()).await;
    assert_eq!(conversation_id, ack.conversation_id);
    agent.say(Some(conversation_id), "a-1", "Hello over WebSocket").await;
    let reply = next_of(&mut visitor, "message").await;
    assert_eq!((reply["text"].as_str(), reply["seq"].as_u64()), (Some("Hello over WebSocket"), Some(2)));

    // Visitor on WebSocket, agent on QUIC (the Rust client).
    drop(agent);
    let (_, other_token) = server.visitor_session(&site, None).await;
    let mut agent =
        Client::connect(ClientConfig::agent(&server.quic_url(), &agent_token).pin(&server.quic_fingerprint));
    next_of(&mut agent, "welcome").await;
    let mut web_visitor = server.visitor(&site, &other_token).await;
    let second = web_visitor.say(None, "v-1", "Hello from the web").await["conversation_id"].as_u64().unwrap();
    let assigned = loop {
        let event = next_of(&mut agent, "conversation").await;
        if event["event"] == "assigned" && event["conversation"]["id"] == second {
            break event;
        }
    };
    assert_eq!(assigned["conversation"]["last_seq"], 1);
    agent
        .send_frame(json!({"type": "resume", "conversation_id": second, "last_seq": 0, "epoch": server.epoch()}))
        .await
        .unwrap();
    assert_eq!(next_of(&mut agent, "message").await["text"], "Hello from the web");
    let ack = agent.send(Some(second), "Hello from a native app").await.expect("acknowledged");
    assert_eq!(ack.seq, 2);
    assert_eq!(web_visitor.expect("message").await["text"], "Hello from a native app");
    assert_eq!(history(&server, &other_token, second).await["last_seq"], 2);
}

#[tokio::test]
async fn a_conversation_stream_the_client_stops_reading_does_not_hold_up_another() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    // The agent's streams may hold only 2 KB unread, so a few messages fill one.
    let mut agent = RawQuic::connect(&server, Encoding::Json, Some(2048)).await;
    agent.send(json!({"type": "hello", "role": "agent", "token": agent_token})).await;
    agent.expect_control("welcome").await;

    let mut conversations = Vec::new();
    let mut visitors = Vec::new();
    for name in ["a", "b"] {
        let (_, token) = server.visitor_session(&site, None).await;
        let mut visitor = server.visitor(&site, &token).await;
        let id = visitor.say(None, &format!("{name}-0"), "first").await["conversation_id"].as_u64().unwrap();
        loop {
            let event = agent.expect_control("conversation").await;
            if event["event"] == "assigned" && event["conversation"]["id"] == id {
                break;
            }
        }
        conversations.push(id);
        visitors.push(visitor);
    }
    let (conversation_a, conversation_b) = (conversations[0], conversations[1]);

    // Conversation A gets far more than its stream may carry unread.
    let long_text = "x".repeat(1000);
    for n in 1..=40 {
        visitors[0].say(Some(conversation_a), &format!("a-{n}"), &long_text).await;
    }
    // The stream opens with the message the agent was assigned with, then `replayed`.
    let mut stream_a = agent.next_stream().await;
    let first_a = stream_a.next().await;
    assert_eq!((first_a["conversation_id"].as_u64(), first_a["seq"].as_u64()), (Some(conversation_a), Some(1)));

    // While A's stream is blocked by flow control, B's message arrives on its own stream.
    visitors[1].say(Some(conversation_b), "b-1", "urgent").await;
    let mut stream_b = agent.next_stream().await;
    let first_b = stream_b.next().await;
    assert_eq!(first_b["conversation_id"].as_u64(), Some(conversation_b));
    assert_eq!(first_b["text"], "first");
    assert_eq!(stream_b.next().await["type"], "replayed");
    assert_eq!(stream_b.next().await["text"], "urgent");
    // Typing in A still reaches the agent: the control stream is not blocked either.
    visitors[0].send(json!({"type": "typing", "conversation_id": conversation_a, "active": true})).await;
    assert_eq!(agent.expect_control("typing").await["conversation_id"].as_u64(), Some(conversation_a));

    // A's frames were only waiting: all of them arrive, in order, once the agent reads.
    assert_eq!(stream_a.next().await["type"], "replayed");
    for seq in 2..=41 {
        let frame = stream_a.next().await;
        assert_eq!(frame["seq"].as_u64(), Some(seq));
    }
}

/// Runs a visitor → agent exchange with a QUIC visitor in `encoding`; returns the visitor's frames.
async fn exchange(encoding: Encoding) -> Vec<Value> {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = RawQuic::connect(&server, encoding, None).await;
    visitor.send(json!({"type": "hello", "role": "visitor", "site": site.key, "token": token})).await;
    let welcome = visitor.expect_control("welcome").await;
    visitor.send(json!({"type": "send", "client_id": "c-1", "text": "你好, hello"})).await;
    let mut stream = visitor.next_stream().await;
    let ack = stream.next().await;
    let conversation_id = agent_takes(&mut agent, server.epoch()).await;
    agent.say(Some(conversation_id), "a-1", "Hi! 您好").await;
    let message = stream.next().await;
    visitor.send(json!({"type": "ping"})).await;
    let pong = visitor.expect_control("pong").await;
    match encoding {
        Encoding::Json => visitor.send_bytes(b"{not json").await,
        Encoding::Protobuf => visitor.send_bytes(&[0xff, 0xff, 0xff]).await,
    }
    let error = visitor.expect_control("error").await;
    vec![welcome, ack, message, pong, error]
}

/// A frame's shape and the values that do not vary between runs.
fn stable(frame: &Value) -> Value {
    let mut frame = frame.clone();
    for key in ["created_at", "updated_at", "epoch", "visitor_id", "conversation_id", "message", "conversations"] {
        if let Some(value) = frame.get_mut(key) {
            *value = Value::Null;
        }
    }
    if let Some(sender) = frame.get_mut("sender") {
        sender["id"] = Value::Null;
    }
    frame
}

#[tokio::test]
async fn the_same_exchange_in_json_and_protobuf() {
    let json_frames = exchange(Encoding::Json).await;
    let protobuf_frames = exchange(Encoding::Protobuf).await;
    let kinds: Vec<&str> = json_frames.iter().map(|frame| frame["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["welcome", "ack", "message", "pong", "error"]);
    assert_eq!(json_frames[1]["text"], "你好, hello");
    assert_eq!(json_frames[2]["text"], "Hi! 您好");
    assert_eq!(json_frames[4]["code"], "bad_json");
    for (json_frame, protobuf_frame) in json_frames.iter().zip(&protobuf_frames) {
        assert_eq!(stable(json_frame), stable(protobuf_frame));
    }
}

#[tokio::test]
async fn a_quic_client_resumes_without_gap_after_its_connection_is_cut() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = RawQuic::visitor(&server, Encoding::Json, &site.key, &token).await;
    visitor.send(json!({"type": "send", "client_id": "v-1", "text": "hi"})).await;
    let mut stream = visitor.next_stream().await;
    let conversation_id = stream.next().await["conversation_id"].as_u64().unwrap();
    agent_takes(&mut agent, server.epoch()).await;
    for n in 2..=3 {
        agent.say(Some(conversation_id), &format!("a-{n}"), &format!("reply {n}")).await;
        assert_eq!(stream.next().await["seq"].as_u64(), Some(n));
    }

    // The connection is cut; the agent goes on writing.
    visitor.connection.close(quinn::VarInt::from_u32(0), b"cut");
    drop(visitor);
    for n in 4..=5 {
        agent.say(Some(conversation_id), &format!("a-{n}"), &format!("reply {n}")).await;
    }

    let mut visitor = RawQuic::connect(&server, Encoding::Json, None).await;
    visitor
        .send(json!({"type": "hello", "role": "visitor", "site": site.key, "token": token,
                     "resume": [{"conversation_id": conversation_id, "last_seq": 3, "epoch": server.epoch()}]}))
        .await;
    visitor.expect_control("welcome").await;
    let mut stream = visitor.next_stream().await;
    assert_eq!(stream.next().await["text"], "reply 4");
    assert_eq!(stream.next().await["text"], "reply 5");
    let replayed = stream.next().await;
    assert_eq!((replayed["type"].as_str(), replayed["last_seq"].as_u64()), (Some("replayed"), Some(5)));
    agent.say(Some(conversation_id), "a-6", "reply 6").await;
    assert_eq!(stream.next().await["seq"].as_u64(), Some(6));
}

#[tokio::test]
async fn the_clients_offline_queue_delivers_exactly_once_across_a_server_restart() {
    let mut server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut config = ClientConfig::visitor(&server.quic_url(), &site.key, &token).pin(&server.quic_fingerprint);
    config.max_backoff = Duration::from_millis(500);
    let mut visitor = Client::connect(config);
    next_of(&mut visitor, "welcome").await;
    let first = visitor.send(None, "before the restart").await.expect("acknowledged");

    server.stop().await;
    // Sent while the server is down: the message waits in the client's queue.
    let sending = tokio::spawn(async move {
        let ack = visitor.send_with_id("offline-1", Some(first.conversation_id), "while the server was down").await;
        (visitor, ack)
    });
    server.restart_in_place().await;
    let (visitor, ack) = tokio::time::timeout(Duration::from_secs(30), sending).await.expect("sent in time").unwrap();
    let ack = ack.expect("acknowledged after reconnecting");
    assert_eq!((ack.seq, ack.duplicate), (2, false));
    // A resend of the same id is the same message.
    let again = visitor.send_with_id("offline-1", Some(first.conversation_id), "while the server was down").await;
    let again = again.expect("acknowledged");
    assert_eq!((again.seq, again.duplicate), (2, true));

    let page = history(&server, &token, first.conversation_id).await;
    let texts: Vec<&str> = page["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["before the restart", "while the server was down"]);
}

#[tokio::test]
async fn bad_quic_input_gets_the_documented_errors() {
    let server = TestServer::start_with(|config| config.limits.max_frame_bytes = 4096).await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;

    // A stream that does not start with hello is closed unauthenticated.
    let mut raw = RawQuic::connect(&server, Encoding::Json, None).await;
    raw.send(json!({"type": "send", "client_id": "c-1", "text": "hi"})).await;
    assert_eq!(raw.close_code().await, 4000);
    let mut raw = RawQuic::connect(&server, Encoding::Json, None).await;
    raw.send(json!({"type": "hello", "token": token})).await;
    assert_eq!(raw.close_code().await, 4000, "hello without a role");
    let mut raw = RawQuic::connect(&server, Encoding::Json, None).await;
    raw.send(json!({"type": "hello", "role": "visitor", "site": site.key, "token": "v1.wrong"})).await;
    assert_eq!(raw.close_code().await, 4001);
    let mut raw = RawQuic::connect(&server, Encoding::Json, None).await;
    raw.send(json!({"type": "hello", "role": "visitor", "site": "no-such-site", "token": token})).await;
    assert_eq!(raw.close_code().await, 4000);

    // After hello: bad frames get error frames and change nothing.
    let mut raw = RawQuic::visitor(&server, Encoding::Json, &site.key, &token).await;
    raw.send_bytes(b"[1, 2]").await;
    assert_eq!(raw.expect_control("error").await["code"], "bad_json");
    raw.send(json!({"type": "dance"})).await;
    assert_eq!(raw.expect_control("error").await["code"], "unknown_type");
    raw.send(json!({"type": "send", "client_id": "c-1", "text": ""})).await;
    let error = raw.expect_control("error").await;
    assert_eq!((error["code"].as_str(), error["client_id"].as_str()), (Some("invalid_field"), Some("c-1")));
    raw.send(json!({"type": "take", "conversation_id": 1})).await;
    assert_eq!(raw.expect_control("error").await["code"], "forbidden");
    // A frame over the limit closes the connection with 1009.
    raw.send_bytes(&vec![b' '; 5000]).await;
    assert_eq!(raw.close_code().await, 1009);
    let session: Value = crate::support::http()
        .post(server.url("/api/v1/visitor/session"))
        .json(&json!({"site": site.key, "token": token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["conversations"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn a_quic_client_without_hello_is_closed() {
    let server = TestServer::start_with(|config| config.limits.hello_timeout_secs = 1).await;
    let raw = RawQuic::connect(&server, Encoding::Json, None).await;
    // The control stream is opened but nothing is sent, so the server never sees it.
    assert_eq!(raw.close_code().await, 4002);
}

#[tokio::test]
async fn an_aioquic_client_written_from_the_protocol_document_completes_an_exchange() {
    let available = std::process::Command::new("python3")
        .args(["-c", "import aioquic"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !available {
        eprintln!("skipped: python3 with aioquic is not installed (see tests/quic_interop/README.md)");
        return;
    }
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/quic_interop/client.py");
    let child = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--host", "127.0.0.1", "--port", &server.quic_addr.port().to_string()])
        .args(["--site", &site.key, "--token", &token, "--pin", &server.quic_fingerprint])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let conversation_id = agent_takes(&mut agent, server.epoch()).await;
    let messages = history(&server, &agent_token, conversation_id).await;
    assert_eq!(messages["messages"][0]["text"], "hello from aioquic");
    agent.say(Some(conversation_id), "a-1", "hello, aioquic").await;
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the Python client finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("received: hello, aioquic"), "{stdout}");
}

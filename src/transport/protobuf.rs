//! The binary Protobuf encoding of the frames, negotiated per QUIC connection (ALPN `kefu/1+proto`).
//!
//! The structs are written by hand with prost's derives (no protoc at build time) and mirror
//! `proto/kefu.proto`; a test keeps the two in step. Each struct also derives serde with the
//! JSON field names of docs/protocol.md, so converting between the encodings is serde on one side
//! and prost on the other: a client's Protobuf frame becomes the JSON text the session decodes,
//! and a server frame's JSON bytes become its Protobuf form.
//!
//! Server frames are encoded once per event as JSON. The Protobuf form of a frame is computed the
//! first time a Protobuf connection writes it and kept in [`ProtobufCache`] next to the JSON bytes,
//! so every other Protobuf connection that gets the same frame reuses it, and connections that
//! speak JSON pay nothing.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::protocol::{DecodeError, ErrorCode};

/// A conversation as clients see it (`CONVERSATION` in docs/protocol.md).
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Conversation {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub site: String,
    #[prost(uint64, tag = "3")]
    pub visitor_id: u64,
    #[prost(string, tag = "4")]
    pub status: String,
    #[prost(uint64, optional, tag = "5")]
    pub assigned_agent: Option<u64>,
    #[prost(uint64, tag = "6")]
    pub epoch: u64,
    #[prost(uint64, tag = "7")]
    pub last_seq: u64,
    #[prost(int64, tag = "8")]
    pub created_at: i64,
    #[prost(int64, tag = "9")]
    pub updated_at: i64,
    #[prost(bool, tag = "10")]
    #[serde(default)]
    pub bot_active: bool,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Sender {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(uint64, tag = "2")]
    pub id: u64,
    #[prost(string, tag = "3")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct ResumePoint {
    #[prost(uint64, tag = "1")]
    pub conversation_id: u64,
    #[prost(uint64, tag = "2")]
    pub last_seq: u64,
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Hello {
    #[prost(string, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[prost(message, repeated, tag = "2")]
    #[serde(default)]
    pub resume: Vec<ResumePoint>,
    /// QUIC only: `visitor` or `agent` (a WebSocket's path says it).
    #[prost(string, optional, tag = "3")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// QUIC only: the site key of a visitor.
    #[prost(string, optional, tag = "4")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Send {
    #[prost(string, tag = "1")]
    pub client_id: String,
    #[prost(uint64, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<u64>,
    #[prost(string, tag = "3")]
    #[serde(default)]
    pub text: String,
    #[prost(bool, tag = "4")]
    #[serde(default)]
    pub internal: bool,
    #[prost(string, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<String>,
}

/// A visitor's `page_view`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct PageView {
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub url: String,
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub title: String,
    #[prost(string, tag = "3")]
    #[serde(default)]
    pub referrer: String,
}

/// `take`, `close` and `handoff`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct ConversationRef {
    #[prost(uint64, tag = "1")]
    pub conversation_id: u64,
}

/// `typing` both ways; the server adds `sender`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Typing {
    #[prost(uint64, tag = "1")]
    pub conversation_id: u64,
    #[prost(message, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Sender>,
    #[prost(bool, tag = "3")]
    pub active: bool,
}

/// `read` both ways; the server adds `reader` (a sender without a name).
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Read {
    #[prost(uint64, tag = "1")]
    pub conversation_id: u64,
    #[prost(message, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<Sender>,
    #[prost(uint64, tag = "3")]
    pub seq: u64,
}

/// `presence` both ways; the server adds `agent_id`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Presence {
    #[prost(uint64, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<u64>,
    #[prost(string, tag = "2")]
    pub status: String,
}

/// `ping` and `pong`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Welcome {
    #[prost(uint32, tag = "1")]
    pub protocol: u32,
    #[prost(string, tag = "2")]
    pub role: String,
    #[prost(uint64, optional, tag = "3")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor_id: Option<u64>,
    #[prost(uint64, optional, tag = "4")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<u64>,
    #[prost(uint64, tag = "5")]
    pub epoch: u64,
    #[prost(uint64, tag = "6")]
    pub heartbeat_secs: u64,
    #[prost(uint64, tag = "7")]
    pub max_text_chars: u64,
    #[prost(message, repeated, tag = "8")]
    #[serde(default)]
    pub conversations: Vec<Conversation>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Ack {
    #[prost(string, tag = "1")]
    pub client_id: String,
    #[prost(uint64, tag = "2")]
    pub conversation_id: u64,
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    #[prost(uint64, tag = "4")]
    pub epoch: u64,
    #[prost(int64, tag = "5")]
    pub created_at: i64,
    #[prost(bool, tag = "6")]
    pub duplicate: bool,
    #[prost(string, tag = "7")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Message {
    #[prost(uint64, tag = "1")]
    pub conversation_id: u64,
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    #[prost(message, optional, tag = "4")]
    pub sender: Option<Sender>,
    #[prost(string, tag = "5")]
    pub kind: String,
    #[prost(string, tag = "6")]
    pub text: String,
    #[prost(int64, tag = "7")]
    pub created_at: i64,
    #[prost(string, optional, tag = "8")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[prost(bool, tag = "9")]
    pub internal: bool,
    #[prost(message, optional, tag = "10")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    #[prost(message, optional, tag = "11")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_source: Option<BotSource>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Attachment {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub url: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(uint64, tag = "4")]
    pub size: u64,
    #[prost(string, tag = "5")]
    pub content_type: String,
}

/// Where a bot message came from (`bot_source`).
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct BotSource {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(uint64, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<u64>,
    #[prost(string, optional, tag = "3")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[prost(string, optional, tag = "4")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    #[prost(string, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[prost(uint64, optional, tag = "6")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Replayed {
    #[prost(uint64, tag = "1")]
    pub conversation_id: u64,
    #[prost(uint64, tag = "2")]
    pub last_seq: u64,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Reset {
    #[prost(uint64, tag = "1")]
    pub conversation_id: u64,
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    #[prost(uint64, tag = "3")]
    pub last_seq: u64,
    #[prost(string, tag = "4")]
    pub reason: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct ConversationEvent {
    #[prost(string, tag = "1")]
    pub event: String,
    #[prost(message, optional, tag = "2")]
    pub conversation: Option<Conversation>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Error {
    #[prost(string, tag = "1")]
    pub code: String,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(string, optional, tag = "3")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Goaway {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(uint64, tag = "2")]
    pub reconnect_after_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Activity {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<ActivityItem>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct ActivityItem {
    #[prost(uint64, tag = "1")]
    pub conversation_id: u64,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(string, tag = "3")]
    pub sender_kind: String,
    #[prost(bool, tag = "4")]
    pub internal: bool,
    #[prost(string, tag = "5")]
    pub preview: String,
    #[prost(int64, tag = "6")]
    pub created_at: i64,
}

/// The `visitor` frame.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct VisitorEvent {
    #[prost(string, tag = "1")]
    pub event: String,
    #[prost(message, optional, tag = "2")]
    pub visitor: Option<OnlineVisitor>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct OnlineVisitor {
    #[prost(uint64, tag = "1")]
    pub visitor_id: u64,
    #[prost(string, tag = "2")]
    pub site: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub url: String,
    #[prost(string, tag = "5")]
    pub title: String,
    #[prost(string, tag = "6")]
    pub referrer: String,
    #[prost(string, tag = "7")]
    pub browser: String,
    #[prost(string, tag = "8")]
    pub ip: String,
    #[prost(bool, tag = "9")]
    pub returning: bool,
    #[prost(int64, tag = "10")]
    pub online_since: i64,
    #[prost(int64, tag = "11")]
    pub page_since: i64,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct BotStream {
    #[prost(uint64, tag = "1")]
    pub conversation_id: u64,
    #[prost(string, tag = "2")]
    pub stream_id: String,
    #[prost(string, tag = "3")]
    pub delta: String,
    #[prost(bool, tag = "4")]
    pub done: bool,
}

/// One frame from a client.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientFrame {
    #[prost(oneof = "ClientFrameKind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub frame: Option<ClientFrameKind>,
}

/// The variants carry the JSON `type` names.
#[derive(Clone, PartialEq, prost::Oneof, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrameKind {
    #[prost(message, tag = "1")]
    Hello(Hello),
    #[prost(message, tag = "2")]
    Send(Send),
    #[prost(message, tag = "3")]
    Resume(ResumePoint),
    #[prost(message, tag = "4")]
    Typing(Typing),
    #[prost(message, tag = "5")]
    Read(Read),
    #[prost(message, tag = "6")]
    Take(ConversationRef),
    #[prost(message, tag = "7")]
    Close(ConversationRef),
    #[prost(message, tag = "8")]
    Presence(Presence),
    #[prost(message, tag = "9")]
    Ping(Empty),
    #[prost(message, tag = "10")]
    PageView(PageView),
    #[prost(message, tag = "11")]
    Handoff(ConversationRef),
}

/// One frame from the server.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerFrame {
    #[prost(oneof = "ServerFrameKind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15")]
    pub frame: Option<ServerFrameKind>,
}

#[derive(Clone, PartialEq, prost::Oneof, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrameKind {
    #[prost(message, tag = "1")]
    Welcome(Welcome),
    #[prost(message, tag = "2")]
    Ack(Ack),
    #[prost(message, tag = "3")]
    Message(Message),
    #[prost(message, tag = "4")]
    Replayed(Replayed),
    #[prost(message, tag = "5")]
    Reset(Reset),
    #[prost(message, tag = "6")]
    Typing(Typing),
    #[prost(message, tag = "7")]
    Read(Read),
    #[prost(message, tag = "8")]
    Conversation(ConversationEvent),
    #[prost(message, tag = "9")]
    Presence(Presence),
    #[prost(message, tag = "10")]
    Error(Error),
    #[prost(message, tag = "11")]
    Pong(Empty),
    #[prost(message, tag = "12")]
    Goaway(Goaway),
    #[prost(message, tag = "13")]
    Activity(Activity),
    #[prost(message, tag = "14")]
    Visitor(VisitorEvent),
    #[prost(message, tag = "15")]
    BotStream(BotStream),
}

/// Why a frame could not be converted between the encodings.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("not a valid Protobuf frame: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("the frame has no type")]
    Empty,
    #[error("not a frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// A client's Protobuf frame as the JSON text the session decodes.
pub fn client_frame_to_json(bytes: &[u8]) -> Result<String, DecodeError> {
    let frame = ClientFrame::decode(bytes).map_err(|error| DecodeError {
        code: ErrorCode::BadJson,
        message: format!("not a valid Protobuf ClientFrame: {error}"),
        client_id: None,
    })?;
    let kind = frame.frame.ok_or_else(|| DecodeError {
        code: ErrorCode::UnknownType,
        message: "the ClientFrame has no frame set".into(),
        client_id: None,
    })?;
    Ok(serde_json::to_string(&kind).expect("frames always serialize"))
}

/// A client frame in JSON (as a client builds it) in its Protobuf form.
pub fn client_frame_from_json(json: &serde_json::Value) -> Result<Bytes, CodecError> {
    let kind: ClientFrameKind = serde_json::from_value(json.clone())?;
    Ok(Bytes::from(ClientFrame { frame: Some(kind) }.encode_to_vec()))
}

/// A server frame's JSON bytes in their Protobuf form.
pub fn server_frame_from_json(json: &[u8]) -> Result<Bytes, CodecError> {
    let kind: ServerFrameKind = serde_json::from_slice(json)?;
    Ok(Bytes::from(ServerFrame { frame: Some(kind) }.encode_to_vec()))
}

/// A server's Protobuf frame as the JSON value docs/protocol.md describes.
pub fn server_frame_to_json(bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
    let kind = ServerFrame::decode(bytes)?.frame.ok_or(CodecError::Empty)?;
    Ok(serde_json::to_value(&kind)?)
}

/// How many frames' Protobuf forms are remembered. A frame fans out to its recipients within
/// moments of being encoded, so the last few thousand frames cover every fan-out in progress.
const PROTOBUF_CACHE_FRAMES: usize = 4096;

/// The Protobuf form of recently written server frames, keyed by the address of their shared JSON
/// bytes. Each entry keeps a clone of the JSON bytes, so the address cannot be reused while the
/// entry lives.
pub struct ProtobufCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    by_address: HashMap<(usize, usize), Bytes>,
    order: VecDeque<Bytes>,
}

impl Default for ProtobufCache {
    fn default() -> Self {
        ProtobufCache { inner: Mutex::new(CacheInner::default()) }
    }
}

impl ProtobufCache {
    /// The Protobuf form of `json`, computed once per frame.
    pub fn encode(&self, json: &Bytes) -> Result<Bytes, CodecError> {
        let key = (json.as_ptr() as usize, json.len());
        if let Some(found) = self.inner.lock().by_address.get(&key) {
            return Ok(found.clone());
        }
        let encoded = server_frame_from_json(json)?;
        let mut inner = self.inner.lock();
        inner.by_address.insert(key, encoded.clone());
        inner.order.push_back(json.clone());
        if inner.order.len() > PROTOBUF_CACHE_FRAMES {
            if let Some(old) = inner.order.pop_front() {
                inner.by_address.remove(&(old.as_ptr() as usize, old.len()));
            }
        }
        Ok(encoded)
    }
}

#[cfg(test)]
mod tests {
    //! The .proto file, the structs above and `crate::protocol` are kept in step by samples: one of
    //! every frame `type` of protocol.rs, with every field (optional ones too) set. Each sample must
    //! name every field its Rust value has, match the .proto file's fields and oneof numbers, and
    //! come back unchanged from JSON → Protobuf → JSON. A frame or field added to protocol.rs
    //! without its Protobuf counterpart fails here.

    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::{Value, json};

    use super::*;
    use crate::protocol::{
        self, AttachmentView, BotSourceView, ConversationView, MessageView, ParticipantView, SenderKind, SenderView,
    };
    use crate::visitor_presence::OnlineVisitorView;

    /// A field of a .proto message: name, type, number.
    type Field = (String, String, u32);

    /// Message name → its fields (for the frame messages, the oneof's fields).
    struct ProtoFile {
        messages: BTreeMap<String, Vec<Field>>,
    }

    fn parse_proto() -> ProtoFile {
        let text = include_str!("../../proto/kefu.proto");
        let mut messages = BTreeMap::new();
        let mut current: Option<(String, Vec<Field>)> = None;
        for line in text.lines().map(|line| line.split("//").next().unwrap_or_default().trim()) {
            if let Some(rest) = line.strip_prefix("message ") {
                let name = rest.trim_end_matches(['{', '}', ' ']).trim().to_owned();
                if line.ends_with("{}") {
                    messages.insert(name, Vec::new());
                } else {
                    current = Some((name, Vec::new()));
                }
            } else if line == "}" {
                if let Some((name, fields)) = current.take() {
                    messages.insert(name, fields);
                }
            } else if let (Some((_, fields)), Some((left, number))) = (current.as_mut(), line.split_once('=')) {
                let words: Vec<&str> =
                    left.split_whitespace().filter(|word| *word != "optional" && *word != "repeated").collect();
                let number: u32 = number.trim_end_matches(';').trim().parse().expect("a field number");
                fields.push((words[1].to_owned(), words[0].to_owned(), number));
            }
        }
        ProtoFile { messages }
    }

    /// The frame `type` names of an enum in src/protocol.rs (its variants in snake case), read from
    /// the source so that a new variant needs no change here to be checked.
    fn protocol_frame_types(enum_header: &str) -> BTreeSet<String> {
        let source = include_str!("../protocol.rs");
        let start = source.find(enum_header).unwrap_or_else(|| panic!("src/protocol.rs has no `{enum_header}`"));
        let body = &source[start + enum_header.len()..];
        let body = &body[..body.find("\n}").expect("the enum's closing brace")];
        body.lines()
            .filter_map(|line| line.strip_prefix("    "))
            .filter(|line| line.starts_with(|first: char| first.is_ascii_uppercase()))
            .map(|line| {
                let name: String = line.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                let mut snake = String::new();
                for (index, c) in name.chars().enumerate() {
                    if c.is_ascii_uppercase() && index > 0 {
                        snake.push('_');
                    }
                    snake.push(c.to_ascii_lowercase());
                }
                snake
            })
            .collect()
    }

    /// The field names in a value's `{:?}` text, and whether any field is unset (`None` or `[]`).
    /// Derived `Debug` names every field, so this sees fields that JSON leaves out when unset.
    fn debug_fields(debug: &str) -> (BTreeSet<String>, bool) {
        let mut names = BTreeSet::new();
        let mut unset = false;
        let mut word = String::new();
        let mut chars = debug.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                while let Some(inner) = chars.next() {
                    match inner {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                word.clear();
            } else if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                if c == ':' && chars.peek() == Some(&' ') && !word.is_empty() {
                    names.insert(std::mem::take(&mut word));
                }
                if word == "None" || (c == '[' && chars.peek() == Some(&']')) {
                    unset = true;
                }
                word.clear();
            }
        }
        (names, unset)
    }

    /// Every object key in a JSON value, at any depth.
    fn json_keys(value: &Value, keys: &mut BTreeSet<String>) {
        match value {
            Value::Object(object) => {
                for (key, inner) in object {
                    keys.insert(key.clone());
                    json_keys(inner, keys);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| json_keys(item, keys)),
            _ => {}
        }
    }

    /// Fails unless the sample's JSON names every field of its Rust value, each one set.
    fn check_sample_sets_every_field(kind: &str, debug: &str, json: &Value) {
        let (fields, unset) = debug_fields(debug);
        assert!(!unset, "the {kind} sample leaves a field unset (set every optional field): {debug}");
        let mut keys = BTreeSet::new();
        json_keys(json, &mut keys);
        let missing: Vec<&String> = fields.difference(&keys).collect();
        assert!(missing.is_empty(), "the {kind} sample's JSON lacks fields {missing:?} of {debug}");
    }

    /// The first field number in an encoded message.
    fn first_tag(bytes: &[u8]) -> u32 {
        let mut buffer = bytes;
        (prost::encoding::decode_varint(&mut buffer).expect("a key") >> 3) as u32
    }

    /// Fails if `json` has a field that `message` lacks; records each (message, field) seen.
    fn check_fields(proto: &ProtoFile, message: &str, json: &Value, seen: &mut BTreeSet<(String, String)>) {
        let fields = &proto.messages[message];
        let names: Vec<&str> = fields.iter().map(|(name, _, _)| name.as_str()).collect();
        for (key, value) in json.as_object().expect("an object") {
            if key == "type" {
                continue;
            }
            let field = fields.iter().find(|(name, _, _)| name == key);
            let Some((_, kind, _)) = field else {
                panic!("{message} in proto/kefu.proto lacks field {key} ({names:?})")
            };
            seen.insert((message.to_owned(), key.clone()));
            let nested = match value {
                Value::Object(_) => Some(value),
                Value::Array(items) => items.first().filter(|item| item.is_object()),
                _ => None,
            };
            if let Some(nested) = nested {
                check_fields(proto, kind, nested, seen);
            }
        }
    }

    fn server_samples() -> Vec<(String, Bytes)> {
        let conversation = ConversationView {
            id: 12,
            site: "key".into(),
            visitor_id: 7,
            status: "assigned".into(),
            assigned_agent: Some(3),
            epoch: 99,
            last_seq: 9,
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_009_000,
            bot_active: true,
        };
        let sender = SenderView { kind: SenderKind::Agent, id: 3, name: "Bo".into() };
        let activity = [protocol::ActivityItem {
            conversation_id: 12,
            seq: 10,
            sender_kind: SenderKind::Visitor,
            internal: true,
            preview: "Where is my order?".into(),
            created_at: 1_700_000_010_000,
        }];
        let message = MessageView {
            conversation_id: 12,
            epoch: 99,
            seq: 10,
            sender: sender.clone(),
            kind: "image".into(),
            text: "Hello! 你好".into(),
            created_at: 1_700_000_010_000,
            client_id: Some("c-1".into()),
            internal: true,
            attachment: Some(AttachmentView {
                id: "u-1".into(),
                url: "/api/v1/uploads/u-1".into(),
                name: "cart.png".into(),
                size: 2048,
                content_type: "image/png".into(),
            }),
            bot_source: Some(BotSourceView {
                kind: "llm".into(),
                entry_id: Some(4),
                model: Some("small".into()),
                stream_id: Some("12-5".into()),
                action: Some("offer_human".into()),
                token_id: Some(3),
            }),
        };
        let visitor = OnlineVisitorView {
            visitor_id: 7,
            site: "key".into(),
            name: "Ann".into(),
            url: "https://shop.example/cart".into(),
            title: "Cart".into(),
            referrer: "https://search.example/".into(),
            browser: "Firefox".into(),
            ip: "192.0.2.1".into(),
            returning: true,
            online_since: 1_700_000_000_000,
            page_since: 1_700_000_005_000,
        };
        let conversations = [conversation.clone()];
        let frames = [
            protocol::ServerFrame::Welcome {
                protocol: 1,
                role: "visitor",
                visitor_id: Some(7),
                agent_id: Some(3),
                epoch: 99,
                heartbeat_secs: 30,
                max_text_chars: 4000,
                conversations: &conversations,
            },
            protocol::ServerFrame::Ack {
                client_id: "c-1",
                conversation_id: 12,
                seq: 10,
                epoch: 99,
                created_at: 5,
                duplicate: true,
                text: "hi",
            },
            protocol::ServerFrame::Message(&message),
            protocol::ServerFrame::Replayed { conversation_id: 12, last_seq: 14 },
            protocol::ServerFrame::Reset { conversation_id: 12, epoch: 98, last_seq: 812, reason: "epoch_changed" },
            protocol::ServerFrame::Typing { conversation_id: 12, sender: &sender, active: true },
            protocol::ServerFrame::Read {
                conversation_id: 12,
                reader: ParticipantView { kind: SenderKind::Visitor, id: 7 },
                seq: 10,
            },
            protocol::ServerFrame::Conversation { event: "assigned", conversation: &conversation },
            protocol::ServerFrame::Presence { agent_id: 3, status: protocol::Presence::Away },
            protocol::ServerFrame::Activity { items: &activity },
            protocol::ServerFrame::Visitor { event: "page", visitor: &visitor },
            protocol::ServerFrame::Error {
                code: protocol::ErrorCode::InvalidField,
                message: "text: too long",
                client_id: Some("c-2"),
            },
            protocol::ServerFrame::Pong,
            protocol::ServerFrame::BotStream { conversation_id: 12, stream_id: "12-5", delta: "Our team ", done: true },
            protocol::ServerFrame::Goaway { reason: "shutdown", reconnect_after_ms: 1000 },
        ];
        frames.iter().map(|frame| (format!("{frame:?}"), frame.encode())).collect()
    }

    fn client_samples() -> Vec<Value> {
        vec![
            json!({"type": "hello", "token": "v1.x", "role": "visitor", "site": "key",
                   "resume": [{"conversation_id": 12, "last_seq": 9, "epoch": 99}]}),
            json!({"type": "send", "client_id": "c-1", "conversation_id": 12, "text": "hi", "internal": true,
                   "attachment_id": "u-1"}),
            json!({"type": "resume", "conversation_id": 12, "last_seq": 9, "epoch": 99}),
            json!({"type": "typing", "conversation_id": 12, "active": true}),
            json!({"type": "read", "conversation_id": 12, "seq": 10}),
            json!({"type": "take", "conversation_id": 12}),
            json!({"type": "close", "conversation_id": 12}),
            json!({"type": "presence", "status": "away"}),
            json!({"type": "page_view", "url": "https://shop.example/cart", "title": "Cart",
                   "referrer": "https://search.example/"}),
            json!({"type": "ping"}),
            json!({"type": "handoff", "conversation_id": 12}),
        ]
    }

    fn oneof_tag(proto: &ProtoFile, frame_message: &str, kind: &str) -> (String, u32) {
        let (_, message, number) = proto.messages[frame_message]
            .iter()
            .find(|(name, _, _)| name == kind)
            .unwrap_or_else(|| panic!("{frame_message} in proto/kefu.proto has no {kind}"));
        (message.clone(), *number)
    }

    /// The frame types of protocol.rs, of the .proto oneof and of the samples must be the same.
    fn check_frame_types(proto: &ProtoFile, enum_header: &str, frame_message: &str, samples: &[&str]) {
        let in_protocol = protocol_frame_types(enum_header);
        let in_proto: BTreeSet<String> =
            proto.messages[frame_message].iter().map(|(name, _, _)| name.clone()).collect();
        let in_samples: BTreeSet<String> = samples.iter().map(|kind| (*kind).to_owned()).collect();
        let missing: Vec<&String> = in_protocol.difference(&in_proto).collect();
        assert!(
            missing.is_empty(),
            "{frame_message} in proto/kefu.proto lacks the frames {missing:?} of src/protocol.rs"
        );
        assert_eq!(in_proto, in_protocol, "{frame_message} in proto/kefu.proto has frames src/protocol.rs lacks");
        assert_eq!(in_samples, in_protocol, "the {frame_message} samples must hold one of every frame type");
        assert_eq!(samples.len(), in_samples.len(), "two {frame_message} samples of the same type");
    }

    fn check_server_samples(proto: &ProtoFile, seen: &mut BTreeSet<(String, String)>) {
        let samples = server_samples();
        let mut kinds = Vec::new();
        for (debug, json_bytes) in &samples {
            let json: Value = serde_json::from_slice(json_bytes).unwrap();
            let kind = json["type"].as_str().unwrap();
            check_sample_sets_every_field(kind, debug, &json);
            let encoded = server_frame_from_json(json_bytes).unwrap_or_else(|error| panic!("{kind}: {error}"));
            let (message, number) = oneof_tag(proto, "ServerFrame", kind);
            assert_eq!(first_tag(&encoded), number, "{kind}: the oneof tag differs from proto/kefu.proto");
            check_fields(proto, &message, &json, seen);
            assert_eq!(server_frame_to_json(&encoded).unwrap(), json, "{kind} does not round-trip");
            kinds.push(kind.to_owned());
        }
        let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
        check_frame_types(proto, "pub enum ServerFrame<'a> {", "ServerFrame", &kinds);
    }

    fn check_client_samples(proto: &ProtoFile, seen: &mut BTreeSet<(String, String)>) {
        let samples = client_samples();
        for json in &samples {
            let kind = json["type"].as_str().unwrap();
            let decoded = protocol::decode_client_frame(&json.to_string())
                .unwrap_or_else(|error| panic!("{kind}: {}", error.message));
            check_sample_sets_every_field(kind, &format!("{decoded:?}"), json);
            let encoded = client_frame_from_json(json).unwrap_or_else(|error| panic!("{kind}: {error}"));
            let (message, number) = oneof_tag(proto, "ClientFrame", kind);
            assert_eq!(first_tag(&encoded), number, "{kind}: the oneof tag differs from proto/kefu.proto");
            check_fields(proto, &message, json, seen);
            let text = client_frame_to_json(&encoded).unwrap();
            assert_eq!(&serde_json::from_str::<Value>(&text).unwrap(), json, "{kind} does not round-trip");
            protocol::decode_client_frame(&text).unwrap_or_else(|error| panic!("{kind}: {}", error.message));
        }
        let kinds: Vec<&str> = samples.iter().map(|json| json["type"].as_str().unwrap()).collect();
        check_frame_types(proto, "pub enum ClientFrame {", "ClientFrame", &kinds);
    }

    #[test]
    fn every_server_frame_round_trips_and_matches_the_proto_file() {
        check_server_samples(&parse_proto(), &mut BTreeSet::new());
    }

    #[test]
    fn every_client_frame_round_trips_and_matches_the_proto_file() {
        check_client_samples(&parse_proto(), &mut BTreeSet::new());
    }

    #[test]
    fn every_field_of_the_proto_file_is_exercised() {
        let proto = parse_proto();
        let mut seen = BTreeSet::new();
        check_server_samples(&proto, &mut seen);
        check_client_samples(&proto, &mut seen);
        for (message, fields) in &proto.messages {
            if message == "ClientFrame" || message == "ServerFrame" {
                continue;
            }
            for (name, _, _) in fields {
                assert!(
                    seen.contains(&(message.clone(), name.clone())),
                    "{message}.{name} in proto/kefu.proto is in no sample (or no longer in src/protocol.rs)"
                );
            }
        }
    }

    #[test]
    fn the_sample_checks_see_unset_and_unnamed_fields() {
        let (fields, unset) = debug_fields(r#"Send { client_id: "a: b", attachment_id: None, resume: [] }"#);
        assert_eq!(fields, ["attachment_id", "client_id", "resume"].map(String::from).into_iter().collect());
        assert!(unset);
        let (_, unset) = debug_fields(r#"Ping { note: "None" }"#);
        assert!(!unset);
        let types = protocol_frame_types("pub enum ClientFrame {");
        assert!(types.contains("page_view") && types.contains("hello") && types.len() >= 11, "{types:?}");
    }

    #[test]
    fn bad_protobuf_is_a_bad_frame() {
        let error = client_frame_to_json(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(error.code, ErrorCode::BadJson);
        let error = client_frame_to_json(&[]).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownType);
    }

    #[test]
    fn the_cache_encodes_a_shared_frame_once() {
        let cache = ProtobufCache::default();
        let frame = protocol::ServerFrame::Pong.encode();
        let first = cache.encode(&frame).unwrap();
        let second = cache.encode(&frame.clone()).unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr());
    }
}

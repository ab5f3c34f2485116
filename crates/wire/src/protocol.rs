//! The wire protocol: every frame a client sends or receives, their JSON form, error codes and
//! close codes. docs/protocol.md describes the same thing for people; the two are kept in step.
//!
//! Server frames are encoded once per event and the bytes shared by every recipient.

use serde::{Deserialize, Serialize};

/// The protocol version in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// A frame from a client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Hello(Hello),
    Send(Send),
    Resume(ResumePoint),
    Typing {
        conversation_id: u64,
        active: bool,
    },
    Read {
        conversation_id: u64,
        seq: u64,
    },
    Take {
        conversation_id: u64,
    },
    Close {
        conversation_id: u64,
    },
    Presence {
        status: Presence,
    },
    /// A visitor's page view, for the agents' live visitor list.
    PageView(PageView),
    Ping,
    /// A visitor asks for a human instead of the bot.
    Handoff {
        conversation_id: u64,
    },
}

/// The frame types a client may send, for telling an unknown type from a malformed known one.
const CLIENT_FRAME_TYPES: [&str; 11] =
    ["hello", "send", "resume", "typing", "read", "take", "close", "presence", "page_view", "ping", "handoff"];

#[derive(Debug, Default, Deserialize)]
pub struct Hello {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub resume: Vec<ResumePoint>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct ResumePoint {
    pub conversation_id: u64,
    pub last_seq: u64,
    pub epoch: u64,
}

#[derive(Debug, Deserialize)]
pub struct Send {
    pub client_id: String,
    #[serde(default)]
    pub conversation_id: Option<u64>,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub internal: bool,
    /// An upload of the sender's to attach (the message kind follows from its type).
    #[serde(default)]
    pub attachment_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Online,
    Away,
    Offline,
}

/// Why a client frame could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    /// The frame's `client_id`, when it had a readable one.
    pub client_id: Option<String>,
}

/// Decodes one client frame, classifying failures as `bad_json`, `unknown_type` or `invalid_field`.
pub fn decode_client_frame(text: &str) -> Result<ClientFrame, DecodeError> {
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(frame) => Ok(frame),
        Err(error) => Err(classify_decode_error(text, error)),
    }
}

/// The `client_id` of a frame, read without decoding the rest (for answering a dropped frame).
pub fn client_id_of(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        client_id: Option<String>,
    }
    serde_json::from_str::<Probe>(text).ok().and_then(|probe| probe.client_id)
}

fn classify_decode_error(text: &str, error: serde_json::Error) -> DecodeError {
    let value = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(object)) => object,
        Ok(_) => {
            return DecodeError {
                code: ErrorCode::BadJson,
                message: "a frame must be a JSON object".into(),
                client_id: None,
            };
        }
        Err(_) => {
            return DecodeError {
                code: ErrorCode::BadJson,
                message: format!("not valid JSON: {error}"),
                client_id: None,
            };
        }
    };
    let client_id = value.get("client_id").and_then(|id| id.as_str()).map(str::to_owned);
    match value.get("type").and_then(|kind| kind.as_str()) {
        None => DecodeError {
            code: ErrorCode::UnknownType,
            message: "the frame has no string field `type`".into(),
            client_id,
        },
        Some(kind) if !CLIENT_FRAME_TYPES.contains(&kind) => {
            DecodeError { code: ErrorCode::UnknownType, message: format!("unknown frame type {kind:?}"), client_id }
        }
        Some(kind) => DecodeError {
            code: ErrorCode::InvalidField,
            message: format!("{kind}: {}", strip_position(&error)),
            client_id,
        },
    }
}

fn strip_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.find(" at line ") {
        Some(position) => message[..position].to_owned(),
        None => message,
    }
}

/// Who wrote a message, as clients see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct SenderView {
    pub kind: SenderKind,
    pub id: u64,
    pub name: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SenderKind {
    Visitor,
    Agent,
    Bot,
    System,
}

impl SenderKind {
    pub fn code(self) -> u8 {
        match self {
            SenderKind::Visitor => 1,
            SenderKind::Agent => 2,
            SenderKind::Bot => 3,
            SenderKind::System => 4,
        }
    }
}

/// A participant reference without a name (read receipts).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParticipantView {
    pub kind: SenderKind,
    pub id: u64,
}

/// A message as clients see it (in `message` frames and history pages).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageView {
    pub conversation_id: u64,
    pub epoch: u64,
    pub seq: u64,
    pub sender: SenderView,
    pub kind: String,
    pub text: String,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub internal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentView>,
    /// Where a bot message came from; absent on other messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_source: Option<BotSourceView>,
}

/// Where a bot message came from, as stored (postcard, so a plain enum).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BotSource {
    /// The answer of a knowledge-base entry that matched.
    Kb { entry_id: u64 },
    /// Generated by a language model; `stream_id` names the `bot_stream` frames that preceded it.
    Llm { model: String, stream_id: String },
    /// The site's greeting at the start of a conversation.
    Greeting,
    /// A notice about the conversation itself; `action` tells the client what to offer
    /// (`offer_human`, `offline_form`, `handed_off`).
    Notice { action: String },
    /// Sent over the HTTP API by an integration, with the id of its API token.
    /// (Variants are only ever added last, so postcard's variant numbers of older records keep
    /// their meaning.)
    Api { token_id: u64 },
    /// A notice (as [`BotSource::Notice`]) that offers the questions of related entries as quick
    /// replies, when the best match was close but below the threshold.
    Related { action: String, questions: Vec<String> },
}

impl BotSource {
    pub fn view(&self) -> BotSourceView {
        let mut view = BotSourceView {
            kind: String::new(),
            entry_id: None,
            model: None,
            stream_id: None,
            action: None,
            token_id: None,
            related: Vec::new(),
        };
        match self {
            BotSource::Kb { entry_id } => {
                view.kind = "kb".into();
                view.entry_id = Some(*entry_id);
            }
            BotSource::Llm { model, stream_id } => {
                view.kind = "llm".into();
                view.model = Some(model.clone());
                view.stream_id = Some(stream_id.clone());
            }
            BotSource::Greeting => view.kind = "greeting".into(),
            BotSource::Notice { action } => {
                view.kind = "notice".into();
                view.action = Some(action.clone());
            }
            BotSource::Api { token_id } => {
                view.kind = "api".into();
                view.token_id = Some(*token_id);
            }
            BotSource::Related { action, questions } => {
                view.kind = "notice".into();
                view.action = Some(action.clone());
                view.related = questions.clone();
            }
        }
        view
    }
}

/// Where a bot message came from, as clients see it: `{"kind":"kb","entry_id":7}`,
/// `{"kind":"llm","model":"...","stream_id":"..."}`, `{"kind":"greeting"}`,
/// `{"kind":"notice","action":"offer_human"}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct BotSourceView {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<u64>,
    /// Questions of related entries the client may offer as quick replies (notices only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
}

/// An attached file as clients see it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttachmentView {
    pub id: String,
    /// Where to fetch it (with the same credentials as the API).
    pub url: String,
    pub name: String,
    pub size: u64,
    pub content_type: String,
}

/// A conversation as clients see it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConversationView {
    pub id: u64,
    pub site: String,
    pub visitor_id: u64,
    pub status: String,
    pub assigned_agent: Option<u64>,
    pub epoch: u64,
    pub last_seq: u64,
    pub created_at: i64,
    pub updated_at: i64,
    /// True while the bot answers the conversation; routing leaves it alone until a handoff.
    #[serde(default)]
    pub bot_active: bool,
}

/// A lead as agents see it: an offline message, or a conversation that ended with no agent
/// reply, waiting for someone to follow it up.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeadView {
    pub id: u64,
    pub site: String,
    pub visitor_id: u64,
    /// The visitor's conversation the lead belongs to; a reply goes there.
    pub conversation_id: u64,
    /// `offline_message` or `missed_conversation`.
    pub source: String,
    /// The visitor's name as they gave it (may be empty).
    pub name: String,
    /// The visitor's email (may be empty for a missed conversation).
    pub email: String,
    /// The first 200 characters of the visitor's message.
    pub preview: String,
    /// `new`, `open` or `done`.
    pub status: String,
    /// The agent following it up, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_agent: Option<u64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One stored message, as the site's agents see it in their lists.
#[derive(Clone, Debug, Serialize)]
pub struct ActivityItem {
    pub conversation_id: u64,
    pub seq: u64,
    pub sender_kind: SenderKind,
    pub internal: bool,
    /// The text's first 80 characters.
    pub preview: String,
    pub created_at: i64,
}

/// A frame from the server.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        protocol: u32,
        role: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        visitor_id: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        agent_id: Option<u64>,
        epoch: u64,
        heartbeat_secs: u64,
        max_text_chars: usize,
        /// The first page of the open conversations the client may see.
        conversations: &'a [ConversationView],
        /// True when `conversations` frames with the rest follow at once.
        more_conversations: bool,
    },
    /// A further page of the list that `welcome` began; `more` is false on the last.
    Conversations {
        conversations: &'a [ConversationView],
        more: bool,
    },
    Ack {
        client_id: &'a str,
        conversation_id: u64,
        seq: u64,
        epoch: u64,
        created_at: i64,
        duplicate: bool,
        text: &'a str,
    },
    Message(&'a MessageView),
    Replayed {
        conversation_id: u64,
        last_seq: u64,
    },
    Reset {
        conversation_id: u64,
        epoch: u64,
        last_seq: u64,
        reason: &'a str,
    },
    Typing {
        conversation_id: u64,
        sender: &'a SenderView,
        active: bool,
    },
    Read {
        conversation_id: u64,
        reader: ParticipantView,
        seq: u64,
    },
    Conversation {
        event: &'a str,
        conversation: &'a ConversationView,
    },
    Presence {
        agent_id: u64,
        status: Presence,
    },
    /// Messages were stored in conversations of the site (to the site's agents, for lists): one
    /// frame for all the site's messages of one commit.
    Activity {
        items: &'a [ActivityItem],
    },
    /// A visitor came online, viewed a page, or left (to the site's agents).
    Visitor {
        event: &'a str,
        visitor: &'a OnlineVisitorView,
    },
    /// A lead was created, changed (status, assignee) or erased (to the site's agents).
    Lead {
        event: &'a str,
        lead: &'a LeadView,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
    },
    Pong,
    /// Part of a bot answer as a language model generates it; not stored. The full answer
    /// follows as a `message` whose `bot_source.stream_id` is this `stream_id`.
    BotStream {
        conversation_id: u64,
        stream_id: &'a str,
        delta: &'a str,
        /// True on the last frame of a stream (then `delta` is empty).
        done: bool,
        /// On the last frame: the stream failed or was cut off before its end, so what came
        /// before is not an answer (none is stored; the conversation goes to a human).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        cut: bool,
    },
    Goaway {
        reason: &'a str,
        reconnect_after_ms: u64,
    },
    /// Whether the site can chat now (to its visitors): after `welcome`, and whenever it changes.
    SiteStatus(&'a SiteStatusView),
}

impl ServerFrame<'_> {
    /// The frame as the text of one WebSocket message.
    pub fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).expect("server frames always serialize"))
    }
}

/// The `code` of an `error` frame (and of HTTP error bodies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    InvalidField,
    NotFound,
    Forbidden,
    ConversationClosed,
    RejectedContent,
    Blocked,
    RateLimited,
    Unavailable,
    Internal,
}

/// WebSocket close codes (docs/protocol.md, "Close codes").
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const RESTARTING: u16 = 1012;
    pub const BAD_HELLO: u16 = 4000;
    pub const UNAUTHENTICATED: u16 = 4001;
    pub const HELLO_TIMEOUT: u16 = 4002;
    pub const FORBIDDEN: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const RATE_LIMITED: u16 = 4009;
    pub const IDLE_TIMEOUT: u16 = 4010;
}

/// The page a visitor is on, as the widget reports it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PageView {
    pub url: String,
    pub title: String,
    pub referrer: String,
}

/// Whether a site can chat now, as its visitors see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SiteAvailability {
    /// Open, and an agent is online.
    Online,
    /// Open, but no agent is online (or every one is away).
    Away,
    /// Outside the site's business hours.
    Closed,
}

/// A site's status: `{"status":"closed","next_open":{...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteStatusView {
    pub status: SiteAvailability,
    /// When the site opens next; only when `closed` (and absent when no opening is scheduled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_open: Option<NextOpeningView>,
}

/// When a closed site opens next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NextOpeningView {
    /// The instant, in milliseconds since the Unix epoch (clients show it in their own time zone).
    pub at: i64,
    /// The same instant as the site's wall-clock time, `HH:MM`.
    pub local_time: String,
    /// The site's local date of it, `YYYY-MM-DD`.
    pub local_date: String,
    /// The site's IANA time zone.
    pub time_zone: String,
}

/// A visitor online, as agents see them.
#[derive(Clone, Debug, Serialize)]
pub struct OnlineVisitorView {
    pub visitor_id: u64,
    pub site: String,
    pub name: String,
    pub url: String,
    pub title: String,
    pub referrer: String,
    pub browser: String,
    pub ip: String,
    /// More than one session opened: the visitor has been here before.
    pub returning: bool,
    pub online_since: i64,
    pub page_since: i64,
}

/// An `error` frame, encoded.
pub fn error_frame(code: ErrorCode, message: &str, client_id: Option<&str>) -> bytes::Bytes {
    ServerFrame::Error { code, message, client_id }.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_error(input: &str, code: ErrorCode, message_part: &str) {
        let error = decode_client_frame(input).unwrap_err();
        assert_eq!(error.code, code, "{input}: {}", error.message);
        assert!(error.message.contains(message_part), "{input}: {}", error.message);
    }

    #[test]
    fn decode_errors_are_classified() {
        check_error("{not json", ErrorCode::BadJson, "not valid JSON");
        check_error("[1,2]", ErrorCode::BadJson, "JSON object");
        check_error(r#"{"type":"dance"}"#, ErrorCode::UnknownType, "dance");
        check_error(r#"{"kind":"send"}"#, ErrorCode::UnknownType, "type");
        check_error(r#"{"type":"send","text":"hi"}"#, ErrorCode::InvalidField, "client_id");
        check_error(r#"{"type":"read","conversation_id":"x","seq":1}"#, ErrorCode::InvalidField, "read");
        let error = decode_client_frame(r#"{"type":"send","client_id":"c1","conversation_id":-4}"#).unwrap_err();
        assert_eq!(error.client_id.as_deref(), Some("c1"));
    }

    #[test]
    fn frames_decode() {
        let frame = decode_client_frame(r#"{"type":"send","client_id":"c1","text":"hi","extra":1}"#).unwrap();
        assert!(
            matches!(frame, ClientFrame::Send(Send { ref client_id, conversation_id: None, .. }) if client_id == "c1")
        );
        assert!(matches!(decode_client_frame(r#"{"type":"ping"}"#).unwrap(), ClientFrame::Ping));
    }
}

//! Every redb table kefu uses, with its key and value layout.
//!
//! Names carry a version suffix (`_v1`): a change of layout gets a new name and a migration,
//! so an old file is never misread. Values are JSON for entities (they gain fields over time,
//! and `serde(default)` reads old records) and postcard for the high-volume message and
//! acknowledgement records.

use redb::TableDefinition;

/// Counters, format facts and installation switches: `schema_version`, `epoch`, `next_*_id`,
/// `next_lsn`, `require_two_factor`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");

/// Site key → site (JSON).
pub const SITES: TableDefinition<&str, &[u8]> = TableDefinition::new("sites_v1");

/// Agent id → agent (JSON).
pub const AGENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("agents_v1");

/// Agent id → the agent's two-factor login state (JSON: secret, last step used, recovery code
/// digests); `people::two_factor`.
pub const AGENT_TWO_FACTOR: TableDefinition<u64, &[u8]> = TableDefinition::new("agent_two_factor_v1");

/// Lowercased email → agent id; keeps emails unique.
pub const AGENT_EMAILS: TableDefinition<&str, u64> = TableDefinition::new("agent_emails_v1");

/// SHA-256 of a session token → agent session (JSON).
pub const AGENT_SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("agent_sessions_v1");

/// Visitor id → visitor (JSON).
pub const VISITORS: TableDefinition<u64, &[u8]> = TableDefinition::new("visitors_v1");

/// SHA-256 of a visitor token → visitor id.
pub const VISITOR_TOKENS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("visitor_tokens_v1");

/// (site key, the business's user id) → visitor id, for verified identities across devices.
pub const VISITOR_IDENTITIES: TableDefinition<(&str, &str), u64> = TableDefinition::new("visitor_identities_v1");

/// Conversation id → conversation (JSON).
pub const CONVERSATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("conversations_v1");

/// (visitor id, conversation id) → (): a visitor's conversations, oldest first.
pub const VISITOR_CONVERSATIONS: TableDefinition<(u64, u64), ()> = TableDefinition::new("visitor_conversations_v1");

/// Visitor id → their open conversation, so a visitor's next message finds it without a scan.
pub const VISITOR_OPEN_CONVERSATION: TableDefinition<u64, u64> = TableDefinition::new("visitor_open_conversation_v1");

/// Conversation id → site key, for every conversation not closed; routing and consoles start from it.
pub const OPEN_CONVERSATIONS: TableDefinition<u64, &str> = TableDefinition::new("open_conversations_v1");

/// (conversation id, day) → (): the day shards holding a conversation's messages.
pub const CONVERSATION_DAYS: TableDefinition<(u64, u32), ()> = TableDefinition::new("conversation_days_v1");

/// (day in the site's time zone, site key, team id or 0, holding agent id or 0) → the figures of
/// the conversations of that site, team and agent on that day (postcard; `history::daily_figures`).
pub const REPORT_CELLS: TableDefinition<(u32, &str, u64, u64), &[u8]> = TableDefinition::new("report_cells_v1");

/// (day in the site's time zone, site key, sending agent id or 0 for anyone else) → messages sent
/// (internal notes not counted).
pub const REPORT_MESSAGES: TableDefinition<(u32, &str, u64), u64> = TableDefinition::new("report_messages_v1");

/// (sender kind, sender id, client id) → acknowledgement (postcard): the dedup record of every send.
pub const CLIENT_IDS: TableDefinition<(u8, u64, &str), &[u8]> = TableDefinition::new("client_ids_v1");

/// (conversation id, participant kind, participant id) → the highest sequence that participant has read.
pub const READ_POSITIONS: TableDefinition<(u64, u8, u64), u64> = TableDefinition::new("read_positions_v1");

/// Upload id → upload metadata (JSON); the bytes live in `DATA_DIR/uploads/ID`.
pub const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads_v1");

/// Offline message id → offline message (JSON), left by visitors when nobody could answer.
pub const OFFLINE_MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("offline_messages_v1");

/// Lead id → lead (JSON): an offline message or a conversation that ended unanswered, with its
/// follow-up status and assignee (`chat::leads`).
pub const LEADS: TableDefinition<u64, &[u8]> = TableDefinition::new("leads_v1");

/// Conversation id → its newest lead's id, so a conversation becomes a lead at most once.
pub const LEAD_CONVERSATIONS: TableDefinition<u64, u64> = TableDefinition::new("lead_conversations_v1");

/// Webhook id → webhook (JSON): where a site's events are sent.
pub const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks_v1");

/// Delivery id → webhook delivery (JSON): the durable outbox and its history.
pub const WEBHOOK_DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("webhook_deliveries_v1");

/// (due time in Unix ms, delivery id) → (): deliveries waiting for their next attempt, soonest first.
pub const WEBHOOK_DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("webhook_due_v1");

/// Key name → key bytes: the Web Push VAPID private key (`"vapid"`, a P-256 scalar).
pub const PUSH_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("push_keys_v1");

/// (agent id, first 8 bytes of the endpoint's SHA-256, big-endian) → a browser's push
/// subscription of that agent (JSON).
pub const PUSH_SUBSCRIPTIONS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("push_subscriptions_v1");

/// (site, event id) → event (JSON): each site's webhook events, in commit order, kept for
/// `grpc.event_retention_hours` while gRPC is on, so `Subscribe` can resume from a cursor.
pub const SITE_EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("site_events_v1");

/// Calls `$apply!(TABLE, ...)` with every fixed table (all but the day shards), so the code
/// that creates the tables and the code that backs them up can never disagree.
macro_rules! with_fixed_tables {
    ($apply:ident) => {
        $apply!(
            META,
            SITES,
            AGENTS,
            AGENT_EMAILS,
            AGENT_SESSIONS,
            AGENT_TWO_FACTOR,
            VISITORS,
            VISITOR_TOKENS,
            VISITOR_IDENTITIES,
            CONVERSATIONS,
            VISITOR_CONVERSATIONS,
            VISITOR_OPEN_CONVERSATION,
            OPEN_CONVERSATIONS,
            CONVERSATION_DAYS,
            CLIENT_IDS,
            READ_POSITIONS,
            UPLOADS,
            OFFLINE_MESSAGES,
            LEADS,
            LEAD_CONVERSATIONS,
            WEBHOOKS,
            WEBHOOK_DELIVERIES,
            WEBHOOK_DUE,
            SITE_EVENTS,
            CANNED_REPLIES,
            TEAMS,
            BLOCKED_IPS,
            KB_ENTRIES,
            KB_SITE_ENTRIES,
            KB_VECTORS,
            BOT_SETTINGS,
            BOT_FEEDBACK,
            AUDIT_LOG,
            BLOCKED_VISITORS,
            API_TOKENS,
            API_TOKEN_DIGESTS,
            PUSH_KEYS,
            PUSH_SUBSCRIPTIONS,
            REPORT_CELLS,
            REPORT_MESSAGES,
            EMAIL_SETTINGS,
            EMAILS,
            EMAIL_DUE,
            EMAIL_MISSED_CHATS,
            PASSWORD_RESETS,
            REFUSED_ORIGINS
        )
    };
}
pub(crate) use with_fixed_tables;
/// Knowledge-base entry id → entry (JSON).
pub const KB_ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("kb_entries_v1");

/// (site key, entry id) → (): a site's knowledge-base entries.
pub const KB_SITE_ENTRIES: TableDefinition<(&str, u64), ()> = TableDefinition::new("kb_site_entries_v1");

/// Knowledge-base entry id → its embedding: the fingerprint of the model and text it was made
/// from (u64, little-endian), then the unit vector as little-endian f32s (bot::embeddings).
pub const KB_VECTORS: TableDefinition<u64, &[u8]> = TableDefinition::new("kb_vectors_v1");

/// Site key → the site's bot settings (JSON); a site without a record has the bot off.
pub const BOT_SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("bot_settings_v1");

/// (conversation id, seq) → a visitor's thumbs up or down on that bot answer (JSON).
pub const BOT_FEEDBACK: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("bot_feedback_v1");

/// The prefix of the per-day message shard tables, `messages_v1_YYYY-MM-DD`.
pub const MESSAGE_SHARD_PREFIX: &str = "messages_v1_";

/// The name of the message shard table of one UTC day.
pub fn message_shard_name(day: u32) -> String {
    format!("{MESSAGE_SHARD_PREFIX}{}", crate::base::clock::day_to_date(day))
}

/// A message shard: (conversation id, sequence) → message (postcard).
pub fn message_shard(name: &str) -> TableDefinition<'_, (u64, u64), &'static [u8]> {
    TableDefinition::new(name)
}

/// The day of a message shard table, from its name.
pub fn message_shard_day(table_name: &str) -> Option<u32> {
    crate::base::clock::date_to_day(table_name.strip_prefix(MESSAGE_SHARD_PREFIX)?)
}

/// Canned reply id → canned reply (JSON): per-site shortcut and text for the console's `/` menu.
pub const CANNED_REPLIES: TableDefinition<u64, &[u8]> = TableDefinition::new("canned_replies_v1");

/// Team id → team (JSON): a named group of a site's agents that conversations can be routed to.
pub const TEAMS: TableDefinition<u64, &[u8]> = TableDefinition::new("teams_v1");

/// (site key, IP address) → when it was blocked (Unix ms): addresses refused visitor sessions.
pub const BLOCKED_IPS: TableDefinition<(&str, &str), i64> = TableDefinition::new("blocked_ips_v1");

/// Audit entry id (increasing with time) → who changed what and when (JSON).
pub const AUDIT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_log_v1");

/// Blocked visitor id → when they were blocked (Unix ms), so the admin lists blocks without
/// reading every visitor.
pub const BLOCKED_VISITORS: TableDefinition<u64, i64> = TableDefinition::new("blocked_visitors_v1");

/// API token id → API token (JSON, without the token itself): per-site tokens for integrations.
pub const API_TOKENS: TableDefinition<u64, &[u8]> = TableDefinition::new("api_tokens_v1");

/// SHA-256 of a live API token → its id; revoking a token removes its row.
pub const API_TOKEN_DIGESTS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("api_token_digests_v1");

/// `"smtp"` → the SMTP settings saved on the admin page (JSON); they override `[email]` of kefu.toml.
pub const EMAIL_SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("email_settings_v1");

/// Email id → email (JSON): the durable outbox and its history.
pub const EMAILS: TableDefinition<u64, &[u8]> = TableDefinition::new("emails_v1");

/// (due time in Unix ms, email id) → (): emails waiting for their next attempt, soonest first.
pub const EMAIL_DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("email_due_v1");

/// Conversation id → when its site's agents were emailed that nobody answered (Unix ms), so they are told once.
pub const EMAIL_MISSED_CHATS: TableDefinition<u64, i64> = TableDefinition::new("email_missed_chats_v1");

/// SHA-256 of a password-reset token → the reset (JSON): single use, short-lived.
pub const PASSWORD_RESETS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("password_resets_v1");

/// Site key → the origins recently refused for the site (JSON, at most 20, with count and last
/// time), which the site's admin page lists; saved at most every few seconds, not per request.
pub const REFUSED_ORIGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("refused_origins_v1");

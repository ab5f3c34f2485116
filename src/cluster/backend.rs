//! The storage a running server was given: the appliance's redb [`Store`] or a cluster node's
//! PostgreSQL stores ([`ClusterStores`]). [`Backend`] implements every storage boundary by
//! handing each call to the one it holds, so handlers call the boundaries and never ask which.
//! What is not behind a boundary yet is reached through [`Backend::appliance`], which a cluster
//! node answers with [`StorageError::ApplianceOnly`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::Either;

use crate::base::config::EmailConfig;
use crate::base::secrets::TokenDigest;
use crate::bot::conversation_writes::BotConversations;
use crate::bot::embeddings::VectorStore;
use crate::bot::feedback::{BotFeedbackStore, Feedback, FeedbackError};
use crate::bot::knowledge_base::formats::ImportRow;
use crate::bot::knowledge_base::store::KnowledgeBaseStore;
use crate::bot::knowledge_base::{EntryInput, ImportOutcome, KbEntry, KbError};
use crate::bot::settings::{self as bot_settings, BotSettingsStore, ChangeError};
use crate::bot::{BotSettings, HandoffOutcome};
use crate::chat::canned_replies::{CannedReply, CannedReplyError, CannedReplyStore};
use crate::chat::conversation_list::{ListPage, ListRequest};
use crate::chat::conversation_store::ConversationStore;
use crate::chat::conversations::{AssignWhen, Conversation, ConversationError, ReadThrough, TransferTarget};
use crate::chat::lead_store::LeadStore;
use crate::chat::leads::{Lead, LeadError, LeadFilter, LeadPage, LeadReply, LeadStatus};
use crate::chat::message_store::{ConversationPosition, MessageStore, Page};
use crate::chat::messages::{AppendError, Appended, NewMessage};
use crate::chat::offline_messages::{NewOfflineMessage, OfflineMessage, OfflineMessageError, OfflineMessageStore};
use crate::chat::upload_store::{UploadBytes, UploadContent, UploadStore};
use crate::chat::uploads::{Upload, UploadError, UploadQuota, UploadTarget};
use crate::cluster::agents::PostgresAgents;
use crate::cluster::api_tokens::PostgresApiTokens;
use crate::cluster::audit::PostgresAuditLog;
use crate::cluster::blocking::PostgresBlocks;
use crate::cluster::bot_settings::PostgresBotSettings;
use crate::cluster::canned_replies::PostgresCannedReplies;
use crate::cluster::email_settings::PostgresEmailSettings;
use crate::cluster::events::{LocalEvents, Outlet};
use crate::cluster::knowledge_base::PostgresKnowledgeBase;
use crate::cluster::messages::{PostgresMessages, PostgresOptions};
use crate::cluster::postgres::PostgresError;
use crate::cluster::push_subscriptions::PostgresPushSubscriptions;
use crate::cluster::search::PostgresSearch;
use crate::cluster::sites::PostgresSites;
use crate::cluster::teams::PostgresTeams;
use crate::cluster::uploads::PostgresUploads;
use crate::cluster::visitors::PostgresVisitors;
use crate::cluster::webhooks::PostgresWebhooks;
use crate::email::password_reset::{PasswordReset, PasswordResetStore};
use crate::email::settings::{self as email_settings, EmailSettingsStore, SmtpSettings};
use crate::email::transcript::TranscriptStore;
use crate::email::{EmailError, OutgoingEmail};
use crate::history::audit::{AuditEntry, AuditFilter, AuditLog, NewAuditEntry};
use crate::history::reports::{Report, ReportFilter, ReportStore, Today};
use crate::history::visitor_data::VisitorDataStore;
use crate::people::agent_administration::AgentAdministration;
use crate::people::agent_store::AgentStore;
use crate::people::agents::{Agent, AgentChanges, AgentDraft, AgentError, AgentSession};
use crate::people::api_tokens::{ApiToken, ApiTokenError, ApiTokenStore, CreatedApiToken, NewApiToken};
use crate::people::avatars::AvatarError;
use crate::people::blocking::{BlockError, BlockStore};
use crate::people::principal::Principal;
use crate::people::team_store::TeamStore;
use crate::people::teams::{Team, TeamError};
use crate::people::two_factor::TwoFactorError;
use crate::people::visitor_store::VisitorStore;
use crate::people::visitors::{OpenedSession, SessionRequest, Visitor, VisitorError};
use crate::protocol::{BotSource, ParticipantView, SenderView};
use crate::push::subscriptions::{PushSubscriptionStore, Subscription, SubscriptionError};
use crate::search::{Search, SearchError, SearchPage, SearchRequest};
use crate::sites::store::SiteStore;
use crate::sites::{NewSite, Site, SiteError};
use crate::storage::{StorageError, Store};
use crate::webhooks::webhook_store::WebhookStore;
use crate::webhooks::{Delivery, NewWebhook, Webhook, WebhookError};

/// The storage of a running server.
#[derive(Clone)]
pub enum Backend {
    /// One process, one redb file.
    Appliance(Store),
    /// A node of a cluster: PostgreSQL, shared by every node.
    Cluster(Arc<ClusterStores>),
}

/// A cluster node's stores, one per area, all on the same PostgreSQL database.
pub struct ClusterStores {
    /// Messages, conversations, leads, offline messages and the bot's feedback.
    pub messages: PostgresMessages,
    pub sites: PostgresSites,
    pub visitors: PostgresVisitors,
    /// Agents' logins and their administration, password resets.
    pub agents: PostgresAgents,
    pub teams: PostgresTeams,
    pub api_tokens: PostgresApiTokens,
    pub audit: PostgresAuditLog,
    pub blocks: PostgresBlocks,
    pub bot_settings: PostgresBotSettings,
    pub canned_replies: PostgresCannedReplies,
    pub email_settings: PostgresEmailSettings,
    pub knowledge_base: PostgresKnowledgeBase,
    pub push_subscriptions: PostgresPushSubscriptions,
    pub uploads: PostgresUploads,
    pub webhooks: PostgresWebhooks,
    pub search: PostgresSearch,
    /// The database's URL.
    url: String,
}

impl ClusterStores {
    /// Connects every area's store to the database at `url`, applying the migrations it lacks.
    /// What they commit is announced to this node's relay (`local`) and to the other nodes
    /// (`nats`).
    pub async fn open(url: &str, nats: async_nats::Client, local: LocalEvents) -> Result<ClusterStores, PostgresError> {
        let options =
            PostgresOptions { nats: Some(nats.clone()), local: Some(local.clone()), ..PostgresOptions::default() };
        let messages = PostgresMessages::open(url, options).await?;
        let outlet = Outlet::new(Some(nats.clone()), Some(local));
        Ok(ClusterStores {
            messages,
            sites: PostgresSites::open(url).await?.with_events(nats.clone()),
            visitors: PostgresVisitors::open(url).await?,
            agents: PostgresAgents::open(url).await?.with_events(outlet),
            teams: PostgresTeams::open(url).await?.with_events(nats.clone()),
            api_tokens: PostgresApiTokens::open(url).await?,
            audit: PostgresAuditLog::open(url).await?,
            blocks: PostgresBlocks::open(url).await?,
            bot_settings: PostgresBotSettings::open(url).await?.with_events(nats.clone()),
            canned_replies: PostgresCannedReplies::open(url).await?,
            email_settings: PostgresEmailSettings::open(url).await?,
            knowledge_base: PostgresKnowledgeBase::open(url).await?.with_events(nats),
            push_subscriptions: PostgresPushSubscriptions::open(url).await?,
            uploads: PostgresUploads::open(url).await?,
            webhooks: PostgresWebhooks::open(url).await?,
            search: PostgresSearch::open(url).await?,
            url: url.to_owned(),
        })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Holds the cluster's lock named `name` (a PostgreSQL advisory lock) until the returned
    /// connection is dropped, so work that must happen once (the first start's accounts) is
    /// done by one node at a time.
    pub async fn lock(&self, name: &str) -> Result<tokio_postgres::Client, PostgresError> {
        let client = crate::cluster::postgres::connect(&self.url).await?;
        client.execute("SELECT pg_advisory_lock(hashtext($1))", &[&name]).await?;
        Ok(client)
    }
}

impl Backend {
    /// The appliance's store, for what only the appliance serves so far; a cluster node refuses
    /// `what` with [`StorageError::ApplianceOnly`].
    pub fn appliance(&self, what: &'static str) -> Result<&Store, StorageError> {
        match self {
            Backend::Appliance(store) => Ok(store),
            Backend::Cluster(_) => Err(StorageError::ApplianceOnly(what)),
        }
    }

    /// Whether the database answers: redb's schema version, or a round trip to PostgreSQL.
    pub async fn check_ready(&self) -> Result<(), StorageError> {
        match self {
            Backend::Appliance(store) => {
                store.read(|transaction| crate::storage::read_meta(transaction, "schema_version")).await.map(drop)
            }
            Backend::Cluster(cluster) => {
                let client = cluster.messages.readers.client().await?;
                client.simple_query("SELECT 1").await.map(drop).map_err(|error| StorageError::Server(error.to_string()))
            }
        }
    }

    /// Operations waiting for the appliance's writer (none on a cluster node, whose appends
    /// queue in its group commit).
    pub fn writer_queue_len(&self) -> usize {
        match self {
            Backend::Appliance(store) => store.writer_queue_len(),
            Backend::Cluster(_) => 0,
        }
    }

    /// The cluster's stores, when this is a cluster node.
    pub fn cluster(&self) -> Option<&ClusterStores> {
        match self {
            Backend::Appliance(_) => None,
            Backend::Cluster(cluster) => Some(cluster),
        }
    }
}

/// Where a server searches messages: the appliance's tantivy index (fed by the dispatcher), or
/// the cluster's PostgreSQL, which every node reads.
#[derive(Clone)]
pub enum MessageSearch {
    Index(Search),
    Postgres(Arc<ClusterStores>),
}

impl MessageSearch {
    /// One page of hits, newest first.
    pub async fn search(&self, request: SearchRequest) -> Result<SearchPage, SearchError> {
        match self {
            MessageSearch::Index(index) => index.search(request).await,
            MessageSearch::Postgres(cluster) => cluster.search.search(&request).await,
        }
    }

    /// The appliance's index, for what changes it besides the dispatcher (retention, erasure,
    /// a rebuild).
    pub fn index(&self, what: &'static str) -> Result<&Search, StorageError> {
        match self {
            MessageSearch::Index(index) => Ok(index),
            MessageSearch::Postgres(_) => Err(StorageError::ApplianceOnly(what)),
        }
    }
}

impl From<Store> for Backend {
    fn from(store: Store) -> Self {
        Backend::Appliance(store)
    }
}

/// Implements a boundary on [`Backend`]: each listed method (an `async` one, written with its
/// output) is the same call on the appliance's `Store` or on the cluster's store in `$field`.
macro_rules! delegate {
    ($boundary:ident to $field:ident {
        $( fn $name:ident(&self $(, $arg:ident: $type:ty)* $(,)?) -> $output:ty; )*
    } $($extra:item)*) => {
        impl $boundary for Backend {
            $(
                fn $name(&self $(, $arg: $type)*) -> impl Future<Output = $output> + Send {
                    match self {
                        Backend::Appliance(store) => Either::Left($boundary::$name(store $(, $arg)*)),
                        Backend::Cluster(cluster) => Either::Right($boundary::$name(&cluster.$field $(, $arg)*)),
                    }
                }
            )*
            $($extra)*
        }
    };
}

delegate!(MessageStore to messages {
    fn append(&self, message: NewMessage) -> Result<Appended, AppendError>;
    fn send(&self, message: NewMessage, refused: impl FnOnce(AppendError) + Clone + Send + 'static)
        -> Result<(), StorageError>;
    fn page_before(&self, conversation_id: u64, before: Option<u64>, limit: usize) -> Result<Page, StorageError>;
    fn page_after(&self, conversation_id: u64, after: u64, limit: usize) -> Result<Page, StorageError>;
    fn conversation(&self, conversation_id: u64) -> Result<Option<Conversation>, StorageError>;
    fn changed_within(&self, window_millis: i64) -> Result<Vec<ConversationPosition>, StorageError>;
}
fn epoch(&self) -> u64 {
    match self {
        Backend::Appliance(store) => MessageStore::epoch(store),
        Backend::Cluster(cluster) => cluster.messages.epoch(),
    }
});

delegate!(ConversationStore to messages {
    fn of_visitor(&self, visitor_id: u64) -> Result<Vec<Conversation>, StorageError>;
    fn list_page(&self, request: ListRequest, serves: impl Fn(&str) -> bool + Send + 'static)
        -> Result<ListPage, StorageError>;
    fn list_open(&self) -> Result<Vec<Conversation>, StorageError>;
    fn assign(&self, conversation_id: u64, agent_id: u64, when: AssignWhen) -> Result<Conversation, ConversationError>;
    fn close(&self, conversation_id: u64) -> Result<Conversation, ConversationError>;
    fn rate(&self, conversation_id: u64, score: u8, comment: String) -> Result<Conversation, ConversationError>;
    fn transfer(&self, conversation_id: u64, target: TransferTarget, note: Option<String>, sender: SenderView)
        -> Result<Conversation, ConversationError>;
    fn release(&self, conversation_id: u64, agent_id: u64) -> Result<Conversation, ConversationError>;
    fn reopen(&self, conversation_id: u64, agent_id: u64) -> Result<Conversation, ConversationError>;
    fn mark_read(&self, conversation_id: u64, reader: ParticipantView, seq: u64) -> Result<(), StorageError>;
    fn read_through(&self, conversation_id: u64) -> Result<ReadThrough, StorageError>;
    fn start_with_visitor(&self, site: String, visitor_id: u64, agent_id: u64)
        -> Result<Conversation, ConversationError>;
});

delegate!(BotConversations to messages {
    fn append_bot(&self, message: NewMessage, source: BotSource) -> Result<Option<Appended>, AppendError>;
    fn hand_off(&self, conversation_id: u64, notice: NewMessage, action: String)
        -> Result<HandoffOutcome, ConversationError>;
    fn close_if_idle(&self, conversation_id: u64, now: i64, limit_ms: i64) -> Result<bool, StorageError>;
});

delegate!(VisitorDataStore to messages {
    fn visitor_data(&self, visitor_id: u64, epoch: u64)
        -> Result<Option<crate::history::visitor_data::VisitorData>, StorageError>;
    fn erase_visitor(&self, visitor_id: u64, search: &MessageSearch)
        -> Result<crate::history::visitor_data::ErasureReport, crate::history::visitor_data::VisitorDataError>;
});

impl crate::history::export::HistoryExport for Backend {
    fn start_export(
        &self,
        request: crate::history::export::ExportRequest,
    ) -> tokio::sync::mpsc::Receiver<Result<bytes::Bytes, StorageError>> {
        match self {
            Backend::Appliance(store) => store.start_export(request),
            Backend::Cluster(cluster) => cluster.messages.start_export(request),
        }
    }
}

delegate!(ReportStore to messages {
    fn report(&self, filter: ReportFilter) -> Result<Report, StorageError>;
    fn today(&self, site: Option<String>, now: i64) -> Result<Today, StorageError>;
});

delegate!(VectorStore to knowledge_base {
    fn load_vectors(&self, entries: Vec<KbEntry>) -> Result<crate::bot::embeddings::SiteVectors, StorageError>;
    fn store_vectors(&self, vectors: Vec<crate::bot::embeddings::StoredVector>) -> Result<(), StorageError>;
});

delegate!(TranscriptStore to messages {
    fn request_transcript(&self, conversation_id: u64, visitor_id: u64, address: &str, lang_tag: &str)
        -> Result<(), crate::email::transcript::TranscriptError>;
});

delegate!(LeadStore to messages {
    fn lead(&self, lead_id: u64) -> Result<Option<Lead>, StorageError>;
    fn list_leads(&self, filter: LeadFilter, visible: impl Fn(&str) -> bool + Send + 'static)
        -> Result<LeadPage, StorageError>;
    fn set_lead_status(&self, lead_id: u64, status: LeadStatus) -> Result<Lead, LeadError>;
    fn assign_lead(&self, lead_id: u64, agent_id: Option<u64>) -> Result<Lead, LeadError>;
    fn reply_to_lead(&self, lead_id: u64, reply: LeadReply) -> Result<(Lead, Appended), LeadError>;
});

delegate!(OfflineMessageStore to messages {
    fn leave(&self, site: &str, visitor_id: u64, new_message: NewOfflineMessage)
        -> Result<OfflineMessage, OfflineMessageError>;
    fn list_offline(&self, visible: impl Fn(&str) -> bool + Send + 'static, limit: usize)
        -> Result<Vec<OfflineMessage>, StorageError>;
});

delegate!(BotFeedbackStore to messages {
    fn record(&self, conversation_id: u64, seq: u64, helpful: bool) -> Result<Feedback, FeedbackError>;
    fn unhelpful(&self, site: &str, limit: usize) -> Result<Vec<Feedback>, StorageError>;
});

delegate!(SiteStore to sites {
    fn get(&self, key: &str) -> Result<Option<Site>, StorageError>;
    fn list(&self) -> Result<Vec<Site>, StorageError>;
    fn create(&self, new_site: NewSite) -> Result<Site, SiteError>;
    fn save(&self, site: Site) -> Result<Site, SiteError>;
    fn rotate_secret(&self, key: &str) -> Result<Site, SiteError>;
    fn delete(&self, key: &str) -> Result<Site, SiteError>;
});

delegate!(VisitorStore to visitors {
    fn open_session(&self, site: &Site, request: SessionRequest) -> Result<OpenedSession, VisitorError>;
    fn authenticate(&self, digest: &TokenDigest) -> Result<Option<Visitor>, StorageError>;
    fn get(&self, id: u64) -> Result<Option<Visitor>, StorageError>;
    fn update_attributes(&self, visitor_id: u64, changes: BTreeMap<String, serde_json::Value>)
        -> Result<Visitor, VisitorError>;
});

delegate!(AgentStore to agents {
    fn get(&self, id: u64) -> Result<Option<Agent>, StorageError>;
    fn get_by_email(&self, email: &str) -> Result<Option<Agent>, StorageError>;
    fn two_factor_required(&self) -> Result<bool, StorageError>;
    fn insert_session(&self, digest: &TokenDigest, session: AgentSession) -> Result<(), StorageError>;
    fn stored_session(&self, digest: &TokenDigest) -> Result<Option<AgentSession>, StorageError>;
    fn end_session(&self, digest: &TokenDigest) -> Result<(), StorageError>;
});

delegate!(AgentAdministration to agents {
    fn list(&self) -> Result<Vec<Agent>, StorageError>;
    fn insert(&self, draft: AgentDraft) -> Result<Agent, AgentError>;
    fn update(&self, id: u64, changes: AgentChanges) -> Result<Agent, AgentError>;
    fn replace_password(&self, agent_id: u64, password_hash: String, keep: Option<TokenDigest>)
        -> Result<Agent, AgentError>;
    fn begin_two_factor(&self, agent_id: u64, secret: String) -> Result<(), TwoFactorError>;
    fn confirm_two_factor(&self, agent_id: u64, session: TokenDigest, code: &str) -> Result<Vec<String>, AgentError>;
    fn remove_two_factor(&self, agent_id: u64, keep: Option<TokenDigest>, by_admin: bool)
        -> Result<Agent, AgentError>;
    fn require_two_factor(&self, admin_id: u64, on: bool) -> Result<(), AgentError>;
    fn complete_login(&self, ticket: &str, code: &str) -> Result<Agent, AgentError>;
    fn replace_avatar(&self, agent_id: u64, upload_id: Option<String>) -> Result<Agent, AvatarError>;
});

delegate!(PasswordResetStore to agents {
    fn insert_reset(&self, digest: TokenDigest, reset: PasswordReset, email: OutgoingEmail)
        -> Result<(), StorageError>;
    fn password_reset(&self, digest: TokenDigest) -> Result<Option<PasswordReset>, StorageError>;
    fn take_reset(&self, digest: TokenDigest) -> Result<Option<PasswordReset>, StorageError>;
});

delegate!(TeamStore to teams {
    fn get(&self, id: u64) -> Result<Option<Team>, StorageError>;
    fn list(&self) -> Result<Vec<Team>, StorageError>;
    fn create(&self, site: String, name: &str, members: Vec<u64>) -> Result<Team, TeamError>;
    fn update(&self, id: u64, name: &str, members: Vec<u64>) -> Result<Team, TeamError>;
    fn delete(&self, id: u64) -> Result<Team, TeamError>;
    fn set_agent_teams(&self, agent_id: u64, team_ids: Vec<u64>) -> Result<Vec<Team>, TeamError>;
});

delegate!(ApiTokenStore to api_tokens {
    fn create_token(&self, request: NewApiToken) -> Result<CreatedApiToken, ApiTokenError>;
    fn revoke_token(&self, id: u64) -> Result<ApiToken, ApiTokenError>;
    fn record_use(&self, id: u64) -> Result<(), StorageError>;
    fn authenticate_token(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StorageError>;
    fn token(&self, id: u64) -> Result<Option<ApiToken>, StorageError>;
    fn tokens(&self) -> Result<Vec<ApiToken>, StorageError>;
});

delegate!(AuditLog to audit {
    fn append(&self, entry: NewAuditEntry) -> Result<(), StorageError>;
    fn search(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, StorageError>;
});

delegate!(BlockStore to blocks {
    fn set_visitor_blocked(&self, visitor_id: u64, blocked: bool, ip: Option<String>) -> Result<Visitor, BlockError>;
    fn block_address(&self, site: String, ip: String) -> Result<(), StorageError>;
    fn unblock_address(&self, site: String, ip: String) -> Result<(), BlockError>;
    fn blocked_visitors(&self) -> Result<Vec<(Visitor, i64)>, StorageError>;
    fn blocked_addresses(&self) -> Result<Vec<(String, String, i64)>, StorageError>;
    fn is_ip_blocked(&self, site: &str, ip: &str) -> Result<bool, StorageError>;
});

delegate!(BotSettingsStore to bot_settings {
    fn settings(&self, site: &str) -> Result<BotSettings, StorageError>;
    fn change(&self, site: &str, requested: bot_settings::SettingsChange, allow_private_llm: bool)
        -> Result<BotSettings, ChangeError>;
});

delegate!(CannedReplyStore to canned_replies {
    fn canned_reply(&self, id: u64) -> Result<Option<CannedReply>, StorageError>;
    fn of_site(&self, site: &str) -> Result<Vec<CannedReply>, StorageError>;
    fn save(&self, id: Option<u64>, site: String, shortcut: &str, text: &str) -> Result<CannedReply, CannedReplyError>;
    fn delete(&self, id: u64, site: String) -> Result<(), CannedReplyError>;
});

delegate!(EmailSettingsStore to email_settings {
    fn load(&self, config: &EmailConfig) -> Result<SmtpSettings, StorageError>;
    fn save(&self, config: &EmailConfig, change: email_settings::SettingsChange) -> Result<SmtpSettings, EmailError>;
    fn recent_emails(&self, limit: usize) -> Result<Vec<crate::email::Email>, StorageError>;
    fn send_now(&self, config: &EmailConfig, email: crate::email::OutgoingEmail) -> Result<Result<(), String>, StorageError>;
});

delegate!(KnowledgeBaseStore to knowledge_base {
    fn entry(&self, id: u64) -> Result<Option<KbEntry>, StorageError>;
    fn of_site(&self, site: &str) -> Result<Vec<KbEntry>, StorageError>;
    fn create_many(&self, site: String, inputs: Vec<EntryInput>) -> Result<Vec<KbEntry>, KbError>;
    fn import(&self, site: String, rows: Vec<ImportRow>) -> Result<ImportOutcome, KbError>;
    fn update(&self, id: u64, input: EntryInput) -> Result<KbEntry, KbError>;
    fn delete(&self, id: u64) -> Result<KbEntry, KbError>;
});

delegate!(PushSubscriptionStore to push_subscriptions {
    fn keep_subscription(&self, subscription: Subscription) -> Result<Subscription, StorageError>;
    fn remove_subscription(&self, agent_id: u64, endpoint: String) -> Result<(), SubscriptionError>;
    fn subscriptions_of(&self, agent_id: u64) -> Result<Vec<Subscription>, StorageError>;
    fn any_subscription(&self) -> Result<bool, StorageError>;
    fn vapid_secret(&self, fresh: Vec<u8>) -> Result<Vec<u8>, StorageError>;
});

delegate!(UploadStore to uploads {
    fn store(&self, quota: &UploadQuota, target: UploadTarget, name: String, body: Bytes, max_bytes: usize)
        -> Result<Upload, UploadError>;
    fn upload(&self, id: &str) -> Result<Option<Upload>, StorageError>;
    fn bytes(&self, id: &str) -> Result<Option<UploadBytes>, StorageError>;
    fn readable(&self, id: &str, principal: &Principal) -> Result<Option<UploadContent>, StorageError>;
    fn bytes_of_site(&self, site: &str) -> Result<u64, StorageError>;
});

delegate!(WebhookStore to webhooks {
    fn create(&self, site: String, new_webhook: NewWebhook) -> Result<Webhook, WebhookError>;
    fn update(&self, id: String, change: NewWebhook) -> Result<Webhook, WebhookError>;
    fn delete(&self, id: String) -> Result<(), WebhookError>;
    fn webhook(&self, id: &str) -> Result<Option<Webhook>, StorageError>;
    fn of_site(&self, site: &str) -> Result<Vec<Webhook>, StorageError>;
    fn delivery(&self, id: u64) -> Result<Option<Delivery>, StorageError>;
    fn deliveries(&self, webhook_id: &str, limit: usize) -> Result<Vec<Delivery>, StorageError>;
    fn resend(&self, delivery_id: u64) -> Result<Delivery, WebhookError>;
});

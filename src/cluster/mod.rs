//! Cluster mode: several kefu nodes sharing PostgreSQL. So far the message path:
//! [`messages::PostgresMessages`] implements the chat's `MessageStore` on PostgreSQL, with the
//! connections, migrations and day partitions of [`postgres`], the `ConversationStore` of
//! conversations' changes ([`conversations`]) and the `LeadStore` ([`leads`]). Every committed
//! message and change goes to an [`events::Outlet`]: to the node's own relay, with the
//! connections that sent it, and to the other nodes over NATS; [`events::relay`] hands both to a
//! node's dispatcher for its own connections, each conversation's messages in order, a lost one
//! read from PostgreSQL ([`sequence_gaps`]). [`redb_copy`] copies an appliance's history into it
//! (`kefu migrate-to-postgres`). Work every node can do but only one must: the outbox of webhook
//! deliveries and emails claimed row by row ([`outbox`]) and sent by every node
//! ([`outbox_sender`]), with the emails chat causes ([`email_notifications`]); periodic jobs run
//! once per slot ([`jobs`]); a visitor's data gathered for its export ([`visitor_data`]); and
//! routing decided by one node per site under a lease ([`routing_lease`]), each
//! node named by a [`node::NodeName`]. Agents' presence is kept per node with an expiry its
//! heartbeat renews ([`presence`]). [`search`] searches the messages from any node and
//! [`uploads`] stores attachments' files for every node. [`sites`], [`visitors`], [`teams`],
//! [`canned_replies`], the [`audit`] log, [`blocking`], [`api_tokens`], [`agents`]' logins and
//! their [`agent_administration`], [`webhooks`], the [`email_settings`], [`offline_messages`],
//! [`push_subscriptions`], the [`knowledge_base`], the [`bot_settings`] and [`bot_feedback`] are on
//! PostgreSQL behind the same domain boundaries as on redb (`SiteStore`, `VisitorStore`,
//! `TeamStore`, `CannedReplyStore`, `AuditLog`, `BlockStore`, `ApiTokenStore`, `AgentStore`,
//! `AgentAdministration`, `PasswordResetStore`, `WebhookStore`, `EmailSettingsStore`,
//! `OfflineMessageStore`, `PushSubscriptionStore`, `KnowledgeBaseStore`, `BotSettingsStore`,
//! `BotFeedbackStore`, `UploadStore`, `BotConversations`: [`bot_conversations`]), on the record
//! tables [`redb_copy`] fills. [`backend`] holds them all for a server started with
//! `storage.backend = "postgres"`, and [`presence_sync`] keeps its agents in the cluster's
//! presence (docs/cluster.md, "Running a cluster").

pub mod agent_administration;
pub mod agents;
pub mod api_tokens;
pub mod audit;
pub mod backend;
pub mod blocking;
pub mod bot_conversations;
pub mod bot_feedback;
pub mod bot_settings;
pub mod canned_replies;
pub mod conversations;
pub mod email_notifications;
pub mod email_settings;
pub mod events;
pub mod history_export;
pub mod jobs;
pub mod knowledge_base;
pub mod leads;
pub mod messages;
pub mod node;
pub mod offline_messages;
pub mod outbox;
pub mod outbox_sender;
pub mod postgres;
pub mod presence;
pub mod presence_sync;
pub mod push_subscriptions;
pub mod redb_copy;
pub mod reports;
pub mod routing_lease;
pub mod search;
pub mod sequence_gaps;
pub mod sites;
pub mod teams;
pub mod uploads;
pub mod visitor_data;
pub mod visitors;
pub mod webhooks;

//! The bot: answers visitors from the site's knowledge base, falls back to a language model, and
//! hands the conversation to a human when asked (or when it has no answer).
//!
//! Placement in the pipeline: the dispatcher shows every committed event to [`BotInbox::observe`],
//! which picks out new bot-handled conversations and visitor messages and queues them without
//! waiting (a full queue drops the event with a log, never blocking delivery). One task reads
//! the queue: it sends greetings itself, and starts a reply task per visitor message, at most
//! [`MAX_CONCURRENT_REPLIES`] at a time. Replies are ordinary writer operations
//! ([`messages::append_with_source`] with a bot sender), so they are durable, deduplicated by
//! client id (`bot-CONVERSATION-SEQ`) and delivered like any other message.
//!
//! **Invariant:** a bot reply is stored only while the conversation is bot-active; the check runs
//! inside the writer operation, so an agent taking over (which clears `bot_active` in the same
//! writer) stops even an answer that was being generated.

pub mod conversation_writes;
pub mod embeddings;
pub mod feedback;
pub mod handoff_phrases;
pub mod knowledge_base;
pub mod lifecycle;
pub mod llm;
pub mod settings;

use std::sync::Arc;

use tracing::Instrument;

use bytes::Bytes;
use dashmap::DashMap;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bot::conversation_writes::BotConversations;
use crate::bot::embeddings::{EmbeddingSettings, SiteVectors, VectorStore};
use crate::bot::knowledge_base::{Candidate, KnowledgeBase, SiteKnowledge};
use crate::bot::llm::{ChatMessage, LlmSettings};
use crate::bot::settings::SiteSettings;
use crate::chat::conversations::{Conversation, ConversationError};
use crate::chat::delivery::{CommittedEvent, ConversationEvent, Hub, Outbound};
use crate::chat::message_store::MessageStore;
use crate::chat::messages::{MessageRecord, NewMessage, Target};
use crate::cluster::backend::Backend;
use crate::protocol::{BotSource, SenderKind, SenderView, ServerFrame};
use crate::storage::commit_log::LoggedTransaction;
use crate::storage::{StorageError, WriteContext, decode_json, tables};

/// Events waiting for the bot. A burst of visitor messages fits; past that the dispatcher drops
/// bot events (with a warning) rather than wait, and those visitors get no automatic answer.
const BOT_QUEUE_CAPACITY: usize = 1024;

/// Replies being worked on at once; each may hold an LLM request open for its whole timeout.
pub const MAX_CONCURRENT_REPLIES: usize = 64;

/// How many of the top entries the judge chooses from.
const JUDGE_OPTIONS: usize = 3;

/// Earlier messages of the conversation given to the language model.
const RECENT_MESSAGES: usize = 10;

/// Related questions offered with a notice, at most.
const RELATED_QUESTIONS: usize = 3;

/// Knowledge-base entries given to the language model as context.
const CONTEXT_ENTRIES: usize = 3;

/// The shipped threshold on the calibrated confidence, chosen for precision first on the
/// figures of tests/data/kb_eval with each business judged by a calibration fitted on the other
/// two (docs/bot.md, BENCHMARKS.md): 0.92 is the lowest threshold with precision 0.95 or more in
/// Chinese and in English there (0.96 each, recall 0.25, 3% of near-misses answered); 0.80 gave
/// precision 0.91 with recall 0.44. Messages below it still get related questions and, with a
/// language model, its judgement.
pub const DEFAULT_THRESHOLD: f32 = 0.92;

/// Most handoff phrases of a site, and most characters of one.
const MAX_HANDOFF_PHRASES: usize = 50;
const MAX_HANDOFF_PHRASE_CHARS: usize = 50;

/// Most characters of a greeting and of the system prompt.
const MAX_GREETING_CHARS: usize = 1000;
const MAX_SYSTEM_PROMPT_CHARS: usize = 8000;

/// How long a conversation only the bot took part in stays open without a message.
pub const DEFAULT_IDLE_CLOSE_MINUTES: u32 = 30;
/// The longest idle time a site may set: a week.
const MAX_IDLE_CLOSE_MINUTES: u32 = 7 * 24 * 60;

const DEFAULT_SYSTEM_PROMPT: &str = "You are a customer-service assistant. Answer briefly, in the language of the \
visitor's last message. Use the knowledge-base entries below when they apply; do not invent policies, prices or \
links. If you cannot answer, say so and suggest talking to a human agent.";

/// What the bot does with a visitor message (see [`Bot::decide`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// The bot is off for the site: the conversation goes to humans.
    Off,
    /// The visitor asked for a human.
    Handoff,
    /// The entry's answer is sent as is.
    Answer(Candidate),
    /// The best entry is in the middle band: the language model picks one of the top entries or
    /// none (then writes an answer itself).
    Judge,
    /// No entry comes close: the language model writes an answer with the top entries as context.
    Generate,
    /// No entry and no model: the visitor is offered a human (or the offline form), with the
    /// questions of the entries that came close as quick replies.
    Notice { related: Vec<String> },
}

/// The ranked entries of a message and the plan for it.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Most likely first; empty when the plan was settled before ranking.
    pub ranked: Vec<Candidate>,
    pub plan: Plan,
}

/// A site's bot settings, stored in `bot_settings_v1`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BotSettings {
    pub enabled: bool,
    /// The sender name of bot messages.
    pub name: String,
    /// The lowest confidence (the calibrated probability, 0 to 1, that the entry answers the
    /// message) at which an entry's answer is sent as is.
    pub threshold: f32,
    /// The first bot message of a new conversation; empty for none.
    pub greeting: String,
    pub system_prompt: String,
    /// The language model asked when no entry matches; `None` to hand over to a human instead.
    pub llm: Option<LlmSettings>,
    /// Minutes without a message after which a conversation only the bot took part in closes
    /// (see [`crate::bot_lifecycle`]); 0 never closes them.
    pub idle_close_minutes: u32,
    /// The site's own groups of equivalent terms, one group a line (`shipping = 运费 = 邮费`), on
    /// top of the built-in list.
    pub terms: String,
    /// What visitors type to ask for a human, on top of the built-in phrases.
    pub handoff_phrases: Vec<String>,
    /// The embeddings endpoint of the semantic tier; `None` to match lexically only.
    pub embeddings: Option<EmbeddingSettings>,
}

impl Default for BotSettings {
    fn default() -> Self {
        BotSettings {
            enabled: false,
            name: "Bot".into(),
            threshold: DEFAULT_THRESHOLD,
            greeting: String::new(),
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
            llm: None,
            idle_close_minutes: DEFAULT_IDLE_CLOSE_MINUTES,
            terms: String::new(),
            handoff_phrases: Vec::new(),
            embeddings: None,
        }
    }
}

impl BotSettings {
    /// Checks every field; the message names what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if !self.threshold.is_finite() || !(0.0..=1.0).contains(&self.threshold) {
            return Err("threshold: must be a number from 0 to 1".into());
        }
        let name_chars = self.name.trim().chars().count();
        if name_chars == 0 || name_chars > 50 {
            return Err("name: must be 1 to 50 characters".into());
        }
        if self.greeting.chars().count() > MAX_GREETING_CHARS {
            return Err(format!("greeting: at most {MAX_GREETING_CHARS} characters"));
        }
        if self.idle_close_minutes > MAX_IDLE_CLOSE_MINUTES {
            return Err(format!("idle_close_minutes: 0 (never) to {MAX_IDLE_CLOSE_MINUTES}"));
        }
        if self.system_prompt.chars().count() > MAX_SYSTEM_PROMPT_CHARS {
            return Err(format!("system_prompt: at most {MAX_SYSTEM_PROMPT_CHARS} characters"));
        }
        crate::bot::knowledge_base::normalize::validate_terms(&self.terms)?;
        if self.handoff_phrases.len() > MAX_HANDOFF_PHRASES {
            return Err(format!("handoff_phrases: at most {MAX_HANDOFF_PHRASES} phrases"));
        }
        let bad_phrase = |phrase: &String| {
            let n_chars = phrase.trim().chars().count();
            n_chars == 0 || n_chars > MAX_HANDOFF_PHRASE_CHARS || phrase.contains(['\n', '\r'])
        };
        if self.handoff_phrases.iter().any(bad_phrase) {
            return Err(format!("handoff_phrases: each one line of 1 to {MAX_HANDOFF_PHRASE_CHARS} characters"));
        }
        if let Some(embeddings) = &self.embeddings {
            embeddings.validate()?;
        }
        if let Some(llm) = &self.llm {
            let url = llm.base_url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 500 || url.contains(' ') {
                return Err("llm.base_url: must be an http:// or https:// URL".into());
            }
            if llm.model.trim().is_empty() || llm.model.chars().count() > 200 {
                return Err("llm.model: must be 1 to 200 characters".into());
            }
            if llm.api_key.chars().count() > 500 || llm.api_key.contains(['\n', '\r']) {
                return Err("llm.api_key: one line of at most 500 characters".into());
            }
            if !(100..=300_000).contains(&llm.timeout_ms) {
                return Err("llm.timeout_ms: must be 100 to 300000".into());
            }
            if !(100..=llm.timeout_ms).contains(&llm.first_token_timeout_ms) {
                return Err("llm.first_token_timeout_ms: must be 100 to llm.timeout_ms".into());
            }
        }
        Ok(())
    }
}

/// Shows all but the last four characters of a secret as `*` (all of a short one).
pub fn mask_secret(secret: &str) -> String {
    let n_chars = secret.chars().count();
    if n_chars <= 4 {
        return "*".repeat(n_chars);
    }
    let tail: String = secret.chars().skip(n_chars - 4).collect();
    format!("{}{tail}", "*".repeat(n_chars - 4))
}

/// Whether a new conversation on `site` starts with the bot (inside a writer operation).
pub fn answers_new_conversations(transaction: &LoggedTransaction<'_>, site: &str) -> Result<bool, StorageError> {
    let table = transaction.open_table(tables::BOT_SETTINGS)?;
    let settings = table.get(site)?.map(|value| decode_json::<BotSettings>(value.value())).transpose()?;
    Ok(settings.is_some_and(|settings| settings.enabled))
}

/// Removes a site's bot settings (inside the site's deletion).
pub fn erase_settings_of_site(context: &WriteContext<'_>, site: &str) -> Result<(), StorageError> {
    context.transaction.open_table(tables::BOT_SETTINGS)?.remove(site)?;
    Ok(())
}

pub(crate) fn read_settings(transaction: &redb::ReadTransaction, site: &str) -> Result<BotSettings, StorageError> {
    let table = transaction.open_table(tables::BOT_SETTINGS)?;
    Ok(table.get(site)?.map(|value| decode_json::<BotSettings>(value.value())).transpose()?.unwrap_or_default())
}

/// What the dispatcher tells the bot.
enum BotEvent {
    /// A conversation that starts with the bot was created.
    Started { conversation_id: u64, site: String },
    /// A visitor's message was committed.
    Message { conversation_id: u64, seq: u64, record: Arc<MessageRecord> },
}

/// The dispatcher's side of the bot's queue.
#[derive(Clone)]
pub struct BotInbox {
    queue: mpsc::Sender<BotEvent>,
}

impl BotInbox {
    /// Queues what the bot reacts to in a committed event, without waiting.
    pub fn observe(&self, event: &CommittedEvent) {
        let bot_event = match event {
            CommittedEvent::Message { conversation_id, seq, record, bot_active: true, .. }
                if record.sender_kind == SenderKind::Visitor && !record.internal =>
            {
                BotEvent::Message { conversation_id: *conversation_id, seq: *seq, record: record.clone() }
            }
            CommittedEvent::Conversation { event: ConversationEvent::Created, conversation }
                if conversation.bot_active =>
            {
                BotEvent::Started { conversation_id: conversation.id, site: conversation.site.clone() }
            }
            _ => return,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(bot_event) {
            tracing::warn!("bot queue full; event dropped");
        }
    }
}

/// The bot's shared state: settings, knowledge, and the HTTP client for language models.
#[derive(Clone)]
pub struct Bot {
    inner: Arc<BotInner>,
}

struct BotInner {
    store: Backend,
    hub: Arc<Hub>,
    /// Where the bot learns that agents are online on other nodes of a cluster.
    router: crate::routing::Router,
    knowledge: KnowledgeBase,
    /// Decoded settings per site; replaced when an admin saves them.
    settings: SiteSettings,
    http: reqwest::Client,
    /// The longest message kefu stores; a generated answer is cut there.
    max_text_chars: usize,
    /// Each site's entry vectors, once the refresher has loaded or made them.
    vectors: DashMap<String, Arc<SiteVectors>>,
    /// Sites whose vectors the refresher should bring up to date.
    refresh: mpsc::UnboundedSender<String>,
}

impl Bot {
    /// Starts the bot's task (owned by `tasks`, stopped by `shutdown`); returns the bot and the
    /// inbox the dispatcher feeds. `allow_private_llm` lets language-model endpoints be private
    /// addresses (`llm.allow_private_addresses`).
    pub fn start(
        store: Backend,
        hub: Arc<Hub>,
        router: crate::routing::Router,
        max_text_chars: usize,
        allow_private_llm: bool,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> (Bot, BotInbox) {
        let (queue, mut events) = mpsc::channel(BOT_QUEUE_CAPACITY);
        let (refresh, mut refresh_requests) = mpsc::unbounded_channel::<String>();
        let knowledge = KnowledgeBase::of(Arc::new(store.clone()));
        knowledge.notify_rebuilds(refresh.clone());
        let settings = SiteSettings::of(Arc::new(store.clone()));
        let bot = Bot {
            inner: Arc::new(BotInner {
                knowledge,
                store,
                hub,
                router,
                settings,
                http: llm::http_client(allow_private_llm),
                max_text_chars,
                vectors: DashMap::new(),
                refresh,
            }),
        };
        // The semantic tier's refresher: one site at a time, after each change of its entries
        // or embeddings settings, so a burst of edits costs one pass per site in the queue.
        let refresher = bot.clone();
        let refresher_shutdown = shutdown.clone();
        tasks.spawn(async move {
            loop {
                let site = tokio::select! {
                    _ = refresher_shutdown.cancelled() => break,
                    site = refresh_requests.recv() => match site {
                        Some(site) => site,
                        None => break,
                    },
                };
                tokio::select! {
                    _ = refresher_shutdown.cancelled() => break,
                    _ = refresher.refresh_vectors(&site) => {}
                }
            }
        });
        let worker = bot.clone();
        let reply_tasks = tasks.clone();
        tasks.spawn(async move {
            let replies = Arc::new(Semaphore::new(MAX_CONCURRENT_REPLIES));
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    event = events.recv() => match event {
                        Some(event) => event,
                        None => break,
                    },
                };
                match event {
                    BotEvent::Started { conversation_id, site } => worker.greet(conversation_id, &site).await,
                    BotEvent::Message { conversation_id, seq, record } => {
                        let permit = tokio::select! {
                            _ = shutdown.cancelled() => break,
                            permit = replies.clone().acquire_owned() => match permit {
                                Ok(permit) => permit,
                                Err(_) => break,
                            },
                        };
                        let bot = worker.clone();
                        let shutdown = shutdown.clone();
                        reply_tasks.spawn(async move {
                            tokio::select! {
                                _ = shutdown.cancelled() => {}
                                // The bot's part of the visitor message's trace; its answer
                                // continues that trace too.
                                _ = bot.reply(conversation_id, seq, &record.text, record.trace_id).instrument(
                                    tracing::debug_span!(parent: None, "bot", trace_id = record.trace_id, conversation_id)
                                ) => {}
                            }
                            drop(permit);
                        });
                    }
                }
            }
        });
        (bot, BotInbox { queue })
    }

    pub fn knowledge(&self) -> &KnowledgeBase {
        &self.inner.knowledge
    }

    /// The settings the bot uses, per site.
    pub fn site_settings(&self) -> &SiteSettings {
        &self.inner.settings
    }

    /// A site's settings, from memory or storage.
    pub async fn settings(&self, site: &str) -> Result<Arc<BotSettings>, StorageError> {
        let settings = self.inner.settings.get(site).await?;
        self.inner.knowledge.set_terms(site, &settings.terms);
        Ok(settings)
    }

    /// The category of the knowledge-base entry `text` matches at the site's bot threshold, for
    /// routing rules; `None` when nothing matches well enough or the knowledge base cannot load.
    pub async fn category_of(&self, site: &str, text: &str) -> Option<String> {
        let settings = self.settings(site).await.ok()?;
        let knowledge = self.inner.knowledge.site(site).await.ok()?;
        let best = knowledge.rank(text, 1).into_iter().next().filter(|best| best.confidence >= settings.threshold)?;
        knowledge.entry(best.entry_id).map(|entry| entry.category.clone()).filter(|category| !category.is_empty())
    }

    /// Uses a site's settings, just stored, from now on; the entry vectors are brought up to
    /// date when the embeddings endpoint changed.
    pub fn use_settings(&self, site: &str, settings: BotSettings) {
        self.inner.knowledge.set_terms(site, &settings.terms);
        let embeddings = settings.embeddings.clone();
        let kept = self.inner.settings.insert(site, settings);
        if kept.is_none_or(|old| old.embeddings != embeddings) {
            self.inner.vectors.remove(site);
            let _ = self.inner.refresh.send(site.to_owned());
        }
    }

    async fn greet(&self, conversation_id: u64, site: &str) {
        let settings = match self.settings(site).await {
            Ok(settings) => settings,
            Err(error) => return tracing::error!(conversation_id, %error, "reading bot settings failed"),
        };
        let greeting = settings.greeting.trim();
        if settings.enabled && !greeting.is_empty() {
            let client_id = format!("bot-{conversation_id}-greeting");
            let trace_id = crate::base::secrets::new_trace_id();
            self.post(trace_id, conversation_id, &settings, client_id, greeting.to_owned(), BotSource::Greeting)
                .instrument(crate::base::trace_export::message_span(trace_id))
                .await;
        }
    }

    /// Answers one visitor message: a handoff keyword, a knowledge-base answer, a generated
    /// answer, or the offer of a human, in that order.
    async fn reply(&self, conversation_id: u64, seq: u64, text: &str, trace_id: u64) {
        let conversation = match MessageStore::conversation(&self.inner.store, conversation_id).await {
            Ok(Some(conversation)) if conversation.bot_active && conversation.is_open() => conversation,
            Ok(_) => return,
            Err(error) => return tracing::error!(conversation_id, %error, "reading a conversation failed"),
        };
        let settings = match self.settings(&conversation.site).await {
            Ok(settings) => settings,
            Err(error) => return tracing::error!(conversation_id, %error, "reading bot settings failed"),
        };
        let knowledge = match self.inner.knowledge.site(&conversation.site).await {
            Ok(knowledge) => knowledge,
            Err(error) => return tracing::error!(conversation_id, %error, "loading the knowledge base failed"),
        };
        let decision = self.decide(&conversation.site, &knowledge, &settings, text).await;
        let client_id = format!("bot-{conversation_id}-{seq}");
        let mut chosen = None;
        match &decision.plan {
            // A bot switched off since the conversation began hands it to humans rather than
            // leave it unrouted.
            Plan::Off | Plan::Handoff => {
                if let Err(error) = handoff(self, conversation_id).await {
                    tracing::info!(conversation_id, %error, "handoff by keyword did not take effect");
                }
                return;
            }
            Plan::Answer(candidate) => chosen = Some(*candidate),
            Plan::Judge => {
                if let Some(llm_settings) = &settings.llm {
                    chosen = self.judge(conversation_id, llm_settings, &knowledge, text, &decision.ranked).await;
                }
            }
            Plan::Generate | Plan::Notice { .. } => {}
        }
        if let Some(entry) = chosen.and_then(|candidate| knowledge.entry(candidate.entry_id)) {
            tracing::debug!(conversation_id, entry_id = entry.id, "knowledge-base answer");
            let source = BotSource::Kb { entry_id: entry.id };
            self.post(trace_id, conversation_id, &settings, client_id, entry.answer.clone(), source).await;
            return;
        }
        if let Some(llm_settings) = &settings.llm {
            let context: Vec<&crate::bot::knowledge_base::KbEntry> =
                decision.ranked.iter().filter_map(|scored| knowledge.entry(scored.entry_id)).collect();
            let stream_id = format!("{conversation_id}-{seq}");
            match self.generate(&conversation, seq, &settings, llm_settings, &context, &stream_id).await {
                Ok(answer) if !answer.trim().is_empty() => {
                    let source = BotSource::Llm { model: llm_settings.model.clone(), stream_id };
                    self.post(trace_id, conversation_id, &settings, client_id, answer.trim().to_owned(), source).await;
                    return;
                }
                Ok(_) => tracing::info!(conversation_id, "the language model gave an empty answer; handing off"),
                Err(error) => tracing::info!(conversation_id, %error, "the language model gave no answer; handing off"),
            }
            // A model that fails, stalls or is cut off hands the visitor to a human by itself:
            // asking them to ask for one would be one more failure.
            if let Err(error) = handoff(self, conversation_id).await {
                tracing::info!(conversation_id, %error, "handoff after a model failure did not take effect");
            }
            return;
        }
        let related = match decision.plan {
            Plan::Notice { related } => related,
            _ => Vec::new(),
        };
        let chinese = knowledge_base::matcher::mostly_cjk(text);
        let (text, action) = match (self.agents_online(&conversation.site), chinese) {
            (true, false) => (
                "Sorry, I don't have an answer to that. Tap “Talk to a human” (or type “human”) and an agent will \
                 help you.",
                "offer_human",
            ),
            (true, true) => ("抱歉，我没有找到答案。点击“转人工”（或输入“人工”）即可联系人工客服。", "offer_human"),
            (false, false) => (
                "Sorry, I don't have an answer to that, and no agent is online right now. Please leave a message and \
                 we will get back to you.",
                "offline_form",
            ),
            (false, true) => ("抱歉，我没有找到答案，目前也没有客服在线。请留言，我们会尽快回复您。", "offline_form"),
        };
        // Close but not close enough: the questions of the nearest entries, as quick replies.
        let source = if related.is_empty() {
            BotSource::Notice { action: action.into() }
        } else {
            BotSource::Related { action: action.into(), questions: related }
        };
        self.post(trace_id, conversation_id, &settings, client_id, text.to_owned(), source).await;
    }

    /// What the bot does with a visitor message, decided before any language model is asked:
    /// a handoff phrase, an entry at the threshold, the model as judge in the middle band, the
    /// model as writer, or a notice with the related questions. The bot's replies and the admin
    /// pages' "try it" box both decide here, so what an admin sees is what a visitor gets.
    pub async fn decide(&self, site: &str, knowledge: &SiteKnowledge, settings: &BotSettings, text: &str) -> Decision {
        if !settings.enabled {
            return Decision { ranked: Vec::new(), plan: Plan::Off };
        }
        if handoff_phrases::is_handoff_request(text, &settings.handoff_phrases) {
            return Decision { ranked: Vec::new(), plan: Plan::Handoff };
        }
        let ranked = self.rank(site, knowledge, settings, text).await;
        let best = ranked.first().copied();
        let plan = match best {
            Some(best) if best.confidence >= settings.threshold => Plan::Answer(best),
            Some(best) if settings.llm.is_some() && best.confidence >= knowledge_base::MIDDLE_BAND_FLOOR => Plan::Judge,
            _ if settings.llm.is_some() => Plan::Generate,
            _ => Plan::Notice { related: knowledge.related_questions(&ranked, RELATED_QUESTIONS) },
        };
        Decision { ranked, plan }
    }

    /// The site's entries ranked for a message with their confidence: the lexical ranking, fused
    /// with the semantic similarity when the site has an embeddings endpoint and it answers.
    pub async fn rank(
        &self,
        site: &str,
        knowledge: &SiteKnowledge,
        settings: &BotSettings,
        text: &str,
    ) -> Vec<Candidate> {
        let Some(embeddings_settings) = &settings.embeddings else {
            return knowledge.rank(text, CONTEXT_ENTRIES);
        };
        let Some(vectors) = self.inner.vectors.get(site).map(|vectors| vectors.clone()) else {
            // Not loaded yet (a restart): the refresher loads or makes them; lexical until then.
            let _ = self.inner.refresh.send(site.to_owned());
            return knowledge.rank(text, CONTEXT_ENTRIES);
        };
        match embeddings::embed(&self.inner.http, embeddings_settings, &[text.to_owned()]).await {
            Ok(mut message) => {
                let message = message.pop().unwrap_or_default();
                knowledge.rank_fused(text, CONTEXT_ENTRIES, |entry_id| vectors.similarity(entry_id, &message))
            }
            Err(error) => {
                tracing::info!(site, %error, "the embeddings endpoint gave no vector; matching lexically");
                knowledge.rank(text, CONTEXT_ENTRIES)
            }
        }
    }

    /// Brings a site's entry vectors up to date: loads the stored ones, embeds the entries whose
    /// text or model changed, stores them (each batch one writer operation), and uses them.
    pub async fn refresh_vectors(&self, site: &str) {
        let settings = match self.settings(site).await {
            Ok(settings) => settings,
            Err(error) => return tracing::error!(site, %error, "reading bot settings failed"),
        };
        let Some(embeddings_settings) = settings.embeddings.clone() else {
            self.inner.vectors.remove(site);
            return;
        };
        let knowledge = match self.inner.knowledge.site(site).await {
            Ok(knowledge) => knowledge,
            Err(error) => return tracing::error!(site, %error, "loading the knowledge base failed"),
        };
        let store = &self.inner.store;
        let loaded = store.load_vectors(knowledge.entries.clone()).await;
        let mut vectors = match loaded {
            Ok(vectors) => vectors,
            Err(error) => return tracing::error!(site, %error, "reading knowledge-base vectors failed"),
        };
        let model = embeddings_settings.model.clone();
        let stale: Vec<(u64, u64, String)> = knowledge
            .entries
            .iter()
            .map(|entry| {
                let text = embeddings::entry_text(entry);
                (entry.id, embeddings::fingerprint(&model, &text), text)
            })
            .filter(|(id, fingerprint, _)| vectors.by_entry.get(id).is_none_or(|(stored, _)| stored != fingerprint))
            .collect();
        vectors.by_entry.retain(|id, _| !stale.iter().any(|(stale_id, _, _)| stale_id == id));
        for batch in stale.chunks(embeddings::BATCH) {
            let texts: Vec<String> = batch.iter().map(|(_, _, text)| text.clone()).collect();
            let made = match embeddings::embed(&self.inner.http, &embeddings_settings, &texts).await {
                Ok(made) => made,
                Err(error) => {
                    tracing::warn!(site, %error, "embedding knowledge-base entries failed; retried on the next change");
                    break;
                }
            };
            let rows: Vec<(u64, u64, Vec<f32>)> =
                batch.iter().zip(made).map(|((id, fingerprint, _), vector)| (*id, *fingerprint, vector)).collect();
            // An entry deleted meanwhile gets no vector.
            if let Err(error) = store.store_vectors(rows.clone()).await {
                return tracing::error!(site, %error, "storing knowledge-base vectors failed");
            }
            for (id, fingerprint, vector) in rows {
                vectors.by_entry.insert(id, (fingerprint, vector));
            }
        }
        tracing::debug!(site, n_vectors = vectors.by_entry.len(), "knowledge-base vectors up to date");
        self.inner.vectors.insert(site.to_owned(), Arc::new(vectors));
    }

    /// Asks the model which of the top entries answers the message; `None` for none of them, and
    /// on any failure (the lexical decision stands: no entry).
    async fn judge(
        &self,
        conversation_id: u64,
        llm_settings: &LlmSettings,
        knowledge: &SiteKnowledge,
        text: &str,
        ranked: &[Candidate],
    ) -> Option<Candidate> {
        let options: Vec<(Candidate, &crate::bot::knowledge_base::KbEntry)> = ranked
            .iter()
            .take(JUDGE_OPTIONS)
            .filter_map(|candidate| knowledge.entry(candidate.entry_id).map(|entry| (*candidate, entry)))
            .collect();
        let texts: Vec<(&str, &str)> = options
            .iter()
            .map(|(_, entry)| (entry.questions.first().map(String::as_str).unwrap_or_default(), entry.answer.as_str()))
            .collect();
        match llm::choose(&self.inner.http, llm_settings, text, &texts).await {
            Ok(choice) => {
                tracing::debug!(conversation_id, ?choice, "the language model judged the top entries");
                choice.and_then(|index| options.get(index)).map(|(candidate, _)| *candidate)
            }
            Err(error) => {
                tracing::info!(conversation_id, %error, "the language model could not judge; no entry is taken");
                None
            }
        }
    }

    /// Asks the language model, streaming each piece to the conversation's subscribers.
    async fn generate(
        &self,
        conversation: &Conversation,
        seq: u64,
        settings: &BotSettings,
        llm_settings: &LlmSettings,
        context: &[&crate::bot::knowledge_base::KbEntry],
        stream_id: &str,
    ) -> Result<String, llm::LlmError> {
        let conversation_id = conversation.id;
        let recent =
            self.inner.store.page_before(conversation_id, Some(seq + 1), RECENT_MESSAGES).await.unwrap_or_default();
        let prompt = build_prompt(settings, context, &recent);
        let hub = &self.inner.hub;
        let outcome = llm::complete(&self.inner.http, llm_settings, &prompt, self.inner.max_text_chars, |delta| {
            let frame = ServerFrame::BotStream { conversation_id, stream_id, delta, done: false, cut: false }.encode();
            push_to_subscribers(hub, conversation_id, &frame);
        })
        .await;
        // A failed stream ends marked as cut, so a client never shows its pieces as an answer.
        let cut = outcome.is_err();
        let frame = ServerFrame::BotStream { conversation_id, stream_id, delta: "", done: true, cut }.encode();
        push_to_subscribers(hub, conversation_id, &frame);
        outcome
    }

    /// Whether an agent of `site` is connected here, or online on another node of a cluster.
    fn agents_online(&self, site: &str) -> bool {
        !self.inner.hub.site_agent_connections(site).is_empty() || self.inner.router.site_online_elsewhere(site)
    }

    /// Stores a bot message, if the conversation is still the bot's; `trace_id` is the trace it
    /// belongs to (the visitor message it answers, or its own).
    async fn post(
        &self,
        trace_id: u64,
        conversation_id: u64,
        settings: &BotSettings,
        client_id: String,
        text: String,
        source: BotSource,
    ) {
        let new_message =
            NewMessage { trace_id, ..bot_message(conversation_id, bot_sender(settings), client_id, text) };
        match self.inner.store.append_bot(new_message, source).await {
            Ok(Some(_)) => {}
            Ok(None) => tracing::debug!(conversation_id, "the bot no longer answers this conversation"),
            Err(error) => tracing::error!(conversation_id, %error, "storing a bot message failed"),
        }
    }
}

/// The bot as the sender of a site's messages.
pub fn bot_sender(settings: &BotSettings) -> SenderView {
    SenderView { kind: SenderKind::Bot, id: 0, name: settings.name.clone() }
}

/// A bot message to `conversation_id`, not yet stored.
pub fn bot_message(conversation_id: u64, sender: SenderView, client_id: String, text: String) -> NewMessage {
    NewMessage {
        trace_id: crate::base::secrets::new_trace_id(),
        ..NewMessage::text(Target::Conversation(conversation_id), sender, client_id, text)
    }
}

fn push_to_subscribers(hub: &Hub, conversation_id: u64, frame: &Bytes) {
    for connection in hub.subscribers(conversation_id) {
        connection.push(Outbound::Frame(frame.clone()));
    }
}

/// The prompt: instructions with the best entries, then the recent conversation.
fn build_prompt(
    settings: &BotSettings,
    context: &[&crate::bot::knowledge_base::KbEntry],
    recent: &[(u64, MessageRecord)],
) -> Vec<ChatMessage> {
    let mut system = settings.system_prompt.trim().to_owned();
    if !context.is_empty() {
        system.push_str("\n\nKnowledge-base entries:");
        for (number, entry) in context.iter().enumerate() {
            let question = entry.questions.first().map(String::as_str).unwrap_or_default();
            system.push_str(&format!("\n{}. Q: {question}\n   A: {}", number + 1, entry.answer));
        }
    }
    let mut prompt = vec![ChatMessage { role: "system", content: system }];
    for (_, record) in recent.iter().filter(|(_, record)| !record.internal) {
        let role = match record.sender_kind {
            SenderKind::Visitor => "user",
            SenderKind::Agent | SenderKind::Bot => "assistant",
            SenderKind::System => continue,
        };
        if !record.text.is_empty() {
            prompt.push(ChatMessage { role, content: record.text.clone() });
        }
    }
    prompt
}

/// Whether a handoff changed anything.
#[derive(Debug, PartialEq, Eq)]
pub enum HandoffOutcome {
    /// The bot stopped and the conversation joined the queue.
    HandedOff,
    /// Humans already had the conversation; nothing changed.
    AlreadyHuman,
}

/// Stops the bot in a conversation and queues it for an agent, with a notice to the visitor,
/// in one writer operation. The whole transcript stays in the conversation.
pub async fn handoff(bot: &Bot, conversation_id: u64) -> Result<HandoffOutcome, ConversationError> {
    let site =
        MessageStore::conversation(&bot.inner.store, conversation_id).await?.ok_or(ConversationError::NotFound)?.site;
    let settings = bot.settings(&site).await?;
    let (text, action) = if bot.agents_online(&site) {
        ("Connecting you to an agent, please wait a moment. / 正在为您转接人工客服，请稍候。", "handed_off")
    } else {
        (
            "No agent is online right now. Please leave a message and we will get back to you. / \
             当前没有客服在线，请留言，我们会尽快回复您。",
            "offline_form",
        )
    };
    let sender = SenderView { kind: SenderKind::Bot, id: 0, name: settings.name.clone() };
    let notice = bot_message(conversation_id, sender, format!("bot-{conversation_id}-handoff"), text.to_owned());
    bot.inner.store.hand_off(conversation_id, notice, action.to_owned()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_but_the_last_four() {
        assert_eq!(mask_secret("sk-abcdef1234"), "*********1234");
        assert_eq!(mask_secret("abc"), "***");
        assert_eq!(mask_secret(""), "");
    }
}

//! The knowledge base, the bot's settings and visitors' feedback on the bot's answers behind
//! their storage boundaries (`KnowledgeBaseStore`, `BotSettingsStore`, `BotFeedbackStore`) on
//! both backends, the appliance's redb and the cluster's PostgreSQL 15 (support/postgres.rs):
//! the same calls give the same answers for Chinese and English entries, and bad input (unknown
//! sites and ids, invalid entries and settings, another site's entry in an import, an import past
//! the site's limit) is refused with nothing changed. On PostgreSQL, two nodes adding entries at
//! once never pass the site's limit together, and with NATS an entry changed through one node
//! reaches another node's match index, and a change of the bot's settings another node's copy,
//! within a second.
//!
//! The PostgreSQL tests print one line and pass when PostgreSQL is not installed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kefu::bot::feedback::{BotFeedbackStore, FeedbackError};
use kefu::bot::knowledge_base::formats::ImportRow;
use kefu::bot::knowledge_base::store::KnowledgeBaseStore;
use kefu::bot::knowledge_base::{EntryInput, ImportOutcome, KbError, KnowledgeBase, MAX_ENTRIES_PER_SITE};
use kefu::bot::settings::{BotSettingsStore, ChangeError, SettingsChange, SiteSettings};
use kefu::bot::{BotSettings, DEFAULT_THRESHOLD};
use kefu::chat::message_store::MessageStore;
use kefu::chat::messages::{self, NewMessage, Target};
use kefu::cluster::bot_settings::PostgresBotSettings;
use kefu::cluster::events;
use kefu::cluster::knowledge_base::PostgresKnowledgeBase;
use kefu::cluster::messages::{PostgresMessages, PostgresOptions};
use kefu::cluster::sites::PostgresSites;
use kefu::protocol::{BotSource, SenderKind, SenderView};
use kefu::sites::NewSite;
use kefu::sites::store::SiteStore;

use crate::support::TestServer;
use crate::support::nats::NatsServer;
use crate::support::postgres::{connect, database};

fn input(questions: &[&str], answer: &str, lang: &str) -> EntryInput {
    EntryInput {
        questions: questions.iter().map(|question| question.to_string()).collect(),
        answer: answer.into(),
        category: "物流".into(),
        lang: lang.into(),
    }
}

async fn new_site(sites: &impl SiteStore, name: &str) -> String {
    let new_site = NewSite { name: name.into(), allowed_origins: vec!["*".into()], ..NewSite::default() };
    sites.create(new_site).await.expect("a site").key
}

async fn behaves_as_a_knowledge_base_store(store: &impl KnowledgeBaseStore, sites: &impl SiteStore) {
    let (site, other) = (new_site(sites, "小店").await, new_site(sites, "Other").await);
    let shipping = input(&[" 运费多少？ ", "邮费怎么算"], " 满99元包邮。 ", "zh-CN");
    let returns = input(&["How do I return an item?"], "Returns are free within 30 days.", "en");

    // Unknown sites and invalid entries are refused, storing nothing.
    let unknown = store.create_many("no-such-site".into(), vec![shipping.clone()]).await;
    assert!(matches!(unknown, Err(KbError::NoSuchSite)), "{unknown:?}");
    let empty = store.create_many(site.clone(), vec![shipping.clone(), input(&["  "], "x", "")]).await;
    assert!(matches!(empty, Err(KbError::Invalid(ref error)) if error.contains("questions")), "{empty:?}");
    let nul = store.create_many(site.clone(), vec![input(&["a\0b"], "x", "")]).await;
    assert!(matches!(nul, Err(KbError::Invalid(ref error)) if error.contains("U+0000")), "{nul:?}");
    let bad_lang = store.create_many(site.clone(), vec![input(&["q"], "x", "chinese!")]).await;
    assert!(matches!(bad_lang, Err(KbError::Invalid(ref error)) if error.contains("lang")), "{bad_lang:?}");
    assert!(store.of_site(&site).await.unwrap().is_empty());

    let created = store.create_many(site.clone(), vec![shipping, returns]).await.expect("create");
    let (zh, en) = (created[0].clone(), created[1].clone());
    assert_ne!(zh.id, en.id);
    assert_eq!(
        (zh.questions.as_slice(), zh.answer.as_str()),
        (&["运费多少？".to_owned(), "邮费怎么算".to_owned()][..], "满99元包邮。")
    );
    assert_eq!((zh.site.as_str(), zh.lang.as_str(), en.lang.as_str()), (site.as_str(), "zh-CN", "en"));
    assert!(zh.created_at > 0 && zh.created_at == zh.updated_at);
    assert_eq!(store.of_site(&site).await.unwrap(), [zh.clone(), en.clone()], "oldest first");
    assert_eq!(store.entry(zh.id).await.unwrap(), Some(zh.clone()));
    assert_eq!(store.entry(u64::MAX).await.unwrap(), None);
    assert!(store.of_site(&other).await.unwrap().is_empty());
    let elsewhere = store.create_many(other.clone(), vec![input(&["Opening hours?"], "9 to 5.", "en")]).await.unwrap();

    // An update replaces the editable fields and keeps the creation time.
    assert!(matches!(store.update(u64::MAX, input(&["q"], "a", "")).await, Err(KbError::NotFound)));
    assert!(matches!(store.update(zh.id, input(&["q"], " ", "")).await, Err(KbError::Invalid(_))));
    assert_eq!(store.entry(zh.id).await.unwrap(), Some(zh.clone()), "a refused update changes nothing");
    let updated = store.update(zh.id, input(&["运费多少钱？"], "全场包邮。", "zh-CN")).await.expect("update");
    assert_eq!((updated.answer.as_str(), updated.created_at), ("全场包邮。", zh.created_at));
    assert!(updated.updated_at >= zh.updated_at);
    assert_eq!(store.entry(zh.id).await.unwrap(), Some(updated.clone()));

    // An import is stored whole or not at all.
    let before = store.of_site(&site).await.unwrap();
    let row = |id: Option<u64>, entry: EntryInput| ImportRow { id, input: entry };
    let foreign = vec![
        row(None, input(&["发票怎么开？"], "在订单页申请。", "zh-CN")),
        row(Some(elsewhere[0].id), input(&["Hours?"], "Always.", "en")),
    ];
    let refused = store.import(site.clone(), foreign).await;
    assert!(
        matches!(refused, Err(KbError::Invalid(ref error)) if error.starts_with(&format!("entry 2: id {}", elsewhere[0].id))),
        "{refused:?}"
    );
    let twice =
        vec![row(Some(en.id), input(&["Return?"], "Yes.", "en")), row(Some(en.id), input(&["Refund?"], "No.", "en"))];
    let repeated = store.import(site.clone(), twice).await;
    assert!(
        matches!(repeated, Err(KbError::Invalid(ref error)) if error.starts_with(&format!("entry 2: id {} is already the id of entry 1", en.id))),
        "{repeated:?}"
    );
    let unknown_id = store.import(site.clone(), vec![row(Some(u64::MAX), input(&["q"], "a", ""))]).await;
    assert!(matches!(unknown_id, Err(KbError::Invalid(_))), "{unknown_id:?}");
    let too_many: Vec<ImportRow> =
        (0..MAX_ENTRIES_PER_SITE).map(|n| row(None, input(&[&format!("问题 {n}")], "答案", "zh-CN"))).collect();
    let oversized = store.import(site.clone(), too_many).await;
    assert!(
        matches!(oversized, Err(KbError::Invalid(ref error)) if error.contains(&MAX_ENTRIES_PER_SITE.to_string())),
        "{oversized:?}"
    );
    let no_site = store.import("no-such-site".into(), vec![row(None, input(&["q"], "a", ""))]).await;
    assert!(matches!(no_site, Err(KbError::NoSuchSite)), "{no_site:?}");
    assert_eq!(store.of_site(&site).await.unwrap(), before, "a refused import changes nothing");
    assert_eq!(store.of_site(&other).await.unwrap(), elsewhere);

    let imported = store
        .import(
            site.clone(),
            vec![
                row(Some(en.id), input(&["How can I return an item?"], "Free within 30 days.", "en")),
                row(None, input(&["发票怎么开？"], "在订单页申请。", "zh-CN")),
            ],
        )
        .await
        .expect("import");
    assert_eq!(imported, ImportOutcome { created: 1, updated: 1 });
    let listed = store.of_site(&site).await.unwrap();
    let answers: Vec<&str> = listed.iter().map(|entry| entry.answer.as_str()).collect();
    assert_eq!(answers, ["全场包邮。", "Free within 30 days.", "在订单页申请。"]);
    assert_eq!((listed[1].id, listed[1].created_at), (en.id, en.created_at));

    // A deletion returns the entry; a second finds none.
    assert!(matches!(store.delete(u64::MAX).await, Err(KbError::NotFound)));
    assert_eq!(store.delete(en.id).await.expect("delete").id, en.id);
    assert!(matches!(store.delete(en.id).await, Err(KbError::NotFound)));
    assert_eq!(store.entry(en.id).await.unwrap(), None);
    assert_eq!(store.of_site(&site).await.unwrap().len(), 2);
    assert_eq!(store.of_site(&other).await.unwrap(), elsewhere);
}

fn change(json: serde_json::Value) -> SettingsChange {
    serde_json::from_value(json).expect("a settings change")
}

async fn behaves_as_a_bot_settings_store(store: &impl BotSettingsStore, sites: &impl SiteStore) {
    let site = new_site(sites, "机器人").await;
    assert_eq!(store.settings(&site).await.unwrap(), BotSettings::default(), "the defaults until a change");
    let unknown = store.change("no-such-site", change(serde_json::json!({"enabled": true})), false).await;
    assert!(matches!(unknown, Err(ChangeError::NoSuchSite)), "{unknown:?}");
    let invalid = store.change(&site, change(serde_json::json!({"enabled": true, "threshold": 1.5})), false).await;
    assert!(matches!(invalid, Err(ChangeError::Invalid(ref error)) if error.contains("threshold")), "{invalid:?}");
    let private = serde_json::json!({"llm": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}});
    assert!(matches!(store.change(&site, change(private), false).await, Err(ChangeError::Invalid(_))));
    assert_eq!(store.settings(&site).await.unwrap(), BotSettings::default(), "a refused change stores nothing");

    let first = serde_json::json!({
        "enabled": true, "greeting": " 您好，有什么可以帮您？ ", "threshold": 0.8,
        "llm": {"base_url": "https://llm.example/v1", "model": "qwen", "api_key": "sk-secret1234"}
    });
    let stored = store.change(&site, change(first), false).await.expect("change");
    assert_eq!((stored.enabled, stored.greeting.as_str(), stored.threshold), (true, "您好，有什么可以帮您？", 0.8));
    assert_eq!(store.settings(&site).await.unwrap(), stored);
    // A change keeps what it leaves out, and a masked key keeps the stored one.
    let second = serde_json::json!({"name": "Little helper", "llm": {"model": "qwen-max", "api_key": "*********1234"}});
    let changed = store.change(&site, change(second), false).await.expect("another change");
    let llm = changed.llm.clone().expect("the model stays");
    assert_eq!((changed.name.as_str(), changed.enabled, changed.threshold), ("Little helper", true, 0.8));
    assert_eq!((llm.model.as_str(), llm.api_key.as_str()), ("qwen-max", "sk-secret1234"));
    assert_eq!(store.settings(&site).await.unwrap(), changed);
    let off =
        store.change(&site, change(serde_json::json!({"llm": null, "threshold": DEFAULT_THRESHOLD})), false).await;
    assert_eq!(off.expect("remove the model").llm, None);
}

/// `store` holds a conversation of `site` with a visitor's question (seq 1) and the bot's
/// knowledge-base answer `answer_seq`.
async fn behaves_as_a_feedback_store(store: &impl BotFeedbackStore, site: &str, conversation_id: u64, answer_seq: u64) {
    let unknown = store.record(u64::MAX / 2, 1, false).await;
    assert!(matches!(unknown, Err(FeedbackError::NoSuchConversation)), "{unknown:?}");
    assert!(matches!(store.record(conversation_id, 99, false).await, Err(FeedbackError::NoSuchMessage)));
    assert!(matches!(store.record(conversation_id, 1, false).await, Err(FeedbackError::NotAnAnswer)));
    assert!(store.unhelpful(site, 10).await.unwrap().is_empty(), "refused feedback stores nothing");

    let recorded = store.record(conversation_id, answer_seq, false).await.expect("thumbs down");
    assert_eq!((recorded.source.as_str(), recorded.entry_id), ("kb", Some(7)));
    let unhelpful = store.unhelpful(site, 10).await.unwrap();
    assert_eq!(unhelpful.len(), 1);
    assert_eq!((unhelpful[0].question.as_str(), unhelpful[0].answer.as_str()), ("运费多少？", "满99元包邮。"));
    assert!(store.unhelpful("another-site", 10).await.unwrap().is_empty());
    store.record(conversation_id, answer_seq, true).await.expect("thumbs up after all");
    assert!(store.unhelpful(site, 10).await.unwrap().is_empty(), "the last verdict counts");
}

/// A visitor's question on `site`, which starts a conversation, and a second message of theirs
/// (`then`, if any); returns the conversation and the second message's seq.
async fn visitor_writes(store: &impl MessageStore, site: &str, then: Option<&str>) -> (u64, u64) {
    let visitor_id = 60_000 + u64::from(rand::random::<u16>());
    let sender = SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "访客".into() };
    let inbox = Target::VisitorInbox { site: site.to_owned(), visitor_id };
    let message = NewMessage::text(inbox.clone(), sender.clone(), format!("v-{visitor_id}"), "运费多少？".into());
    let conversation_id = store.append(message).await.expect("the visitor asks").conversation_id;
    let Some(text) = then else { return (conversation_id, 0) };
    let message = NewMessage::text(inbox, sender, format!("v-{visitor_id}-2"), text.into());
    (conversation_id, store.append(message).await.expect("the visitor writes again").seq)
}

fn bot_answer(conversation_id: u64) -> NewMessage {
    let sender = SenderView { kind: SenderKind::Bot, id: 0, name: "Bot".into() };
    let target = Target::Conversation(conversation_id);
    NewMessage::text(target, sender, format!("bot-{conversation_id}-1"), "满99元包邮。".into())
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    behaves_as_a_knowledge_base_store(&store, &store).await;
    behaves_as_a_bot_settings_store(&store, &store).await;
    let site = new_site(&store, "反馈").await;
    let (conversation_id, _) = visitor_writes(&store, &site, None).await;
    let answer = store
        .write(move |context| {
            messages::append_with_source(context, bot_answer(conversation_id), Some(BotSource::Kb { entry_id: 7 }))
        })
        .await
        .expect("the bot answers");
    behaves_as_a_feedback_store(&store, &site, conversation_id, answer.seq).await;

    let Some(url) = database("knowledge_base_alike").await else { return };
    let sites = PostgresSites::open(&url).await.unwrap();
    behaves_as_a_knowledge_base_store(&PostgresKnowledgeBase::open(&url).await.unwrap(), &sites).await;
    behaves_as_a_bot_settings_store(&PostgresBotSettings::open(&url).await.unwrap(), &sites).await;
    let messages = PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap();
    let site = new_site(&sites, "反馈").await;
    // Bots do not append on PostgreSQL yet: the answer is a stored message made the bot's.
    let (conversation_id, answer_seq) = visitor_writes(&messages, &site, Some("满99元包邮。")).await;
    let client = connect(&url).await;
    let source = serde_json::to_string(&BotSource::Kb { entry_id: 7 }).unwrap();
    let made_the_bots = client
        .execute(
            "UPDATE messages SET sender_kind = 3, sender_id = 0, bot_source = $3::text::jsonb
             WHERE conversation_id = $1 AND seq = $2",
            &[&(conversation_id as i64), &(answer_seq as i64), &source],
        )
        .await
        .unwrap();
    assert_eq!(made_the_bots, 1);
    behaves_as_a_feedback_store(&messages, &site, conversation_id, answer_seq).await;
}

/// Waits up to a second for `read` to give `expected`.
async fn within_a_second<T: PartialEq + std::fmt::Debug>(expected: T, read: impl AsyncFn() -> T) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let found = read().await;
        if found == expected {
            return;
        }
        assert!(Instant::now() < deadline, "the other node still has {found:?}, not {expected:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_entry_changed_through_one_node_reaches_another_nodes_index_within_a_second() {
    let Some(url) = database("knowledge_base_index").await else { return };
    let Some(nats) = NatsServer::start("knowledge_base_index") else { return };
    let site = new_site(&PostgresSites::open(&url).await.unwrap(), "两个节点").await;
    let node_a =
        PostgresKnowledgeBase::open(&url).await.unwrap().with_events(events::connect(&nats.url()).await.unwrap());
    let node_b = KnowledgeBase::of(Arc::new(PostgresKnowledgeBase::open(&url).await.unwrap()));
    let following = events::follow_knowledge_base_changes(&events::connect(&nats.url()).await.unwrap(), node_b.clone())
        .await
        .expect("follow");
    let answer_on_b = async |text: &str| {
        let knowledge = node_b.site(&site).await.unwrap();
        knowledge.top(text, 1).first().map(|found| found.entry.answer.clone())
    };
    assert_eq!(answer_on_b("运费多少").await, None, "node b has built its index of no entries");

    let created =
        node_a.create_many(site.clone(), vec![input(&["运费多少？"], "满99元包邮。", "zh-CN")]).await.unwrap();
    within_a_second(Some("满99元包邮。".to_owned()), async || answer_on_b("运费多少").await).await;
    node_a.update(created[0].id, input(&["运费多少？"], "全场包邮。", "zh-CN")).await.unwrap();
    within_a_second(Some("全场包邮。".to_owned()), async || answer_on_b("运费多少").await).await;
    let rows = vec![ImportRow { id: None, input: input(&["How do I return an item?"], "Within 30 days.", "en") }];
    node_a.import(site.clone(), rows).await.unwrap();
    within_a_second(Some("Within 30 days.".to_owned()), async || answer_on_b("return an item").await).await;
    node_a.delete(created[0].id).await.unwrap();
    within_a_second(None, async || answer_on_b("运费多少").await).await;
    following.abort();
}

#[tokio::test]
async fn two_nodes_adding_at_once_never_pass_the_sites_limit() {
    let Some(url) = database("knowledge_base_race").await else { return };
    let site = new_site(&PostgresSites::open(&url).await.unwrap(), "快满了").await;
    let (a, b) = (PostgresKnowledgeBase::open(&url).await.unwrap(), PostgresKnowledgeBase::open(&url).await.unwrap());
    let filler: Vec<EntryInput> =
        (0..MAX_ENTRIES_PER_SITE - 10).map(|n| input(&[&format!("问题 {n}")], "答案", "zh-CN")).collect();
    a.create_many(site.clone(), filler).await.expect("the site filled to ten short of its limit");
    // Node b's connection is opened first, so both nodes' transactions run at once.
    assert!(matches!(
        b.create_many("no-such-site".into(), vec![input(&["q"], "a", "")]).await,
        Err(KbError::NoSuchSite)
    ));
    let six = |node: &str| (0..6).map(|n| input(&[&format!("{node} {n}")], "answer", "en")).collect::<Vec<_>>();
    let (first, second) = tokio::join!(a.create_many(site.clone(), six("a")), b.create_many(site.clone(), six("b")));
    let (first, second) = (first.map(|added| added.len()), second.map(|added| added.len()));
    assert_eq!(usize::from(first.is_ok()) + usize::from(second.is_ok()), 1, "{first:?} {second:?}");
    assert_eq!(a.of_site(&site).await.unwrap().len(), MAX_ENTRIES_PER_SITE - 4);
}

#[tokio::test]
async fn bot_settings_changed_through_one_node_reach_another_nodes_copy_within_a_second() {
    let Some(url) = database("bot_settings_copy").await else { return };
    let Some(nats) = NatsServer::start("bot_settings_copy") else { return };
    let site = new_site(&PostgresSites::open(&url).await.unwrap(), "两个节点").await;
    let node_a =
        PostgresBotSettings::open(&url).await.unwrap().with_events(events::connect(&nats.url()).await.unwrap());
    let node_b = SiteSettings::of(Arc::new(PostgresBotSettings::open(&url).await.unwrap()));
    let following = events::follow_bot_settings_changes(&events::connect(&nats.url()).await.unwrap(), node_b.clone())
        .await
        .expect("follow");
    let on_b = async || {
        let settings = node_b.get(&site).await.unwrap();
        (settings.enabled, settings.greeting.clone())
    };
    assert_eq!(on_b().await, (false, String::new()), "node b keeps the defaults");

    node_a.change(&site, change(serde_json::json!({"enabled": true, "greeting": "您好！"})), false).await.unwrap();
    within_a_second((true, "您好！".to_owned()), on_b).await;
    node_a.change(&site, change(serde_json::json!({"enabled": false})), false).await.unwrap();
    within_a_second((false, "您好！".to_owned()), on_b).await;
    following.abort();
}

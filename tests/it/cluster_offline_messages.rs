//! Offline messages behind their storage boundary (`OfflineMessageStore`) on both backends, the
//! appliance's redb and the cluster's PostgreSQL 15 (support/postgres.rs): what a visitor leaves
//! goes into their conversation (a new one in the queue, without the bot, then the same open
//! one), becomes a lead, and puts the address, name and language on the visitor; the agents'
//! list is newest first, per site, within its limit; an invalid message is refused with nothing
//! changed. On PostgreSQL the offline message is announced on NATS with its conversation.
//!
//! The PostgreSQL tests print one line and pass when PostgreSQL is not installed.

use futures_util::StreamExt;

use kefu::chat::conversations::ConversationStatus;
use kefu::chat::lead_store::LeadStore;
use kefu::chat::leads::{LeadFilter, LeadSource};
use kefu::chat::message_store::MessageStore;
use kefu::chat::offline_messages::{NewOfflineMessage, OfflineMessageError, OfflineMessageStore};
use kefu::cluster::events::{self, ConversationChange, NodeEvent};
use kefu::cluster::messages::{PostgresMessages, PostgresOptions};
use kefu::cluster::sites::PostgresSites;
use kefu::cluster::visitors::PostgresVisitors;
use kefu::people::visitor_store::VisitorStore;
use kefu::people::visitors::SessionRequest;
use kefu::protocol::SenderKind;
use kefu::sites::NewSite;
use kefu::sites::store::SiteStore;

use crate::support::TestServer;
use crate::support::nats::NatsServer;
use crate::support::postgres::database;

fn left(email: &str, name: &str, text: &str, lang: &str) -> NewOfflineMessage {
    NewOfflineMessage { name: name.into(), email: email.into(), text: text.into(), lang: lang.into() }
}

/// A site and a new visitor of it.
async fn site_and_visitor(sites: &impl SiteStore, visitors: &impl VisitorStore) -> (String, u64) {
    let site = sites.create(NewSite { name: "小店 Shop".into(), ..NewSite::default() }).await.unwrap();
    let request = SessionRequest { site: site.key.clone(), ..SessionRequest::default() };
    let visitor = visitors.open_session(&site, request).await.expect("a visitor").visitor;
    (site.key, visitor.id)
}

async fn behaves_as_an_offline_message_store(
    store: &(impl OfflineMessageStore + MessageStore + LeadStore),
    visitors: &impl VisitorStore,
    site: &str,
    visitor_id: u64,
) {
    let refused = store.leave(site, visitor_id, left("not an address", "", "hello", "en")).await;
    assert!(matches!(refused, Err(OfflineMessageError::Invalid(_))), "{refused:?}");
    let empty = store.leave(site, visitor_id, left("wang@example.com", "", "   ", "en")).await;
    assert!(matches!(empty, Err(OfflineMessageError::Invalid(_))), "{empty:?}");
    assert!(store.list_offline(|_| true, 10).await.unwrap().is_empty(), "nothing stored");

    let first = store
        .leave(site, visitor_id, left(" wang@example.com ", "王小明", "你好，我想退货（订单 2024-001）", "zh-CN"))
        .await
        .expect("left");
    assert_eq!(
        (first.email.as_str(), first.name.as_str(), first.lang.as_str()),
        ("wang@example.com", "王小明", "zh-CN")
    );
    let conversation = store.conversation(first.conversation_id).await.unwrap().expect("its conversation");
    assert_eq!((conversation.status, conversation.bot_active), (ConversationStatus::Queued, false));
    let copied = store.page_after(first.conversation_id, 0, 10).await.unwrap();
    assert_eq!(copied.len(), 1);
    let (seq, record) = &copied[0];
    assert_eq!((*seq, record.sender_kind, record.sender_name.as_str()), (1, SenderKind::Visitor, "王小明"));
    assert_eq!((record.text.as_str(), record.offline_message_id), ("你好，我想退货（订单 2024-001）", Some(first.id)));

    let visitor = visitors.get(visitor_id).await.unwrap().expect("the visitor");
    assert_eq!(
        (visitor.email.as_deref(), visitor.name.as_deref(), visitor.lang.as_deref()),
        (Some("wang@example.com"), Some("王小明"), Some("zh-CN"))
    );
    let leads = store.list_leads(LeadFilter { limit: 10, ..LeadFilter::default() }, |_| true).await.unwrap().leads;
    assert_eq!(leads.len(), 1);
    assert_eq!(
        (leads[0].source, leads[0].offline_message_id, leads[0].conversation_id, leads[0].email.as_str()),
        (LeadSource::OfflineMessage, Some(first.id), first.conversation_id, "wang@example.com")
    );

    // A second one goes into the same open conversation; the list is newest first, per site.
    let second = store.leave(site, visitor_id, left("wang@example.com", "", "Any news?", "en")).await.expect("left");
    assert_eq!(second.conversation_id, first.conversation_id);
    assert!(second.id > first.id);
    let seqs: Vec<u64> =
        store.page_after(first.conversation_id, 0, 10).await.unwrap().iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2]);
    let listed: Vec<u64> = store.list_offline(|_| true, 10).await.unwrap().iter().map(|message| message.id).collect();
    assert_eq!(listed, [second.id, first.id]);
    assert_eq!(store.list_offline(|_| true, 1).await.unwrap().len(), 1);
    assert!(store.list_offline(|site| site == "elsewhere", 10).await.unwrap().is_empty());
    let visitor = visitors.get(visitor_id).await.unwrap().expect("the visitor");
    assert_eq!((visitor.name.as_deref(), visitor.lang.as_deref()), (Some("王小明"), Some("en")), "a name is kept");
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    let (site, visitor_id) = site_and_visitor(&store, &store).await;
    behaves_as_an_offline_message_store(&store, &store, &site, visitor_id).await;

    let Some(url) = database("offline_messages_alike").await else { return };
    let Some(nats) = NatsServer::start("offline_messages_alike") else { return };
    let follower = events::connect(&nats.url()).await.unwrap();
    let mut followed = Box::pin(events::follow(&follower).await.unwrap());
    follower.flush().await.unwrap();
    let options =
        PostgresOptions { nats: Some(events::connect(&nats.url()).await.unwrap()), ..PostgresOptions::default() };
    let messages = PostgresMessages::open(&url, options).await.unwrap();
    let (sites, visitors) = (PostgresSites::open(&url).await.unwrap(), PostgresVisitors::open(&url).await.unwrap());
    let (site, visitor_id) = site_and_visitor(&sites, &visitors).await;
    behaves_as_an_offline_message_store(&messages, &visitors, &site, visitor_id).await;

    // The first one's events, in the appliance's order.
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), followed.next()).await.unwrap().unwrap();
        kinds.push(match event {
            NodeEvent::Conversation(ConversationChange::Conversation { .. }) => "conversation",
            NodeEvent::Message(_) => "message",
            NodeEvent::Conversation(ConversationChange::OfflineMessage { message }) => {
                assert_eq!(message.email, "wang@example.com");
                "offline message"
            }
            NodeEvent::Conversation(ConversationChange::Lead { .. }) => "lead",
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(kinds, ["conversation", "message", "offline message", "lead"]);
}

#[tokio::test]
async fn an_offline_message_and_a_send_through_another_node_at_once_share_one_conversation() {
    let Some(url) = database("offline_messages_race").await else { return };
    let (one, other) = (
        PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap(),
        PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap(),
    );
    for visitor_id in 1..=12u64 {
        let sender = kefu::protocol::SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "访客".into() };
        let send = kefu::chat::messages::NewMessage::text(
            kefu::chat::messages::Target::VisitorInbox { site: "shop".into(), visitor_id },
            sender,
            format!("v-{visitor_id}"),
            "有人吗？".into(),
        );
        let (sent, left) = tokio::join!(
            other.append(send),
            one.leave("shop", visitor_id, left("wang@example.com", "", "Please call me back.", "en")),
        );
        let (sent, left) = (sent.expect("the send is stored"), left.expect("the offline message is stored"));
        assert_eq!(sent.conversation_id, left.conversation_id, "visitor {visitor_id}: one open conversation");
        let seqs: Vec<u64> =
            one.page_after(sent.conversation_id, 0, 10).await.unwrap().iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [1, 2]);
    }
}

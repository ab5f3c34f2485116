//! Conversations' changes behind their storage boundary (`ConversationStore`) on both backends,
//! the appliance's redb and the cluster's PostgreSQL 15 (support/postgres.rs): the same calls
//! give the same answers (take, take over, release, transfer with a note, close, rate, reopen,
//! start one with a visitor; unknown ids, closed conversations, bad ratings and a second open
//! conversation refused with nothing changed), and a conversation closed unanswered becomes one
//! lead on both. On PostgreSQL, two nodes taking one conversation at once make one assignment,
//! and every change reaches another node over NATS in commit order, a new conversation's
//! `created` before its first message; a site with its bot on starts new conversations with the bot.
//!
//! The PostgreSQL tests print one line and pass when PostgreSQL or nats-server is not installed.

use std::time::Duration;

use futures_util::StreamExt;
use kefu::chat::conversation_list::{ListCounts, ListPage, ListRequest, ListState};
use kefu::chat::conversation_store::ConversationStore;
use kefu::chat::conversations::{AssignWhen, ConversationError, ConversationStatus, ReadThrough, TransferTarget};
use kefu::chat::delivery::ConversationEvent;
use kefu::chat::leads::{LeadEvent, LeadSource};
use kefu::chat::message_store::MessageStore;
use kefu::chat::messages::{NewMessage, Target};
use kefu::cluster::events::{self, ConversationChange, NodeEvent};
use kefu::cluster::messages::{PostgresMessages, PostgresOptions};
use kefu::cluster::sites::PostgresSites;
use kefu::protocol::{ParticipantView, SenderKind, SenderView};
use kefu::sites::NewSite;
use kefu::sites::store::SiteStore;

use crate::support::TestServer;
use crate::support::nats::NatsServer;
use crate::support::postgres::{connect, count, database};

const ANN: u64 = 11;
const BOB: u64 = 12;

fn agent(id: u64) -> SenderView {
    SenderView { kind: SenderKind::Agent, id, name: format!("客服 {id}") }
}

/// A visitor's first message on `site`: a new queued conversation; returns its id.
async fn visitor_writes(store: &impl ConversationStore, site: &str, visitor_id: u64, text: &str) -> u64 {
    let sender = SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "访客".into() };
    let inbox = Target::VisitorInbox { site: site.to_owned(), visitor_id };
    let client_id = format!("v{visitor_id}-{}", rand::random::<u32>());
    store
        .append(NewMessage::text(inbox, sender, client_id, text.into()))
        .await
        .expect("the visitor writes")
        .conversation_id
}

/// The calls every backend answers alike; returns the conversation that closed unanswered and
/// its visitor.
async fn behaves_as_a_conversation_store(store: &impl ConversationStore, sites: &impl SiteStore) -> (u64, u64) {
    let site = sites.create(NewSite { name: "店".into(), ..NewSite::default() }).await.unwrap().key;
    let visitor = 9_000 + u64::from(rand::random::<u16>());
    let id = visitor_writes(store, &site, visitor, "请问发货了吗？").await;
    let queued = store.conversation(id).await.unwrap().unwrap();
    assert_eq!((queued.status, queued.assigned_agent), (ConversationStatus::Queued, None));

    // Unknown ids change nothing, whatever the call.
    let unknown = u64::MAX;
    assert!(matches!(store.assign(unknown, ANN, AssignWhen::Open).await, Err(ConversationError::NotFound)));
    assert!(matches!(store.close(unknown).await, Err(ConversationError::NotFound)));
    assert!(matches!(store.rate(unknown, 5, String::new()).await, Err(ConversationError::NotFound)));
    assert!(matches!(store.release(unknown, ANN).await, Err(ConversationError::NotFound)));
    assert!(matches!(store.reopen(unknown, ANN).await, Err(ConversationError::NotFound)));
    let transfer = store.transfer(unknown, TransferTarget::Team(1), None, agent(ANN)).await;
    assert!(matches!(transfer, Err(ConversationError::NotFound)), "{transfer:?}");

    // Routing takes it once; an agent takes it over; the holder alone releases it.
    let taken = store.assign(id, ANN, AssignWhen::Queued).await.expect("routing assigns");
    assert_eq!(
        (taken.status, taken.assigned_agent, taken.bot_active),
        (ConversationStatus::Assigned, Some(ANN), false)
    );
    assert!(matches!(store.assign(id, BOB, AssignWhen::Queued).await, Err(ConversationError::AlreadyAssigned)));
    assert!(matches!(store.assign(id, ANN, AssignWhen::Open).await, Err(ConversationError::AlreadyAssigned)));
    assert_eq!(store.assign(id, BOB, AssignWhen::Open).await.expect("take over").assigned_agent, Some(BOB));
    assert!(matches!(store.release(id, ANN).await, Err(ConversationError::AlreadyAssigned)));
    let released = store.release(id, BOB).await.expect("release");
    assert_eq!((released.status, released.assigned_agent), (ConversationStatus::Queued, None));

    // A transfer to an agent, with its note stored as an internal message; then to a team.
    let before = store.conversation(id).await.unwrap().unwrap().last_seq;
    let moved =
        store.transfer(id, TransferTarget::Agent(ANN), Some("请跟进发货".into()), agent(BOB)).await.expect("transfer");
    assert_eq!(
        (moved.status, moved.assigned_agent, moved.last_seq),
        (ConversationStatus::Assigned, Some(ANN), before + 1)
    );
    let note = store.page_after(id, before, 10).await.unwrap();
    assert_eq!(note.len(), 1);
    assert_eq!((note[0].1.text.as_str(), note[0].1.internal, note[0].1.sender_id), ("请跟进发货", true, BOB));
    let again = store.transfer(id, TransferTarget::Agent(ANN), None, agent(BOB)).await;
    assert!(matches!(again, Err(ConversationError::AlreadyAssigned)), "{again:?}");
    let to_team = store.transfer(id, TransferTarget::Team(7), None, agent(ANN)).await.expect("to a team");
    assert_eq!((to_team.status, to_team.assigned_agent, to_team.team), (ConversationStatus::Queued, None, Some(7)));

    // Read positions: never past the last message, never back; unknown conversations ignored.
    let last = store.conversation(id).await.unwrap().unwrap().last_seq;
    let (as_visitor, as_agent) = (
        ParticipantView { kind: SenderKind::Visitor, id: visitor },
        ParticipantView { kind: SenderKind::Agent, id: ANN },
    );
    store.mark_read(id, as_visitor, 99).await.expect("the visitor reads");
    store.mark_read(id, as_agent, 1).await.expect("an agent reads");
    store.mark_read(id, as_agent, 0).await.expect("an older read");
    store.mark_read(u64::MAX, as_agent, 5).await.expect("an unknown conversation");
    let through = read_through_eventually(store, id, |through| through.visitor == last && through.agents == 1).await;
    assert_eq!((through.visitor, through.agents), (last, 1));

    // Ratings wait for the close; bad ones are refused before anything is read.
    assert!(matches!(store.rate(id, 5, String::new()).await, Err(ConversationError::NotClosed)));
    assert!(matches!(store.rate(id, 0, String::new()).await, Err(ConversationError::Invalid(_))));
    assert!(matches!(store.rate(id, 3, "长".repeat(2001)).await, Err(ConversationError::Invalid(_))));
    let closed = store.close(id).await.expect("close");
    assert_eq!(closed.status, ConversationStatus::Closed);
    assert!(closed.closed_at.is_some());
    assert!(matches!(store.close(id).await, Err(ConversationError::Closed)));
    assert!(matches!(store.assign(id, ANN, AssignWhen::Open).await, Err(ConversationError::Closed)));
    assert!(matches!(store.release(id, ANN).await, Err(ConversationError::Closed)));
    let late = store.transfer(id, TransferTarget::Agent(BOB), Some("晚了".into()), agent(ANN)).await;
    assert!(matches!(late, Err(ConversationError::Closed)), "{late:?}");
    assert_eq!(store.conversation(id).await.unwrap().unwrap().last_seq, before + 1, "a refused note is not stored");
    let rated = store.rate(id, 4, " 很好 ".into()).await.expect("rate");
    assert_eq!(rated.rating.as_ref().map(|rating| (rating.score, rating.comment.as_str())), Some((4, "很好")));
    assert!(matches!(store.rate(id, 5, String::new()).await, Err(ConversationError::AlreadyRated)));

    // One open conversation per visitor: a start and a reopen that would make a second are refused.
    let started = store.start_with_visitor(site.clone(), visitor, BOB).await.expect("start");
    assert_eq!(
        (started.status, started.assigned_agent, started.visitor_id),
        (ConversationStatus::Assigned, Some(BOB), visitor)
    );
    assert!(matches!(
        store.start_with_visitor(site.clone(), visitor, ANN).await,
        Err(ConversationError::VisitorHasOpen)
    ));
    assert!(matches!(store.reopen(id, ANN).await, Err(ConversationError::VisitorHasOpen)));
    assert_eq!(store.conversation(id).await.unwrap().unwrap().status, ConversationStatus::Closed);
    let open: Vec<u64> = store.list_open().await.unwrap().iter().map(|conversation| conversation.id).collect();
    assert!(open.contains(&started.id) && !open.contains(&id), "{open:?}");
    store.close(started.id).await.expect("close the started one");
    let reopened = store.reopen(id, ANN).await.expect("reopen");
    assert_eq!(
        (reopened.status, reopened.assigned_agent, reopened.closed_at),
        (ConversationStatus::Assigned, Some(ANN), None)
    );
    assert!(matches!(store.reopen(id, ANN).await, Err(ConversationError::NotClosed)));
    let mine: Vec<u64> = store.of_visitor(visitor).await.unwrap().iter().map(|conversation| conversation.id).collect();
    assert_eq!(mine, [id, started.id]);
    store.close(id).await.expect("close again");
    (id, visitor)
}

/// The read positions once `done` holds (the appliance's writer stores a read after answering
/// it), or what they are after five seconds.
async fn read_through_eventually(
    store: &impl ConversationStore,
    conversation_id: u64,
    done: impl Fn(&ReadThrough) -> bool,
) -> ReadThrough {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let through = store.read_through(conversation_id).await.unwrap();
        if done(&through) || tokio::time::Instant::now() > deadline {
            return through;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    let (missed, visitor) = behaves_as_a_conversation_store(&store, &store).await;
    let leads = store.read(move |transaction| kefu::chat::leads::of_visitor(transaction, visitor)).await.unwrap();
    let leads: Vec<_> = leads.iter().map(|lead| (lead.conversation_id, lead.source, lead.preview.as_str())).collect();
    assert_eq!(
        leads,
        [(missed, LeadSource::MissedConversation, "请问发货了吗？")],
        "closed twice unanswered, one lead"
    );

    let Some(url) = database("conversations_alike").await else { return };
    let (sites, store) = (
        PostgresSites::open(&url).await.unwrap(),
        PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap(),
    );
    let (missed, _) = behaves_as_a_conversation_store(&store, &sites).await;
    let client = connect(&url).await;
    let rows = client
        .query(
            "SELECT record->>'source', record->>'preview' FROM leads WHERE (record->>'conversation_id')::bigint = $1",
            &[&(missed as i64)],
        )
        .await
        .unwrap();
    let leads: Vec<(String, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(leads, [("missed_conversation".to_owned(), "请问发货了吗？".to_owned())]);
    assert_eq!(count(&client, "lead_conversations").await, 1);
}

#[tokio::test]
async fn two_nodes_taking_one_conversation_at_once_make_one_assignment() {
    let Some(url) = database("conversations_race").await else { return };
    let sites = PostgresSites::open(&url).await.unwrap();
    let site = sites.create(NewSite { name: "Shop".into(), ..NewSite::default() }).await.unwrap().key;
    let (node_a, node_b) = (
        PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap(),
        PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap(),
    );
    for round in 0..20u64 {
        let id = visitor_writes(&node_a, &site, 100 + round, "hello").await;
        let (a, b) =
            tokio::join!(node_a.assign(id, ANN, AssignWhen::Queued), node_b.assign(id, BOB, AssignWhen::Queued));
        let winners: Vec<u64> = [&a, &b].iter().filter_map(|outcome| outcome.as_ref().ok()?.assigned_agent).collect();
        assert_eq!(winners.len(), 1, "round {round}: {a:?} {b:?}");
        let loser = if a.is_ok() { b } else { a };
        assert!(matches!(loser, Err(ConversationError::AlreadyAssigned)), "{loser:?}");
        assert_eq!(node_b.conversation(id).await.unwrap().unwrap().assigned_agent, Some(winners[0]));
    }
}

#[tokio::test]
async fn a_change_through_one_node_reaches_another_over_nats_in_commit_order() {
    let Some(url) = database("conversations_nats").await else { return };
    let Some(nats) = NatsServer::start("conversations_nats") else { return };
    let follower = events::connect(&nats.url()).await.expect("connect the follower");
    let mut follows = Box::pin(events::follow(&follower).await.expect("follow"));
    follower.flush().await.unwrap();
    let publisher = events::connect(&nats.url()).await.expect("connect the node");
    // Not events: skipped, not fatal.
    publisher.publish("kefu.conversations.1", "not an event".into()).await.unwrap();
    publisher.publish("kefu.sites.changed", "abc".into()).await.unwrap();
    let sites = PostgresSites::open(&url).await.unwrap();
    let site = sites.create(NewSite { name: "店".into(), ..NewSite::default() }).await.unwrap().key;
    let options = PostgresOptions { nats: Some(publisher), ..PostgresOptions::default() };
    let store = PostgresMessages::open(&url, options).await.unwrap();
    let id = visitor_writes(&store, &site, 42, "有人吗").await;
    store.transfer(id, TransferTarget::Agent(ANN), Some("转给你".into()), agent(BOB)).await.unwrap();
    assert!(store.assign(id, ANN, AssignWhen::Open).await.is_err(), "refused: publishes nothing");
    let reader = ParticipantView { kind: SenderKind::Agent, id: ANN };
    store.mark_read(id, reader, 2).await.unwrap();
    store.mark_read(id, reader, 1).await.unwrap();
    store.close(id).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..7 {
        let event =
            tokio::time::timeout(Duration::from_secs(5), follows.next()).await.expect("an event").expect("open");
        seen.push(match event {
            NodeEvent::Message(message) => {
                assert_eq!((message.conversation_id, message.site.as_str()), (id, site.as_str()));
                assert!(message.lsn > 0 && message.day > 0 && !message.bot_active, "{message:?}");
                format!("message {} {}", message.seq, message.text)
            }
            NodeEvent::Conversation(ConversationChange::Conversation { event, conversation }) => {
                assert_eq!(conversation.id, id);
                format!("{event:?} {:?} {}", conversation.status, conversation.last_seq)
            }
            NodeEvent::Conversation(ConversationChange::Lead { event, lead }) => {
                assert_eq!(
                    (event, lead.source, lead.conversation_id, lead.preview.as_str()),
                    (LeadEvent::Created, LeadSource::MissedConversation, id, "有人吗")
                );
                "lead".to_owned()
            }
            NodeEvent::Conversation(ConversationChange::Rated { .. }) => "rated".to_owned(),
            NodeEvent::Conversation(ConversationChange::OfflineMessage { message }) => {
                format!("offline message {}", message.id)
            }
            NodeEvent::AccessEnded(ended) => format!("access ended {}", ended.agent_id),
            NodeEvent::VisitorErased(erased) => format!("visitor erased {}", erased.visitor_id),
            NodeEvent::Conversation(ConversationChange::Read { conversation_id, reader, seq }) => {
                assert_eq!((conversation_id, reader.id), (id, ANN));
                format!("read {seq}")
            }
        });
    }
    assert_eq!(
        seen,
        [
            format!("{:?} Queued 0", ConversationEvent::Created),
            "message 1 有人吗".to_owned(),
            format!("{:?} Assigned 1", ConversationEvent::Assigned { previous: None }),
            "message 2 转给你".to_owned(),
            "read 2".to_owned(),
            format!("{:?} Closed 2", ConversationEvent::Closed { previous: Some(ANN) }),
            "lead".to_owned(),
        ]
    );
    let extra = tokio::time::timeout(Duration::from_millis(300), follows.next()).await;
    assert!(extra.is_err(), "one event per committed change: {extra:?}");
}

#[tokio::test]
async fn a_new_conversation_on_a_site_with_its_bot_on_starts_with_the_bot() {
    let Some(url) = database("conversations_bot").await else { return };
    let sites = PostgresSites::open(&url).await.unwrap();
    let site = sites.create(NewSite { name: "店".into(), ..NewSite::default() }).await.unwrap().key;
    let store = PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap();
    let without = visitor_writes(&store, &site, 1, "hello").await;
    assert!(!store.conversation(without).await.unwrap().unwrap().bot_active);
    let client = connect(&url).await;
    client
        .execute("INSERT INTO bot_settings (site, record) VALUES ($1, '{\"enabled\": true}')", &[&site])
        .await
        .unwrap();
    let with = visitor_writes(&store, &site, 2, "hello").await;
    assert!(store.conversation(with).await.unwrap().unwrap().bot_active);
    // An agent taking it over stops the bot.
    assert!(!store.assign(with, ANN, AssignWhen::Open).await.unwrap().bot_active);
}

/// The console's lists read through any backend: counts, states, filters, pages and read
/// positions.
async fn lists_alike(store: &impl ConversationStore, sites: &impl SiteStore) {
    let site = sites.create(NewSite { name: "店".into(), ..NewSite::default() }).await.unwrap().key;
    let other = sites.create(NewSite { name: "Other".into(), ..NewSite::default() }).await.unwrap().key;
    let base = 20_000 + u64::from(rand::random::<u16>()) * 8;
    let queued = visitor_writes(store, &site, base, "排队中").await;
    let mine = visitor_writes(store, &site, base + 1, "我的").await;
    store.assign(mine, ANN, AssignWhen::Open).await.unwrap();
    let bobs = visitor_writes(store, &site, base + 2, "Bob's").await;
    store.assign(bobs, BOB, AssignWhen::Open).await.unwrap();
    let closed = visitor_writes(store, &site, base + 3, "已关闭").await;
    store.close(closed).await.unwrap();
    visitor_writes(store, &other, base + 4, "another site").await;
    store.mark_read(mine, ParticipantView { kind: SenderKind::Agent, id: ANN }, 1).await.unwrap();
    read_through_eventually(store, mine, |through| through.agents == 1).await;

    let request = |state: ListState| ListRequest {
        state,
        site: None,
        agent_id: None,
        cursor: u64::MAX,
        limit: 10,
        caller_agent_id: Some(ANN),
    };
    let serves = {
        let site = site.clone();
        move |candidate: &str| candidate == site
    };
    let ids = |page: &ListPage| page.listed.iter().map(|listed| listed.conversation.id).collect::<Vec<_>>();
    let open = store.list_page(request(ListState::Open), serves.clone()).await.unwrap();
    assert_eq!(ids(&open), [bobs, mine, queued], "newest first, the caller's sites only");
    assert_eq!(open.counts, ListCounts { queued: 1, mine: 1, open: 3 });
    assert_eq!(open.next_cursor, None);
    let read: Vec<Option<u64>> = open.listed.iter().map(|listed| listed.read_seq).collect();
    assert_eq!(read, [Some(0), Some(1), Some(0)]);
    assert_eq!(ids(&store.list_page(request(ListState::Queued), serves.clone()).await.unwrap()), [queued]);
    assert_eq!(ids(&store.list_page(request(ListState::Mine), serves.clone()).await.unwrap()), [mine]);
    assert_eq!(ids(&store.list_page(request(ListState::Closed), serves.clone()).await.unwrap()), [closed]);
    let by_bob = ListRequest { agent_id: Some(BOB), ..request(ListState::Open) };
    assert_eq!(ids(&store.list_page(by_bob, serves.clone()).await.unwrap()), [bobs]);
    let first = store.list_page(ListRequest { limit: 2, ..request(ListState::Open) }, serves.clone()).await.unwrap();
    assert_eq!((ids(&first), first.next_cursor), (vec![bobs, mine], Some(mine)));
    let next = ListRequest { limit: 2, cursor: mine, ..request(ListState::Open) };
    assert_eq!(ids(&store.list_page(next, serves.clone()).await.unwrap()), [queued]);
    let token = ListRequest { caller_agent_id: None, ..request(ListState::Open) };
    let as_token = store.list_page(token, serves).await.unwrap();
    assert!(as_token.listed.iter().all(|listed| listed.read_seq.is_none()));
    assert_eq!(as_token.counts.mine, 0);
    let nobody = store.list_page(request(ListState::Open), |_| false).await.unwrap();
    assert_eq!((nobody.listed.len(), nobody.counts), (0, ListCounts::default()));
}

#[tokio::test]
async fn the_console_lists_alike_on_both_backends() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    lists_alike(&store, &store).await;

    let Some(url) = database("conversations_lists").await else { return };
    let sites = PostgresSites::open(&url).await.unwrap();
    let store = PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap();
    lists_alike(&store, &sites).await;
}

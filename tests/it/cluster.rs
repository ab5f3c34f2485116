//! Cluster mode's message path on a real PostgreSQL 15 (support/postgres.rs): the same
//! `MessageStore` behaviour as the appliance's redb store, then what only a shared database
//! brings: concurrent resends and sequences across two nodes' stores, refused and failed
//! batches, migrations, day partitions, the group commit's figures, and committed messages
//! published once to NATS (support/nats.rs).
//!
//! Each test prints one line and passes when PostgreSQL is not installed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use kefu::chat::conversations::ConversationStatus;
use kefu::chat::message_store::MessageStore;
use kefu::chat::messages::{AppendError, NewMessage, Target};
use kefu::cluster::events::{self, MessageEvent, NodeEvent};
use kefu::cluster::messages::{PostgresMessages, PostgresOptions};
use kefu::cluster::postgres::{self, PostgresError};
use kefu::protocol::{SenderKind, SenderView};
use std::sync::atomic::Ordering;

use crate::support::TestServer;
use crate::support::nats::NatsServer;
use crate::support::postgres::{connect, database};

fn visitor(id: u64) -> SenderView {
    SenderView { kind: SenderKind::Visitor, id, name: format!("visitor {id}") }
}

fn agent(id: u64) -> SenderView {
    SenderView { kind: SenderKind::Agent, id, name: format!("agent {id}") }
}

fn inbox(visitor_id: u64) -> Target {
    Target::VisitorInbox { site: "shop".to_owned(), visitor_id }
}

fn text(target: Target, sender: SenderView, client_id: &str, body: &str) -> NewMessage {
    NewMessage::text(target, sender, client_id.to_owned(), body.to_owned())
}

async fn open(url: &str) -> PostgresMessages {
    open_with(url, PostgresOptions::default()).await
}

async fn open_with(url: &str, options: PostgresOptions) -> PostgresMessages {
    PostgresMessages::open(url, options).await.expect("open the PostgreSQL message store")
}

/// The behaviour both stores share, through the trait alone.
async fn message_store_behaviour<S: MessageStore>(store: &S) {
    let visitor_id = 41;
    let first = store.append(text(inbox(visitor_id), visitor(visitor_id), "c-1", "你好, hello")).await.expect("first");
    assert_eq!((first.seq, first.duplicate), (1, false));
    let conversation_id = first.conversation_id;

    // A resend answers with the original acknowledgement and stores nothing.
    let again = store.append(text(inbox(visitor_id), visitor(visitor_id), "c-1", "你好, hello")).await.expect("resend");
    assert_eq!(
        (again.conversation_id, again.seq, again.created_at, again.text.as_str(), again.duplicate),
        (conversation_id, 1, first.created_at, "你好, hello", true)
    );

    let second = store.append(text(inbox(visitor_id), visitor(visitor_id), "c-2", "second")).await.expect("second");
    assert_eq!((second.conversation_id, second.seq), (conversation_id, 2));

    // A refused send changes nothing: its client id is still free afterwards.
    let unknown = store.append(text(Target::Conversation(9_999_999), agent(7), "a-1", "lost")).await;
    assert!(matches!(unknown, Err(AppendError::NotFound)), "{unknown:?}");
    let reply =
        store.append(text(Target::Conversation(conversation_id), agent(7), "a-1", "an answer")).await.expect("reply");
    assert_eq!((reply.seq, reply.duplicate), (3, false));

    let conversation = store.conversation(conversation_id).await.expect("read").expect("the conversation exists");
    assert_eq!((conversation.site.as_str(), conversation.visitor_id), ("shop", visitor_id));
    assert_eq!(conversation.last_seq, 3);
    assert_ne!(conversation.status, ConversationStatus::Closed);
    assert_eq!(conversation.first_response_at, Some(reply.created_at), "the agent's reply is the first response");
    assert!(store.conversation(9_999_999).await.expect("read").is_none());

    let all = store.page_before(conversation_id, None, 10).await.expect("page");
    let seqs: Vec<u64> = all.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(all[0].1.text, "你好, hello");
    assert_eq!(all[0].1.client_id.as_deref(), Some("c-1"));
    assert_eq!((all[2].1.sender_kind, all[2].1.sender_id), (SenderKind::Agent, 7));
    assert!(all[0].1.lsn < all[1].1.lsn && all[1].1.lsn < all[2].1.lsn, "lsn follows the commit order");

    let before = store.page_before(conversation_id, Some(3), 1).await.expect("page");
    assert_eq!(before.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [2]);
    let after = store.page_after(conversation_id, 1, 10).await.expect("page");
    assert_eq!(after.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [2, 3]);
    assert!(store.page_after(conversation_id, 3, 10).await.expect("page").is_empty());
    assert!(store.page_before(9_999_999, None, 10).await.expect("page").is_empty());
}

#[tokio::test]
async fn redb_store_has_the_message_store_behaviour() {
    let server = TestServer::start().await;
    message_store_behaviour(server.store()).await;
}

#[tokio::test]
async fn postgres_store_has_the_message_store_behaviour() {
    let Some(url) = database("postgres_store_has_the_message_store_behaviour").await else { return };
    let store = open(&url).await;
    message_store_behaviour(&store).await;
}

#[tokio::test]
async fn closed_conversations_refuse_agents_and_start_a_new_one_for_the_visitor() {
    let Some(url) = database("closed_conversations").await else { return };
    let store = open(&url).await;
    let first = store.append(text(inbox(5), visitor(5), "v-1", "hi")).await.expect("first");
    connect(&url)
        .await
        .execute("UPDATE conversations SET status = 'closed' WHERE id = $1", &[&(first.conversation_id as i64)])
        .await
        .expect("close");
    let refused = store.append(text(Target::Conversation(first.conversation_id), agent(2), "a-1", "late")).await;
    assert!(matches!(refused, Err(AppendError::Closed)), "{refused:?}");
    let next =
        store.append(text(Target::Conversation(first.conversation_id), visitor(5), "v-2", "again")).await.expect("new");
    assert_ne!(next.conversation_id, first.conversation_id);
    assert_eq!(next.seq, 1);
}

#[tokio::test]
async fn a_nul_character_is_refused_alone_and_stores_nothing() {
    let Some(url) = database("nul_character").await else { return };
    let store = Arc::new(open(&url).await);
    let sends = ["fine", "not\0fine", "also fine"].into_iter().enumerate().map(|(n, body)| {
        let store = store.clone();
        tokio::spawn(async move { store.append(text(inbox(n as u64 + 1), visitor(n as u64 + 1), "n", body)).await })
    });
    let outcomes: Vec<_> = join_all(sends).await.into_iter().map(|joined| joined.expect("task")).collect();
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    let refused = outcomes[1].as_ref().expect_err("refused").to_string();
    assert!(refused.contains("U+0000"), "{refused}");
    let rows: i64 = connect(&url).await.query_one("SELECT count(*) FROM messages", &[]).await.expect("count").get(0);
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn concurrent_resends_across_two_nodes_store_one_row_and_get_one_ack() {
    let Some(url) = database("concurrent_resends").await else { return };
    let nodes = [Arc::new(open(&url).await), Arc::new(open(&url).await)];
    let first = nodes[0].append(text(inbox(9), visitor(9), "start", "start")).await.expect("start");
    let sends = (0..32).map(|task| {
        let node = nodes[task % 2].clone();
        let target = Target::Conversation(first.conversation_id);
        tokio::spawn(async move { node.append(text(target, visitor(9), "same", "sent many times")).await })
    });
    let acks: Vec<_> = join_all(sends).await.into_iter().map(|joined| joined.expect("task").expect("ack")).collect();
    let keys: std::collections::BTreeSet<_> =
        acks.iter().map(|ack| (ack.conversation_id, ack.seq, ack.created_at, ack.text.clone())).collect();
    assert_eq!(keys.len(), 1, "every resend gets the same acknowledgement: {keys:?}");
    assert_eq!(acks.iter().filter(|ack| !ack.duplicate).count(), 1, "one of them stored it");
    let rows: i64 = connect(&url)
        .await
        .query_one("SELECT count(*) FROM messages WHERE client_id = 'same'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn sequences_are_gap_free_and_ordered_under_concurrent_appends_from_two_nodes() {
    let Some(url) = database("sequences_gap_free").await else { return };
    let nodes = [Arc::new(open(&url).await), Arc::new(open(&url).await)];
    const VISITORS: u64 = 3;
    const TASKS: usize = 12;
    const EACH: usize = 20;
    let tasks = (0..TASKS).map(|task| {
        let node = nodes[task % 2].clone();
        tokio::spawn(async move {
            let visitor_id = 100 + (task as u64 % VISITORS);
            let mut seqs = Vec::new();
            for n in 0..EACH {
                // Each task waits for its acknowledgement before its next message.
                let ack = node
                    .append(text(
                        inbox(visitor_id),
                        visitor(visitor_id),
                        &format!("t{task}-{n}"),
                        &format!("{task}/{n}"),
                    ))
                    .await
                    .expect("ack");
                seqs.push((ack.conversation_id, ack.seq));
            }
            seqs
        })
    });
    let per_task: Vec<Vec<(u64, u64)>> =
        join_all(tasks).await.into_iter().map(|joined| joined.expect("task")).collect();
    for seqs in &per_task {
        assert!(
            seqs.windows(2).all(|pair| pair[0].0 == pair[1].0 && pair[0].1 < pair[1].1),
            "a task's messages keep its order: {seqs:?}"
        );
    }
    let conversations: std::collections::BTreeSet<u64> = per_task.iter().map(|seqs| seqs[0].0).collect();
    assert_eq!(conversations.len() as u64, VISITORS, "one conversation per visitor, whichever node started it");
    for conversation_id in conversations {
        let page = nodes[0].page_after(conversation_id, 0, 10_000).await.expect("page");
        let expected = (TASKS / VISITORS as usize * EACH) as u64;
        assert_eq!(page.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), (1..=expected).collect::<Vec<_>>());
        let conversation = nodes[1].conversation(conversation_id).await.expect("read").expect("exists");
        assert_eq!(conversation.last_seq, expected);
    }
}

#[tokio::test]
async fn a_refused_item_leaves_the_rest_of_its_batch_stored() {
    let Some(url) = database("refused_item_in_batch").await else { return };
    let _store = open(&url).await;
    let client = connect(&url).await;
    // One batch, as the group commit sends it: a send, a send to an unknown conversation, a send.
    let items = serde_json::json!([
        {"sender_kind": 1, "sender_id": 1, "sender_name": "v", "client_id": "ok-1", "text": "one", "kind": "text",
         "internal": false, "trace_id": 0, "now": 1_000, "day": 20_000, "site": "shop", "visitor_id": 1},
        {"sender_kind": 2, "sender_id": 2, "sender_name": "a", "client_id": "bad", "text": "two", "kind": "text",
         "internal": false, "trace_id": 0, "now": 1_000, "day": 20_000, "conversation_id": 424_242},
        {"sender_kind": 1, "sender_id": 1, "sender_name": "v", "client_id": "ok-2", "text": "three", "kind": "text",
         "internal": false, "trace_id": 0, "now": 1_000, "day": 20_000, "site": "shop", "visitor_id": 1},
    ]);
    let row = client
        .query_one("SELECT kefu_append_batch($1::text::jsonb)::text", &[&items.to_string()])
        .await
        .expect("batch");
    let outcomes: serde_json::Value = serde_json::from_str(row.get(0)).expect("json");
    let kinds: Vec<&str> = outcomes
        .as_array()
        .expect("array")
        .iter()
        .map(|outcome| outcome["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(kinds, ["stored", "not_found", "stored"]);
    assert_eq!((outcomes[0]["seq"].as_u64(), outcomes[2]["seq"].as_u64()), (Some(1), Some(2)));
    let keys: i64 = client.query_one("SELECT count(*) FROM client_ids", &[]).await.expect("count").get(0);
    assert_eq!(keys, 2, "the refused item left no deduplication key");
}

#[tokio::test]
async fn a_failing_batch_fails_each_of_its_appends_and_acknowledges_none() {
    let Some(url) = database("failing_batch").await else { return };
    let store = Arc::new(open(&url).await);
    // A constraint that one site's conversations break: its batch fails in the database.
    connect(&url)
        .await
        .batch_execute("ALTER TABLE conversations ADD CONSTRAINT no_poison CHECK (site <> 'poison')")
        .await
        .expect("constraint");
    let sends = (0..24u64).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let target = if n == 12 {
                Target::VisitorInbox { site: "poison".to_owned(), visitor_id: 1_000 }
            } else {
                inbox(n + 1)
            };
            (n, store.append(text(target, visitor(n + 1), &format!("m{n}"), "x")).await)
        })
    });
    let client = connect(&url).await;
    for (n, outcome) in join_all(sends).await.into_iter().map(|joined| joined.expect("task")) {
        let rows: i64 = client
            .query_one("SELECT count(*) FROM messages WHERE client_id = $1", &[&format!("m{n}")])
            .await
            .expect("count")
            .get(0);
        match outcome {
            Ok(ack) => assert_eq!((rows, ack.duplicate), (1, false), "an acknowledged message is stored"),
            Err(AppendError::Storage(error)) => {
                assert_eq!(rows, 0, "a failed append stored nothing");
                let message = error.to_string();
                assert!(message.contains("was not stored") && message.contains("no_poison"), "{message}");
            }
            Err(other) => panic!("unexpected refusal: {other}"),
        }
        if n == 12 {
            assert_eq!(rows, 0);
        }
    }
}

#[tokio::test]
async fn connections_the_server_closed_are_opened_again() {
    let Some(url) = database("reconnect").await else { return };
    let store = open(&url).await;
    let first = store.append(text(inbox(4), visitor(4), "r-1", "before")).await.expect("first");
    let terminated: i64 = connect(&url)
        .await
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()) AS ended",
            &[],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(terminated >= 1, "the store's connection was ended");
    // The append on the closed connection fails as a whole (nothing acknowledged), or finds the
    // connection already reopened; the next one is stored either way, and resending the first
    // is answered as its duplicate if it was stored.
    let mut outcome = store.append(text(inbox(4), visitor(4), "r-2", "after")).await;
    if let Err(error) = &outcome {
        assert!(error.to_string().contains("was not stored"), "{error}");
        outcome = store.append(text(inbox(4), visitor(4), "r-2", "after")).await;
    }
    let second = outcome.expect("stored after the reconnection");
    assert_eq!((second.conversation_id, second.seq), (first.conversation_id, 2));
    let mut page = store.page_before(first.conversation_id, None, 10).await;
    if page.is_err() {
        page = store.page_before(first.conversation_id, None, 10).await;
    }
    assert_eq!(page.expect("read after the reconnection").len(), 2);
}

#[tokio::test]
async fn migrations_are_idempotent_and_a_newer_schema_is_refused() {
    let Some(url) = database("migrations").await else { return };
    let mut client = connect(&url).await;
    let first = postgres::migrate(&mut client).await.expect("migrate");
    let every_version: Vec<i64> = postgres::MIGRATIONS.iter().map(|migration| migration.version).collect();
    assert_eq!(first.applied, every_version);
    let again = postgres::migrate(&mut client).await.expect("migrate again");
    assert_eq!((again.applied.len(), again.version), (0, postgres::known_version()));

    // `kefu migrate` on a current database applies nothing and says so.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["migrate", "--postgres", &url])
        .output()
        .expect("run kefu migrate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success()
            && stdout.contains("applied=\n")
            && stdout.contains(&format!("schema_version={}", postgres::known_version())),
        "{stdout}"
    );

    client
        .execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')", &[])
        .await
        .expect("insert");
    let refused = postgres::migrate(&mut client).await;
    assert!(
        matches!(refused, Err(PostgresError::NewerSchema { found: 999, known }) if known == postgres::known_version()),
        "{refused:?}"
    );
    let opened = PostgresMessages::open(&url, PostgresOptions::default()).await;
    assert!(matches!(opened, Err(PostgresError::NewerSchema { .. })));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["migrate", "--postgres", &url])
        .output()
        .expect("run kefu migrate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("newer than this kefu knows"), "{stderr}");

    // A URL that is not one is refused before anything is sent.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["migrate", "--postgres", "postgresql://host:notaport/db"])
        .output()
        .expect("run kefu migrate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("URL is not valid"), "{stderr}");
}

fn partition_name(day: u32) -> String {
    let timestamp = jiff::Timestamp::from_second(i64::from(day) * 86_400).expect("a day");
    format!("messages_{}", timestamp.strftime("%Y%m%d"))
}

#[tokio::test]
async fn day_partitions_are_made_ahead_recreated_on_append_and_dropped_whole() {
    let Some(url) = database("partitions").await else { return };
    let store = open(&url).await;
    let today = kefu::base::clock::day_of(kefu::base::clock::now_millis());
    let partitions = store.partitions().await.expect("partitions");
    for day in today..today + postgres::PARTITION_DAYS_AHEAD {
        assert!(partitions.contains(&partition_name(day)), "{} in {partitions:?}", partition_name(day));
    }
    let first = store.append(text(inbox(3), visitor(3), "p-1", "before retention")).await.expect("append");

    // Retention drops today's partition with its message; the next append makes it again.
    let dropped = store.drop_days_before(today + 1).await.expect("drop");
    assert_eq!(dropped, [partition_name(today)]);
    assert!(store.page_before(first.conversation_id, None, 10).await.expect("page").is_empty());
    let next = store.append(text(inbox(3), visitor(3), "p-2", "after retention")).await.expect("append");
    assert_eq!((next.conversation_id, next.seq), (first.conversation_id, 2));
    assert!(store.partitions().await.expect("partitions").contains(&partition_name(today)));
    let page = store.page_before(first.conversation_id, None, 10).await.expect("page");
    assert_eq!(
        page.iter().map(|(seq, record)| (*seq, record.text.as_str())).collect::<Vec<_>>(),
        [(2, "after retention")]
    );
}

/// The group commit's figures: appends per second and round trips per message with 1 and with
/// 64 concurrent senders (printed; `-- --nocapture` shows them). Each sender waits for its
/// acknowledgement before its next message, as a chat client does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_appends() {
    let Some(url) = database("group_commit").await else { return };
    let store = Arc::new(open(&url).await);
    let mut figures = Vec::new();
    for (senders, each) in [(1usize, 200usize), (64, 40)] {
        let batches_before = store.stats().batches.load(Ordering::Relaxed);
        let started = Instant::now();
        let tasks = (0..senders).map(|sender| {
            let store = store.clone();
            tokio::spawn(async move {
                let visitor_id = 10_000 * senders as u64 + sender as u64;
                for n in 0..each {
                    store
                        .append(text(
                            inbox(visitor_id),
                            visitor(visitor_id),
                            &format!("b{n}"),
                            "a message of a benchmark",
                        ))
                        .await
                        .expect("ack");
                }
            })
        });
        join_all(tasks).await.into_iter().for_each(|joined| joined.expect("task"));
        let elapsed = started.elapsed();
        let messages = (senders * each) as f64;
        let batches = (store.stats().batches.load(Ordering::Relaxed) - batches_before) as f64;
        println!(
            "group commit, {senders} senders: {messages} messages in {:.2} s = {:.0} appends/s, {batches} batches, {:.3} round trips per message",
            elapsed.as_secs_f64(),
            messages / elapsed.as_secs_f64(),
            batches / messages
        );
        figures.push(batches / messages);
    }
    assert_eq!(figures[0], 1.0, "a lone sender's message is a batch of its own");
    assert!(figures[1] < 0.5, "concurrent appends share batches: {} round trips per message", figures[1]);
}

#[tokio::test]
async fn a_committed_message_reaches_another_subscriber_once() {
    let Some(url) = database("nats_publish").await else { return };
    let Some(nats) = NatsServer::start("nats_publish") else { return };
    // Another node's subscription, made before anything is published.
    let subscriber = async_nats::connect(nats.url()).await.expect("connect the subscriber");
    let mut received = subscriber.subscribe("kefu.messages.>").await.expect("subscribe");
    subscriber.flush().await.expect("flush");
    let publisher = events::connect(&nats.url()).await.expect("connect the publisher");
    let store = open_with(&url, PostgresOptions { nats: Some(publisher), ..PostgresOptions::default() }).await;

    let first = store.append(text(inbox(8), visitor(8), "e-1", "发布一次")).await.expect("first");
    let resent = store.append(text(inbox(8), visitor(8), "e-1", "发布一次")).await.expect("resend");
    assert!(resent.duplicate);
    let refused = store.append(text(Target::Conversation(777_777), agent(1), "e-x", "nowhere")).await;
    assert!(refused.is_err());
    let second = store.append(text(inbox(8), visitor(8), "e-2", "second")).await.expect("second");

    let mut events = Vec::new();
    for _ in 0..2 {
        let message =
            tokio::time::timeout(Duration::from_secs(5), received.next()).await.expect("an event").expect("open");
        let event: MessageEvent = serde_json::from_slice(&message.payload).expect("an event");
        assert_eq!(message.subject.as_str(), event.subject());
        events.push(event);
    }
    let seen: Vec<_> = events
        .iter()
        .map(|event| (event.conversation_id, event.seq, event.client_id.as_str(), event.text.as_str()))
        .collect();
    assert_eq!(seen, [(first.conversation_id, 1, "e-1", "发布一次"), (second.conversation_id, 2, "e-2", "second")]);
    assert_eq!((events[0].created_at, events[0].sender_kind, events[0].sender_id), (first.created_at, 1, 8));
    // The duplicate and the refusal published nothing.
    let extra = tokio::time::timeout(Duration::from_millis(500), received.next()).await;
    assert!(extra.is_err(), "one event per stored message: {extra:?}");
}

#[tokio::test]
async fn every_node_following_the_messages_gets_each_one_and_skips_what_is_not_an_event() {
    let Some(url) = database("nats_follow").await else { return };
    let Some(nats) = NatsServer::start("nats_follow") else { return };
    // Two other nodes follow, before anything is published.
    let (node_b, node_c) =
        (events::connect(&nats.url()).await.expect("b"), events::connect(&nats.url()).await.expect("c"));
    // The messages of what each follows (conversations' changes come on the same subscription).
    let messages_of = |events: futures_util::stream::BoxStream<'static, NodeEvent>| {
        events.filter_map(|event| async move {
            match event {
                NodeEvent::Message(message) => Some(message),
                NodeEvent::Conversation(_) | NodeEvent::AccessEnded(_) | NodeEvent::VisitorErased(_) => None,
            }
        })
    };
    let mut follows_b = Box::pin(messages_of(events::follow(&node_b).await.expect("b follows").boxed()));
    let mut follows_c = Box::pin(messages_of(events::follow(&node_c).await.expect("c follows").boxed()));
    node_b.flush().await.expect("flush");
    node_c.flush().await.expect("flush");
    let publisher = events::connect(&nats.url()).await.expect("connect the publisher");
    // Something on the subject that is not a committed message: skipped, not fatal.
    publisher.publish("kefu.messages.1", "not an event".into()).await.expect("publish garbage");
    let store = open_with(&url, PostgresOptions { nats: Some(publisher), ..PostgresOptions::default() }).await;
    let first = store.append(text(inbox(9), visitor(9), "f-1", "你好")).await.expect("first");
    let second = store.append(text(inbox(9), visitor(9), "f-2", "hello")).await.expect("second");

    for follows in [&mut follows_b, &mut follows_c] {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let event =
                tokio::time::timeout(Duration::from_secs(5), follows.next()).await.expect("an event").expect("open");
            seen.push((event.conversation_id, event.seq, event.text));
        }
        assert_eq!(
            seen,
            [(first.conversation_id, 1, "你好".to_owned()), (second.conversation_id, 2, "hello".to_owned())]
        );
    }
}

#[tokio::test]
async fn every_node_of_a_database_tells_its_clients_one_epoch() {
    let Some(url) = database("every_node_of_a_database_tells_its_clients_one_epoch").await else { return };
    let (first, second) = (open(&url).await, open(&url).await);
    assert_ne!(first.epoch(), 0);
    assert_eq!(first.epoch(), second.epoch(), "made once, by the first node");
    let epoch = first.epoch();
    drop((first, second));
    assert_eq!(open(&url).await.epoch(), epoch, "kept across restarts");
}

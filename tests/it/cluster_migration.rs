//! `kefu migrate-to-postgres` on real engines: an appliance's history made through a running
//! server (visitors and agents over WebSocket, Chinese text, an attachment, a resend, and older
//! days written through the writer), the server stopped, then copied by the real binary into a
//! real PostgreSQL 15 (support/postgres.rs): verified, killed mid-copy and resumed, an altered
//! row detected, bad input (a missing, running or killed appliance, a target with other data)
//! refused with nothing changed, and `PostgresMessages` going on from the
//! copied sequences and acknowledgements.
//!
//! Each test prints one line and passes when PostgreSQL is not installed.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kefu::base::clock::MILLIS_PER_DAY;
use kefu::chat::conversation_store::ConversationStore;
use kefu::chat::message_store::MessageStore;
use kefu::chat::messages::{self, NewMessage, Target};
use kefu::cluster::messages::{PostgresMessages, PostgresOptions};
use kefu::cluster::redb_copy::CopiedTable;
use kefu::history::reports::{ReportFilter, ReportStore};
use kefu::protocol::{SenderKind, SenderView};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::crash;
use crate::support::postgres::{connect, count, database};
use crate::support::{TestServer, http};

/// What the test history holds, to check against the copy.
struct History {
    server: TestServer,
    conversation_id: u64,
    visitor_id: u64,
    /// The visitor's first message: its client id's acknowledgement.
    first_ack: Value,
    last_seq: u64,
    attachment_id: String,
    /// Messages stored in all.
    n_messages: u64,
}

const SITE_NAME: &str = "小店 Shop";
const FIRST_TEXT: &str = "你好，我想退货（订单 2024-001）";
const REPLY_TEXT: &str = "好的，请把照片发给我。Send me a photo, please.";

/// A stopped appliance with real history: a visitor and an agent chatting over WebSocket, and
/// `backdated` more messages on the three days before today, written through the writer.
async fn appliance_with_history(backdated: u64) -> History {
    let mut server = TestServer::start().await;
    let site = server.create_site(SITE_NAME).await;
    server.create_agent("ann@shop.example", &site, 5).await;
    // A webhook nobody answers: each message leaves a delivery in the outbox, retried.
    let hook = kefu::webhooks::NewWebhook {
        url: "http://127.0.0.1:9/hook".into(),
        events: vec!["message.created".into()],
        allow_private: true,
    };
    kefu::webhooks::WebhookStore::create(server.store(), site.key.clone(), hook).await.expect("create a webhook");
    // And an email waiting to be sent (no SMTP server is set).
    let site_key = site.key.clone();
    server
        .store()
        .write(move |context| {
            let email = kefu::email::OutgoingEmail {
                kind: kefu::email::EmailKind::Reply,
                site: Some(site_key),
                to_address: "guest@example.com".into(),
                to_name: "访客".into(),
                message: kefu::email::content::Rendered {
                    subject: "您的留言有回复了".into(),
                    text: "你好".into(),
                    html: "<p>你好</p>".into(),
                },
                unless_read: None,
                transcript_of: None,
            };
            kefu::email::queue(context, email, kefu::base::clock::now_millis() + 3_600_000)?;
            Ok(Ok::<(), kefu::storage::StorageError>(()))
        })
        .await
        .unwrap();
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;
    let (visitor_id, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &visitor_token).await;

    let first_ack = visitor.say(None, "v-1", FIRST_TEXT).await;
    let conversation_id = first_ack["conversation_id"].as_u64().unwrap();
    loop {
        if agent.expect("conversation").await["event"] == "assigned" {
            break;
        }
    }
    agent.expect_replayed(conversation_id).await;
    agent.say(Some(conversation_id), "a-1", REPLY_TEXT).await;

    // An attachment, then a resend of the first message with the same client id.
    let upload: Value = http()
        .post(server.url(&format!("/api/v1/uploads?conversation_id={conversation_id}&name=收据.txt")))
        .bearer_auth(&visitor_token)
        .body(b"receipt".to_vec())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    visitor.send(json!({"type": "send", "client_id": "v-2", "text": "收据", "attachment_id": upload["id"]})).await;
    let attached = visitor.expect("ack").await;
    let resent = visitor.say(Some(conversation_id), "v-1", FIRST_TEXT).await;
    assert_eq!((resent["duplicate"].as_bool(), &resent["seq"]), (Some(true), &first_ack["seq"]));
    let last_seq = attached["seq"].as_u64().unwrap();

    // Older history, across day partitions, a few hundred messages per writer operation.
    let today = kefu::base::clock::day_of(kefu::base::clock::now_millis());
    let site_key = site.key.clone();
    let mut written = 0;
    while written < backdated {
        let (site_key, first) = (site_key.clone(), written);
        let count = (backdated - written).min(500);
        server
            .store()
            .write(move |context| {
                for n in first..first + count {
                    let visitor = 50_000 + n % 40;
                    let day = today - 3 + (n * 3 / backdated.max(1)) as u32;
                    let at = i64::from(day) * MILLIS_PER_DAY + n as i64;
                    let sender = SenderView { kind: SenderKind::Visitor, id: visitor, name: "老客户".into() };
                    let inbox = Target::VisitorInbox { site: site_key.clone(), visitor_id: visitor };
                    let mut message =
                        NewMessage::text(inbox, sender, format!("old-{n}"), format!("第 {n} 条\tline\\n"));
                    // One message left through the offline form: its mark is copied and checked too.
                    message.offline_message_id = (n == 0).then_some(7);
                    messages::append_at(context, message, at)?.expect("stored");
                }
                Ok(Ok::<(), kefu::storage::StorageError>(()))
            })
            .await
            .unwrap();
        written += count;
    }
    server.stop().await;
    History {
        server,
        conversation_id,
        visitor_id,
        first_ack,
        last_seq,
        attachment_id: upload["id"].as_str().unwrap().to_owned(),
        n_messages: last_seq + backdated,
    }
}

fn migrate_command(history: &History, url: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kefu"));
    command
        .arg("migrate-to-postgres")
        .arg("--from")
        .arg(history.server.dir.path())
        .args(["--to", url])
        .args(extra)
        .env("LANG", "C.UTF-8")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES");
    command
}

fn migrate(history: &History, url: &str, extra: &[&str]) -> Output {
    migrate_command(history, url, extra).output().expect("run kefu migrate-to-postgres")
}

fn text_of(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The verification line of `table`, split into its cells.
fn verification_line(stdout: &str, table: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(table) && !line.contains(':'))
        .unwrap_or_else(|| panic!("no line for {table} in {stdout}"));
    line.split_whitespace().map(str::to_owned).collect()
}

/// Checks the verification table: the history's tables with their rows, and every table (the
/// record tables too) equal on both sides.
fn assert_verified(stdout: &str, conversations: u64, messages: u64, client_ids: u64) {
    for (table, rows) in [("conversations", conversations), ("messages", messages), ("client_ids", client_ids)] {
        assert_eq!(verification_line(stdout, table), [table, &rows.to_string(), &rows.to_string(), "yes"], "{stdout}");
    }
    for table in CopiedTable::ALL {
        assert_eq!(verification_line(stdout, table.name())[3], "yes", "{stdout}");
    }
    assert!(!stdout.contains("not copied"), "{stdout}");
}

fn visitor(id: u64) -> SenderView {
    SenderView { kind: SenderKind::Visitor, id, name: format!("visitor {id}") }
}

#[tokio::test]
async fn an_appliance_is_copied_verified_and_continued_by_the_postgres_store() {
    let Some(url) = database("migration_copy").await else { return };
    let mut history = appliance_with_history(300).await;
    // The chat's conversation, 40 backdated ones; a client id per message.
    let (n_conversations, n_client_ids) = (41, history.n_messages);

    // The URL may come from the environment, like `kefu migrate`'s.
    let mut command = Command::new(env!("CARGO_BIN_EXE_kefu"));
    command.arg("migrate-to-postgres").arg("--from").arg(history.server.dir.path()).env("KEFU_POSTGRES_URL", &url);
    let output = command.output().expect("run kefu migrate-to-postgres");
    let (stdout, stderr) = text_of(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("messages: {} rows copied", history.n_messages)), "{stdout}");
    assert_verified(&stdout, n_conversations, history.n_messages, n_client_ids);
    // The test server's own site and admin besides the shop's, and the one visitor.
    let records =
        [("sites", "2"), ("agents", "2"), ("agent_emails", "2"), ("visitors", "1"), ("uploads", "1"), ("emails", "1")];
    for (table, rows) in records {
        assert_eq!(verification_line(&stdout, table), [table, rows, rows, "yes"], "{stdout}");
    }

    // The rows themselves: Chinese text, the attachment's reference, sequences, days.
    let client = connect(&url).await;
    let conversation_id = history.conversation_id as i64;
    let rows = client
        .query(
            "SELECT seq, text, sender_kind, attachment->>'id', attachment->>'name' FROM messages
             WHERE conversation_id = $1 ORDER BY seq",
            &[&conversation_id],
        )
        .await
        .unwrap();
    let seen: Vec<(i64, String, i16)> = rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect();
    assert_eq!(seen, [(1, FIRST_TEXT.to_owned(), 1), (2, REPLY_TEXT.to_owned(), 2), (3, "收据".to_owned(), 1)]);
    assert_eq!(rows[2].get::<_, Option<String>>(3).as_deref(), Some(history.attachment_id.as_str()));
    assert_eq!(rows[2].get::<_, Option<String>>(4).as_deref(), Some("收据.txt"));
    let backdated: String =
        client.query_one("SELECT text FROM messages WHERE client_id = 'old-7'", &[]).await.unwrap().get(0);
    assert_eq!(backdated, "第 7 条\tline\\n", "tabs and backslashes survive COPY's text format");
    let partitions = kefu::cluster::postgres::partitions(&client).await.unwrap();
    assert!(partitions.len() >= 4, "the three older days and today: {partitions:?}");

    // The record tables: the site with its Chinese name, the agent found by email, the
    // visitor's token, the counters new ids continue from.
    let site: (String, String) = client
        .query_one("SELECT key, record->>'name' FROM sites WHERE record->>'name' = $1", &[&SITE_NAME])
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert_eq!(site.1, SITE_NAME);
    let agent_id: i64 = client
        .query_one("SELECT (record #>> '{}')::bigint FROM agent_emails WHERE email = 'ann@shop.example'", &[])
        .await
        .unwrap()
        .get(0);
    let agent_sites: String =
        client.query_one("SELECT record->>'sites' FROM agents WHERE id = $1", &[&agent_id]).await.unwrap().get(0);
    assert!(agent_sites.contains(&site.0), "{agent_sites}");
    let visitor_id: i64 =
        client.query_one("SELECT (record #>> '{}')::bigint FROM visitor_tokens", &[]).await.unwrap().get(0);
    assert_eq!(visitor_id as u64, history.visitor_id);
    assert_eq!(count(&client, "agent_sessions").await, 1, "the agent's login");
    let next_conversation: i64 = client
        .query_one("SELECT (record #>> '{}')::bigint FROM appliance_meta WHERE name = 'next_conversation_id'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(next_conversation > n_conversations as i64, "{next_conversation}");
    // The pending email and the webhook's deliveries, for the nodes' senders to claim.
    let email = client
        .query_one("SELECT status, content->>'subject', next_attempt_at FROM outbox WHERE kind = 'email'", &[])
        .await
        .unwrap();
    assert_eq!((email.get::<_, &str>(0), email.get::<_, &str>(1)), ("pending", "您的留言有回复了"));
    assert!(email.get::<_, Option<i64>>(2).is_some());
    let deliveries = verification_line(&stdout, "webhook_deliveries");
    assert!(deliveries[1].parse::<u64>().unwrap() >= 2 && deliveries[1] == deliveries[2], "{stdout}");
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox WHERE kind = 'webhook' AND content->>'event_type' = 'message.created'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending.to_string(), deliveries[1]);
    // The attachment's record and bytes.
    let upload = client
        .query_one(
            "SELECT u.name, (SELECT string_agg(k.bytes, ''::bytea ORDER BY k.n) FROM upload_chunks k
                             WHERE k.content_id = u.content_id)
             FROM uploads u WHERE u.id = $1",
            &[&history.attachment_id],
        )
        .await
        .unwrap();
    assert_eq!((upload.get::<_, String>(0), upload.get::<_, Vec<u8>>(1)), ("收据.txt".to_owned(), b"receipt".to_vec()));

    // Running it again copies nothing more and verifies the same.
    let output = migrate(&history, &url, &[]);
    let (stdout, stderr) = text_of(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("messages: 0 rows copied"), "{stdout}");
    assert_verified(&stdout, n_conversations, history.n_messages, n_client_ids);

    // A target copied by a kefu that knew only the history's tables: the next run copies the
    // record tables, unless something else wrote to them meanwhile.
    client
        .execute(
            "DELETE FROM redb_copy_progress WHERE table_name NOT IN ('conversations', 'messages', 'client_ids')",
            &[],
        )
        .await
        .unwrap();
    let output = migrate(&history, &url, &[]);
    let (_, stderr) = text_of(&output);
    assert!(!output.status.success() && stderr.contains("sites: 2, agents: 2, agent_emails: 2"), "{stderr}");
    // The outbox holds both the deliveries' and the emails' rows.
    let mut record_tables: Vec<&str> = CopiedTable::ALL.iter().skip(3).map(|table| table.name()).collect();
    record_tables.retain(|name| !["webhook_deliveries", "emails"].contains(name));
    record_tables.push("outbox");
    client.batch_execute(&format!("TRUNCATE {} CASCADE", record_tables.join(", "))).await.unwrap();
    let output = migrate(&history, &url, &[]);
    let (stdout, stderr) = text_of(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("messages: 0 rows copied") && stdout.contains("sites: 2 rows copied"), "{stdout}");
    assert_verified(&stdout, n_conversations, history.n_messages, n_client_ids);

    // The cluster's store goes on from the copy: the epoch, the next seq, the original acknowledgement of a
    // copied client id, and a new conversation's id past the copied ones.
    let store = PostgresMessages::open(&url, PostgresOptions::default()).await.expect("open the store");

    // Reports: a node counts from the copied rows what the appliance's daily figures say, for
    // every site and for the shop, over the backdated days and today.
    history.server.restart().await;
    let (now, sites) = (kefu::base::clock::now_millis(), client.query("SELECT key FROM sites", &[]).await.unwrap());
    let today = kefu::base::clock::day_of(now);
    for site in std::iter::once(None).chain(sites.iter().map(|row| Some(row.get::<_, String>(0)))) {
        let filter = ReportFilter { from_day: today - 5, to_day: today, site: site.clone(), team: None };
        let from_figures = ReportStore::report(history.server.store(), filter.clone()).await.unwrap();
        let counted = ReportStore::report(&store, filter).await.unwrap();
        assert_eq!(counted, from_figures, "the report of {site:?}");
        assert!(counted.totals.messages > 0 || site.is_some(), "{counted:?}");
        let today_there = ReportStore::today(history.server.store(), site.clone(), now).await.unwrap();
        assert_eq!(ReportStore::today(&store, site.clone(), now).await.unwrap(), today_there, "today of {site:?}");
    }
    history.server.stop().await;

    assert_eq!(
        Some(store.epoch()),
        history.first_ack["epoch"].as_u64(),
        "the appliance's epoch: its clients' positions stay valid"
    );
    let next = store
        .append(NewMessage::text(
            Target::Conversation(history.conversation_id),
            SenderView { kind: SenderKind::Agent, id: 1, name: "ann".into() },
            "a-after".into(),
            "迁移之后的回复".into(),
        ))
        .await
        .expect("append to a copied conversation");
    assert_eq!((next.seq, next.duplicate), (history.last_seq + 1, false));
    let resent = store
        .append(NewMessage::text(
            Target::Conversation(history.conversation_id),
            visitor(history.visitor_id),
            "v-1".into(),
            FIRST_TEXT.into(),
        ))
        .await
        .expect("resend a copied client id");
    assert_eq!(
        (resent.duplicate, resent.seq, resent.created_at, resent.text.as_str()),
        (
            true,
            history.first_ack["seq"].as_u64().unwrap(),
            history.first_ack["created_at"].as_i64().unwrap(),
            FIRST_TEXT
        )
    );
    let fresh = store
        .append(NewMessage::text(
            Target::VisitorInbox { site: "shop".into(), visitor_id: 77_777 },
            visitor(77_777),
            "n-1".into(),
            "new".into(),
        ))
        .await
        .expect("a new conversation");
    let largest: i64 = client.query_one("SELECT max(id) FROM conversations", &[]).await.unwrap().get(0);
    assert_eq!(fresh.conversation_id as i64, largest);
    assert!(fresh.conversation_id > n_conversations, "{fresh:?}");
    let page = store.page_after(history.conversation_id, 0, 10).await.unwrap();
    assert_eq!(page.len() as u64, history.last_seq + 1);
    assert!(page.windows(2).all(|pair| pair[0].1.lsn < pair[1].1.lsn), "lsns keep increasing in a conversation");

    // A lead made on PostgreSQL (the new conversation closed unanswered) continues the
    // appliance's lead ids too.
    let copied_leads: i64 = client
        .query_one(
            "SELECT greatest(coalesce((SELECT max(id) FROM leads), 0),
                             coalesce((SELECT (record #>> '{}')::bigint - 1 FROM appliance_meta
                                       WHERE name = 'next_lead_id'), 0))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    ConversationStore::close(&store, fresh.conversation_id).await.expect("close the new conversation");
    let lead: i64 = client
        .query_one("SELECT id FROM leads WHERE (record->>'conversation_id')::bigint = $1", &[&largest])
        .await
        .unwrap()
        .get(0);
    assert!(lead > copied_leads, "lead {lead} after the copied {copied_leads}");
}

#[tokio::test]
async fn a_copy_killed_midway_resumes_and_copies_no_row_twice() {
    let Some(url) = database("migration_resume").await else { return };
    let history = appliance_with_history(3_000).await;
    // Small batches, so the copy is still going when the poll below sees its first hundred rows,
    // however loaded the machine.
    let mut child = migrate_command(&history, &url, &["--batch-rows", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kefu migrate-to-postgres");
    let client = connect(&url).await;
    let started = Instant::now();
    loop {
        let copied =
            client.query_opt("SELECT rows_copied FROM redb_copy_progress WHERE table_name = 'messages'", &[]).await;
        if let Ok(Some(row)) = copied
            && row.get::<_, i64>(0) > 100
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the copy never got going");
        assert!(child.try_wait().unwrap().is_none(), "the copy ended before it could be killed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL the copy");
    child.wait().unwrap();

    // What was committed is whole batches with their cursor.
    let progress = client
        .query("SELECT table_name, rows_copied, finished_at IS NOT NULL FROM redb_copy_progress", &[])
        .await
        .unwrap();
    for row in &progress {
        let table: &str = row.get(0);
        let rows = match table {
            "webhook_deliveries" => "outbox WHERE kind = 'webhook'",
            "emails" => "outbox WHERE kind = 'email'",
            other => other,
        };
        assert_eq!(row.get::<_, i64>(1), count(&client, rows).await, "{table}: the cursor matches the rows");
    }
    let copied_before = count(&client, "messages").await as u64;
    assert!(copied_before < history.n_messages, "killed before the end");

    let output = migrate(&history, &url, &[]);
    let (stdout, stderr) = text_of(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("messages: {} rows copied", history.n_messages - copied_before))
            && stdout.contains(&format!("{copied_before} copied by an earlier run")),
        "{stdout}"
    );
    assert_verified(&stdout, 41, history.n_messages, history.n_messages);
}

#[tokio::test]
async fn an_altered_row_is_reported_by_the_verification() {
    let Some(url) = database("migration_altered").await else { return };
    let history = appliance_with_history(0).await;
    let output = migrate(&history, &url, &["--load", "insert"]);
    let (stdout, stderr) = text_of(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_verified(&stdout, 1, history.n_messages, history.n_messages);

    let client = connect(&url).await;
    client
        .execute(
            "UPDATE messages SET text = '你好，我想换货' WHERE conversation_id = $1 AND seq = 1",
            &[&(history.conversation_id as i64)],
        )
        .await
        .unwrap();
    let output = migrate(&history, &url, &["--verify-only"]);
    let (stdout, stderr) = text_of(&output);
    assert!(!output.status.success(), "{stdout}");
    let n = history.n_messages.to_string();
    assert_eq!(verification_line(&stdout, "messages"), ["messages", &n, &n, "NO"], "{stdout}");
    assert_eq!(verification_line(&stdout, "conversations")[3], "yes");
    assert!(stderr.contains("differs from the data directory in: messages"), "{stderr}");

    // A row PostgreSQL has and redb has not is a difference too.
    client
        .execute(
            "UPDATE messages SET text = $2 WHERE conversation_id = $1 AND seq = 1",
            &[&(history.conversation_id as i64), &FIRST_TEXT],
        )
        .await
        .unwrap();
    assert!(migrate(&history, &url, &["--verify-only"]).status.success(), "restored, it verifies again");
    client.execute("DELETE FROM client_ids WHERE client_id = 'a-1'", &[]).await.unwrap();
    let output = migrate(&history, &url, &["--verify-only"]);
    let (stdout, _) = text_of(&output);
    assert!(!output.status.success());
    let n_less = (history.n_messages - 1).to_string();
    assert_eq!(verification_line(&stdout, "client_ids"), ["client_ids", &n, &n_less, "NO"], "{stdout}");

    // So are an upload's stored bytes changed, and a record changed inside its JSON.
    client.execute("UPDATE upload_chunks SET bytes = 'receipt!'::bytea", &[]).await.unwrap();
    client
        .execute(
            "UPDATE sites SET record = jsonb_set(record, '{name}', '\"改名的店\"') WHERE record->>'name' = $1",
            &[&SITE_NAME],
        )
        .await
        .unwrap();
    let output = migrate(&history, &url, &["--verify-only"]);
    let (stdout, stderr) = text_of(&output);
    assert_eq!(verification_line(&stdout, "sites"), ["sites", "2", "2", "NO"], "{stdout}");
    assert_eq!(verification_line(&stdout, "uploads"), ["uploads", "1", "1", "NO"], "{stdout}");
    assert!(stderr.contains("differs from the data directory in: client_ids, sites, uploads"), "{stderr}");

    // In a Chinese locale the table speaks Chinese.
    let output = migrate_command(&history, &url, &["--verify-only"]).env("LANG", "zh_CN.UTF-8").output().unwrap();
    let (stdout, stderr) = text_of(&output);
    assert!(stdout.contains("校验和一致") && stdout.contains("表"), "{stdout}");
    assert!(stderr.contains("不一致的表：client_ids"), "{stderr}");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let Some(url) = database("migration_refusals").await else { return };
    let client = connect(&url).await;
    let untouched = || async {
        let exists: bool = client.query_one("SELECT to_regclass('conversations') IS NULL", &[]).await.unwrap().get(0);
        assert!(exists, "the target is still empty");
    };

    // A data directory that is missing, or held by a running kefu.
    let output = Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["migrate-to-postgres", "--from", "/nonexistent/kefu-data", "--to", &url])
        .output()
        .unwrap();
    let (_, stderr) = text_of(&output);
    assert!(!output.status.success() && stderr.contains("there is no kefu database at"), "{stderr}");
    let running = TestServer::start().await;
    let output = Command::new(env!("CARGO_BIN_EXE_kefu"))
        .arg("migrate-to-postgres")
        .arg("--from")
        .arg(running.dir.path())
        .args(["--to", &url])
        .output()
        .unwrap();
    let (_, stderr) = text_of(&output);
    assert!(!output.status.success() && stderr.contains("a running kefu holds"), "{stderr}");
    drop(running);
    untouched().await;

    // A target holding data this copy did not write (a node's message, and the epoch the node
    // made): refused, and left as it was.
    let history = appliance_with_history(0).await;
    let store = PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap();
    store
        .append(NewMessage::text(
            Target::VisitorInbox { site: "other".into(), visitor_id: 5 },
            visitor(5),
            "c-1".into(),
            "a cluster's own message".into(),
        ))
        .await
        .unwrap();
    drop(store);
    let output = migrate(&history, &url, &[]);
    let (_, stderr) = text_of(&output);
    assert!(
        !output.status.success()
            && stderr.contains("did not write (conversations: 1, messages: 1, client_ids: 1, appliance_meta: 1)"),
        "{stderr}"
    );
    assert_eq!((count(&client, "conversations").await, count(&client, "messages").await), (1, 1));
    assert_eq!(count(&client, "redb_copy_progress").await, 0);

    // A copy of another data directory is not continued from this one.
    let Some(second_url) = database("migration_other_source").await else { return };
    assert!(migrate(&history, &second_url, &[]).status.success());
    let other = appliance_with_history(0).await;
    let output = migrate(&other, &second_url, &[]);
    let (_, stderr) = text_of(&output);
    assert!(!output.status.success() && stderr.contains("a copy of another data directory"), "{stderr}");

    // A newer schema than this kefu knows.
    let second = connect(&second_url).await;
    second.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')", &[]).await.unwrap();
    let output = migrate(&history, &second_url, &[]);
    let (_, stderr) = text_of(&output);
    assert!(!output.status.success() && stderr.contains("newer than this kefu knows"), "{stderr}");
    let output = migrate(&history, &second_url, &["--verify-only"]);
    let (_, stderr) = text_of(&output);
    assert!(!output.status.success() && stderr.contains("newer than this kefu knows"), "{stderr}");
}

#[tokio::test]
async fn a_killed_appliance_is_refused_until_its_commit_log_is_applied() {
    let Some(url) = database("migration_killed_appliance").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let site = crash::admin(dir.path(), &["create-site", "--name", "Shop", "--origin", "*"]).await["site_key"].clone();
    let (mut child, address) = crash::serve(dir.path()).await;
    let session = crash::visitor_session(&address, &site, None).await;
    let mut socket = crash::visitor_socket(&address, &site, session["token"].as_str().unwrap()).await;
    let n_sent = 20;
    for n in 0..n_sent {
        socket.send(crash::send_frame(0, n)).await.unwrap();
    }
    let mut n_acked = 0;
    while n_acked < n_sent {
        let Some(Ok(Message::Text(text))) = socket.next().await else { panic!("the socket closed") };
        n_acked += usize::from(serde_json::from_str::<Value>(&text).unwrap()["type"] == "ack");
    }
    // Killed right after its acknowledgements: they are in its commit log, not yet in redb.
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let copy = || {
        Command::new(env!("CARGO_BIN_EXE_kefu"))
            .arg("migrate-to-postgres")
            .arg("--from")
            .arg(dir.path())
            .args(["--to", &url])
            .output()
            .unwrap()
    };
    let output = copy();
    let (_, stderr) = text_of(&output);
    assert!(
        !output.status.success()
            && (stderr.contains("not yet in the database") || stderr.contains("not closed cleanly")),
        "{stderr}"
    );
    let client = connect(&url).await;
    let empty: bool = client.query_one("SELECT to_regclass('conversations') IS NULL", &[]).await.unwrap().get(0);
    assert!(empty, "nothing was written to the target");

    // `kefu check` applies the log; then every acknowledged message is copied.
    let checked =
        Command::new(env!("CARGO_BIN_EXE_kefu")).arg("check").arg("--data-dir").arg(dir.path()).output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let output = copy();
    let (stdout, stderr) = text_of(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_verified(&stdout, 1, n_sent as u64, n_sent as u64);
}

#[tokio::test]
async fn a_text_postgresql_cannot_store_stops_the_copy_before_its_first_write() {
    let Some(url) = database("migration_nul").await else { return };
    let mut server = TestServer::start().await;
    server
        .store()
        .write(|context| {
            let sender = SenderView { kind: SenderKind::Visitor, id: 9, name: "v".into() };
            let inbox = Target::VisitorInbox { site: "shop".into(), visitor_id: 9 };
            messages::append(context, NewMessage::text(inbox, sender, "c-1".into(), "a\0b".into()))?.expect("stored");
            Ok(Ok::<(), kefu::storage::StorageError>(()))
        })
        .await
        .unwrap();
    server.stop().await;
    let output = Command::new(env!("CARGO_BIN_EXE_kefu"))
        .arg("migrate-to-postgres")
        .arg("--from")
        .arg(server.dir.path())
        .args(["--to", &url])
        .output()
        .unwrap();
    let (_, stderr) = text_of(&output);
    assert!(
        !output.status.success() && stderr.contains("(conversation 1, seq 1) contains the character U+0000"),
        "{stderr}"
    );
    let client = connect(&url).await;
    let empty: bool = client.query_one("SELECT to_regclass('conversations') IS NULL", &[]).await.unwrap().get(0);
    assert!(empty, "nothing was written to the target");
}

#[tokio::test]
async fn an_upload_whose_file_is_gone_is_copied_without_bytes() {
    let Some(url) = database("migration_missing_file").await else { return };
    let history = appliance_with_history(0).await;
    std::fs::remove_file(kefu::chat::uploads::path_of(history.server.dir.path(), &history.attachment_id)).unwrap();
    let output = migrate(&history, &url, &[]);
    let (stdout, stderr) = text_of(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(verification_line(&stdout, "uploads"), ["uploads", "1", "1", "yes"], "{stdout}");
    let client = connect(&url).await;
    let content: Option<i64> = client
        .query_one("SELECT content_id FROM uploads WHERE id = $1", &[&history.attachment_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!((content, count(&client, "upload_chunks").await), (None, 0), "the record, without bytes");
}

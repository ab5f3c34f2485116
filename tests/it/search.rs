//! Full-text search, export and retention: CJK and English queries, filters, access, cursor
//! paging, catch-up of the index, export order and escaping, and retention of day shards.

use kefu::base::clock::{self, MILLIS_PER_DAY};
use kefu::base::config::Config;
use kefu::chat::conversation_store::ConversationStore;
use kefu::chat::conversations::AssignWhen;
use kefu::chat::messages::{self, NewMessage, Target};
use kefu::cli::history;
use kefu::net::control::HistoryCommand;
use kefu::protocol::{SenderKind, SenderView};
use kefu::sites::{self, Site};
use kefu::storage::Store;
use serde_json::Value;

use crate::support::{TestServer, http};

/// Stores messages for a new conversation of `visitor_id` on `site`, dated `at` (Unix ms),
/// through the writer with a given timestamp. Returns the conversation id.
pub async fn backdated(store: &Store, site: &str, visitor_id: u64, texts: &[&str], at: i64) -> u64 {
    let site = site.to_owned();
    let texts: Vec<String> = texts.iter().map(|text| (*text).to_owned()).collect();
    store
        .write(move |context| {
            let mut conversation_id = None;
            for (index, text) in texts.into_iter().enumerate() {
                let target = match conversation_id {
                    Some(id) => Target::Conversation(id),
                    None => Target::VisitorInbox { site: site.clone(), visitor_id },
                };
                let new_message = NewMessage::text(
                    target,
                    SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "v".into() },
                    format!("c{visitor_id}-{at}-{index}"),
                    text,
                );
                let appended = messages::append_at(context, new_message, at + index as i64)?
                    .map_err(|error| kefu::storage::StorageError::Corrupt(error.to_string()))?;
                conversation_id = Some(appended.conversation_id);
            }
            Ok(Ok::<u64, kefu::storage::StorageError>(conversation_id.expect("at least one message")))
        })
        .await
        .expect("storing backdated messages")
}

fn today() -> u32 {
    clock::day_of(clock::now_millis())
}

fn noon_of(day: u32) -> i64 {
    i64::from(day) * MILLIS_PER_DAY + MILLIS_PER_DAY / 2
}

/// Searches as `token`; returns (status, body).
async fn search(server: &TestServer, token: &str, query: &str) -> (u16, Value) {
    let response = http().get(server.url(&format!("/api/v1/search?{query}"))).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn hit_texts(body: &Value) -> Vec<String> {
    body["hits"].as_array().unwrap().iter().map(|hit| hit["text"].as_str().unwrap().to_owned()).collect()
}

fn q(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn caught_up(server: &TestServer) {
    server.index().wait_caught_up().await.expect("the index catches up");
}

#[tokio::test]
async fn chinese_and_english_words_are_found_with_a_snippet_and_position() {
    let server = TestServer::start().await;
    let site = server.create_site("shop").await;
    server.create_agent("a@x.test", &site, 5).await;
    let token = server.login("a@x.test").await;
    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &visitor_token).await;
    let first = visitor.say(None, "m1", "我要退款谢谢").await;
    visitor.say(first["conversation_id"].as_u64(), "m2", "Where is my ORDER, please?").await;
    caught_up(&server).await;

    let (status, body) = search(&server, &token, &format!("q={}", q("退款"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(hit_texts(&body), ["我要退款谢谢"]);
    let hit = &body["hits"][0];
    assert_eq!(hit["conversation_id"], first["conversation_id"]);
    assert_eq!(hit["seq"], first["seq"]);
    assert!(hit["snippet"].as_str().unwrap().contains("<b>"), "{hit}");

    for (query, expected) in [
        ("order", vec!["Where is my ORDER, please?"]),
        ("ORDER please", vec!["Where is my ORDER, please?"]),
        ("退款谢谢", vec!["我要退款谢谢"]),
        ("要退款", vec!["我要退款谢谢"]),
        ("发货", vec![]),
        ("refund", vec![]),
    ] {
        let (status, body) = search(&server, &token, &format!("q={}", q(query))).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(hit_texts(&body), expected, "{query}");
    }
}

#[tokio::test]
async fn filters_and_access_keep_agents_to_their_sites() {
    let server = TestServer::start().await;
    let site_a = server.create_site("a").await;
    let site_b = server.create_site("b").await;
    let agent_a = server.create_agent("a@x.test", &site_a, 5).await;
    server.create_agent("b@x.test", &site_b, 5).await;
    let token_a = server.login("a@x.test").await;
    let admin = server.admin_token("boss@x.test").await;
    let store = server.store().clone();
    let yesterday = today() - 1;
    let conversation_a1 = backdated(&store, &site_a.key, 1, &["refund one"], noon_of(yesterday)).await;
    let conversation_a2 = backdated(&store, &site_a.key, 2, &["refund two"], noon_of(today())).await;
    backdated(&store, &site_b.key, 3, &["refund three"], noon_of(today())).await;
    ConversationStore::assign(&store, conversation_a1, agent_a, AssignWhen::Queued).await.unwrap();
    ConversationStore::close(&store, conversation_a2).await.unwrap();
    caught_up(&server).await;

    let check = |token: &'static str, query: String, expected: &'static [&'static str]| {
        let server = &server;
        let token = if token == "agent" { token_a.clone() } else { admin.clone() };
        async move {
            let (status, body) = search(server, &token, &format!("q=refund&{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            let mut texts = hit_texts(&body);
            texts.sort();
            assert_eq!(texts, expected, "{query}");
        }
    };
    check("agent", String::new(), &["refund one", "refund two"]).await;
    check("admin", String::new(), &["refund one", "refund three", "refund two"]).await;
    check("admin", format!("site={}", site_b.key), &["refund three"]).await;
    check("agent", "visitor=2".into(), &["refund two"]).await;
    check("agent", format!("agent={agent_a}"), &["refund one"]).await;
    check("agent", "state=closed".into(), &["refund two"]).await;
    check("agent", "state=assigned".into(), &["refund one"]).await;
    let date = clock::day_to_date(yesterday);
    check("agent", format!("from={date}&to={date}"), &["refund one"]).await;
    check("agent", format!("from={}", clock::day_to_date(today())), &["refund two"]).await;

    // An agent never sees another site's results, even when asking for them.
    let (status, _) = search(&server, &token_a, &format!("q=refund&site={}", site_b.key)).await;
    assert_eq!(status, 403);
    let (_, visitor_token) = server.visitor_session(&site_a, None).await;
    let (status, _) = search(&server, &visitor_token, "q=refund").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn malformed_searches_get_422_and_pages_follow_the_cursor() {
    let server = TestServer::start().await;
    let site = server.create_site("shop").await;
    server.create_agent("a@x.test", &site, 5).await;
    let token = server.login("a@x.test").await;
    let store = server.store().clone();
    for visitor_id in 1..=5 {
        backdated(&store, &site.key, visitor_id, &[&format!("parcel number {visitor_id}")], noon_of(today())).await;
    }
    caught_up(&server).await;

    for query in [
        "q=",
        "q=nosuchfield%3Aparcel",
        "q=parcel&limit=0",
        "q=parcel&limit=abc",
        "q=parcel&cursor=abc",
        "q=parcel&from=2026-13-01",
        "q=parcel&state=open",
        "q=parcel&agent=-1",
    ] {
        let (status, body) = search(&server, &token, query).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|message| !message.is_empty()), "{body}");
    }

    let mut seen = Vec::new();
    let mut cursor = String::new();
    for expected_len in [2, 2, 1] {
        let (status, body) = search(&server, &token, &format!("q=parcel&limit=2{cursor}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["hits"].as_array().unwrap().len(), expected_len, "{body}");
        seen.extend(hit_texts(&body));
        cursor = match body["next_cursor"].as_str() {
            Some(next) => format!("&cursor={next}"),
            None => String::new(),
        };
    }
    assert!(cursor.is_empty(), "the last page has no cursor");
    let expected: Vec<String> = (1..=5).rev().map(|id| format!("parcel number {id}")).collect();
    assert_eq!(seen, expected, "newest first, each once");
}

#[tokio::test]
async fn the_index_catches_up_after_it_is_deleted_or_behind_and_rebuilds_while_serving() {
    let mut server = TestServer::start().await;
    let site = server.create_site("shop").await;
    server.create_agent("a@x.test", &site, 5).await;
    let store = server.store().clone();
    backdated(&store, &site.key, 1, &["lighthouse alpha", "lighthouse beta"], noon_of(today())).await;
    caught_up(&server).await;
    drop(store);

    // Deleted: the restarted server rebuilds it from redb.
    server.stop().await;
    std::fs::remove_dir_all(server.dir.path().join("index")).unwrap();
    server.restart().await;
    caught_up(&server).await;
    let token = server.login("a@x.test").await;
    let (_, body) = search(&server, &token, "q=lighthouse").await;
    assert_eq!(hit_texts(&body).len(), 2, "{body}");

    // Behind: messages written while no indexer ran.
    server.stop().await;
    let config = crate::support::test_config(server.dir.path());
    let offline = Store::open(&config.data_dir, &config.storage, kefu::server::writer_hooks(None)).unwrap();
    backdated(&offline, &site.key, 2, &["lighthouse gamma"], noon_of(today())).await;
    offline.shutdown().await;
    drop(offline);
    server.restart().await;
    caught_up(&server).await;
    let token = server.login("a@x.test").await;
    let (_, body) = search(&server, &token, "q=lighthouse").await;
    assert_eq!(hit_texts(&body), ["lighthouse gamma", "lighthouse beta", "lighthouse alpha"]);

    // Of another schema (an older version's, which stored the messages' fields): rebuilt too.
    server.stop().await;
    let index_dir = server.dir.path().join("index");
    std::fs::remove_dir_all(&index_dir).unwrap();
    std::fs::create_dir_all(&index_dir).unwrap();
    let mut old_schema = tantivy::schema::Schema::builder();
    old_schema.add_text_field("text", tantivy::schema::TEXT | tantivy::schema::STORED);
    let directory = tantivy::directory::MmapDirectory::open(&index_dir).unwrap();
    tantivy::Index::create(directory, old_schema.build(), tantivy::IndexSettings::default()).unwrap();
    server.restart().await;
    caught_up(&server).await;
    let token = server.login("a@x.test").await;
    let (_, body) = search(&server, &token, "q=lighthouse").await;
    assert_eq!(hit_texts(&body), ["lighthouse gamma", "lighthouse beta", "lighthouse alpha"]);

    // Rebuilt through the control socket while the server runs.
    let config = server_config(&server);
    let report = history::run_cli(&config, HistoryCommand::Reindex, Box::new(std::io::sink())).await.unwrap();
    assert_eq!(report["messages"], 3, "{report}");
    let (_, body) = search(&server, &token, "q=lighthouse").await;
    assert_eq!(hit_texts(&body).len(), 3);
}

fn server_config(server: &TestServer) -> Config {
    crate::support::test_config(server.dir.path())
}

/// Messages with text that needs CSV quoting, on three days and two sites.
async fn export_fixture(server: &TestServer) -> (Site, Site, u32) {
    let site_a = server.create_site("a").await;
    let site_b = server.create_site("b").await;
    let store = server.store().clone();
    let first = today() - 3;
    for offset in 0..3 {
        let at = noon_of(first + offset);
        backdated(&store, &site_a.key, 10 + u64::from(offset), &["plain", "comma, here", "say \"hi\""], at).await;
        backdated(&store, &site_b.key, 20 + u64::from(offset), &["line one\nline two", "退款"], at).await;
    }
    (site_a, site_b, first)
}

async fn export(server: &TestServer, token: &str, query: &str) -> (u16, Vec<u8>) {
    let response = http().get(server.url(&format!("/api/v1/export?{query}"))).bearer_auth(token).send().await.unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

/// (date, conversation id, seq, site, text) of each CSV row.
fn csv_rows(bytes: &[u8]) -> Vec<(String, u64, u64, String, String)> {
    let mut reader = csv::Reader::from_reader(bytes);
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "date");
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            (
                record[0].to_owned(),
                record[1].parse().unwrap(),
                record[2].parse().unwrap(),
                record[3].to_owned(),
                record[11].to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn export_streams_every_message_in_range_once_in_order_with_csv_escaping() {
    let server = TestServer::start().await;
    let (site_a, site_b, first) = export_fixture(&server).await;
    let admin = server.admin_token("boss@x.test").await;
    server.create_agent("a@x.test", &site_a, 5).await;
    let token_a = server.login("a@x.test").await;
    let (from, to) = (clock::day_to_date(first), clock::day_to_date(first + 1));

    let (status, bytes) = export(&server, &admin, &format!("from={from}&to={to}&format=csv")).await;
    assert_eq!(status, 200);
    assert!(!bytes.starts_with(kefu::history::export::UTF8_BOM));
    let rows = csv_rows(&bytes);
    assert_eq!(rows.len(), 10, "two days of five messages");
    let keys: Vec<(String, u64, u64)> = rows.iter().map(|row| (row.0.clone(), row.1, row.2)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "ordered by day, conversation, seq, each once");
    assert!(rows.iter().all(|row| row.0 == from || row.0 == to));
    let texts: Vec<&str> = rows[..5].iter().map(|row| row.4.as_str()).collect();
    assert_eq!(texts, ["plain", "comma, here", "say \"hi\"", "line one\nline two", "退款"]);

    let (_, bytes) = export(&server, &admin, &format!("from={from}&to={from}&format=csv&bom=true")).await;
    assert!(bytes.starts_with(kefu::history::export::UTF8_BOM));
    assert_eq!(csv_rows(&bytes[3..]).len(), 5);

    let (_, bytes) = export(&server, &admin, &format!("from={from}&to={to}&format=jsonl&site={}", site_b.key)).await;
    let lines: Vec<Value> =
        String::from_utf8(bytes).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["text"], "line one\nline two");
    assert!(lines.iter().all(|line| line["site"] == site_b.key.as_str()));

    // An agent exports only their sites.
    let (status, bytes) = export(&server, &token_a, &format!("from={from}&to={to}")).await;
    assert_eq!(status, 200);
    assert!(csv_rows(&bytes).iter().all(|row| row.3 == site_a.key), "only site a");
    assert_eq!(csv_rows(&bytes).len(), 6);
    let (status, _) = export(&server, &token_a, &format!("from={from}&to={to}&site={}", site_b.key)).await;
    assert_eq!(status, 403);

    for query in [
        "from=2026-01-01",
        "from=yesterday&to=2026-01-01",
        &format!("from={to}&to={from}"),
        &format!("from={from}&to={to}&format=xml"),
    ] {
        let (status, body) = export(&server, &admin, query).await;
        assert_eq!(status, 422, "{query}: {}", String::from_utf8_lossy(&body));
    }

    // The CLI streams it through the control socket while the server runs.
    let output = server.dir.path().join("out.jsonl");
    let request = kefu::history::export::ExportRequest {
        from_day: first,
        to_day: first + 2,
        site: None,
        agent: None,
        visible_sites: None,
        format: kefu::history::export::ExportFormat::Jsonl,
        bom: false,
    };
    let file = std::fs::File::create(&output).unwrap();
    history::run_cli(&server_config(&server), HistoryCommand::Export(request), Box::new(file)).await.unwrap();
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 15);
}

#[tokio::test]
async fn retention_drops_exactly_the_expired_shards_and_rows() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    let site_a = server.create_site("short").await;
    let site_b = server.create_site("long").await;
    for (site, days) in [(&site_a, 10), (&site_b, 30)] {
        let mut site: Site = site.clone();
        site.retention_days = Some(days);
        sites::save(&store, site).await.unwrap();
    }
    let today = today();
    let (old, middle, recent) = (today - 40, today - 20, today - 5);
    for (index, day) in [old, middle, recent].into_iter().enumerate() {
        backdated(&store, &site_a.key, 100 + index as u64, &["expiring harbor a"], noon_of(day)).await;
        backdated(&store, &site_b.key, 200 + index as u64, &["expiring harbor b"], noon_of(day)).await;
    }
    caught_up(&server).await;
    let search = server.index().clone();

    // The bootstrap site keeps history forever, so no shard goes whole.
    let plan = kefu::history::retention::run(&store, &search, true).await.unwrap();
    assert!(plan.drop_days.is_empty(), "{plan:?}");
    let mut site_days: Vec<(String, String)> =
        plan.site_days.iter().map(|drop| (drop.date.clone(), drop.site.clone())).collect();
    site_days.sort();
    let date = clock::day_to_date;
    let mut expected =
        vec![(date(old), site_a.key.clone()), (date(old), site_b.key.clone()), (date(middle), site_a.key.clone())];
    expected.sort();
    assert_eq!(site_days, expected, "{plan:?}");

    // Once every site has a retention, the oldest shard goes whole; the dry run changed nothing.
    for mut site in store.read(sites::list).await.unwrap() {
        if site.retention_days.is_none() {
            site.retention_days = Some(10);
            sites::save(&store, site).await.unwrap();
        }
    }
    let plan = kefu::history::retention::run(&store, &search, true).await.unwrap();
    assert_eq!(plan.drop_days.iter().map(|drop| drop.date.clone()).collect::<Vec<_>>(), [date(old)]);
    assert_eq!(plan.site_days.len(), 1);
    assert_eq!(
        (plan.site_days[0].site.as_str(), plan.site_days[0].date.as_str()),
        (site_a.key.as_str(), date(middle).as_str())
    );
    assert_eq!(plan.messages, 3);
    assert_eq!(store.read(messages::shard_days).await.unwrap(), [old, middle, recent]);

    // Visitors' verdicts on bot answers of those days go with them.
    let verdicts = [(1, &site_a, old), (2, &site_a, middle), (3, &site_a, recent), (4, &site_b, middle)];
    for (seq, site, day) in verdicts {
        let feedback = kefu::bot::feedback::Feedback {
            site: site.key.clone(),
            conversation_id: 999,
            seq,
            helpful: false,
            source: "kb".into(),
            entry_id: None,
            question: "q".into(),
            answer: "a".into(),
            answered_at: noon_of(day),
            created_at: noon_of(today),
        };
        store
            .write(move |context| {
                let mut table = context.transaction.open_table(kefu::storage::tables::BOT_FEEDBACK)?;
                table.insert((999, seq), serde_json::to_vec(&feedback).unwrap().as_slice())?;
                Ok(Ok::<(), kefu::storage::StorageError>(()))
            })
            .await
            .unwrap();
    }

    let plan = kefu::history::retention::run(&store, &search, false).await.unwrap();
    assert_eq!(plan.messages, 3);
    assert_eq!(store.read(messages::shard_days).await.unwrap(), [middle, recent]);
    let kept: Vec<u64> = store
        .read(|transaction| {
            let table = transaction.open_table(kefu::storage::tables::BOT_FEEDBACK)?;
            let mut kept = Vec::new();
            for row in redb::ReadableTable::iter(&table)? {
                kept.push(row?.0.value().1);
            }
            Ok(kept)
        })
        .await
        .unwrap();
    assert_eq!(kept, [3, 4], "verdicts on removed answers are removed");

    let admin = server.admin_token("boss@x.test").await;
    let (_, body) = search_all(&server, &admin).await;
    let mut texts = hit_texts(&body);
    texts.sort();
    assert_eq!(texts, ["expiring harbor a", "expiring harbor b", "expiring harbor b"], "{body}");
    let (_, bytes) = export(&server, &admin, &format!("from={}&to={}", date(old), date(today))).await;
    let rows = csv_rows(&bytes);
    let kept: Vec<(String, String)> = rows.iter().map(|row| (row.0.clone(), row.3.clone())).collect();
    assert_eq!(
        kept,
        [(date(middle), site_b.key.clone()), (date(recent), site_a.key.clone()), (date(recent), site_b.key.clone()),]
    );
    // The removed messages' conversation days are gone too.
    let n_days = store
        .read(|transaction| {
            let table = transaction.open_table(kefu::storage::tables::CONVERSATION_DAYS)?;
            Ok(redb::ReadableTableMetadata::len(&table)?)
        })
        .await
        .unwrap();
    assert_eq!(n_days, 3);
}

async fn search_all(server: &TestServer, token: &str) -> (u16, Value) {
    search(server, token, "q=harbor&limit=100").await
}

#[tokio::test]
async fn pages_stay_newest_first_across_index_segments() {
    let server = TestServer::start().await;
    let site = server.create_site("shop").await;
    let admin = server.admin_token("boss@x.test").await;
    let store = server.store().clone();
    // Four index commits, so four segments, the older ones later merged or not.
    for batch in 0..4_u64 {
        for visitor_id in 1..=4 {
            let number = batch * 4 + visitor_id;
            let text = format!("lantern {number}");
            backdated(&store, &site.key, 10 * batch + visitor_id, &[&text, "no match here"], noon_of(today())).await;
        }
        caught_up(&server).await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, body) = search(&server, &admin, &format!("q=lantern&limit=3{cursor}")).await;
        assert_eq!(status, 200, "{body}");
        seen.extend(hit_texts(&body));
        cursor = match body["next_cursor"].as_str() {
            Some(next) => format!("&cursor={next}"),
            None => break,
        };
    }
    let expected: Vec<String> = (1..=16).rev().map(|number| format!("lantern {number}")).collect();
    assert_eq!(seen, expected, "newest first, each once");
    let (_, body) = search(&server, &admin, "q=lantern&limit=5").await;
    assert_eq!(hit_texts(&body), expected[..5]);
}

#[tokio::test]
async fn a_message_is_searchable_within_the_commit_delay_and_removed_messages_are_not_hits() {
    let server = TestServer::start().await;
    let site = server.create_site("shop").await;
    let admin = server.admin_token("boss@x.test").await;
    let store = server.store().clone();
    caught_up(&server).await;
    let stored = std::time::Instant::now();
    let conversation_id = backdated(&store, &site.key, 1, &["marigold seeds"], clock::now_millis()).await;
    // The bound of README.md and docs/protocol.md, plus the polling and a slow debug build.
    let bound = kefu::search::indexer::COMMIT_DELAY + std::time::Duration::from_secs(2);
    loop {
        let (status, body) = search(&server, &admin, "q=marigold").await;
        assert_eq!(status, 200, "{body}");
        if hit_texts(&body) == ["marigold seeds"] {
            assert_eq!(body["hits"][0]["conversation_id"], conversation_id);
            assert_eq!(body["hits"][0]["site"], site.key.as_str());
            assert_eq!(body["hits"][0]["visitor_id"], 1);
            assert_eq!(body["hits"][0]["sender_kind"], "visitor");
            assert_eq!(body["hits"][0]["sender_name"], "v");
            assert_eq!(body["hits"][0]["internal"], false);
            assert_eq!(body["hits"][0]["snippet"], "<b>marigold</b> seeds");
            break;
        }
        assert!(stored.elapsed() < bound, "not searchable after {:?}: {body}", stored.elapsed());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The index points into redb: a message gone from redb is no hit, even while its document
    // is still in the index.
    store
        .write(move |context| {
            Ok(Ok::<u64, kefu::storage::StorageError>(messages::erase_conversation(context, conversation_id)?))
        })
        .await
        .unwrap();
    let (status, body) = search(&server, &admin, "q=marigold").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(hit_texts(&body), Vec::<String>::new(), "{body}");
}

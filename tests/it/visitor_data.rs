//! One visitor's data: an admin exports it as one archive or erases it; after an erasure
//! search, the export and a backup no longer hold what the visitor wrote, and the audit log
//! records the erasure without it. Agents, visitors and other sites' tokens get 403.

use std::io::Read;

use serde_json::{Value, json};

use crate::api::make_token;
use crate::crash::kefu;
use crate::support::{TestServer, call_expecting, http};

/// What the visitor writes, found (or not) everywhere afterwards.
const SECRET: &str = "zebra-quartz 斑马石英";
const FILE_BYTES: &[u8] = b"invoice zebra-quartz attachment";

/// The archive's files: (path, bytes).
fn files_of(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut reader = tar::Archive::new(archive);
    let mut files = Vec::new();
    for entry in reader.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.push((path, bytes));
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

async fn search_hits(server: &TestServer, token: &str) -> usize {
    server.index().wait_caught_up().await.unwrap();
    let found = call_expecting(server, "GET", "/api/v1/search?q=zebra", token, None, 200).await;
    found["hits"].as_array().unwrap().len()
}

#[tokio::test]
async fn an_admin_exports_then_erases_a_visitor_and_nothing_of_theirs_stays_searchable_exported_or_backed_up() {
    let server = TestServer::start().await;
    let shop = server.create_site("Shop").await;
    let admin = server.admin_token("root@kefu.example").await;
    let hook = json!({"url": "https://crm.example/hook", "events": ["message.created", "offline_message.received"]});
    call_expecting(&server, "POST", &format!("/api/v1/sites/{}/webhooks", shop.key), &admin, Some(hook), 201).await;

    // The visitor writes, attaches a file, and leaves an offline message.
    let (visitor_id, visitor_token) = server.visitor_session(&shop, None).await;
    let mut visitor = server.visitor(&shop, &visitor_token).await;
    let ack = visitor.say(None, "v-1", &format!("my code is {SECRET}")).await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();
    let upload = http()
        .post(server.url(&format!("/api/v1/uploads?conversation_id={conversation_id}&name=invoice.txt")))
        .bearer_auth(&visitor_token)
        .body(FILE_BYTES.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    let upload: Value = upload.json().await.unwrap();
    visitor.send(json!({"type": "send", "client_id": "v-2", "text": "", "attachment_id": upload["id"]})).await;
    visitor.expect("ack").await;
    let offline = json!({"name": "Zoe", "email": "zoe@example.com", "text": format!("call me about {SECRET}")});
    call_expecting(&server, "POST", "/api/v1/visitor/offline-messages", &visitor_token, Some(offline), 201).await;
    assert_eq!(search_hits(&server, &admin).await, 2);

    // The export holds the profile, the messages, the offline message, the lead and the file.
    let path = format!("/api/v1/visitors/{visitor_id}/data");
    let response = http().get(server.url(&path)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-tar");
    let files = files_of(&response.bytes().await.unwrap());
    let (_, json_bytes) = files.iter().find(|(name, _)| name == "visitor.json").expect("visitor.json");
    let data: Value = serde_json::from_slice(json_bytes).unwrap();
    assert_eq!(data["visitor"]["id"], visitor_id);
    let texts: Vec<&str> =
        data["conversations"][0]["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert!(texts.contains(&format!("my code is {SECRET}").as_str()), "{texts:?}");
    assert_eq!(data["offline_messages"][0]["email"], "zoe@example.com");
    assert_eq!(data["leads"][0]["source"], "offline_message");
    assert_eq!(data["attachments"][0]["name"], "invoice.txt");
    let attachment = format!("attachments/{}", upload["id"].as_str().unwrap());
    assert_eq!(files.iter().find(|(name, _)| *name == attachment).map(|(_, bytes)| bytes.as_slice()), Some(FILE_BYTES));

    let erased = call_expecting(&server, "DELETE", &path, &admin, None, 200).await;
    assert_eq!(erased["visitor_id"], visitor_id);
    assert_eq!(erased["conversations"], 1);
    assert_eq!(erased["messages"], 3);
    assert_eq!(erased["attachments"], 1);
    assert_eq!(erased["offline_messages"], 1);
    assert_eq!(erased["leads"], 1);
    assert!(erased["webhook_deliveries"].as_u64().unwrap() >= 3, "{erased}");
    assert_eq!(visitor.expect_close().await, 4001, "the visitor's connection ends");

    // Gone from search, the export, the API, the disk and the outbox; the audit log has counts only.
    assert_eq!(search_hits(&server, &admin).await, 0);
    call_expecting(&server, "GET", &path, &admin, None, 404).await;
    call_expecting(&server, "GET", &format!("/api/v1/conversations/{conversation_id}/messages"), &admin, None, 404)
        .await;
    call_expecting(&server, "GET", "/api/v1/leads", &admin, None, 200).await["leads"]
        .as_array()
        .unwrap()
        .is_empty()
        .then_some(())
        .expect("no lead left");
    let upload_file = kefu::chat::uploads::path_of(server.dir.path(), upload["id"].as_str().unwrap());
    assert!(!upload_file.exists(), "the attachment's file is removed");
    let (status, _) = crate::support::call(&server, "GET", "/api/v1/leads", &visitor_token, None).await;
    assert_eq!(status, 401, "the visitor's token is gone");
    let entries = server
        .store()
        .read(|transaction| {
            kefu::history::audit::search(
                transaction,
                &kefu::history::audit::AuditFilter { action: Some("visitor.erase".into()), ..Default::default() },
            )
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].target, format!("visitor #{visitor_id}"));
    assert!(entries[0].detail.contains("messages 3"), "{}", entries[0].detail);
    let entry_text = serde_json::to_string(&entries[0]).unwrap();
    assert!(!entry_text.contains("zebra") && !entry_text.contains("zoe@"), "{entry_text}");

    // The erasure committed durably, so the commit log keeps no copy either.
    let log = std::fs::read(kefu::storage::commit_log::log_path(server.dir.path())).unwrap_or_default();
    assert!(!contains(&log, "zebra-quartz".as_bytes()), "the commit log holds the erased text");

    // A backup taken now holds none of it.
    let backup_dir = tempfile::tempdir().unwrap();
    let backup_file = backup_dir.path().join("after-erasure.redb");
    let output = kefu()
        .args(["backup", backup_file.to_str().unwrap(), "--data-dir", server.dir.path().to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let bytes = std::fs::read(&backup_file).unwrap();
    assert!(bytes.len() > 4096, "a real database file");
    for needle in ["zebra-quartz".as_bytes(), "斑马石英".as_bytes(), b"zoe@example.com", FILE_BYTES] {
        assert!(!contains(&bytes, needle), "the backup holds {:?}", String::from_utf8_lossy(needle));
    }
}

#[tokio::test]
async fn only_admins_and_the_sites_tokens_reach_a_visitors_data_and_a_refusal_changes_nothing() {
    let server = TestServer::start().await;
    let shop = server.create_site("Shop").await;
    let other = server.create_site("Other").await;
    let admin = server.admin_token("root@kefu.example").await;
    server.create_agent("ann@shop.example", &shop, 5).await;
    let agent = server.login("ann@shop.example").await;
    let other_token = make_token(&server, &admin, &other, "Other CRM", false).await;
    let shop_reader = make_token(&server, &admin, &shop, "Shop reader", true).await;
    let (visitor_id, visitor_token) = server.visitor_session(&shop, None).await;
    let mut visitor = server.visitor(&shop, &visitor_token).await;
    let conversation_id = visitor.say(None, "v-1", "keep me").await["conversation_id"].as_u64().unwrap();
    let path = format!("/api/v1/visitors/{visitor_id}/data");

    for token in [&agent, &other_token, &visitor_token] {
        call_expecting(&server, "GET", &path, token, None, 403).await;
        call_expecting(&server, "DELETE", &path, token, None, 403).await;
    }
    call_expecting(&server, "DELETE", &path, &shop_reader, None, 403).await;
    call_expecting(&server, "GET", "/api/v1/visitors/999999/data", &admin, None, 404).await;
    call_expecting(&server, "DELETE", "/api/v1/visitors/999999/data", &admin, None, 404).await;

    let page = crate::support::history(&server, &admin, conversation_id).await;
    assert_eq!(page["messages"][0]["text"], "keep me", "nothing was erased");
    let response = http().get(server.url(&path)).bearer_auth(&shop_reader).send().await.unwrap();
    assert_eq!(response.status(), 200, "the site's read-only token may export");
}

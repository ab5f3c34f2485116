//! Anonymous disk filling: per-address and per-visitor budgets on new visitor sessions, uploads
//! (count and bytes) and offline messages answer 429 with `Retry-After` and the JSON error and
//! store nothing; another address is unaffected; the per-site upload quota; retention removes the
//! uploads of removed history; the sweep removes uploads no message attached.

use std::net::IpAddr;
use std::time::Duration;

use kefu::sites::Site;
use kefu::storage::{StorageError, tables};
use redb::{ReadableTable, ReadableTableMetadata};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, http};

/// A client whose connections come from `address` (any of 127.0.0.0/8 reaches the server).
fn client_from(address: &str) -> reqwest::Client {
    http();
    let address: IpAddr = address.parse().unwrap();
    reqwest::Client::builder().local_address(address).build().unwrap()
}

/// Checks a refusal: 429, a `Retry-After` of at least a second, the JSON error body.
async fn assert_rate_limited(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
}

async fn open_session(
    server: &TestServer,
    client: &reqwest::Client,
    site: &Site,
    token: Option<&str>,
) -> reqwest::Response {
    client
        .post(server.url("/api/v1/visitor/session"))
        .json(&json!({"site": site.key, "token": token}))
        .send()
        .await
        .unwrap()
}

/// A new visitor's token, from `address`.
async fn visitor_token(server: &TestServer, address: &str, site: &Site) -> String {
    let response = open_session(server, &client_from(address), site, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

async fn upload(server: &TestServer, address: &str, token: &str, n_bytes: usize) -> reqwest::Response {
    client_from(address)
        .post(server.url("/api/v1/uploads?name=notes.txt"))
        .bearer_auth(token)
        .body("x".repeat(n_bytes))
        .send()
        .await
        .unwrap()
}

async fn offline_message(server: &TestServer, address: &str, token: &str) -> reqwest::Response {
    client_from(address)
        .post(server.url("/api/v1/visitor/offline-messages"))
        .bearer_auth(token)
        .json(&json!({"email": "v@shop.example", "text": "call me back"}))
        .send()
        .await
        .unwrap()
}

async fn n_rows(server: &TestServer, table: &'static str) -> u64 {
    server
        .store()
        .read(move |transaction| match table {
            "visitors" => Ok(transaction.open_table(tables::VISITORS)?.len()?),
            "uploads" => Ok(transaction.open_table(tables::UPLOADS)?.len()?),
            _ => Ok(transaction.open_table(tables::OFFLINE_MESSAGES)?.len()?),
        })
        .await
        .unwrap()
}

fn n_upload_files(server: &TestServer) -> usize {
    std::fs::read_dir(server.dir.path().join(kefu::chat::uploads::UPLOADS_DIR))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn new_sessions_per_address_are_limited_and_resuming_a_token_is_not_counted() {
    let server = TestServer::start_with(|config| config.limits.visitor_sessions_per_address_per_hour = 3).await;
    let site = server.create_site("Shop").await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(visitor_token(&server, "127.0.0.2", &site).await);
    }
    let n_visitors = n_rows(&server, "visitors").await;
    assert_rate_limited(open_session(&server, &client_from("127.0.0.2"), &site, None).await).await;
    assert_rate_limited(open_session(&server, &client_from("127.0.0.2"), &site, Some("v1.made-up")).await).await;
    assert_eq!(n_rows(&server, "visitors").await, n_visitors, "a refused session stores nothing");

    let resumed = open_session(&server, &client_from("127.0.0.2"), &site, Some(&tokens[0])).await;
    assert_eq!(resumed.status(), StatusCode::OK, "a visitor coming back is not a new session");
    visitor_token(&server, "127.0.0.3", &site).await;
}

#[tokio::test]
async fn uploads_per_visitor_are_limited_by_count() {
    let server = TestServer::start_with(|config| config.limits.uploads_per_visitor_per_hour = 2).await;
    let site = server.create_site("Shop").await;
    let token = visitor_token(&server, "127.0.0.2", &site).await;
    for _ in 0..2 {
        assert_eq!(upload(&server, "127.0.0.2", &token, 100).await.status(), StatusCode::CREATED);
    }
    assert_rate_limited(upload(&server, "127.0.0.3", &token, 100).await).await;
    assert_eq!(
        (n_rows(&server, "uploads").await, n_upload_files(&server)),
        (2, 2),
        "the refused upload stored nothing"
    );
    let other = visitor_token(&server, "127.0.0.3", &site).await;
    assert_eq!(upload(&server, "127.0.0.3", &other, 100).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn uploads_per_visitor_are_limited_by_bytes() {
    let server = TestServer::start_with(|config| config.limits.upload_bytes_per_visitor_per_hour = 3000).await;
    let site = server.create_site("Shop").await;
    let token = visitor_token(&server, "127.0.0.2", &site).await;
    assert_eq!(upload(&server, "127.0.0.2", &token, 2000).await.status(), StatusCode::CREATED);
    assert_rate_limited(upload(&server, "127.0.0.2", &token, 2000).await).await;
    assert_eq!((n_rows(&server, "uploads").await, n_upload_files(&server)), (1, 1));
    assert_eq!(upload(&server, "127.0.0.2", &token, 900).await.status(), StatusCode::CREATED, "what is left fits");
}

#[tokio::test]
async fn uploads_per_address_are_limited_across_visitors() {
    let server = TestServer::start_with(|config| config.limits.uploads_per_address_per_hour = 2).await;
    let site = server.create_site("Shop").await;
    for _ in 0..2 {
        let token = visitor_token(&server, "127.0.0.2", &site).await;
        assert_eq!(upload(&server, "127.0.0.2", &token, 100).await.status(), StatusCode::CREATED);
    }
    let third = visitor_token(&server, "127.0.0.2", &site).await;
    assert_rate_limited(upload(&server, "127.0.0.2", &third, 100).await).await;
    assert_eq!(n_rows(&server, "uploads").await, 2);
    assert_eq!(upload(&server, "127.0.0.3", &third, 100).await.status(), StatusCode::CREATED, "another address");
}

#[tokio::test]
async fn offline_messages_are_limited_per_visitor_and_per_address() {
    let server = TestServer::start_with(|config| {
        config.limits.offline_messages_per_visitor_per_hour = 2;
        config.limits.offline_messages_per_address_per_hour = 3;
    })
    .await;
    let site = server.create_site("Shop").await;
    let first = visitor_token(&server, "127.0.0.2", &site).await;
    for _ in 0..2 {
        assert_eq!(offline_message(&server, "127.0.0.2", &first).await.status(), StatusCode::CREATED);
    }
    // The third is over the visitor's budget (it spends the address's last one).
    assert_rate_limited(offline_message(&server, "127.0.0.2", &first).await).await;
    let second = visitor_token(&server, "127.0.0.2", &site).await;
    assert_rate_limited(offline_message(&server, "127.0.0.2", &second).await).await;
    assert_eq!(n_rows(&server, "offline").await, 2, "refused messages are not stored");
    assert_eq!(offline_message(&server, "127.0.0.3", &second).await.status(), StatusCode::CREATED, "another address");
    // Bad input is refused as such and spends nothing.
    let bad = client_from("127.0.0.4")
        .post(server.url("/api/v1/visitor/offline-messages"))
        .bearer_auth(&second)
        .json(&json!({"email": "nope", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_site_upload_quota_refuses_uploads_past_it() {
    let server = TestServer::start_with(|config| config.limits.upload_quota_bytes_per_site = 5000).await;
    let shop = server.create_site("Shop").await;
    let other = server.create_site("Other").await;
    let token = visitor_token(&server, "127.0.0.2", &shop).await;
    assert_eq!(upload(&server, "127.0.0.2", &token, 3000).await.status(), StatusCode::CREATED);
    let late = visitor_token(&server, "127.0.0.3", &shop).await;
    assert_rate_limited(upload(&server, "127.0.0.3", &late, 3000).await).await;
    assert_eq!((n_rows(&server, "uploads").await, n_upload_files(&server)), (1, 1));
    assert_eq!(upload(&server, "127.0.0.3", &late, 2000).await.status(), StatusCode::CREATED, "up to the quota");
    let elsewhere = visitor_token(&server, "127.0.0.2", &other).await;
    assert_eq!(upload(&server, "127.0.0.2", &elsewhere, 3000).await.status(), StatusCode::CREATED, "another site");
}

/// Makes an upload look `days` old.
async fn backdate_upload(server: &TestServer, id: &str, days: i64) {
    let id = id.to_owned();
    server
        .store()
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::UPLOADS)?;
            let mut upload: Value =
                serde_json::from_slice(table.get(id.as_str())?.expect("the upload").value()).unwrap();
            let created_at = upload["created_at"].as_i64().unwrap();
            upload["created_at"] = json!(created_at - days * kefu::base::clock::MILLIS_PER_DAY);
            table.insert(id.as_str(), serde_json::to_vec(&upload).unwrap().as_slice())?;
            Ok(Ok::<(), StorageError>(()))
        })
        .await
        .unwrap();
}

/// A visitor of `site` uploads a file and attaches it to a message; returns (token, upload id).
async fn attached_upload(server: &TestServer, site: &Site) -> (String, String) {
    let token = visitor_token(server, "127.0.0.1", site).await;
    let uploaded: Value = upload(server, "127.0.0.1", &token, 100).await.json().await.unwrap();
    let id = uploaded["id"].as_str().unwrap().to_owned();
    let mut visitor = server.visitor(site, &token).await;
    visitor.send(json!({"type": "send", "client_id": "file-1", "text": "", "attachment_id": id})).await;
    visitor.expect("ack").await;
    (token, id)
}

async fn fetch_status(server: &TestServer, token: &str, id: &str) -> StatusCode {
    http().get(server.url(&format!("/api/v1/uploads/{id}"))).bearer_auth(token).send().await.unwrap().status()
}

#[tokio::test]
async fn retention_removes_uploads_of_removed_history_and_the_sweep_removes_unattached_ones() {
    let server = TestServer::start().await;
    let mut short = server.create_site("Short").await;
    short.retention_days = Some(1);
    kefu::sites::save(server.store(), short.clone()).await.unwrap();
    let forever = server.create_site("Forever").await;
    let (short_token, short_upload) = attached_upload(&server, &short).await;
    let (forever_token, forever_upload) = attached_upload(&server, &forever).await;
    let loose_token = visitor_token(&server, "127.0.0.1", &short).await;
    let loose: Value = upload(&server, "127.0.0.1", &loose_token, 100).await.json().await.unwrap();
    let loose = loose["id"].as_str().unwrap().to_owned();
    let store = server.store();

    // Within the grace period nothing goes; past it only the upload no message attached.
    assert_eq!(kefu::chat::uploads::sweep_unattached(store, Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(kefu::chat::uploads::sweep_unattached(store, Duration::ZERO).await.unwrap(), 1);
    assert_eq!(fetch_status(&server, &loose_token, &loose).await, StatusCode::NOT_FOUND);
    assert!(!kefu::chat::uploads::path_of(store.data_dir(), &loose).exists());
    assert_eq!(fetch_status(&server, &short_token, &short_upload).await, StatusCode::OK);

    // Three days later retention has removed the short site's history, and its upload with it.
    backdate_upload(&server, &short_upload, 3).await;
    backdate_upload(&server, &forever_upload, 3).await;
    kefu::history::retention::run(store, server.index(), false).await.unwrap();
    assert_eq!(fetch_status(&server, &short_token, &short_upload).await, StatusCode::NOT_FOUND);
    assert!(!kefu::chat::uploads::path_of(store.data_dir(), &short_upload).exists());
    assert_eq!(fetch_status(&server, &forever_token, &forever_upload).await, StatusCode::OK, "kept forever");
    assert!(kefu::chat::uploads::path_of(store.data_dir(), &forever_upload).exists());
}

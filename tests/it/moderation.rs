//! The sensitive-word filter in the message pipeline.

use kefu::chat::sensitive_words::SensitiveMode;
use serde_json::json;

use crate::support::{TestServer, history, site_with_words};

#[tokio::test]
async fn listed_words_are_masked_before_storage() {
    let server = TestServer::start().await;
    let site = server.create_site_with(site_with_words("Shop", &["scam", "傻瓜"], SensitiveMode::Mask)).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let ack = visitor.say(None, "v-1", "this is a SCAM, 傻瓜").await;
    assert_eq!(ack["text"], "this is a ****, **");
    let page = history(&server, &token, ack["conversation_id"].as_u64().unwrap()).await;
    assert_eq!(page["messages"][0]["text"], "this is a ****, **");
}

#[tokio::test]
async fn listed_words_reject_the_message_when_configured() {
    let server = TestServer::start().await;
    let site = server.create_site_with(site_with_words("Shop", &["refund now"], SensitiveMode::Reject)).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let ack = visitor.say(None, "v-1", "hello").await;
    visitor.send(json!({"type": "send", "client_id": "v-2", "text": "I want a REFUND NOW"})).await;
    let error = visitor.expect_next("error").await;
    assert_eq!(error["code"], "rejected_content");
    assert_eq!(error["client_id"], "v-2");
    let page = history(&server, &token, ack["conversation_id"].as_u64().unwrap()).await;
    assert_eq!(page["last_seq"], 1, "nothing was stored");
}

//! What docs/protocol.md and the OpenAPI document promise, checked against the server: a
//! session request without a site, the history page limit (clamped to 200), the search cursor
//! (`null` on the last page) and the constraints the OpenAPI document carries.

use kefu::chat::messages::{self, NewMessage, Target};
use kefu::protocol::{SenderKind, SenderView};
use kefu::storage::{StorageError, Store};
use serde_json::{Value, json};

use crate::support::{TestServer, call_expecting, http};

/// Stores `n_messages` visitor messages in one new conversation of `visitor_id`; returns its id.
async fn conversation_with(store: &Store, site: &str, visitor_id: u64, n_messages: usize) -> u64 {
    let site = site.to_owned();
    store
        .write(move |context| {
            let mut conversation_id = None;
            for index in 0..n_messages {
                let target = match conversation_id {
                    Some(id) => Target::Conversation(id),
                    None => Target::VisitorInbox { site: site.clone(), visitor_id },
                };
                let sender = SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "v".into() };
                let new_message =
                    NewMessage::text(target, sender, format!("m-{index}"), format!("parcel message {index}"));
                let appended = messages::append(context, new_message)?
                    .map_err(|error| StorageError::Corrupt(error.to_string()))?;
                conversation_id = Some(appended.conversation_id);
            }
            Ok(Ok::<u64, StorageError>(conversation_id.expect("at least one message")))
        })
        .await
        .expect("storing messages")
}

#[tokio::test]
async fn a_session_request_without_a_site_gets_422_naming_it_and_an_unknown_site_404() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    for body in [json!({}), json!({"site": ""}), json!({"site": "   "}), json!({"token": "v1.x"})] {
        let response = http().post(server.url("/api/v1/visitor/session")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 422, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "invalid_field", "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with("site:"), "{answer}");
    }
    let response =
        http().post(server.url("/api/v1/visitor/session")).json(&json!({"site": "nosuchsite"})).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let (_, token) = server.visitor_session(&site, None).await;
    assert!(token.starts_with("v1."), "a named site still opens a session");
}

#[tokio::test]
async fn a_history_limit_over_200_is_read_as_200_and_zero_or_negative_is_422() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("a@x.test", &site, 5).await;
    let token = server.login("a@x.test").await;
    let conversation_id = conversation_with(server.store(), &site.key, 1, 230).await;
    let path = format!("/api/v1/conversations/{conversation_id}/messages");

    let page = call_expecting(&server, "GET", &format!("{path}?limit=500"), &token, None, 200).await;
    let seqs: Vec<u64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (31..=230).collect::<Vec<u64>>(), "the newest 200, oldest first");
    assert_eq!(page["next_before"], 31);
    let page = call_expecting(&server, "GET", &format!("{path}?limit=500&before=31"), &token, None, 200).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 30);
    assert_eq!(page["next_before"], Value::Null, "present and null at the start: {page}");
    let page = call_expecting(&server, "GET", &format!("{path}?limit=200"), &token, None, 200).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 200);

    for limit in ["0", "-1", "-500"] {
        let answer = call_expecting(&server, "GET", &format!("{path}?limit={limit}"), &token, None, 422).await;
        assert!(answer["error"]["message"].as_str().unwrap().starts_with("limit:"), "{answer}");
    }
}

#[tokio::test]
async fn the_search_cursor_is_a_string_and_null_on_the_last_page() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("a@x.test", &site, 5).await;
    let token = server.login("a@x.test").await;
    conversation_with(server.store(), &site.key, 1, 3).await;
    server.index().wait_caught_up().await.expect("the index catches up");

    let first = call_expecting(&server, "GET", "/api/v1/search?q=parcel&limit=2", &token, None, 200).await;
    let cursor = first["next_cursor"].as_str().expect("a string cursor while more hits follow");
    let last =
        call_expecting(&server, "GET", &format!("/api/v1/search?q=parcel&limit=2&cursor={cursor}"), &token, None, 200)
            .await;
    assert_eq!(last["hits"].as_array().unwrap().len(), 1);
    let object = last.as_object().unwrap();
    assert_eq!(object.get("next_cursor"), Some(&Value::Null), "present and null on the last page: {last}");
}

/// The schema of the query parameter `name` of `GET path`, and whether it is required.
fn query_parameter<'a>(document: &'a Value, path: &str, name: &str) -> (&'a Value, bool) {
    let parameters = document["paths"][path]["get"]["parameters"].as_array().expect("the operation has parameters");
    let parameter = parameters.iter().find(|parameter| parameter["name"] == name).expect("the parameter is documented");
    (&parameter["schema"], parameter["required"] == true)
}

#[tokio::test]
async fn the_openapi_document_carries_limits_required_fields_and_nullable_cursors() {
    let server = TestServer::start().await;
    let document: Value = http().get(server.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();

    let (limit, required) = query_parameter(&document, "/api/v1/conversations/{id}/messages", "limit");
    assert_eq!((limit["minimum"].as_u64(), limit["maximum"].as_u64(), required), (Some(1), Some(200), false));
    let (limit, _) = query_parameter(&document, "/api/v1/conversations", "limit");
    assert_eq!((limit["minimum"].as_u64(), limit["maximum"].as_u64()), (Some(1), Some(200)));
    let (limit, _) = query_parameter(&document, "/api/v1/search", "limit");
    assert_eq!((limit["minimum"].as_u64(), limit["maximum"].as_u64()), (Some(1), Some(100)));
    for (path, name) in [
        ("/api/v1/search", "q"),
        ("/api/v1/export", "from"),
        ("/api/v1/export", "to"),
        ("/api/v1/kb", "site"),
        ("/api/v1/kb/export", "site"),
        ("/api/v1/kb/export", "format"),
    ] {
        assert!(query_parameter(&document, path, name).1, "{path} {name} is required");
    }
    let (from, _) = query_parameter(&document, "/api/v1/export", "from");
    assert_eq!(from["format"], "date");
    let (state, _) = query_parameter(&document, "/api/v1/search", "state");
    assert_eq!(state["enum"], json!(["queued", "assigned", "closed"]), "{state}");

    let schemas = &document["components"]["schemas"];
    for (schema, field) in
        [("SearchPage", "next_cursor"), ("MessagePage", "next_before"), ("ConversationList", "next_cursor")]
    {
        let required = schemas[schema]["required"].as_array().unwrap();
        assert!(required.contains(&json!(field)), "{schema}.{field} is always present");
        let types = &schemas[schema]["properties"][field]["type"];
        assert!(types.as_array().is_some_and(|types| types.contains(&json!("null"))), "{schema}.{field}: {types}");
    }
}

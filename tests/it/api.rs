//! The HTTP API for integrations: API tokens made and revoked in the admin pages (one site,
//! read-only, revoked, rate limited), the error shape, sending as an agent or as the bot,
//! cursor pagination across inserts, and the OpenAPI document checked route by route against
//! live answers.

use std::collections::{BTreeSet, HashSet};

use kefu::sites::Site;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Client, TestServer, call_expecting, http};

/// Posts the admin form that makes a token; returns the page's HTML and status.
async fn post_token_form(server: &TestServer, session: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
    let mut form: Vec<(&str, String)> = vec![("csrf", kefu::net::admin::csrf_token(session))];
    form.extend(fields.iter().map(|(name, value)| (*name, (*value).to_owned())));
    let response = post_form(server, "/admin/api-tokens", session, &form).await;
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// Posts a form as the browser would (URL-encoded), without following a redirect.
async fn post_form(server: &TestServer, path: &str, session: &str, fields: &[(&str, String)]) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    client
        .post(server.url(path))
        .bearer_auth(session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Makes a token in the admin pages and reads it off the page, the one time it is shown.
pub(crate) async fn make_token(server: &TestServer, session: &str, site: &Site, name: &str, read_only: bool) -> String {
    let mut fields = vec![("name", name), ("site", site.key.as_str())];
    if read_only {
        fields.push(("read_only", "1"));
    }
    let (status, page) = post_token_form(server, session, &fields).await;
    assert_eq!(status, StatusCode::CREATED, "{page}");
    let start = page.find("value=\"k1.").expect("the new token is on the page") + "value=\"".len();
    let end = start + page[start..].find('"').unwrap();
    page[start..end].to_owned()
}

/// Expects `status`; for errors, the one error shape with `code`.
async fn check(
    server: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    status: u16,
    code: &str,
) -> Value {
    let answer = call_expecting(server, method, path, token, body, status).await;
    if status >= 400 {
        assert_eq!(answer["error"]["code"], code, "{method} {path}: {answer}");
    }
    answer
}

/// A visitor who has written once; returns (visitor id, client, conversation id).
async fn visitor_with_conversation(server: &TestServer, site: &Site, text: &str) -> (u64, Client, u64) {
    let (visitor_id, token) = server.visitor_session(site, None).await;
    let mut visitor = server.visitor(site, &token).await;
    let conversation_id =
        visitor.say(None, &format!("v-{visitor_id}"), text).await["conversation_id"].as_u64().unwrap();
    (visitor_id, visitor, conversation_id)
}

#[tokio::test]
async fn a_token_sees_one_site_a_read_only_token_only_reads_and_a_revoked_one_is_refused() {
    let server = TestServer::start().await;
    let (site_a, site_b) = (server.create_site("Shop A").await, server.create_site("Shop B").await);
    server.create_agent("ann@a.example", &site_a, 2).await;
    let session = server.admin_token("root@kefu.example").await;
    let token = make_token(&server, &session, &site_a, "CRM sync", false).await;
    let read_only = make_token(&server, &session, &site_a, "Dashboard", true).await;
    let (_, _visitor_a, conversation_a) = visitor_with_conversation(&server, &site_a, "hello from A").await;
    let (visitor_b, _visitor_b, conversation_b) = visitor_with_conversation(&server, &site_b, "hello from B").await;

    // The list page shows the tokens but never their text again.
    let page = http().get(server.url("/admin/api-tokens")).bearer_auth(&session).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("CRM sync") && page.contains("Dashboard") && page.contains("read-only"), "{page}");
    assert!(!page.contains(&token) && !page.contains(&read_only));
    let (status, page) = post_token_form(&server, &session, &[("name", " "), ("site", &site_a.key)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("Name: must be 1 to 100 characters"), "{page}");
    let (status, _) = post_token_form(&server, &session, &[("name", "Ghost"), ("site", "nope")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Its own site: yes. Another site, by id or by name: 403.
    let list = check(&server, "GET", "/api/v1/conversations", &token, None, 200, "").await;
    let ids: Vec<u64> = list["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![conversation_a]);
    assert!(list["conversations"][0].get("read_seq").is_none(), "read positions are an agent's");
    check(&server, "GET", &format!("/api/v1/conversations/{conversation_a}"), &token, None, 200, "").await;
    let other_site = [
        format!("/api/v1/conversations?site={}", site_b.key),
        format!("/api/v1/conversations/{conversation_b}"),
        format!("/api/v1/conversations/{conversation_b}/messages"),
        format!("/api/v1/visitors/{visitor_b}"),
        format!("/api/v1/kb?site={}", site_b.key),
        format!("/api/v1/teams?site={}", site_b.key),
        format!("/api/v1/search?q=hello&site={}", site_b.key),
    ];
    for path in &other_site {
        check(&server, "GET", path, &token, None, 403, "forbidden").await;
    }
    let close_b = format!("/api/v1/conversations/{conversation_b}/close");
    check(&server, "POST", &close_b, &token, None, 403, "forbidden").await;
    check(&server, "GET", "/api/v1/conversations/999999", &token, None, 404, "not_found").await;
    // What agents and admins do in the console is not for tokens.
    let canned_replies = format!("/api/v1/canned-replies?site={}", site_a.key);
    for path in ["/api/v1/agent/me", "/api/v1/visitors/online", "/api/v1/uploads/anything", &canned_replies] {
        check(&server, "GET", path, &token, None, 403, "forbidden").await;
    }
    let admin_page = http().get(server.url("/admin/sites")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(admin_page.status(), StatusCode::FORBIDDEN);

    // A read-only token reads, and every change is refused before it happens.
    let close_a = format!("/api/v1/conversations/{conversation_a}/close");
    check(&server, "GET", &format!("/api/v1/conversations/{conversation_a}"), &read_only, None, 200, "").await;
    check(&server, "POST", &close_a, &read_only, None, 403, "forbidden").await;
    let send = json!({"text": "hi", "as": "bot"});
    let send_path = format!("/api/v1/conversations/{conversation_a}/messages");
    check(&server, "POST", &send_path, &read_only, Some(send), 403, "forbidden").await;
    let conversation =
        check(&server, "GET", &format!("/api/v1/conversations/{conversation_a}"), &token, None, 200, "").await;
    assert_eq!(conversation["status"], "queued");

    // Revoked in the admin: 401 from then on, and listed as revoked.
    let tokens = server.store().read(kefu::people::api_tokens::list).await.unwrap();
    let id = tokens.iter().find(|listed| listed.name == "CRM sync").unwrap().id;
    let csrf = kefu::net::admin::csrf_token(&session);
    let revoke = post_form(&server, &format!("/admin/api-tokens/{id}/revoke"), &session, &[("csrf", csrf)]).await;
    assert!(revoke.status().is_redirection(), "{}", revoke.status());
    check(&server, "GET", "/api/v1/conversations", &token, None, 401, "unauthorized").await;
    check(&server, "GET", "/api/v1/conversations", &read_only, None, 200, "").await;
    let page = http().get(server.url("/admin/api-tokens")).bearer_auth(&session).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("revoked "));
    let entries =
        server.store().read(|transaction| kefu::history::audit::search(transaction, &Default::default())).await;
    let actions: Vec<String> = entries.unwrap().into_iter().map(|entry| entry.action).collect();
    assert!(actions.contains(&"api_token.create".to_owned()) && actions.contains(&"api_token.revoke".to_owned()));
    // A forged or missing token is 401 too.
    check(&server, "GET", "/api/v1/conversations", "k1.not-a-token", None, 401, "unauthorized").await;
    // A body that is not JSON is 400, and changes nothing.
    let garbled = http()
        .post(server.url(&format!("/api/v1/conversations/{conversation_a}/messages")))
        .bearer_auth(&writer_token(&server, &session, &site_a).await)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbled.status(), StatusCode::BAD_REQUEST);
    let body: Value = garbled.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    let history =
        check(&server, "GET", &format!("/api/v1/conversations/{conversation_a}/messages"), &read_only, None, 200, "")
            .await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
}

/// A token that may write (the first one of the test is revoked by then).
async fn writer_token(server: &TestServer, session: &str, site: &Site) -> String {
    make_token(server, session, site, "Writer", false).await
}

#[tokio::test]
async fn a_token_over_its_budget_gets_429_with_retry_after() {
    let server = TestServer::start_with(|config| {
        config.limits.api_requests_per_second = 1;
        config.limits.api_request_burst = 3;
    })
    .await;
    let site = server.create_site("Shop").await;
    let session = server.admin_token("root@kefu.example").await;
    let token = make_token(&server, &session, &site, "Busy", true).await;
    let mut refused = None;
    for _ in 0..10 {
        let response = http().get(server.url("/api/v1/agents")).bearer_auth(&token).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = refused.expect("ten requests at once exceed a burst of three");
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn pages_continue_from_their_cursor_while_new_rows_arrive() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let session = server.admin_token("root@kefu.example").await;
    let token = make_token(&server, &session, &site, "Sync", false).await;
    let (_, mut visitor, conversation_id) = visitor_with_conversation(&server, &site, "message 1").await;
    for n in 2..=7 {
        visitor.say(Some(conversation_id), &format!("m{n}"), &format!("message {n}")).await;
    }
    let messages_path = format!("/api/v1/conversations/{conversation_id}/messages");
    let first = check(&server, "GET", &format!("{messages_path}?limit=3"), &token, None, 200, "").await;
    let texts = |page: &Value| -> Vec<String> {
        page["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(texts(&first), ["message 5", "message 6", "message 7"]);
    // New messages between pages change nothing about the older pages.
    for n in 8..=9 {
        visitor.say(Some(conversation_id), &format!("m{n}"), &format!("message {n}")).await;
    }
    let before = first["next_before"].as_u64().unwrap();
    let second =
        check(&server, "GET", &format!("{messages_path}?limit=3&before={before}"), &token, None, 200, "").await;
    assert_eq!(texts(&second), ["message 2", "message 3", "message 4"]);
    let before = second["next_before"].as_u64().unwrap();
    let third = check(&server, "GET", &format!("{messages_path}?limit=3&before={before}"), &token, None, 200, "").await;
    assert_eq!(texts(&third), ["message 1"]);
    assert_eq!(third["next_before"], Value::Null);

    // Conversations: newest first; conversations started after the first page do not push
    // older ones onto the next page twice.
    let mut started = vec![conversation_id];
    let mut visitors = vec![visitor];
    for n in 0..4 {
        let (_, client, id) = visitor_with_conversation(&server, &site, &format!("hello {n}")).await;
        started.push(id);
        visitors.push(client);
    }
    let first = check(&server, "GET", "/api/v1/conversations?state=open&limit=2", &token, None, 200, "").await;
    let ids = |page: &Value| -> Vec<u64> {
        page["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect()
    };
    let mut seen = ids(&first);
    assert_eq!(first["counts"]["open"], 5);
    for n in 0..2 {
        visitor_with_conversation(&server, &site, &format!("late {n}")).await;
    }
    let mut cursor = first["next_cursor"].as_u64();
    while let Some(next) = cursor {
        let path = format!("/api/v1/conversations?state=open&limit=2&cursor={next}");
        let page = check(&server, "GET", &path, &token, None, 200, "").await;
        seen.extend(ids(&page));
        cursor = page["next_cursor"].as_u64();
    }
    started.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, started, "every conversation of the first listing once, newest first");
}

#[tokio::test]
async fn integrations_act_on_conversations_through_the_same_paths_as_agents() {
    let server = TestServer::start().await;
    let site = server
        .create_site_with(crate::support::site_with_words(
            "Shop",
            &["forbiddenword"],
            kefu::chat::sensitive_words::SensitiveMode::Reject,
        ))
        .await;
    let ann_id = server.create_agent("ann@shop.example", &site, 2).await;
    let other_site = server.create_site("Elsewhere").await;
    let cy_id = server.create_agent("cy@else.example", &other_site, 2).await;
    let session = server.admin_token("root@kefu.example").await;
    let token = make_token(&server, &session, &site, "CRM", false).await;
    let (visitor_id, mut visitor, conversation_id) =
        visitor_with_conversation(&server, &site, "where is my order?").await;
    let base = format!("/api/v1/conversations/{conversation_id}");

    // Sending as an agent needs the agent; the message reaches the visitor's socket.
    let send = |body: Value| Some(body);
    let path = format!("{base}/messages");
    check(&server, "POST", &path, &token, send(json!({"text": "hi"})), 422, "invalid_field").await;
    check(&server, "POST", &path, &token, send(json!({"text": "hi", "agent_id": cy_id})), 422, "invalid_field").await;
    check(&server, "POST", &path, &token, send(json!({"text": "  ", "agent_id": ann_id})), 422, "invalid_field").await;
    let rejected = json!({"text": "a forbiddenword here", "agent_id": ann_id});
    check(&server, "POST", &path, &token, send(rejected), 422, "invalid_field").await;
    check(&server, "POST", &path, &token, send(json!({"txt": "typo"})), 422, "invalid_field").await;
    let body = json!({"text": "It ships today.", "as": "agent", "agent_id": ann_id, "client_id": "crm-1"});
    let sent = check(&server, "POST", &path, &token, send(body.clone()), 201, "").await;
    assert_eq!(sent["sender"], json!({"kind": "agent", "id": ann_id, "name": "ann"}));
    let frame = visitor.expect("message").await;
    assert_eq!(frame["text"], "It ships today.");
    assert_eq!(frame["seq"], sent["seq"]);
    // A retry with the same client id answers the first message and stores nothing new.
    let again = check(&server, "POST", &path, &token, send(body), 200, "").await;
    assert_eq!(again["seq"], sent["seq"]);

    // The bot speaks only in conversations it answers.
    let as_bot = json!({"text": "Beep.", "as": "bot"});
    check(&server, "POST", &path, &token, send(as_bot), 409, "conflict").await;

    // Assign, transfer, close, reopen.
    let assign = json!({"agent_id": ann_id});
    let assigned = check(&server, "POST", &format!("{base}/assign"), &token, send(assign), 200, "").await;
    assert_eq!((assigned["status"].as_str(), assigned["assigned_agent"].as_u64()), (Some("assigned"), Some(ann_id)));
    check(&server, "POST", &format!("{base}/assign"), &token, send(json!({"agent_id": cy_id})), 422, "invalid_field")
        .await;
    let reopen = json!({"agent_id": ann_id});
    check(&server, "POST", &format!("{base}/reopen"), &token, send(reopen), 409, "conflict").await;
    let closed = check(&server, "POST", &format!("{base}/close"), &token, None, 200, "").await;
    assert_eq!(closed["status"], "closed");
    check(&server, "POST", &format!("{base}/close"), &token, None, 409, "conflict").await;
    check(&server, "POST", &path, &token, send(json!({"text": "late", "agent_id": ann_id})), 409, "conflict").await;
    check(&server, "POST", &format!("{base}/reopen"), &token, None, 422, "invalid_field").await;
    let reopened =
        check(&server, "POST", &format!("{base}/reopen"), &token, send(json!({"agent_id": ann_id})), 200, "").await;
    assert_eq!(reopened["assigned_agent"], ann_id);

    // Visitor attributes: set, replace, remove; the limits of a visitor's own session apply.
    let attributes = format!("/api/v1/visitors/{visitor_id}/attributes");
    let changed = check(&server, "PATCH", &attributes, &token, send(json!({"plan": "pro", "seats": 3})), 200, "").await;
    assert_eq!(changed["attributes"], json!({"plan": "pro", "seats": 3}));
    let changed = check(&server, "PATCH", &attributes, &token, send(json!({"plan": null, "seats": 4})), 200, "").await;
    assert_eq!(changed["attributes"], json!({"seats": 4}));
    let too_long = json!({"note": "x".repeat(600)});
    check(&server, "PATCH", &attributes, &token, send(too_long), 422, "invalid_field").await;
    check(&server, "PATCH", &attributes, &token, send(json!(["not", "an", "object"])), 422, "invalid_field").await;
    check(&server, "PATCH", "/api/v1/visitors/999999/attributes", &token, send(json!({"a": 1})), 404, "not_found")
        .await;

    // Block: the visitor's socket is closed.
    let blocked =
        check(&server, "POST", &format!("/api/v1/visitors/{visitor_id}/block"), &token, send(json!({})), 200, "").await;
    assert_eq!(blocked["blocked"], true);
    assert_eq!(visitor.expect_close().await, 4003);
}

#[tokio::test]
async fn the_bot_speaks_over_http_while_it_answers_the_conversation() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 2).await;
    let session = server.admin_token("root@kefu.example").await;
    let bot = json!({"enabled": true});
    check(&server, "PUT", &format!("/api/v1/sites/{}/bot", site.key), &session, Some(bot), 200, "").await;
    let token = make_token(&server, &session, &site, "Order bot", false).await;
    let (_, mut visitor, conversation_id) = visitor_with_conversation(&server, &site, "where is my parcel?").await;
    let path = format!("/api/v1/conversations/{conversation_id}/messages");
    let body = json!({"text": "Your parcel left the warehouse.", "as": "bot", "client_id": "order-1"});
    let sent = check(&server, "POST", &path, &token, Some(body), 201, "").await;
    assert_eq!(sent["sender"]["kind"], "bot");
    assert_eq!(sent["bot_source"]["kind"], "api");
    loop {
        let frame = visitor.expect("message").await;
        if frame["text"] == "Your parcel left the warehouse." {
            assert_eq!(frame["sender"]["kind"], "bot");
            break;
        }
    }
    let assign = json!({"agent_id": ann_id});
    check(&server, "POST", &format!("/api/v1/conversations/{conversation_id}/assign"), &token, Some(assign), 200, "")
        .await;
    let body = json!({"text": "Too late.", "as": "bot"});
    check(&server, "POST", &path, &token, Some(body), 409, "conflict").await;
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document

/// Every operation the issue asks of the token API, as the document must list it.
const EXPECTED_OPERATIONS: &[(&str, &str)] = &[
    ("get", "/api/v1/conversations"),
    ("get", "/api/v1/conversations/{id}"),
    ("post", "/api/v1/conversations/{id}/assign"),
    ("post", "/api/v1/conversations/{id}/transfer"),
    ("post", "/api/v1/conversations/{id}/close"),
    ("post", "/api/v1/conversations/{id}/reopen"),
    ("get", "/api/v1/conversations/{id}/messages"),
    ("post", "/api/v1/conversations/{id}/messages"),
    ("get", "/api/v1/visitors/{id}"),
    ("patch", "/api/v1/visitors/{id}/attributes"),
    ("post", "/api/v1/visitors/{id}/block"),
    ("get", "/api/v1/visitors/{id}/data"),
    ("delete", "/api/v1/visitors/{id}/data"),
    ("get", "/api/v1/leads"),
    ("get", "/api/v1/leads/{id}"),
    ("post", "/api/v1/leads/{id}/status"),
    ("post", "/api/v1/leads/{id}/assign"),
    ("post", "/api/v1/leads/{id}/reply"),
    ("get", "/api/v1/agents"),
    ("get", "/api/v1/teams"),
    ("get", "/api/v1/kb"),
    ("post", "/api/v1/kb"),
    ("put", "/api/v1/kb/{id}"),
    ("delete", "/api/v1/kb/{id}"),
    ("post", "/api/v1/kb/import"),
    ("get", "/api/v1/kb/export"),
    ("get", "/api/v1/search"),
    ("get", "/api/v1/export"),
];

/// The schema a `$ref` points to.
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("only local references");
            resolve(document, document.pointer(pointer).unwrap_or_else(|| panic!("{reference} is not in the document")))
        }
        None => schema,
    }
}

/// The property names a schema declares (through `allOf` too), or `None` if it does not say.
fn declared_properties(document: &Value, schema: &Value) -> Option<HashSet<String>> {
    let schema = resolve(document, schema);
    let mut names: HashSet<String> = HashSet::new();
    let mut declared = false;
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        declared = true;
        names.extend(properties.keys().cloned());
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            names.extend(declared_properties(document, part)?);
            declared = true;
        }
    }
    if schema.get("additionalProperties").is_some_and(|extra| extra != &Value::Bool(false)) {
        return None;
    }
    declared.then_some(names)
}

/// Checks `value` against a JSON Schema of the document (the parts utoipa emits: `$ref`,
/// `allOf`, `oneOf`, `anyOf`, `type`, `enum`, `required`, `properties`, `items`), and that an
/// object carries no property its schema does not declare.
fn validate(document: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    validate_part(document, schema, value, at, true)
}

/// [`validate`]; `whole` is false for one part of an `allOf`, whose siblings declare the rest of
/// the object's properties.
fn validate_part(document: &Value, schema: &Value, value: &Value, at: &str, whole: bool) -> Result<(), String> {
    let schema = resolve(document, schema);
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            validate_part(document, part, value, at, false)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array)
            && !options.iter().any(|option| validate_part(document, option, value, at, whole).is_ok())
        {
            return Err(format!("{at}: {value} matches none of {key} {}", Value::Array(options.clone())));
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let fits = |kind: &str| match kind {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.iter().any(|kind| fits(kind)) {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!("{at}: the required {name} is missing from {value}"));
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                if let Some(found) = object.get(name) {
                    validate(document, property, found, &format!("{at}.{name}"))?;
                }
            }
        }
        if let Some(declared) = declared_properties(document, schema).filter(|_| whole) {
            for name in object.keys() {
                if !declared.contains(name) {
                    return Err(format!("{at}: {name} is not in the documented schema"));
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            validate(document, items, item, &format!("{at}[{index}]"))?;
        }
    }
    Ok(())
}

/// One live request for a documented operation.
struct Probe {
    method: &'static str,
    /// As the document writes it.
    template: &'static str,
    path: String,
    body: Option<Value>,
    /// Sent as `text/csv` instead of JSON.
    text_body: Option<&'static str>,
    status: u16,
}

fn probe(method: &'static str, template: &'static str, path: String, body: Option<Value>, status: u16) -> Probe {
    Probe { method, template, path, body, text_body: None, status }
}

/// Sends a probe and checks the answer against the document; returns the JSON answer, if any.
async fn run_probe(server: &TestServer, document: &Value, token: Option<&str>, probe: &Probe) -> Value {
    let method = reqwest::Method::from_bytes(probe.method.to_uppercase().as_bytes()).unwrap();
    let mut request = http().request(method, server.url(&probe.path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = &probe.body {
        request = request.json(body);
    }
    if let Some(text) = probe.text_body {
        request = request.header("content-type", "text/csv").body(text);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|value| value.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let expected = if token.is_some() { probe.status } else { 401 };
    let label = format!("{} {}", probe.method, probe.path);
    assert_eq!(status, expected, "{label}: {text}");
    let operation = &document["paths"][probe.template][probe.method];
    let documented = &operation["responses"][status.to_string()];
    assert!(documented.is_object(), "{label}: status {status} is not documented");
    let Some(content) = documented.get("content").and_then(Value::as_object) else {
        assert!(text.is_empty(), "{label}: an undocumented body: {text}");
        return Value::Null;
    };
    let media_type = content_type.as_deref().unwrap_or_default().split(';').next().unwrap().trim().to_owned();
    let entry = content.get(&media_type).unwrap_or_else(|| panic!("{label}: {media_type} is not documented"));
    if media_type != "application/json" {
        return Value::Null;
    }
    let value: Value = serde_json::from_str(&text).unwrap();
    if let Err(problem) = validate(document, &entry["schema"], &value, "body") {
        panic!("{label} answered what its schema does not allow: {problem}");
    }
    value
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_answer_fits_it() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 2).await;
    let session = server.admin_token("root@kefu.example").await;
    let team = json!({"site": site.key, "name": "Billing", "members": [ann_id]});
    let team_id = check(&server, "POST", "/api/v1/teams", &session, Some(team), 201, "").await["id"].as_u64().unwrap();
    let token = make_token(&server, &session, &site, "Everything", false).await;
    let (visitor_id, _visitor, conversation_id) = visitor_with_conversation(&server, &site, "hello there").await;
    let (writer_id, writer_token) = server.visitor_session(&site, None).await;
    let offline = json!({"name": "Bea", "email": "bea@example.com", "text": "Call me back"});
    call_expecting(&server, "POST", "/api/v1/visitor/offline-messages", &writer_token, Some(offline), 201).await;
    let lead_id = call_expecting(&server, "GET", "/api/v1/leads", &session, None, 200).await["leads"][0]["id"]
        .as_u64()
        .expect("the offline message is a lead");

    let response = http().get(server.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(document["components"]["securitySchemes"]["api_token"]["scheme"], "bearer");
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |method| (method.clone(), path.clone())))
        .collect();
    let expected: BTreeSet<(String, String)> =
        EXPECTED_OPERATIONS.iter().map(|(method, path)| (method.to_string(), path.to_string())).collect();
    assert_eq!(documented, expected, "the document and the token API's routes differ");

    let conversation = |suffix: &str| format!("/api/v1/conversations/{conversation_id}{suffix}");
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let kb_entry = json!({"questions": ["Do you ship abroad?"], "answer": "Yes, everywhere.", "category": "shipping"});
    let mut probes = vec![
        probe("get", "/api/v1/conversations", "/api/v1/conversations?state=open".into(), None, 200),
        probe("get", "/api/v1/conversations/{id}", conversation(""), None, 200),
        probe("get", "/api/v1/conversations/{id}/messages", conversation("/messages?limit=10"), None, 200),
        probe(
            "post",
            "/api/v1/conversations/{id}/messages",
            conversation("/messages"),
            Some(json!({"text": "Hello from the CRM", "agent_id": ann_id})),
            201,
        ),
        probe(
            "post",
            "/api/v1/conversations/{id}/assign",
            conversation("/assign"),
            Some(json!({"agent_id": ann_id})),
            200,
        ),
        probe(
            "post",
            "/api/v1/conversations/{id}/transfer",
            conversation("/transfer"),
            Some(json!({"team_id": team_id, "note": "billing question"})),
            200,
        ),
        probe("post", "/api/v1/conversations/{id}/close", conversation("/close"), None, 200),
        probe(
            "post",
            "/api/v1/conversations/{id}/reopen",
            conversation("/reopen"),
            Some(json!({"agent_id": ann_id})),
            200,
        ),
        probe("get", "/api/v1/visitors/{id}", format!("/api/v1/visitors/{visitor_id}"), None, 200),
        probe(
            "patch",
            "/api/v1/visitors/{id}/attributes",
            format!("/api/v1/visitors/{visitor_id}/attributes"),
            Some(json!({"plan": "pro"})),
            200,
        ),
        probe("get", "/api/v1/agents", "/api/v1/agents".into(), None, 200),
        probe("get", "/api/v1/teams", "/api/v1/teams".into(), None, 200),
        probe("post", "/api/v1/kb", format!("/api/v1/kb?site={}", site.key), Some(kb_entry.clone()), 201),
        probe("get", "/api/v1/kb", format!("/api/v1/kb?site={}", site.key), None, 200),
        Probe {
            text_body: Some("questions,answer,category\nOpening hours?,9 to 5,hours\n"),
            ..probe("post", "/api/v1/kb/import", format!("/api/v1/kb/import?site={}&format=csv", site.key), None, 200)
        },
        probe("get", "/api/v1/kb/export", format!("/api/v1/kb/export?site={}&format=csv", site.key), None, 200),
        probe("get", "/api/v1/search", "/api/v1/search?q=hello".into(), None, 200),
        probe("get", "/api/v1/export", format!("/api/v1/export?from={today}&to={today}"), None, 200),
        probe(
            "post",
            "/api/v1/visitors/{id}/block",
            format!("/api/v1/visitors/{visitor_id}/block"),
            Some(json!({})),
            200,
        ),
    ];
    // Without a token, every operation answers 401 in the documented error shape, and changes nothing.
    for probe in &probes {
        run_probe(&server, &document, None, probe).await;
    }
    let mut exercised = BTreeSet::new();
    let mut entry_id = None;
    for probe in &probes {
        let answer = run_probe(&server, &document, Some(&token), probe).await;
        if probe.method == "post" && probe.template == "/api/v1/kb" {
            entry_id = answer["id"].as_u64();
        }
        exercised.insert((probe.method.to_string(), probe.template.to_string()));
    }
    let entry_id = entry_id.expect("the entry was made");
    probes = vec![
        probe("put", "/api/v1/kb/{id}", format!("/api/v1/kb/{entry_id}"), Some(kb_entry), 200),
        probe("delete", "/api/v1/kb/{id}", format!("/api/v1/kb/{entry_id}"), None, 204),
        probe("get", "/api/v1/conversations/{id}", "/api/v1/conversations/999999".into(), None, 404),
        probe("post", "/api/v1/conversations/{id}/close", "/api/v1/conversations/999999/close".into(), None, 404),
        probe("get", "/api/v1/search", "/api/v1/search?q=".into(), None, 422),
        probe("get", "/api/v1/leads", "/api/v1/leads?status=new".into(), None, 200),
        probe("get", "/api/v1/leads/{id}", format!("/api/v1/leads/{lead_id}"), None, 200),
        probe("get", "/api/v1/leads/{id}", "/api/v1/leads/999999".into(), None, 404),
        probe(
            "post",
            "/api/v1/leads/{id}/assign",
            format!("/api/v1/leads/{lead_id}/assign"),
            Some(json!({"agent_id": ann_id})),
            200,
        ),
        probe(
            "post",
            "/api/v1/leads/{id}/reply",
            format!("/api/v1/leads/{lead_id}/reply"),
            Some(json!({"text": "We will call you today", "agent_id": ann_id})),
            201,
        ),
        probe(
            "post",
            "/api/v1/leads/{id}/status",
            format!("/api/v1/leads/{lead_id}/status"),
            Some(json!({"status": "done"})),
            200,
        ),
        probe(
            "post",
            "/api/v1/leads/{id}/status",
            format!("/api/v1/leads/{lead_id}/status"),
            Some(json!({"status": "later"})),
            422,
        ),
        probe("get", "/api/v1/visitors/{id}/data", format!("/api/v1/visitors/{writer_id}/data"), None, 200),
        probe("delete", "/api/v1/visitors/{id}/data", format!("/api/v1/visitors/{writer_id}/data"), None, 200),
        probe("delete", "/api/v1/visitors/{id}/data", format!("/api/v1/visitors/{writer_id}/data"), None, 404),
    ];
    for probe in &probes {
        run_probe(&server, &document, Some(&token), probe).await;
        exercised.insert((probe.method.to_string(), probe.template.to_string()));
    }
    assert_eq!(exercised, expected, "every documented operation was requested");
}

/// Every `/api/v1` route outside the document that takes credentials (the console's, the
/// widget's and the admins'), with a body it would accept. An API token must get 403 from
/// each, so the document lists everything a token can do.
const ROUTES_NOT_FOR_TOKENS: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/agent/me", ""),
    ("POST", "/api/v1/conversations/{conversation}/rating", r#"{"score": 5}"#),
    ("POST", "/api/v1/visitor/offline-messages", r#"{"email": "a@b.example", "text": "hi"}"#),
    ("GET", "/api/v1/offline-messages", ""),
    ("POST", "/api/v1/uploads?conversation_id={conversation}&name=a.txt", "hello"),
    ("GET", "/api/v1/uploads/anything", ""),
    ("GET", "/api/v1/sites/{site}/webhooks", ""),
    ("POST", "/api/v1/sites/{site}/webhooks", r#"{"url": "https://crm.example/hook", "events": ["message.created"]}"#),
    ("DELETE", "/api/v1/webhooks/anything", ""),
    ("GET", "/api/v1/webhooks/anything/deliveries", ""),
    ("POST", "/api/v1/webhook-deliveries/1/resend", ""),
    ("GET", "/api/v1/visitors/online", ""),
    ("GET", "/api/v1/visitors/{visitor}/conversations", ""),
    ("POST", "/api/v1/visitors/{visitor}/conversations", ""),
    ("GET", "/api/v1/canned-replies?site={site}", ""),
    ("POST", "/api/v1/canned-replies", r#"{"site": "{site}", "shortcut": "hi", "text": "Hello!"}"#),
    ("PUT", "/api/v1/canned-replies/1", r#"{"site": "{site}", "shortcut": "hi", "text": "Hello!"}"#),
    ("DELETE", "/api/v1/canned-replies/1", ""),
    ("POST", "/api/v1/teams", r#"{"site": "{site}", "name": "Sales"}"#),
    ("GET", "/api/v1/sites/{site}/bot", ""),
    ("PUT", "/api/v1/sites/{site}/bot", "{}"),
    ("GET", "/api/v1/push/key", ""),
    ("GET", "/api/v1/push/subscriptions", ""),
    ("DELETE", "/api/v1/push/subscriptions", r#"{"endpoint": "https://push.example.net/x"}"#),
    (
        "POST",
        "/api/v1/push/subscriptions",
        r#"{"endpoint": "https://push.example.net/x", "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}"#,
    ),
];

#[tokio::test]
async fn routes_outside_the_document_refuse_api_tokens() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let session = server.admin_token("root@kefu.example").await;
    let token = make_token(&server, &session, &site, "Everything", false).await;
    let (visitor_id, _visitor, conversation_id) = visitor_with_conversation(&server, &site, "hello").await;
    let fill = |template: &str| {
        template
            .replace("{conversation}", &conversation_id.to_string())
            .replace("{visitor}", &visitor_id.to_string())
            .replace("{site}", &site.key)
    };
    for (method, template, body) in ROUTES_NOT_FOR_TOKENS {
        let (path, body) = (fill(template), fill(body));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = http().request(method.clone(), server.url(&path)).bearer_auth(&token);
        if !body.is_empty() {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "forbidden", "{method} {path}: {answer}");
    }
}

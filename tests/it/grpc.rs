//! The gRPC API: every operation through a tonic client, the token rules (another site's token,
//! read-only, revoked), bad input and oversize messages, health, `Subscribe` resuming from its
//! cursor across a restart, and a Python grpcio client generated from the same .proto file.

use std::time::Duration;

use futures_util::StreamExt;
use kefu::net::grpc::api::visitors_client::VisitorsClient;
use kefu::net::grpc::api::{self, conversations_client::ConversationsClient, events_client::EventsClient};
use kefu::net::grpc::api::{knowledge_base_client::KnowledgeBaseClient, messages_client::MessagesClient};
use kefu::people::api_tokens::{self, NewApiToken};
use kefu::sites::Site;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::support::{TestServer, history};

async fn grpc_server() -> TestServer {
    TestServer::start_with(|config| config.grpc.listen = Some("127.0.0.1:0".parse().unwrap())).await
}

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.grpc_url()).unwrap().connect().await.expect("the gRPC port accepts")
}

/// Makes an API token of `site`; returns its text and id.
async fn token(server: &TestServer, site: &Site, read_only: bool) -> (String, u64) {
    let new =
        NewApiToken { name: "CRM".into(), site: site.key.clone(), read_only, created_by: "root@kefu.example".into() };
    let created = api_tokens::ApiTokenStore::create_token(server.store(), new).await.unwrap();
    (created.secret, created.token.id)
}

/// A request carrying `token`.
fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code) {
    match result {
        Err(status) => assert_eq!(status.code(), code, "{status:?}"),
        Ok(answer) => panic!("expected {code:?}, got {answer:?}"),
    }
}

fn conversation_request(conversation_id: u64) -> api::ConversationRequest {
    api::ConversationRequest { conversation_id }
}

fn send_request(conversation_id: u64, text: &str, client_id: &str, agent_id: Option<u64>) -> api::SendMessageRequest {
    api::SendMessageRequest {
        conversation_id,
        text: text.into(),
        client_id: client_id.into(),
        send_as: api::SendAs::Agent as i32,
        agent_id,
        internal: false,
    }
}

#[tokio::test]
async fn every_operation_answers_over_grpc_with_the_token_rules_of_rest() {
    let server = grpc_server().await;
    let (site, other) = (server.create_site("Shop").await, server.create_site("Elsewhere").await);
    let ann = server.create_agent("ann@shop.example", &site, 2).await;
    let (token, token_id) = token(&server, &site, false).await;
    let (read_only, _) = self::token(&server, &site, true).await;
    let (visitor_id, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &visitor_token).await;
    let conversation_id = visitor.say(None, "v-1", "where is my order?").await["conversation_id"].as_u64().unwrap();
    let (other_visitor, other_token) = server.visitor_session(&other, None).await;
    let other_conversation =
        server.visitor(&other, &other_token).await.say(None, "v-2", "hi").await["conversation_id"].as_u64().unwrap();
    let channel = channel(&server).await;
    let mut conversations = ConversationsClient::new(channel.clone());
    let mut messages = MessagesClient::new(channel.clone());
    let mut visitors = VisitorsClient::new(channel.clone());
    let mut kb = KnowledgeBaseClient::new(channel.clone());

    // Conversations: the token's site only; another site's is refused, an unknown one not found.
    let list = conversations.list(authed(&token, api::ListConversationsRequest::default())).await.unwrap().into_inner();
    let ids: Vec<u64> = list.conversations.iter().map(|c| c.conversation.as_ref().unwrap().id).collect();
    assert_eq!(ids, vec![conversation_id]);
    assert_eq!(list.counts.unwrap().queued, 1);
    let got = conversations.get(authed(&token, conversation_request(conversation_id))).await.unwrap().into_inner();
    assert_eq!((got.status.as_str(), got.visitor_id), ("queued", visitor_id));
    assert_code(
        conversations.get(authed(&token, conversation_request(other_conversation))).await,
        Code::PermissionDenied,
    );
    assert_code(conversations.get(authed(&token, conversation_request(999_999))).await, Code::NotFound);
    let bad_state = api::ListConversationsRequest { state: "sideways".into(), ..Default::default() };
    assert_code(conversations.list(authed(&token, bad_state)).await, Code::InvalidArgument);

    // Messages: sent as an agent, delivered to the visitor, deduplicated by client_id.
    let sent = messages
        .send(authed(&token, send_request(conversation_id, "It ships today.", "crm-1", Some(ann))))
        .await
        .unwrap()
        .into_inner();
    let message = sent.message.unwrap();
    assert!(!sent.duplicate);
    assert_eq!((message.sender.as_ref().unwrap().kind.as_str(), message.text.as_str()), ("agent", "It ships today."));
    let frame = visitor.expect("message").await;
    assert_eq!(frame["seq"], message.seq);
    let again = messages
        .send(authed(&token, send_request(conversation_id, "It ships today.", "crm-1", Some(ann))))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.message.unwrap().seq, message.seq);
    let page = messages
        .list(authed(&token, api::ListMessagesRequest { conversation_id, before: None, limit: 10 }))
        .await
        .unwrap()
        .into_inner();
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, vec!["where is my order?", "It ships today."]);
    assert_eq!(page.next_before, None);
    // Bad fields: INVALID_ARGUMENT, and nothing is stored.
    for bad in [
        send_request(conversation_id, "   ", "crm-2", Some(ann)),
        send_request(conversation_id, "no agent", "crm-3", None),
        send_request(conversation_id, "bad id", "has space", Some(ann)),
        api::SendMessageRequest { send_as: 7, ..send_request(conversation_id, "x", "crm-4", Some(ann)) },
    ] {
        assert_code(messages.send(authed(&token, bad)).await, Code::InvalidArgument);
    }
    let as_bot = api::SendMessageRequest {
        send_as: api::SendAs::Bot as i32,
        ..send_request(conversation_id, "Beep.", "bot-1", None)
    };
    assert_code(messages.send(authed(&token, as_bot)).await, Code::FailedPrecondition);
    // An oversize message is refused before it is decoded, and the server keeps serving.
    let huge = send_request(conversation_id, &"x".repeat(2 * 1024 * 1024), "crm-5", Some(ann));
    assert_code(messages.send(authed(&token, huge)).await, Code::ResourceExhausted);
    let agent_token = server.login("ann@shop.example").await;
    assert_eq!(history(&server, &agent_token, conversation_id).await["messages"].as_array().unwrap().len(), 2);

    // Assign, close, reopen; a read-only token reads but changes nothing.
    let assign = api::AssignRequest { conversation_id, agent_id: ann };
    let assigned = conversations.assign(authed(&token, assign)).await.unwrap().into_inner();
    assert_eq!((assigned.status.as_str(), assigned.assigned_agent), ("assigned", Some(ann)));
    assert_code(
        conversations.close(authed(&read_only, conversation_request(conversation_id))).await,
        Code::PermissionDenied,
    );
    conversations.get(authed(&read_only, conversation_request(conversation_id))).await.unwrap();
    let closed = conversations.close(authed(&token, conversation_request(conversation_id))).await.unwrap().into_inner();
    assert_eq!(closed.status, "closed");
    assert_code(
        conversations.close(authed(&token, conversation_request(conversation_id))).await,
        Code::FailedPrecondition,
    );
    let nobody = api::ReopenRequest { conversation_id, agent_id: 0 };
    assert_code(conversations.reopen(authed(&token, nobody)).await, Code::InvalidArgument);
    let reopen = api::ReopenRequest { conversation_id, agent_id: ann };
    let reopened = conversations.reopen(authed(&token, reopen)).await.unwrap().into_inner();
    assert_eq!(reopened.assigned_agent, Some(ann));

    // Visitors: profile and attributes (JSON text values), another site's refused.
    let profile = visitors.get(authed(&token, api::VisitorRequest { visitor_id })).await.unwrap().into_inner();
    assert_eq!((profile.id, profile.site.as_str()), (visitor_id, site.key.as_str()));
    let set = api::UpdateAttributesRequest {
        visitor_id,
        set: [("plan".to_owned(), "\"pro\"".to_owned()), ("seats".to_owned(), "3".to_owned())].into(),
        remove: vec![],
    };
    let changed = visitors.update_attributes(authed(&token, set)).await.unwrap().into_inner();
    assert_eq!(changed.attributes.get("plan").map(String::as_str), Some("\"pro\""));
    let remove = api::UpdateAttributesRequest { visitor_id, set: Default::default(), remove: vec!["plan".into()] };
    let changed = visitors.update_attributes(authed(&token, remove)).await.unwrap().into_inner();
    assert_eq!(changed.attributes.keys().collect::<Vec<_>>(), vec!["seats"]);
    let not_json = api::UpdateAttributesRequest {
        visitor_id,
        set: [("plan".to_owned(), "pro".to_owned())].into(),
        remove: vec![],
    };
    assert_code(visitors.update_attributes(authed(&token, not_json)).await, Code::InvalidArgument);
    assert_code(
        visitors.get(authed(&token, api::VisitorRequest { visitor_id: other_visitor })).await,
        Code::PermissionDenied,
    );
    assert_code(visitors.get(authed(&token, api::VisitorRequest { visitor_id: 999_999 })).await, Code::NotFound);

    // Knowledge base: create, list, update, delete.
    let fields = |answer: &str| api::EntryFields {
        questions: vec!["When do you ship?".into()],
        answer: answer.into(),
        category: "orders".into(),
        lang: "en".into(),
    };
    let created = kb
        .create(authed(&token, api::CreateEntryRequest { entry: Some(fields("The same day.")) }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.site, site.key);
    let updated = kb
        .update(authed(&token, api::UpdateEntryRequest { id: created.id, entry: Some(fields("Within a day.")) }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.answer, "Within a day.");
    let entries = kb.list(authed(&read_only, api::ListEntriesRequest {})).await.unwrap().into_inner().entries;
    assert_eq!(entries.iter().map(|e| e.answer.as_str()).collect::<Vec<_>>(), vec!["Within a day."]);
    assert_code(kb.create(authed(&token, api::CreateEntryRequest { entry: None })).await, Code::InvalidArgument);
    assert_code(kb.delete(authed(&read_only, api::EntryRequest { id: created.id })).await, Code::PermissionDenied);
    kb.delete(authed(&token, api::EntryRequest { id: created.id })).await.unwrap();
    assert_code(kb.delete(authed(&token, api::EntryRequest { id: created.id })).await, Code::NotFound);

    // Health: the server and each service are serving.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "kefu.api.v1.Conversations", "kefu.api.v1.Events"] {
        let check = tonic_health::pb::HealthCheckRequest { service: service.into() };
        let answer = health.check(check).await.unwrap().into_inner();
        assert_eq!(answer.status(), tonic_health::pb::health_check_response::ServingStatus::Serving, "{service:?}");
    }

    // No token, an unknown one, a revoked one: UNAUTHENTICATED.
    assert_code(conversations.get(Request::new(conversation_request(conversation_id))).await, Code::Unauthenticated);
    assert_code(
        conversations.get(authed("k1.nope", conversation_request(conversation_id))).await,
        Code::Unauthenticated,
    );
    api_tokens::ApiTokenStore::revoke_token(server.store(), token_id).await.unwrap();
    assert_code(conversations.get(authed(&token, conversation_request(conversation_id))).await, Code::Unauthenticated);
}

#[tokio::test]
async fn a_token_over_its_budget_is_told_to_wait() {
    let server = TestServer::start_with(|config| {
        config.grpc.listen = Some("127.0.0.1:0".parse().unwrap());
        config.limits.api_requests_per_second = 1;
        config.limits.api_request_burst = 2;
    })
    .await;
    let site = server.create_site("Shop").await;
    let (token, _) = token(&server, &site, true).await;
    let mut kb = KnowledgeBaseClient::new(channel(&server).await);
    let mut refused = None;
    for _ in 0..5 {
        if let Err(status) = kb.list(authed(&token, api::ListEntriesRequest {})).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("the budget runs out");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.metadata().get("retry-after").is_some(), "{refused:?}");
}

/// The next event of a subscription.
async fn next_event(stream: &mut tonic::Streaming<api::Event>) -> api::Event {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
        .expect("an event, not an error")
}

#[tokio::test]
async fn subscribe_resumes_from_its_cursor_across_a_restart_without_gaps_or_repeats() {
    let mut server = grpc_server().await;
    let site = server.create_site("Shop").await;
    let other = server.create_site("Elsewhere").await;
    let ann = server.create_agent("ann@shop.example", &site, 2).await;
    let (token, _) = token(&server, &site, false).await;
    let mut events = EventsClient::new(channel(&server).await);
    let mut stream =
        events.subscribe(authed(&token, api::SubscribeRequest { after: None })).await.unwrap().into_inner();

    // Live: the visitor's first message opens a conversation; another site's events never come.
    server.visitor(&other, &server.visitor_session(&other, None).await.1).await.say(None, "o-1", "elsewhere").await;
    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &visitor_token).await;
    let conversation_id = visitor.say(None, "v-1", "hello").await["conversation_id"].as_u64().unwrap();
    let created = next_event(&mut stream).await;
    let first_message = next_event(&mut stream).await;
    assert_eq!((created.r#type.as_str(), first_message.r#type.as_str()), ("conversation.created", "message.created"));
    let payload: serde_json::Value = serde_json::from_str(&first_message.payload_json).unwrap();
    assert_eq!(payload["data"]["message"]["text"], "hello");
    assert!(first_message.cursor > created.cursor);
    let cursor = first_message.cursor;
    drop(stream);

    // While nobody listens: an assignment and two messages; then the server restarts.
    let mut messages = MessagesClient::new(channel(&server).await);
    let mut conversations = ConversationsClient::new(channel(&server).await);
    conversations.assign(authed(&token, api::AssignRequest { conversation_id, agent_id: ann })).await.unwrap();
    for (n, text) in ["one", "two"].iter().enumerate() {
        let request = send_request(conversation_id, text, &format!("crm-{n}"), Some(ann));
        messages.send(authed(&token, request)).await.unwrap();
    }
    drop(visitor);
    server.restart().await;

    // Resumed from the cursor: exactly what was missed, in order, then live events.
    let mut events = EventsClient::new(channel(&server).await);
    let mut stream =
        events.subscribe(authed(&token, api::SubscribeRequest { after: Some(cursor) })).await.unwrap().into_inner();
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(next_event(&mut stream).await);
    }
    let kinds: Vec<&str> = missed.iter().map(|event| event.r#type.as_str()).collect();
    assert_eq!(kinds, vec!["conversation.assigned", "message.created", "message.created"]);
    let texts: Vec<serde_json::Value> = missed[1..]
        .iter()
        .map(|event| {
            serde_json::from_str::<serde_json::Value>(&event.payload_json).unwrap()["data"]["message"]["text"].clone()
        })
        .collect();
    assert_eq!(texts, vec!["one", "two"]);
    assert!(missed.windows(2).all(|pair| pair[0].cursor < pair[1].cursor) && missed[0].cursor > cursor);
    let mut conversations = ConversationsClient::new(channel(&server).await);
    conversations.close(authed(&token, conversation_request(conversation_id))).await.unwrap();
    let closed = next_event(&mut stream).await;
    assert_eq!(closed.r#type, "conversation.closed");
    assert!(closed.cursor > missed[2].cursor);
    // Nothing else: no repeat of anything already sent.
    assert!(tokio::time::timeout(Duration::from_millis(500), stream.next()).await.is_err());
}

/// The end of a subscription: its status, within 10 s.
async fn stream_end(stream: &mut tonic::Streaming<api::Event>) -> tonic::Status {
    let next = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("an answer within 10 s");
    next.expect("a status, not the end of the stream").expect_err("an error, not an event")
}

#[tokio::test]
async fn a_subscription_ends_when_its_token_is_revoked_or_its_site_deleted() {
    let server = grpc_server().await;
    let site = server.create_site("Shop").await;
    let (revoked, revoked_id) = token(&server, &site, false).await;
    let (kept, _) = token(&server, &site, true).await;
    let mut events = EventsClient::new(channel(&server).await);
    let subscribe = |token: &str| authed(token, api::SubscribeRequest { after: None });
    let mut ending = events.subscribe(subscribe(&revoked)).await.unwrap().into_inner();
    let mut staying = events.subscribe(subscribe(&kept)).await.unwrap().into_inner();

    // An idle subscription of a revoked token ends at once; another token's goes on.
    api_tokens::ApiTokenStore::revoke_token(server.store(), revoked_id).await.unwrap();
    assert_eq!(stream_end(&mut ending).await.code(), Code::Unauthenticated);
    let (_, visitor_token) = server.visitor_session(&site, None).await;
    server.visitor(&site, &visitor_token).await.say(None, "v-1", "hello").await;
    assert_eq!(next_event(&mut staying).await.r#type, "conversation.created");

    // Deleting the site revokes its tokens: the remaining subscription ends too.
    kefu::sites::delete(server.store(), &site.key).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), staying.next()).await.expect("an answer within 10 s") {
            Some(Ok(_)) => continue,
            Some(Err(status)) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                break;
            }
            None => panic!("the stream ended without a status"),
        }
    }
}

#[tokio::test]
async fn idle_subscribers_read_nothing_and_each_gets_a_new_message_at_once() {
    const N_SUBSCRIBERS: usize = 100;
    let server = TestServer::start_with(|config| {
        config.grpc.listen = Some("127.0.0.1:0".parse().unwrap());
        config.limits.api_request_burst = 1000;
    })
    .await;
    let site = server.create_site("Shop").await;
    let (token, _) = token(&server, &site, true).await;
    let channel = channel(&server).await;
    let mut streams = Vec::new();
    for _ in 0..N_SUBSCRIBERS {
        let mut events = EventsClient::new(channel.clone());
        streams
            .push(events.subscribe(authed(&token, api::SubscribeRequest { after: None })).await.unwrap().into_inner());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.app().feed.n_listening() < N_SUBSCRIBERS {
        assert!(tokio::time::Instant::now() < deadline, "every subscriber listens");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Idle for a second: the server's own periodic work reads (the outboxes look every 250 ms),
    // the subscribers nothing. Polling every 100 ms, they read 1000 times.
    let before = server.store().n_reads();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n_reads = server.store().n_reads() - before;
    eprintln!("grpc: {n_reads} storage reads in one idle second with {N_SUBSCRIBERS} subscribers");
    assert!(n_reads < 50, "{n_reads} reads in an idle second");

    // A message reaches every one of them.
    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &visitor_token).await;
    let sent_at = std::time::Instant::now();
    visitor.say(None, "v-1", "hello everyone").await;
    for stream in &mut streams {
        let created = next_event(stream).await;
        assert_eq!(created.r#type, "conversation.created");
        let message = next_event(stream).await;
        assert_eq!(message.r#type, "message.created");
        assert!(message.payload_json.contains("hello everyone"));
    }
    eprintln!("grpc: {N_SUBSCRIBERS} subscribers had the message {:?} after the send", sent_at.elapsed());
}

#[tokio::test]
async fn a_python_grpcio_client_generated_from_the_same_proto_works() {
    let available = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !available {
        assert!(std::env::var_os("CI").is_none(), "CI must install grpcio and grpcio-tools (see .ci/run)");
        eprintln!(
            "\n*** SKIPPED: python3 with grpcio and grpcio-tools is not installed (pip install grpcio grpcio-tools) ***\n"
        );
        return;
    }
    let server = grpc_server().await;
    let site = server.create_site("Shop").await;
    let ann = server.create_agent("ann@shop.example", &site, 2).await;
    let (token, _) = token(&server, &site, false).await;
    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &visitor_token).await;
    let conversation_id = visitor.say(None, "v-1", "hello").await["conversation_id"].as_u64().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_interop/client.py");
    let address = server.grpc_url().trim_start_matches("http://").to_owned();
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--address", &address, "--token", &token])
        .args(["--conversation", &conversation_id.to_string(), "--agent", &ann.to_string()])
        .kill_on_drop(true)
        .output();
    let output =
        tokio::time::timeout(Duration::from_secs(120), output).await.expect("the Python client finishes").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("sent seq=2"), "{stdout}");
    assert!(stdout.contains("unknown: NOT_FOUND"), "{stdout}");
    assert!(stdout.contains("event: message.created"), "{stdout}");
    assert_eq!(visitor.expect("message").await["text"], "hello from grpcio");
}

/// Sends and receives raw bytes, to put a malformed message on the wire.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let length = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, length).to_vec()))
    }
}

#[tokio::test]
async fn a_malformed_message_is_refused_and_the_server_keeps_serving() {
    let server = grpc_server().await;
    let site = server.create_site("Shop").await;
    let (token, _) = token(&server, &site, false).await;
    let channel = channel(&server).await;
    let mut raw = tonic::client::Grpc::new(channel.clone());
    raw.ready().await.unwrap();
    // Field 1 (a number) sent as a length-delimited field that runs past the end.
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/kefu.api.v1.Conversations/Get");
    let refused = raw.unary(authed(&token, vec![0x0a, 0xff, 0x01]), path, RawCodec).await;
    // gRPC's status codes document INTERNAL for a request that cannot be parsed.
    assert_code(refused, Code::Internal);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/kefu.api.v1.NoSuch/Thing");
    raw.ready().await.unwrap();
    assert_code(raw.unary(authed(&token, vec![]), path, RawCodec).await, Code::Unimplemented);
    let mut kb = KnowledgeBaseClient::new(channel);
    assert!(kb.list(authed(&token, api::ListEntriesRequest {})).await.unwrap().into_inner().entries.is_empty());
}

#[tokio::test]
async fn reflection_lists_the_services_as_grpcurl_sees_them() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_response};

    let server = grpc_server().await;
    let mut reflection = ServerReflectionClient::new(channel(&server).await);
    let ask = |message_request| ServerReflectionRequest { host: String::new(), message_request: Some(message_request) };
    let requests = futures_util::stream::iter(vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol("kefu.api.v1.Messages".into())),
        ask(MessageRequest::FileByFilename("kefu.proto".into())),
    ]);
    let answers: Vec<_> = reflection.server_reflection_info(requests).await.unwrap().into_inner().collect().await;
    let answers: Vec<Option<MessageResponse>> =
        answers.into_iter().map(|answer| answer.unwrap().message_response).collect();
    let Some(server_reflection_response::MessageResponse::ListServicesResponse(list)) = &answers[0] else {
        panic!("{:?}", answers[0]);
    };
    let mut names: Vec<&str> = list.service.iter().map(|service| service.name.as_str()).collect();
    names.sort_unstable();
    for wanted in
        ["kefu.api.v1.Conversations", "kefu.api.v1.Events", "kefu.api.v1.KnowledgeBase", "kefu.api.v1.Messages"]
    {
        assert!(names.contains(&wanted), "{names:?}");
    }
    assert!(names.contains(&"kefu.api.v1.Visitors") && names.contains(&"grpc.health.v1.Health"), "{names:?}");
    // The API's file, then the chat messages it imports, which a client asks for by name.
    for (answer, wanted) in answers[1..].iter().zip([&b"kefu/api/v1/api.proto"[..], &b"kefu.proto"[..]]) {
        let Some(MessageResponse::FileDescriptorResponse(files)) = answer else { panic!("no file for {wanted:?}") };
        assert_eq!(files.file_descriptor_proto.len(), 1);
        let file = &files.file_descriptor_proto[0];
        assert!(file.windows(wanted.len()).any(|window| window == wanted), "{:?} is not in the answer", wanted);
    }
}

/// kefu with TLS (a self-signed certificate for localhost, made in its data directory) and gRPC.
fn tls_and_grpc(config: &mut kefu::base::config::Config) {
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (config.data_dir.join("cert.pem"), config.data_dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    config.tls.cert = Some(cert);
    config.tls.key = Some(key);
    config.grpc.listen = Some("127.0.0.1:0".parse().unwrap());
}

#[tokio::test]
async fn with_tls_the_grpc_port_speaks_tls_with_kefus_certificate() {
    use tonic::transport::{Certificate, ClientTlsConfig};

    let server = TestServer::start_with(tls_and_grpc).await;
    let pem = std::fs::read_to_string(server.app().config.data_dir.join("cert.pem")).unwrap();
    let address = server.grpc_url().trim_start_matches("http://").to_owned();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)).domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a client trusting kefu's certificate connects");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(answer.into_inner().status(), tonic_health::pb::health_check_response::ServingStatus::Serving);

    // A client that trusts another certificate is refused, and plain HTTP/2 gets no answer.
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let distrusting =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(stranger.cert.pem())).domain_name("localhost");
    let refused =
        Channel::from_shared(format!("https://{address}")).unwrap().tls_config(distrusting).unwrap().connect().await;
    assert!(refused.is_err(), "an untrusted certificate is refused");
    let plain = Channel::from_shared(format!("http://{address}")).unwrap().connect_timeout(Duration::from_secs(5));
    let checked = match plain.connect().await {
        Ok(channel) => {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            tokio::time::timeout(Duration::from_secs(5), health.check(tonic_health::pb::HealthCheckRequest::default()))
                .await
                .map(|answer| answer.is_ok())
                .unwrap_or(false)
        }
        Err(_) => false,
    };
    assert!(!checked, "plain HTTP/2 is not served when kefu has TLS");
}

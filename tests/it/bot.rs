//! The bot: knowledge-base answers, the language-model fallback against a local stand-in
//! OpenAI-compatible server, handoff by frame and by keyword, and an agent taking over.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use kefu::sites::Site;
use serde_json::{Value, json};

use crate::support::{Client, TestServer, history, http};

/// A stand-in chat-completions server: `/stream`, `/plain`, `/slow` and `/error` behave as named.
struct StandInLlm {
    addr: std::net::SocketAddr,
    requests: Arc<parking_lot::Mutex<Vec<Value>>>,
}

impl StandInLlm {
    async fn start() -> StandInLlm {
        let requests = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .route("/{mode}/chat/completions", axum::routing::post(stand_in_completion))
            .with_state(requests.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        StandInLlm { addr, requests }
    }

    fn base_url(&self, mode: &str) -> String {
        format!("http://{}/{mode}", self.addr)
    }
}

/// Server-sent events with `pieces`, then `[DONE]` when `finished`; `stall` keeps the stream
/// open and silent after the pieces instead of ending it.
fn event_stream(pieces: &[&str], finished: bool, stall: bool) -> Response {
    let mut chunks: Vec<Bytes> = pieces
        .iter()
        .map(|piece| {
            let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
            Bytes::from(format!("data: {chunk}\n\n"))
        })
        .collect();
    if finished {
        chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
    }
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    let body = if stall {
        Body::from_stream(stream.chain(futures_util::stream::pending()))
    } else {
        Body::from_stream(stream)
    };
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn plain_answer(content: &str) -> Response {
    axum::Json(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})).into_response()
}

/// Modes: `stream`, `plain`, `slow` (never answers), `error` (500), `cut` (ends without
/// `[DONE]`), `stall` (one piece, then silence). A judge request (`response_format` set) gets
/// `{"choice": 0}`, except in `judge1` (`{"choice": 1}`, then streams) and `judgebad` (not
/// JSON, then streams).
async fn stand_in_completion(
    State(requests): State<Arc<parking_lot::Mutex<Vec<Value>>>>,
    Path(mode): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let judging = body.get("response_format").is_some();
    requests.lock().push(body);
    match (mode.as_str(), judging) {
        ("judge1", true) => plain_answer("{\"choice\": 1}"),
        ("judgebad", true) => plain_answer("the first one, I think"),
        ("stream" | "plain" | "cut" | "stall", true) => plain_answer("{\"choice\": 0}"),
        ("stream" | "judge1" | "judgebad", false) => event_stream(&["Our ", "team ", "will help."], true, false),
        ("plain", false) => plain_answer("A plain answer."),
        ("cut", false) => event_stream(&["Our ", "team "], false, false),
        ("stall", false) => event_stream(&["Our "], false, true),
        ("slow", _) => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
    }
}

/// A server with a site, an admin, and the admin's token.
async fn setup() -> (TestServer, Site, String) {
    let server = TestServer::start_with(|config| config.llm.allow_private_addresses = true).await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("admin@shop.example").await;
    (server, site, admin)
}

pub(crate) async fn put_bot(server: &TestServer, token: &str, site: &Site, settings: Value) -> (u16, Value) {
    let response = http()
        .put(server.url(&format!("/api/v1/sites/{}/bot", site.key)))
        .bearer_auth(token)
        .json(&settings)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const ENTRIES_CSV: &str = "questions,answer,category\n\
How do I reset my password?|忘记密码怎么办,Open https://shop.example/reset and follow the link.,Account\n\
How much is shipping?|运费多少,Shipping is free over 99 yuan.,Shipping\n";

async fn import_entries(server: &TestServer, token: &str, site: &Site) {
    import_csv(server, token, site, ENTRIES_CSV.to_owned()).await;
}

/// Imports knowledge-base entries into `site` from CSV; the import must succeed.
pub(crate) async fn import_csv(server: &TestServer, token: &str, site: &Site, csv: String) {
    let response = http()
        .post(server.url(&format!("/api/v1/kb/import?site={}&format=csv", site.key)))
        .bearer_auth(token)
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// The next `message` frame written by the bot.
pub(crate) async fn bot_message(client: &mut Client) -> Value {
    loop {
        let message = client.expect("message").await;
        if message["sender"]["kind"] == "bot" {
            return message;
        }
    }
}

async fn conversation_event(client: &mut Client, name: &str, conversation_id: u64) -> Value {
    loop {
        let event = client.expect("conversation").await;
        if event["event"] == name && event["conversation"]["id"] == conversation_id {
            return event;
        }
    }
}

#[tokio::test]
async fn the_bot_greets_answers_from_the_knowledge_base_and_hands_off_by_keyword_with_the_transcript() {
    let (server, site, admin) = setup().await;
    import_entries(&server, &admin, &site).await;
    let (status, _) =
        put_bot(&server, &admin, &site, json!({"enabled": true, "greeting": "Hi, I am the shop bot."})).await;
    assert_eq!(status, 200);
    let agent_id = server.create_agent("ann@shop.example", &site, 3).await;
    let mut ann = server.agent(&server.login("ann@shop.example").await).await;

    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let ack = visitor.say(None, "v-1", "how do I reset my password").await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();
    let created = conversation_event(&mut ann, "created", conversation_id).await;
    assert_eq!(created["conversation"]["bot_active"], true);

    let greeting = bot_message(&mut visitor).await;
    assert_eq!(greeting["text"], "Hi, I am the shop bot.");
    assert_eq!(greeting["bot_source"]["kind"], "greeting");
    let answer = bot_message(&mut visitor).await;
    assert_eq!(answer["text"], "Open https://shop.example/reset and follow the link.");
    assert_eq!(answer["bot_source"]["kind"], "kb");
    assert_eq!(answer["bot_source"]["entry_id"], 1);
    assert_eq!(answer["client_id"], format!("bot-{conversation_id}-1"));

    // Chinese works the same way.
    visitor.say(None, "v-2", "运费多少？").await;
    let answer = bot_message(&mut visitor).await;
    assert_eq!(answer["bot_source"]["entry_id"], 2);

    // While the bot answers, routing leaves the conversation alone; "人工" hands it over.
    visitor.say(None, "v-3", "人工").await;
    conversation_event(&mut ann, "handed_off", conversation_id).await;
    let assigned = conversation_event(&mut ann, "assigned", conversation_id).await;
    assert_eq!(assigned["conversation"]["assigned_agent"], agent_id);
    assert_eq!(assigned["conversation"]["bot_active"], false);
    let notice = bot_message(&mut visitor).await;
    assert_eq!(notice["bot_source"], json!({"kind": "notice", "action": "handed_off"}));

    // The agent sees the whole transcript, with what the bot wrote and from where.
    let page = history(&server, &server.login("ann@shop.example").await, conversation_id).await;
    let messages = page["messages"].as_array().unwrap();
    let kinds: Vec<(&str, Option<&str>)> = messages
        .iter()
        .map(|message| (message["sender"]["kind"].as_str().unwrap(), message["bot_source"]["kind"].as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("visitor", None),
            ("bot", Some("greeting")),
            ("bot", Some("kb")),
            ("visitor", None),
            ("bot", Some("kb")),
            ("visitor", None),
            ("bot", Some("notice")),
        ]
    );

    // The bot stays quiet once humans have the conversation.
    visitor.say(None, "v-4", "how do I reset my password").await;
    let message = ann.expect("message").await;
    assert_eq!(message["text"], "how do I reset my password");
    ann.say(Some(conversation_id), "a-1", "Hello, Ann here.").await;
    let next = visitor.expect("message").await;
    assert_eq!(next["sender"]["kind"], "agent");

    // Bot messages survive a restart like any other.
    drop(visitor);
    drop(ann);
    let mut server = server;
    server.restart().await;
    let admin = server.login("admin@shop.example").await;
    let page = history(&server, &admin, conversation_id).await;
    assert_eq!(page["messages"][2]["bot_source"], json!({"kind": "kb", "entry_id": 1}));
}

#[tokio::test]
async fn handoff_by_frame_and_an_agent_taking_over_stop_the_bot() {
    let (server, site, admin) = setup().await;
    import_entries(&server, &admin, &site).await;
    put_bot(&server, &admin, &site, json!({"enabled": true})).await;

    // No agent online: the handoff offers the offline form.
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v-1", "how much is shipping").await["conversation_id"].as_u64().unwrap();
    assert_eq!(bot_message(&mut visitor).await["bot_source"]["kind"], "kb");
    visitor.send(json!({"type": "handoff", "conversation_id": conversation_id})).await;
    let event = visitor.expect("conversation").await;
    assert_eq!(event["event"], "handed_off");
    let notice = bot_message(&mut visitor).await;
    assert_eq!(notice["bot_source"]["action"], "offline_form");
    // A second tap changes nothing.
    visitor.send(json!({"type": "handoff", "conversation_id": conversation_id})).await;
    visitor.send(json!({"type": "ping"})).await;
    visitor.expect_next("pong").await;

    // An agent (the admin) taking a bot-handled conversation stops the bot there.
    let (_, token) = server.visitor_session(&site, None).await;
    let mut second = server.visitor(&site, &token).await;
    let second_id = second.say(None, "w-1", "how much is shipping").await["conversation_id"].as_u64().unwrap();
    bot_message(&mut second).await;
    let mut admin_socket = server.agent(&admin).await;
    admin_socket.send(json!({"type": "take", "conversation_id": second_id})).await;
    conversation_event(&mut admin_socket, "assigned", second_id).await;
    let so_far = admin_socket.expect_replayed(second_id).await;
    assert_eq!(so_far[0]["text"], "how much is shipping", "the agent gets the transcript with the conversation");
    second.say(None, "w-2", "how do I reset my password").await;
    assert_eq!(admin_socket.expect("message").await["text"], "how do I reset my password");
    admin_socket.say(Some(second_id), "a-1", "I'm here.").await;
    assert_eq!(second.expect("message").await["sender"]["kind"], "agent");
    second.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn bad_handoff_frames_get_clear_errors() {
    let (server, site, admin) = setup().await;
    put_bot(&server, &admin, &site, json!({"enabled": true})).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v-1", "hello there").await["conversation_id"].as_u64().unwrap();

    visitor.send(json!({"type": "handoff"})).await;
    let error = visitor.expect("error").await;
    assert_eq!(error["code"], "invalid_field");
    assert!(error["message"].as_str().unwrap().contains("conversation_id"), "{error}");
    visitor.send(json!({"type": "handoff", "conversation_id": 999_999})).await;
    assert_eq!(visitor.expect("error").await["code"], "not_found");

    let mut agent = server.agent(&admin).await;
    agent.send(json!({"type": "handoff", "conversation_id": conversation_id})).await;
    assert_eq!(agent.expect("error").await["code"], "forbidden");

    // Another visitor cannot hand over someone else's conversation.
    let (_, other_token) = server.visitor_session(&site, None).await;
    let mut other = server.visitor(&site, &other_token).await;
    other.send(json!({"type": "handoff", "conversation_id": conversation_id})).await;
    assert_eq!(other.expect("error").await["code"], "not_found");

    // Nothing changed: the conversation is still the bot's.
    let conversation = server
        .store()
        .read(move |transaction| kefu::chat::conversations::get(transaction, conversation_id))
        .await
        .unwrap()
        .unwrap();
    assert!(conversation.bot_active);

    // Switching the bot off hands its open conversations to humans at the visitor's next message.
    put_bot(&server, &admin, &site, json!({"enabled": false})).await;
    visitor.say(None, "v-2", "still there?").await;
    let event = visitor.expect("conversation").await;
    assert_eq!(event["event"], "handed_off");
    assert_eq!(event["conversation"]["id"], conversation_id);
}

/// Asks an unmatched question on a site whose LLM is `mode`; returns the visitor and conversation.
async fn ask_llm(mode: &str, timeout_ms: u64) -> (TestServer, Client, u64, StandInLlm) {
    ask_llm_timed(mode, timeout_ms, None).await
}

async fn ask_llm_timed(
    mode: &str,
    timeout_ms: u64,
    first_token_timeout_ms: Option<u64>,
) -> (TestServer, Client, u64, StandInLlm) {
    let llm = StandInLlm::start().await;
    let (server, site, admin) = setup().await;
    import_entries(&server, &admin, &site).await;
    let mut llm_settings = json!({"base_url": llm.base_url(mode), "model": "stand-in-1", "api_key": "sk-test-1234", "timeout_ms": timeout_ms});
    if let Some(first_token_timeout_ms) = first_token_timeout_ms {
        llm_settings["first_token_timeout_ms"] = json!(first_token_timeout_ms);
    }
    let settings = json!({"enabled": true, "llm": llm_settings});
    assert_eq!(put_bot(&server, &admin, &site, settings).await.0, 200);
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let ack = visitor.say(None, "v-1", "can I get my parcel delivered on a sunday, and what about my password?").await;
    (server, visitor, ack["conversation_id"].as_u64().unwrap(), llm)
}

#[tokio::test]
async fn a_streaming_language_model_answers_below_the_threshold() {
    let (server, mut visitor, conversation_id, llm) = ask_llm("stream", 10_000).await;
    let mut streamed = String::new();
    let stream_id = loop {
        let frame = visitor.expect("bot_stream").await;
        assert_eq!(frame["conversation_id"], conversation_id);
        if frame["done"] == true {
            break frame["stream_id"].as_str().unwrap().to_owned();
        }
        streamed.push_str(frame["delta"].as_str().unwrap());
    };
    assert_eq!(streamed, "Our team will help.");
    let message = bot_message(&mut visitor).await;
    assert_eq!(message["text"], "Our team will help.");
    assert_eq!(message["bot_source"], json!({"kind": "llm", "model": "stand-in-1", "stream_id": stream_id}));

    // The model was asked to judge the top entries first (it chose none), then to answer: with
    // the visitor's message and the best entries as context, and the key.
    let requests = llm.requests.lock().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["response_format"]["type"], "json_schema");
    assert!(requests[0]["messages"].to_string().contains("How do I reset my password?"));
    let request = requests[1].clone();
    assert_eq!(request["model"], "stand-in-1");
    assert_eq!(request["stream"], true);
    let prompt = request["messages"].to_string();
    assert!(prompt.contains("How do I reset my password?"), "{prompt}");
    assert!(prompt.contains("delivered on a sunday"), "{prompt}");
    drop(server);
}

#[tokio::test]
async fn a_non_streaming_language_model_answers_too() {
    let (_server, mut visitor, _, _llm) = ask_llm("plain", 10_000).await;
    let message = bot_message(&mut visitor).await;
    assert_eq!(message["text"], "A plain answer.");
    assert_eq!(message["bot_source"]["kind"], "llm");
}

/// The visitor's next bot message, with every `bot_stream` frame that came before it.
async fn bot_message_after_streams(client: &mut Client) -> (Value, Vec<Value>) {
    let mut streams = Vec::new();
    loop {
        let frame = client.next().await;
        match frame["type"].as_str() {
            Some("bot_stream") => streams.push(frame),
            Some("message") if frame["sender"]["kind"] == "bot" => return (frame, streams),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_failing_stalled_or_cut_language_model_hands_off_by_itself() {
    // (mode, timeout_ms, first_token_timeout_ms, whether pieces were streamed first)
    let cases = [
        ("error", 10_000, 5_000, false),
        ("slow", 300, 300, false),
        ("slow", 20_000, 300, false),
        ("stall", 20_000, 500, true),
        ("cut", 10_000, 5_000, true),
    ];
    for (mode, timeout_ms, first_token_timeout_ms, streamed) in cases {
        let started = std::time::Instant::now();
        let (_server, mut visitor, conversation_id, _llm) =
            ask_llm_timed(mode, timeout_ms, Some(first_token_timeout_ms)).await;
        let (message, streams) = bot_message_after_streams(&mut visitor).await;
        // The handoff notice, not an offer: nobody is online here, so it shows the offline form.
        assert_eq!(message["bot_source"], json!({"kind": "notice", "action": "offline_form"}), "{mode}");
        assert_eq!(message["client_id"], format!("bot-{conversation_id}-handoff"), "{mode}");
        if streamed {
            let last = streams.last().unwrap_or_else(|| panic!("{mode}: no stream frames"));
            assert_eq!((last["done"].clone(), last["cut"].clone()), (json!(true), json!(true)), "{mode}: {last}");
            assert!(streams.iter().any(|frame| frame["delta"] == "Our "), "{mode}");
        }
        // The first-token timeout gives up well before the 20 s the whole answer may take (the
        // margin is wide: shared test machines stall for seconds).
        if mode == "slow" && timeout_ms == 20_000 {
            assert!(started.elapsed() < std::time::Duration::from_secs(15), "{:?}", started.elapsed());
        }
        // The visitor is in the queue now: a later message gets no bot answer.
        visitor.say(Some(conversation_id), "v-2", "hello?").await;
        visitor.expect_silence(std::time::Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn the_language_model_judges_middling_matches_and_a_bad_verdict_changes_nothing() {
    // The judge picks the first entry offered: the knowledge-base answer is sent as is.
    let (_server, mut visitor, _, llm) = ask_llm("judge1", 10_000).await;
    let message = bot_message(&mut visitor).await;
    assert_eq!(message["text"], "Open https://shop.example/reset and follow the link.");
    assert_eq!(message["bot_source"]["kind"], "kb");
    let requests = llm.requests.lock().clone();
    assert_eq!(requests.len(), 1, "no generation after a verdict");
    let schema = &requests[0]["response_format"]["json_schema"]["schema"];
    assert_eq!(schema["properties"]["choice"]["enum"], json!([0, 1]), "none, or the one entry that matched at all");
    assert_eq!(requests[0]["stream"], false);

    // A verdict that is not the JSON asked for is ignored: the model then answers as usual.
    let (_server, mut visitor, _, llm) = ask_llm("judgebad", 10_000).await;
    let message = bot_message(&mut visitor).await;
    assert_eq!(message["text"], "Our team will help.");
    assert_eq!(message["bot_source"]["kind"], "llm");
    assert_eq!(llm.requests.lock().len(), 2);
}

#[tokio::test]
async fn handoff_phrases_with_typos_and_a_sites_own_phrases_hand_off() {
    let (server, site, admin) = setup().await;
    import_entries(&server, &admin, &site).await;
    let settings = json!({"enabled": true, "handoff_phrases": ["speak to the manager", "找店长"]});
    let (status, saved) = put_bot(&server, &admin, &site, settings).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["handoff_phrases"], json!(["speak to the manager", "找店长"]));
    for (number, text) in [
        "我要人工",
        "转人工客服",
        "人工服务",
        "找客服",
        "真人",
        "can I talk to a human?",
        "talk to an agent",
        "real persn",
        "can i tlak to a humna",
        "I'd like to speak to the manger",
        "找店长！",
    ]
    .iter()
    .enumerate()
    {
        let (_, token) = server.visitor_session(&site, None).await;
        let mut visitor = server.visitor(&site, &token).await;
        let ack = visitor.say(None, &format!("v-{number}"), text).await;
        let conversation_id = ack["conversation_id"].as_u64().unwrap();
        let notice = bot_message(&mut visitor).await;
        assert_eq!(notice["client_id"], format!("bot-{conversation_id}-handoff"), "{text}: {notice}");
    }
    // A question that mentions a human is answered, not handed off.
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    visitor.say(None, "v-x", "is a human reading this? how do I reset my password").await;
    let answer = bot_message(&mut visitor).await;
    assert_ne!(answer["bot_source"]["action"], "handed_off", "{answer}");

    // Bad phrases and bad term lines are refused and change nothing.
    for bad in [
        json!({"enabled": true, "handoff_phrases": [""]}),
        json!({"enabled": true, "handoff_phrases": ["x".repeat(51)]}),
        json!({"enabled": true, "terms": "only one term"}),
    ] {
        let (status, body) = put_bot(&server, &admin, &site, bad).await;
        assert_eq!(status, 422, "{body}");
    }
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    visitor.say(None, "v-y", "找店长").await;
    let notice = bot_message(&mut visitor).await;
    assert_eq!(notice["bot_source"]["kind"], "notice");
    assert!(notice["client_id"].as_str().unwrap().ends_with("-handoff"), "{notice}");
}

#[tokio::test]
async fn a_model_endpoint_named_to_reach_loopback_is_never_called_without_the_setting() {
    let llm = StandInLlm::start().await;
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("admin@shop.example").await;
    import_entries(&server, &admin, &site).await;
    // A name is not refused when saved (it may resolve elsewhere later); the connection is.
    let base_url = format!("http://localhost:{}/stream", llm.addr.port());
    let settings = json!({"enabled": true, "llm": {"base_url": base_url, "model": "stand-in-1", "timeout_ms": 10_000}});
    assert_eq!(put_bot(&server, &admin, &site, settings).await.0, 200);
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    visitor.say(None, "v-1", "can I get my parcel delivered on a sunday, and what about my password?").await;
    let message = bot_message(&mut visitor).await;
    assert_eq!(message["bot_source"]["kind"], "notice", "{message}");
    assert!(llm.requests.lock().is_empty(), "the guard refused the loopback address before any request");
}

#[tokio::test]
async fn knowledge_base_entries_are_managed_by_admins_only() {
    let (server, site, admin) = setup().await;
    server.create_agent("ann@shop.example", &site, 3).await;
    let ann = server.login("ann@shop.example").await;
    let (_, visitor) = server.visitor_session(&site, None).await;
    let kb = |query: &str| server.url(&format!("/api/v1/kb{query}"));
    let entry = json!({"questions": ["Where is my order?", "我的订单到哪了"], "answer": "See Orders → Track.", "category": "Orders"});

    for token in [&ann, &visitor] {
        let response =
            http().post(kb(&format!("?site={}", site.key))).bearer_auth(token).json(&entry).send().await.unwrap();
        assert_eq!(response.status(), 403);
    }
    let response =
        http().post(kb(&format!("?site={}", site.key))).bearer_auth(&admin).json(&entry).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_u64().unwrap();
    assert_eq!(created["questions"][1], "我的订单到哪了");

    // Agents of the site read; visitors do not.
    let list = |token: String| {
        let url = kb(&format!("?site={}", site.key));
        async move { http().get(url).bearer_auth(token).send().await.unwrap() }
    };
    let listed: Value = list(ann.clone()).await.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(list(visitor.clone()).await.status(), 403);

    // Non-admins change nothing.
    let changed = json!({"questions": ["Track my order"], "answer": "Orders → Track.", "category": "Orders"});
    for token in [&ann, &visitor] {
        assert_eq!(
            http().put(kb(&format!("/{id}"))).bearer_auth(token).json(&changed).send().await.unwrap().status(),
            403
        );
        assert_eq!(http().delete(kb(&format!("/{id}"))).bearer_auth(token).send().await.unwrap().status(), 403);
        let import = http()
            .post(kb(&format!("/import?site={}&format=csv", site.key)))
            .bearer_auth(token)
            .body(ENTRIES_CSV)
            .send()
            .await
            .unwrap();
        assert_eq!(import.status(), 403);
    }
    let listed: Value = list(admin.clone()).await.json().await.unwrap();
    assert_eq!(listed[0], created);

    let updated: Value = http()
        .put(kb(&format!("/{id}")))
        .bearer_auth(&admin)
        .json(&changed)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(updated["questions"], json!(["Track my order"]));

    // Export and import round trip, in both formats: the CSV carries ids, so importing it back
    // updates the entry; Markdown has none, so its import adds what the export held.
    for (format, n_exported, n_created) in [("csv", 1, 0), ("markdown", 1, 1)] {
        let exported = http()
            .get(kb(&format!("/export?site={}&format={format}", site.key)))
            .bearer_auth(&ann)
            .send()
            .await
            .unwrap();
        assert_eq!(exported.status(), 200);
        let text = exported.text().await.unwrap();
        assert!(text.contains("Track my order"), "{text}");
        let imported: Value = http()
            .post(kb(&format!("/import?site={}&format={format}", site.key)))
            .bearer_auth(&admin)
            .body(text)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(imported["imported"], n_exported);
        assert_eq!(imported["created"], n_created);
    }
    let listed: Value = list(admin.clone()).await.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(listed.as_array().unwrap().iter().all(|entry| entry["answer"] == "Orders → Track."));

    assert_eq!(http().delete(kb(&format!("/{id}"))).bearer_auth(&admin).send().await.unwrap().status(), 204);
    assert_eq!(http().delete(kb(&format!("/{id}"))).bearer_auth(&admin).send().await.unwrap().status(), 404);
    let listed: Value = list(admin.clone()).await.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_knowledge_base_input_gets_clear_errors_and_changes_nothing() {
    let (server, site, admin) = setup().await;
    let kb = |query: &str| server.url(&format!("/api/v1/kb{query}"));
    let good = json!({"questions": ["q"], "answer": "a"});
    let check = |response: reqwest::Response, status: u16, part: &'static str| async move {
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(part), "{message}");
    };
    let post = |query: String, body: Value| http().post(kb(&query)).bearer_auth(&admin).json(&body).send();

    check(post(String::new(), good.clone()).await.unwrap(), 422, "site").await;
    check(post("?site=nope".into(), good.clone()).await.unwrap(), 404, "site").await;
    let on_site = format!("?site={}", site.key);
    check(post(on_site.clone(), json!({"questions": [], "answer": "a"})).await.unwrap(), 422, "questions").await;
    check(post(on_site.clone(), json!({"questions": ["  "], "answer": "a"})).await.unwrap(), 422, "questions").await;
    check(post(on_site.clone(), json!({"questions": ["q"], "answer": ""})).await.unwrap(), 422, "answer").await;
    check(post(on_site.clone(), json!({"questions": ["q"], "answer": "a", "extra": 1})).await.unwrap(), 422, "extra")
        .await;
    check(
        post(on_site.clone(), json!({"questions": ["q"], "answer": "a", "category": "x\ny"})).await.unwrap(),
        422,
        "category",
    )
    .await;
    let too_long = "x".repeat(5001);
    check(post(on_site.clone(), json!({"questions": ["q"], "answer": too_long})).await.unwrap(), 422, "answer").await;
    check(http().put(kb("/abc")).bearer_auth(&admin).json(&good).send().await.unwrap(), 422, "id").await;
    check(http().put(kb("/12345")).bearer_auth(&admin).json(&good).send().await.unwrap(), 404, "entry").await;
    check(http().delete(kb("/-1")).bearer_auth(&admin).send().await.unwrap(), 422, "id").await;

    let import = |query: String, body: Vec<u8>| http().post(kb(&query)).bearer_auth(&admin).body(body).send();
    let import_query = |format: &str| format!("/import?site={}&format={format}", site.key);
    check(import(import_query("xml"), b"x".to_vec()).await.unwrap(), 422, "format").await;
    check(import(format!("/import?site={}", site.key), b"x".to_vec()).await.unwrap(), 422, "format").await;
    check(import(import_query("csv"), vec![0xff, 0xfe]).await.unwrap(), 422, "UTF-8").await;
    // One bad row refuses the whole file.
    let half_bad = "questions,answer\nfine,ok\nbroken,\n";
    check(import(import_query("csv"), half_bad.into()).await.unwrap(), 422, "row 3").await;
    check(import(import_query("markdown"), b"no heading".to_vec()).await.unwrap(), 422, "line 1").await;
    check(
        http().get(kb(&format!("/export?site={}&format=pdf", site.key))).bearer_auth(&admin).send().await.unwrap(),
        422,
        "format",
    )
    .await;

    let listed: Value = http().get(kb(&on_site)).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn bot_settings_are_admin_only_validated_and_never_show_the_key() {
    let (server, site, admin) = setup().await;
    server.create_agent("ann@shop.example", &site, 3).await;
    let ann = server.login("ann@shop.example").await;
    let url = server.url(&format!("/api/v1/sites/{}/bot", site.key));

    let defaults: Value = http().get(&url).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(defaults["enabled"], false);
    assert!((defaults["threshold"].as_f64().unwrap() - f64::from(kefu::bot::DEFAULT_THRESHOLD)).abs() < 1e-6);
    assert_eq!(http().get(&url).bearer_auth(&ann).send().await.unwrap().status(), 403);
    let (status, _) = put_bot(&server, &ann, &site, json!({"enabled": true})).await;
    assert_eq!(status, 403);

    let llm = json!({"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": "sk-secret-abcd"});
    let (status, saved) = put_bot(&server, &admin, &site, json!({"enabled": true, "threshold": 0.7, "llm": llm})).await;
    assert_eq!(status, 200);
    assert_eq!(saved["llm"]["api_key"], "**********abcd");
    let shown: Value = http().get(&url).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown["llm"]["api_key"], "**********abcd");
    assert!(!shown.to_string().contains("secret"));

    // Saving the masked value back keeps the stored key.
    let mut again = shown.clone();
    again["greeting"] = json!("Hello!");
    assert_eq!(put_bot(&server, &admin, &site, again).await.0, 200);
    let stored = server.app().bot.settings(&site.key).await.unwrap();
    assert_eq!(stored.llm.as_ref().unwrap().api_key, "sk-secret-abcd");
    assert_eq!(stored.greeting, "Hello!");

    for (body, part) in [
        (json!({"threshold": 1.5}), "threshold"),
        (json!({"threshold": "high"}), "threshold"),
        (json!({"colour": "red"}), "colour"),
        (json!({"name": ""}), "name"),
        (json!({"llm": {"base_url": "ftp://x", "model": "m"}}), "base_url"),
        (json!({"llm": {"base_url": "http://x", "model": ""}}), "model"),
        (json!({"llm": {"base_url": "http://x", "model": "m", "timeout_ms": 5}}), "timeout_ms"),
    ] {
        let (status, error) = put_bot(&server, &admin, &site, body.clone()).await;
        assert_eq!(status, 422, "{body}");
        assert!(error["error"]["message"].as_str().unwrap().contains(part), "{body}: {error}");
    }
    let after = server.app().bot.settings(&site.key).await.unwrap();
    assert_eq!(*after, *stored);

    let response = http()
        .put(server.url("/api/v1/sites/nope/bot"))
        .bearer_auth(&admin)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// A stand-in embeddings endpoint: a text's vector counts its topic words (refund: "refund",
/// "money", "退款"; shipping: "shipping", "运费"), a text with neither points along a third axis.
/// `/broken/embeddings` answers 500. Every input it embedded is kept.
pub(crate) struct StandInEmbeddings {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) inputs: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl StandInEmbeddings {
    pub(crate) async fn start() -> StandInEmbeddings {
        let inputs = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .route("/{mode}/embeddings", axum::routing::post(stand_in_embeddings))
            .with_state(inputs.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        StandInEmbeddings { addr, inputs }
    }
}

fn topic_vector(text: &str) -> Vec<f32> {
    let text = text.to_lowercase();
    let refund = ["refund", "money", "退款"].iter().map(|word| text.matches(word).count()).sum::<usize>();
    let shipping = ["shipping", "运费"].iter().map(|word| text.matches(word).count()).sum::<usize>();
    if refund + shipping == 0 {
        return vec![0.0, 0.0, 1.0];
    }
    vec![refund as f32, shipping as f32, 0.0]
}

async fn stand_in_embeddings(
    State(inputs): State<Arc<parking_lot::Mutex<Vec<String>>>>,
    Path(mode): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if mode == "broken" {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    let texts: Vec<String> =
        body["input"].as_array().unwrap().iter().map(|text| text.as_str().unwrap().to_owned()).collect();
    inputs.lock().extend(texts.iter().cloned());
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": topic_vector(text)}))
        .collect();
    axum::Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
}

pub(crate) const REFUND_ENTRIES_CSV: &str = "questions,answer,category\n\
How do I get a refund?|退款怎么申请,Refunds reach your card within 5 days.,Orders\n\
How much is shipping?|运费多少,Shipping is free over 99 yuan.,Shipping\n";

/// How many entry vectors the server has stored.
pub(crate) async fn stored_vectors(server: &TestServer) -> usize {
    server
        .store()
        .read(|transaction| {
            use redb::ReadableTableMetadata;
            Ok(transaction.open_table(kefu::storage::tables::KB_VECTORS)?.len()? as usize)
        })
        .await
        .unwrap()
}

async fn wait_for(what: &str, done: impl AsyncFnMut() -> bool) {
    wait_up_to(what, Duration::from_secs(5), done).await;
}

/// Checks `done` every 50 ms until it holds; panics after `limit`.
pub(crate) async fn wait_up_to(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {limit:?}");
}

#[tokio::test]
async fn the_semantic_tier_embeds_entries_once_answers_by_meaning_and_falls_back_when_its_endpoint_fails() {
    let embeddings = StandInEmbeddings::start().await;
    let (server, site, admin) = setup().await;
    import_csv(&server, &admin, &site, REFUND_ENTRIES_CSV.to_owned()).await;

    // Lexically, "can I have my money back?" matches nothing: the bot offers a human.
    assert_eq!(put_bot(&server, &admin, &site, json!({"enabled": true})).await.0, 200);
    let ask = async |client_id: &str, text: &str| {
        let (_, token) = server.visitor_session(&site, None).await;
        let mut visitor = server.visitor(&site, &token).await;
        visitor.say(None, client_id, text).await;
        bot_message(&mut visitor).await
    };
    let answer = ask("v-1", "can I have my money back?").await;
    assert_eq!(answer["bot_source"]["kind"], "notice", "{answer}");

    // With embeddings, both entries are embedded once and stored; the key is masked. Two
    // entries are too few for the semantic tier to decide (where a cosine stands among two says
    // little): the lexical ranking still does, and answers an exact question at the default
    // threshold.
    let base_url = format!("http://{}/ok", embeddings.addr);
    let settings =
        json!({"enabled": true, "embeddings": {"base_url": base_url, "model": "topics-1", "api_key": "sk-embed-9876"}});
    let (status, saved) = put_bot(&server, &admin, &site, settings).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["embeddings"]["api_key"], "*********9876");
    wait_for("two stored vectors", async || stored_vectors(&server).await == 2).await;
    assert_eq!(embeddings.inputs.lock().len(), 2);
    let answer = ask("v-2", "How much is shipping?").await;
    assert_eq!(answer["text"], "Shipping is free over 99 yuan.", "{answer}");
    assert_eq!(ask("v-3", "can I have my money back?").await["bot_source"]["kind"], "notice");

    // Twelve entries: the semantic tier decides, and the message is answered by meaning alone
    // (no word in common with the entry; this site answers from 0.5).
    let fillers: String =
        (1..=10).map(|n| format!("Opening hours of branch {n}?,Branch {n} opens at {n} am.,Branches\n")).collect();
    import_csv(&server, &admin, &site, format!("questions,answer,category\n{fillers}")).await;
    assert_eq!(put_bot(&server, &admin, &site, json!({"enabled": true, "threshold": 0.5})).await.0, 200);
    wait_for("twelve stored vectors", async || stored_vectors(&server).await == 12).await;
    wait_for("the vectors in use", async || {
        let answer = ask("v-4", "can I have my money back?").await;
        answer["bot_source"]["kind"] == "kb"
    })
    .await;
    let answer = ask("v-5", "can I have my money back?").await;
    assert_eq!(answer["text"], "Refunds reach your card within 5 days.");

    // Saving other settings keeps the endpoint; editing one entry embeds that entry again only.
    let (_, saved) = put_bot(&server, &admin, &site, json!({"enabled": true, "greeting": "Hi"})).await;
    assert_eq!(saved["embeddings"]["model"], "topics-1");
    let n_before = embeddings.inputs.lock().len();
    let edited = json!({"questions": ["How much is shipping?", "运费多少"], "answer": "Shipping costs 5 yuan."});
    let (status, _) = crate::support::call(&server, "PUT", "/api/v1/kb/2", &admin, Some(edited)).await;
    assert_eq!(status, 200);
    wait_for("the edited entry embedded", async || embeddings.inputs.lock().len() > n_before).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = embeddings.inputs.lock().clone();
    let embedded_entries: Vec<&String> = after[n_before..].iter().filter(|text| text.contains('\n')).collect();
    assert_eq!(embedded_entries.len(), 1, "{embedded_entries:?}");
    assert!(embedded_entries[0].contains("Shipping costs 5 yuan."));

    // A failing endpoint leaves the lexical tier: an exact question is still answered.
    let broken = format!("http://{}/broken", embeddings.addr);
    // (Settings keep what a change leaves out, so the greeting set above is cleared here.)
    let settings = json!({"enabled": true, "greeting": "", "embeddings": {"base_url": broken, "model": "topics-2"}});
    assert_eq!(put_bot(&server, &admin, &site, settings).await.0, 200);
    let answer = ask("v-6", "How much is shipping?").await;
    assert_eq!(answer["text"], "Shipping costs 5 yuan.");

    // Bad endpoints are refused; null removes the tier.
    for bad in [
        json!({"enabled": true, "embeddings": {"base_url": "ftp://x", "model": "m"}}),
        json!({"enabled": true, "embeddings": {"base_url": base_url, "model": ""}}),
        json!({"enabled": true, "embeddings": {"base_url": base_url, "model": "m", "timeout_ms": 5}}),
    ] {
        let (status, body) = put_bot(&server, &admin, &site, bad).await;
        assert_eq!(status, 422, "{body}");
    }
    let (status, saved) = put_bot(&server, &admin, &site, json!({"enabled": true, "embeddings": null})).await;
    assert_eq!(status, 200);
    assert_eq!(saved["embeddings"], Value::Null);
}

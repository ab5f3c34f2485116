//! The bot as visitors and admins live with it: settings changes that keep what they do not
//! name, visitors' thumbs on answers, related questions, conversations only the bot took part in
//! closing after inactivity, and an agent's opening list in pages however many are open.

use kefu::bot::feedback::BotFeedbackStore;
use kefu::sites::Site;
use serde_json::{Value, json};

use crate::support::{Client, TestServer, call_expecting};

/// A server with a site, an admin's token, and two knowledge-base entries.
async fn setup() -> (TestServer, Site, String) {
    let server = TestServer::start_with(|config| config.llm.allow_private_addresses = true).await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("admin@shop.example").await;
    for (question, answer) in [
        ("How much is shipping?", "Shipping is free over 99 yuan."),
        ("How do I return an item?", "Returns are free within 30 days."),
    ] {
        let path = format!("/api/v1/kb?site={}", site.key);
        call_expecting(&server, "POST", &path, &admin, Some(json!({"questions": [question], "answer": answer})), 201)
            .await;
    }
    (server, site, admin)
}

fn bot_path(site: &Site) -> String {
    format!("/api/v1/sites/{}/bot", site.key)
}

/// The next message the bot wrote.
async fn bot_message(client: &mut Client) -> Value {
    loop {
        let message = client.expect("message").await;
        if message["sender"]["kind"] == "bot" {
            return message;
        }
    }
}

#[tokio::test]
async fn a_settings_change_keeps_every_field_it_does_not_name() {
    let (server, site, admin) = setup().await;
    let full = json!({
        "enabled": true,
        "greeting": "Hi!",
        "threshold": 0.7,
        "idle_close_minutes": 45,
        "llm": {"base_url": "http://127.0.0.1:9/v1", "model": "small", "api_key": "sk-secret1234", "timeout_ms": 5000},
    });
    call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(full), 200).await;

    // The reported bug: only the threshold changes; the bot stays on and keeps its model.
    let changed = call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(json!({"threshold": 0.6})), 200).await;
    let read = call_expecting(&server, "GET", &bot_path(&site), &admin, None, 200).await;
    assert_eq!(changed, read);
    assert_eq!(read["enabled"], true);
    assert_eq!(read["greeting"], "Hi!");
    assert_eq!(read["idle_close_minutes"], 45);
    assert!((read["threshold"].as_f64().unwrap() - 0.6).abs() < 1e-6, "{read}");
    assert_eq!(read["llm"]["model"], "small");
    assert_eq!(read["llm"]["timeout_ms"], 5000);
    assert_eq!(read["llm"]["api_key"], "*********1234", "the key is never shown back");

    // The masked key sent back keeps the stored one; a new model keeps the rest of the model.
    let body = json!({"llm": {"model": "large", "api_key": "*********1234"}});
    call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(body), 200).await;
    let settings = server.app().bot.settings(&site.key).await.unwrap();
    let llm = settings.llm.clone().unwrap();
    assert_eq!((llm.model.as_str(), llm.api_key.as_str()), ("large", "sk-secret1234"));
    assert!(settings.enabled);

    // `null` removes the model; nothing else moves.
    call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(json!({"llm": null})), 200).await;
    let settings = server.app().bot.settings(&site.key).await.unwrap();
    assert_eq!(settings.llm, None);
    assert!(settings.enabled && settings.greeting == "Hi!");
}

#[tokio::test]
async fn bad_settings_changes_are_refused_and_change_nothing() {
    let (server, site, admin) = setup().await;
    call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(json!({"enabled": true, "greeting": "Hi"})), 200)
        .await;
    let before = call_expecting(&server, "GET", &bot_path(&site), &admin, None, 200).await;

    for (body, field) in [
        (json!({"threshold": "high"}), "threshold"),
        (json!({"enabled": "yes"}), "enabled"),
        (json!({"threshold": 1.5}), "threshold"),
        (json!({"idle_close_minutes": -1}), "idle_close_minutes"),
        (json!({"idle_close_minutes": 100000}), "idle_close_minutes"),
        (json!({"treshold": 0.5}), "treshold"),
        (json!({"llm": {"model": "m"}}), "llm.base_url"),
        (json!({"llm": {"base_url": "ftp://x", "model": "m"}}), "llm.base_url"),
        (json!({"llm": "http://x"}), "llm"),
    ] {
        let answer = call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(body.clone()), 422).await;
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    let after = call_expecting(&server, "GET", &bot_path(&site), &admin, None, 200).await;
    assert_eq!(before, after);

    // An unknown site is 404; an agent, a visitor and an API token (of this site or another) 403.
    call_expecting(&server, "PUT", "/api/v1/sites/nope/bot", &admin, Some(json!({"threshold": 0.5})), 404).await;
    let other = server.create_site("Other").await;
    let token = kefu::people::api_tokens::ApiTokenStore::create_token(
        server.store(),
        kefu::people::api_tokens::NewApiToken {
            name: "crm".into(),
            site: other.key.clone(),
            read_only: false,
            created_by: "test".into(),
        },
    )
    .await
    .unwrap()
    .secret;
    call_expecting(&server, "PUT", &bot_path(&site), &token, Some(json!({"threshold": 0.5})), 403).await;
    call_expecting(&server, "GET", &bot_path(&site), &token, None, 403).await;
    server.create_agent("ann@shop.example", &site, 3).await;
    let agent = server.login("ann@shop.example").await;
    call_expecting(&server, "PUT", &bot_path(&site), &agent, Some(json!({"threshold": 0.5})), 403).await;
    let (_, visitor) = server.visitor_session(&site, None).await;
    call_expecting(&server, "PUT", &bot_path(&site), &visitor, Some(json!({"threshold": 0.5})), 403).await;
    let after = call_expecting(&server, "GET", &bot_path(&site), &admin, None, 200).await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn visitors_rate_answers_and_a_near_miss_offers_related_questions() {
    let (server, site, admin) = setup().await;
    call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(json!({"enabled": true})), 200).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v-1", "How much is shipping?").await["conversation_id"].as_u64().unwrap();
    let answer = bot_message(&mut visitor).await;
    assert_eq!(answer["bot_source"]["kind"], "kb");
    let seq = answer["seq"].as_u64().unwrap();
    let path = format!("/api/v1/conversations/{conversation_id}/messages/{seq}/feedback");

    // Thumbs down, then up again: the last verdict counts.
    call_expecting(&server, "POST", &path, &token, Some(json!({"helpful": false})), 204).await;
    let unhelpful = BotFeedbackStore::unhelpful(server.store(), &site.key, 10).await.unwrap();
    assert_eq!(unhelpful.len(), 1);
    assert_eq!(unhelpful[0].question, "How much is shipping?");
    assert_eq!(unhelpful[0].answer, "Shipping is free over 99 yuan.");
    assert!(unhelpful[0].entry_id.is_some());

    // Bad feedback changes nothing: not an answer, no such message, wrong body, someone else.
    call_expecting(
        &server,
        "POST",
        &path.replace(&format!("/{seq}/"), "/1/"),
        &token,
        Some(json!({"helpful": true})),
        422,
    )
    .await;
    call_expecting(
        &server,
        "POST",
        &path.replace(&format!("/{seq}/"), "/999/"),
        &token,
        Some(json!({"helpful": true})),
        404,
    )
    .await;
    call_expecting(&server, "POST", &path, &token, Some(json!({"helpful": "yes"})), 422).await;
    call_expecting(&server, "POST", &path, &token, Some(json!({"helpful": true, "x": 1})), 422).await;
    let (_, stranger) = server.visitor_session(&site, None).await;
    call_expecting(&server, "POST", &path, &stranger, Some(json!({"helpful": true})), 404).await;
    call_expecting(&server, "POST", &path, &admin, Some(json!({"helpful": true})), 403).await;
    let read_unhelpful = |server: &TestServer| {
        let site = site.key.clone();
        let store = server.store().clone();
        async move { BotFeedbackStore::unhelpful(&store, &site, 10).await.unwrap() }
    };
    assert_eq!(read_unhelpful(&server).await.len(), 1);
    call_expecting(&server, "POST", &path, &token, Some(json!({"helpful": true})), 204).await;
    assert!(read_unhelpful(&server).await.is_empty());

    // A message near an entry but below the threshold gets a notice with related questions (the
    // threshold is raised so that the near match stays below it whatever the calibration).
    call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(json!({"threshold": 0.99})), 200).await;
    visitor.say(None, "v-2", "shipping to Tibet, how long?").await;
    let notice = bot_message(&mut visitor).await;
    assert_eq!(notice["bot_source"]["kind"], "notice", "{notice}");
    assert_eq!(notice["bot_source"]["related"][0], "How much is shipping?", "{notice}");
    // Something unrelated gets none.
    visitor.say(None, "v-3", "qwertyuiop").await;
    let notice = bot_message(&mut visitor).await;
    assert!(notice["bot_source"].get("related").is_none(), "{notice}");
}

#[tokio::test]
async fn a_conversation_only_the_bot_took_part_in_closes_after_the_idle_time_and_never_queues() {
    let (server, site, admin) = setup().await;
    call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(json!({"enabled": true})), 200).await;
    server.create_agent("ann@shop.example", &site, 3).await;
    let mut ann = server.agent(&server.login("ann@shop.example").await).await;

    // One conversation stays the bot's; another is handed to a human.
    let (_, token) = server.visitor_session(&site, None).await;
    let mut alone = server.visitor(&site, &token).await;
    let bot_only = alone.say(None, "a-1", "How much is shipping?").await["conversation_id"].as_u64().unwrap();
    bot_message(&mut alone).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut helped = server.visitor(&site, &token).await;
    let handed = helped.say(None, "h-1", "hello").await["conversation_id"].as_u64().unwrap();
    helped.send(json!({"type": "handoff", "conversation_id": handed})).await;
    loop {
        let event = ann.expect("conversation").await;
        if event["event"] == "assigned" && event["conversation"]["id"] == handed {
            break;
        }
    }

    // While it is the bot's, the conversation is not in the queue, nor assigned.
    let store = server.store().clone();
    let get = |id: u64| {
        let store = store.clone();
        async move { store.read(move |transaction| kefu::chat::conversations::get(transaction, id)).await.unwrap().unwrap() }
    };
    let conversation = get(bot_only).await;
    assert!(conversation.bot_active && conversation.assigned_agent.is_none());

    // Not yet idle for the default 30 minutes: nothing closes.
    let bot = &server.app().bot;
    let now = kefu::base::clock::now_millis();
    assert_eq!(kefu::bot::lifecycle::close_idle(&store, bot, now + 29 * 60_000).await.unwrap(), 0);
    // Past it, the bot's conversation closes; the one a human has stays open.
    assert_eq!(kefu::bot::lifecycle::close_idle(&store, bot, now + 31 * 60_000).await.unwrap(), 1);
    assert!(!get(bot_only).await.is_open());
    assert!(get(handed).await.is_open());
    loop {
        let event = alone.expect("conversation").await;
        if event["event"] == "closed" {
            assert_eq!(event["conversation"]["id"], bot_only);
            break;
        }
    }
    // It never joined the queue on the way: no agent was ever assigned.
    assert_eq!(get(bot_only).await.assigned_agent, None);

    // A site's own idle time counts, and 0 never closes.
    call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(json!({"idle_close_minutes": 0})), 200).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut third = server.visitor(&site, &token).await;
    let kept = third.say(None, "t-1", "How much is shipping?").await["conversation_id"].as_u64().unwrap();
    bot_message(&mut third).await;
    assert_eq!(kefu::bot::lifecycle::close_idle(&store, bot, now + 10_000 * 60_000).await.unwrap(), 0);
    call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(json!({"idle_close_minutes": 5})), 200).await;
    assert_eq!(kefu::bot::lifecycle::close_idle(&store, bot, now + 6 * 60_000).await.unwrap(), 1);
    assert!(!get(kept).await.is_open());
}

#[tokio::test]
async fn an_agent_with_five_thousand_open_conversations_gets_them_all_in_pages() {
    const OPEN: u64 = 5_000;
    let server = TestServer::start().await;
    let site = server.create_site("Busy").await;
    let admin = server.admin_token("admin@busy.example").await;
    let store = server.store().clone();
    for chunk in 0..(OPEN / 500) {
        let key = site.key.clone();
        store
            .write(move |context| {
                for visitor in 0..500 {
                    kefu::chat::conversations::create_for_visitor(
                        context,
                        &key,
                        1_000_000 + chunk * 500 + visitor,
                        None,
                    )?;
                }
                Ok(Ok::<(), kefu::storage::StorageError>(()))
            })
            .await
            .unwrap();
    }

    let mut agent = Client::connect(&server.ws_url("/ws/agent"), None).await;
    agent.send(json!({"type": "hello", "token": admin})).await;
    let welcome = agent.expect_next("welcome").await;
    let mut ids: Vec<u64> =
        welcome["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert!(ids.len() <= kefu::net::session::WELCOME_PAGE_CONVERSATIONS);
    assert_eq!(welcome["more_conversations"], true);
    let mut pages = 1;
    loop {
        let page = agent.expect_next("conversations").await;
        pages += 1;
        let listed = page["conversations"].as_array().unwrap();
        assert!(!listed.is_empty() && listed.len() <= kefu::net::session::WELCOME_PAGE_CONVERSATIONS);
        ids.extend(listed.iter().map(|c| c["id"].as_u64().unwrap()));
        if page["more"] == false {
            break;
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, OPEN, "every open conversation, once");
    assert!(pages >= 50);

    // The socket is alive and answers afterwards.
    agent.send(json!({"type": "ping"})).await;
    agent.expect("pong").await;

    // The Rust client, over QUIC in Protobuf, hands the app one welcome with every page in it.
    let config = kefu_client::ClientConfig::agent(&server.quic_url(), &admin).pin(&server.quic_fingerprint).protobuf();
    let mut client = kefu_client::Client::connect(config);
    let welcome = loop {
        match tokio::time::timeout(crate::support::FRAME_TIMEOUT, client.next_event()).await.expect("an event in time")
        {
            Some(kefu_client::Event::Connected(welcome)) => break welcome,
            Some(kefu_client::Event::Disconnected { reason, .. }) => panic!("disconnected: {reason}"),
            Some(_) => continue,
            None => panic!("the client stopped"),
        }
    };
    assert_eq!(welcome["conversations"].as_array().unwrap().len() as u64, OPEN);
    assert_eq!(welcome["more_conversations"], false);
}

#[tokio::test]
async fn a_handed_off_visitor_learns_their_place_in_the_queue() {
    let (server, site, admin) = setup().await;
    call_expecting(&server, "PUT", &bot_path(&site), &admin, Some(json!({"enabled": true})), 200).await;

    // No agent is online: handed-off conversations wait, in the order they were handed off.
    let mut waiting = Vec::new();
    for name in ["first", "second"] {
        let (_, token) = server.visitor_session(&site, None).await;
        let mut visitor = server.visitor(&site, &token).await;
        let id = visitor.say(None, name, "hello").await["conversation_id"].as_u64().unwrap();
        bot_message(&mut visitor).await;
        let queue = format!("/api/v1/conversations/{id}/queue");
        assert_eq!(call_expecting(&server, "GET", &queue, &token, None, 200).await, json!({"position": null}));
        visitor.send(json!({"type": "handoff", "conversation_id": id})).await;
        loop {
            let event = visitor.expect("conversation").await;
            if event["event"] == "handed_off" {
                break;
            }
        }
        waiting.push((id, token, visitor));
    }
    for (place, (id, token, _)) in waiting.iter().enumerate() {
        let answer =
            call_expecting(&server, "GET", &format!("/api/v1/conversations/{id}/queue"), token, None, 200).await;
        assert_eq!(answer, json!({"position": place + 1}));
    }

    // Someone else's conversation, or no number, is refused; the first leaving moves the second up.
    let (first, second) = (&waiting[0], &waiting[1]);
    call_expecting(&server, "GET", &format!("/api/v1/conversations/{}/queue", first.0), &second.1, None, 404).await;
    call_expecting(&server, "GET", "/api/v1/conversations/x/queue", &second.1, None, 422).await;
    kefu::chat::conversation_store::ConversationStore::close(server.store(), first.0).await.unwrap();
    let answer =
        call_expecting(&server, "GET", &format!("/api/v1/conversations/{}/queue", second.0), &second.1, None, 200)
            .await;
    assert_eq!(answer, json!({"position": 1}));
}

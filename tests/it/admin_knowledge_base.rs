//! The knowledge-base and bot admin pages through their real HTTP interface: entries created,
//! searched, edited and deleted; CSV and JSON import (updates by id, unknown columns refused,
//! nothing half-done) and export; the "try it" box; the bot settings form (the API key never
//! shown back and kept when left empty); the thumbs-down list; Chinese and English; CSRF.

use kefu::sites::Site;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::{ADMIN, Admin, client};
use crate::support::{TestServer, call_expecting, http};

async fn entries(server: &TestServer, site: &Site) -> Vec<kefu::bot::knowledge_base::KbEntry> {
    let key = site.key.clone();
    server.store().read(move |transaction| kefu::bot::knowledge_base::list(transaction, &key)).await.unwrap()
}

async fn import(server: &TestServer, admin: &Admin, site: &Site, format: &str, content: &str) -> (StatusCode, String) {
    let (status, _, body) = admin
        .post(server, "/admin/knowledge-base/import", &[("site", &site.key), ("format", format), ("content", content)])
        .await;
    (status, body)
}

#[tokio::test]
async fn entries_are_created_searched_edited_and_deleted() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;

    let fields = [
        ("site", site.key.as_str()),
        ("lang", "en"),
        ("questions", "How much is shipping?\n运费多少"),
        ("answer", "Free over 99 yuan."),
        ("category", "Shipping"),
        ("entry_lang", "zh-CN"),
    ];
    let (status, location, _) = admin.post(&server, "/admin/knowledge-base/entries", &fields).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.starts_with(&format!("/admin/knowledge-base?site={}", site.key)), "{location}");
    let stored = entries(&server, &site).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].questions, ["How much is shipping?", "运费多少"]);
    assert_eq!(stored[0].lang, "zh-CN");
    let id = stored[0].id;

    // Bad input shows the form again with what was typed and a message; nothing is stored.
    for (field, value, words) in
        [("answer", "", "answer"), ("questions", "", "questions"), ("entry_lang", "not a language!", "lang")]
    {
        let mut bad = fields.to_vec();
        bad.retain(|(name, _)| *name != field);
        bad.push((field, value));
        let (status, _, body) = admin.post(&server, "/admin/knowledge-base/entries", &bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert!(body.contains("field-error") && body.contains(words), "{field}: {body}");
    }
    assert_eq!(entries(&server, &site).await.len(), 1);

    // The list finds it by any word, in either language; the bot uses it at once.
    let (status, page) =
        admin.get_in(&server, &format!("/admin/knowledge-base?site={}&q=shipping", site.key), "en").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Free over 99 yuan."), "{page}");
    let (_, page) = admin.get_in(&server, &format!("/admin/knowledge-base?site={}&q=refund", site.key), "en").await;
    assert!(!page.contains("Free over 99 yuan."));
    let knowledge = server.app().bot.knowledge().site(&site.key).await.unwrap();
    assert_eq!(knowledge.top("how much is shipping", 1)[0].entry.id, id);

    // Edit, with a bad value first.
    let path = format!("/admin/knowledge-base/entries/{id}");
    let (status, page) = admin.get_in(&server, &path, "en").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("运费多少"));
    let (status, _, body) =
        admin.post(&server, &path, &[("questions", "Shipping?"), ("answer", ""), ("category", "x")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("Shipping?"), "what was typed is shown again");
    let (status, _, _) = admin
        .post(&server, &path, &[("questions", "Shipping costs?"), ("answer", "Free."), ("entry_lang", "en")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let stored = entries(&server, &site).await;
    assert_eq!(
        (stored[0].questions[0].as_str(), stored[0].answer.as_str(), stored[0].lang.as_str()),
        ("Shipping costs?", "Free.", "en")
    );
    assert_eq!(stored[0].category, "", "an edit sets every field of the form");

    // Unknown ids are 404; delete removes it from the bot too.
    assert_eq!(admin.get_in(&server, "/admin/knowledge-base/entries/999", "en").await.0, StatusCode::NOT_FOUND);
    assert_eq!(admin.post(&server, "/admin/knowledge-base/entries/999/delete", &[]).await.0, StatusCode::NOT_FOUND);
    let (status, _, _) = admin.post(&server, &format!("{path}/delete"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(entries(&server, &site).await.is_empty());
    assert!(server.app().bot.knowledge().site(&site.key).await.unwrap().top("shipping", 1).is_empty());

    // Every change is in the audit log.
    let actions = server
        .store()
        .read(|transaction| kefu::history::audit::search(transaction, &kefu::history::audit::AuditFilter::default()))
        .await
        .unwrap();
    let actions: Vec<&str> = actions.iter().map(|entry| entry.action.as_str()).collect();
    for action in ["kb.create", "kb.update", "kb.delete"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

#[tokio::test]
async fn import_updates_by_id_refuses_unknown_columns_and_export_round_trips() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let other = server.create_site("Other").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;

    let csv = "lang,questions,answer,category\nen,How do I pay?|Payment methods,\"By card, or Alipay.\",Billing\n\
               zh-CN,怎么退货,七天无理由退货。,Returns\n";
    let (status, _) = import(&server, &admin, &site, "csv", csv).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let stored = entries(&server, &site).await;
    assert_eq!(stored.len(), 2);
    let pay = stored.iter().find(|entry| entry.lang == "en").unwrap().id;

    // Export carries id and lang; changing a row and importing it back updates that entry.
    let response = client()
        .get(server.url(&format!("/admin/knowledge-base/export?site={}&format=csv", site.key)))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-disposition"].to_str().unwrap().contains(".csv"));
    let exported = response.text().await.unwrap();
    assert!(exported.starts_with("id,lang,questions,answer,category\n"), "{exported}");
    let changed = exported.replace("By card, or Alipay.", "By card, Alipay or WeChat Pay.");
    let (status, _) = import(&server, &admin, &site, "csv", &changed).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let stored = entries(&server, &site).await;
    assert_eq!(stored.len(), 2, "rows with ids update, they do not add");
    assert_eq!(stored.iter().find(|entry| entry.id == pay).unwrap().answer, "By card, Alipay or WeChat Pay.");

    // JSON the same way: export, change, import.
    let response = client()
        .get(server.url(&format!("/admin/knowledge-base/export?site={}&format=json", site.key)))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    let mut rows: Vec<Value> = response.json().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row["id"].is_u64() && row["lang"].is_string()));
    rows[0]["category"] = json!("Changed");
    rows.push(json!({"questions": ["New one?"], "answer": "Yes.", "lang": "en"}));
    let (status, _) = import(&server, &admin, &site, "json", &serde_json::to_string(&rows).unwrap()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let stored = entries(&server, &site).await;
    assert_eq!(stored.len(), 3);
    assert_eq!(stored.iter().filter(|entry| entry.category == "Changed").count(), 1);

    // Bad files change nothing, and say what is wrong.
    let before = entries(&server, &site).await;
    for (format, content, words) in [
        ("csv", "questions,answer,categroy\nq,a,c\n", "categroy"),
        ("csv", "id,questions,answer\n99999,q,a\n", "not an entry of this site"),
        ("csv", "questions,answer\nfine,ok\nbroken,\n", "row 3"),
        ("json", r#"[{"questions":["q"],"answer":"a","tags":["x"]}]"#, "tags"),
        ("json", r#"{"questions":["q"]}"#, "array"),
        ("markdown", "## q\na\n", "csv or json"),
        ("xml", "<kb/>", "format"),
        ("csv", "", "empty"),
    ] {
        let (status, body) = import(&server, &admin, &site, format, content).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{format} {content}");
        assert!(body.contains(words), "{format} {content}: expected {words:?}");
        assert!(body.contains("field-error"));
    }
    // An id of another site's entry is refused too, whole.
    import(&server, &admin, &other, "csv", "questions,answer\nTheirs?,Theirs.\n").await;
    let their_id = entries(&server, &other).await[0].id;
    let mixed = format!("id,questions,answer\n,Fresh?,Fresh.\n{their_id},Stolen?,Stolen.\n");
    let (status, body) = import(&server, &admin, &site, "csv", &mixed).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("entry 2"), "the row is named");
    assert_eq!(before, entries(&server, &site).await, "a refused import changed entries");
    assert_eq!(entries(&server, &other).await[0].answer, "Theirs.");

    // The HTTP API imports with the same rules.
    let path = format!("/api/v1/kb/import?site={}&format=csv", site.key);
    let response = http()
        .post(server.url(&path))
        .bearer_auth(&admin.token)
        .body("questions,answer,extra\nq,a,b\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = http()
        .post(server.url(&path))
        .bearer_auth(&admin.token)
        .body(format!("id,questions,answer\n{pay},Pay?,By card.\n,Brand new?,Yes.\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer, json!({"imported": 2, "created": 1, "updated": 1}));
}

#[tokio::test]
async fn the_try_box_shows_the_best_entries_their_scores_and_the_decision() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    let csv = "questions,answer\nHow much is shipping?,Free over 99 yuan.\nHow do I return an item?,Within 30 days.\n\
               Do you ship abroad?,\"Yes, to 40 countries.\"\n";
    assert_eq!(import(&server, &admin, &site, "csv", csv).await.0, StatusCode::SEE_OTHER);
    let try_it = |text: &str, accept: &'static str| {
        let path = format!(
            "/admin/knowledge-base?site={}&try={}",
            site.key,
            url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
        );
        let admin = &admin;
        let server = &server;
        async move { admin.get_in(server, &path, accept).await.1 }
    };
    let page = try_it("how much is shipping", "en").await;
    assert!(page.contains("do nothing: the bot is off"), "the bot is off by default");
    let shown = page.matches("class=\"number score\"").count();
    assert!((1..=3).contains(&shown), "at most three entries with scores: {shown}");

    call_expecting(
        &server,
        "PUT",
        &format!("/api/v1/sites/{}/bot", site.key),
        &admin.token,
        Some(json!({"enabled": true})),
        200,
    )
    .await;
    let page = try_it("how much is shipping", "en").await;
    assert!(page.contains("<span id=\"decision\">answer with this entry</span>"), "{page}");
    assert!(page.contains("class=\"answers\""), "the answering entry is marked");
    let page = try_it("人工", "en").await;
    assert!(page.contains("hand the conversation to a human"));
    let page = try_it("zzzz qqqq", "zh-CN,zh;q=0.9").await;
    assert!(page.contains("没有任何条目匹配") && page.contains("提供转人工"), "{page}");
    assert!(page.contains("<html lang=\"zh-CN\">"));
}

#[tokio::test]
async fn the_eval_page_ranks_labelled_messages_as_the_bot_does_and_refuses_bad_labels() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    let csv = "questions,answer\nHow much is shipping?,Free over 99 yuan.\nHow do I return an item?,Within 30 days.\n";
    assert_eq!(import(&server, &admin, &site, "csv", csv).await.0, StatusCode::SEE_OTHER);
    let ids: Vec<u64> = entries(&server, &site).await.iter().map(|entry| entry.id).collect();
    let shipping = ids[0];
    let messages = format!(
        "{}\n{}\n{}\n",
        json!({"message": "how much is shipping", "expected": shipping, "lang": "en", "kind": "paraphrase"}),
        json!({"message": "what is the capital of France", "expected": null, "lang": "en", "kind": "unrelated"}),
        json!({"message": "运费多少钱", "expected": shipping.to_string(), "lang": "zh", "kind": "paraphrase"}),
    );
    let (status, _, page) =
        admin.post(&server, "/admin/bot/eval", &[("site", &site.key), ("messages", &messages)]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("3 messages") && page.contains("<svg"), "{page}");
    assert!(page.contains("kind unrelated") && page.contains("lang zh"), "figures by kind and language: {page}");
    assert_eq!(page.matches("class=\"marked\"").count(), 2, "the current threshold's rows are marked: {page}");

    // In Chinese, the curve's words too.
    let (_, _, page) =
        admin.post_in(&server, "/admin/bot/eval", &[("site", &site.key), ("messages", &messages)], "zh-CN").await;
    assert!(page.contains("精确率–召回率曲线") && page.contains(">召回率</text>"), "{page}");

    // A label naming no entry of the site, and text that is not JSON Lines, are refused with
    // the line number; the typed messages stay in the form.
    for (bad, words) in [
        (json!({"message": "hi", "expected": 999_999}).to_string(), "no entry has the id"),
        ("not json".to_owned(), "line 1"),
        (String::new(), "no messages"),
    ] {
        let (status, _, page) =
            admin.post(&server, "/admin/bot/eval", &[("site", &site.key), ("messages", &bad)]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(page.contains("field-error") && page.contains(words), "{bad}: {page}");
    }
    // An unknown site is a 404; the page without a session is refused.
    let (status, _, _) = admin.post(&server, "/admin/bot/eval", &[("site", "nope"), ("messages", &messages)]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let anonymous = client().get(server.url(&format!("/admin/bot/eval?site={}", site.key))).send().await.unwrap();
    assert_ne!(anonymous.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_bot_form_saves_settings_keeps_the_key_and_lists_unhelpful_answers() {
    let server = TestServer::start_with(|config| config.llm.allow_private_addresses = true).await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    let form = |key: &'static str, threshold: &'static str| {
        vec![
            ("site", site.key.clone()),
            ("lang", "en".to_owned()),
            ("enabled", "1".to_owned()),
            ("name", "Shop bot".to_owned()),
            ("threshold", threshold.to_owned()),
            ("greeting", "Hello!".to_owned()),
            ("system_prompt", "Be brief.".to_owned()),
            ("idle_close_minutes", "20".to_owned()),
            ("base_url", "http://127.0.0.1:9/v1".to_owned()),
            ("model", "small".to_owned()),
            ("api_key", key.to_owned()),
            ("timeout_ms", "5000".to_owned()),
        ]
    };
    let post = |fields: Vec<(&'static str, String)>| {
        let admin = &admin;
        let server = &server;
        async move {
            let borrowed: Vec<(&str, &str)> = fields.iter().map(|(name, value)| (*name, value.as_str())).collect();
            admin.post(server, "/admin/bot", &borrowed).await
        }
    };
    let (status, location, _) = post(form("sk-secret-qwzx", "0.7")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    let settings = server.app().bot.settings(&site.key).await.unwrap();
    assert!(settings.enabled);
    assert_eq!((settings.name.as_str(), settings.idle_close_minutes), ("Shop bot", 20));
    assert_eq!(settings.llm.as_ref().unwrap().api_key, "sk-secret-qwzx");

    // The page never shows the key; saving with the field empty keeps it.
    let (status, page) = admin.get_in(&server, &format!("/admin/bot?site={}", site.key), "en").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !page.contains("sk-secret") && !page.contains("qwzx"),
        "the key is not on the page, nor its tail (letters no random hex id has)"
    );
    assert!(page.contains("Shop bot") && page.contains("http://127.0.0.1:9/v1"));
    post(form("", "0.6")).await;
    let settings = server.app().bot.settings(&site.key).await.unwrap();
    assert_eq!(settings.llm.as_ref().unwrap().api_key, "sk-secret-qwzx");
    assert!((settings.threshold - 0.6).abs() < 1e-6);

    // Bad values show the form again with a message, and change nothing.
    let before = server.app().bot.settings(&site.key).await.unwrap();
    for (field, value, words) in [
        ("threshold", "high", "threshold"),
        ("threshold", "1.5", "threshold"),
        ("idle_close_minutes", "-3", "idle_close_minutes"),
        ("base_url", "ftp://x", "llm.base_url"),
        ("model", "", "llm.model"),
    ] {
        let mut fields = form("", "0.6");
        fields.retain(|(name, _)| *name != field);
        fields.push((field, value.to_owned()));
        let (status, _, body) = post(fields).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}={value}");
        assert!(body.contains(words), "{field}: {body}");
    }
    assert_eq!(before, server.app().bot.settings(&site.key).await.unwrap());

    // Removing the key, and removing the model by clearing its address.
    let mut fields = form("", "0.6");
    fields.push(("remove_key", "1".to_owned()));
    post(fields).await;
    assert_eq!(server.app().bot.settings(&site.key).await.unwrap().llm.as_ref().unwrap().api_key, "");
    let mut fields = form("", "0.6");
    fields.retain(|(name, _)| *name != "base_url");
    post(fields).await;
    assert_eq!(server.app().bot.settings(&site.key).await.unwrap().llm, None);

    // A visitor's thumbs-down shows in the list, with the question and a link to the entry.
    call_expecting(
        &server,
        "POST",
        &format!("/api/v1/kb?site={}", site.key),
        &admin.token,
        Some(json!({"questions": ["How much is shipping?"], "answer": "Free over 99 yuan."})),
        201,
    )
    .await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v-1", "How much is shipping?").await["conversation_id"].as_u64().unwrap();
    let answer = loop {
        let message = visitor.expect("message").await;
        if message["bot_source"]["kind"] == "kb" {
            break message;
        }
    };
    let path = format!("/api/v1/conversations/{conversation_id}/messages/{}/feedback", answer["seq"]);
    call_expecting(&server, "POST", &path, &token, Some(json!({"helpful": false})), 204).await;
    let (_, page) = admin.get_in(&server, &format!("/admin/bot?site={}", site.key), "zh-CN").await;
    assert!(page.contains("访客认为没有帮助的回答"));
    assert!(page.contains("How much is shipping?") && page.contains("Free over 99 yuan."));
    assert!(page.contains(&format!("/admin/knowledge-base/entries/{}", answer["bot_source"]["entry_id"])));
}

#[tokio::test]
async fn the_pages_refuse_forms_without_the_csrf_token_and_change_nothing() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    let before = server.app().bot.settings(&site.key).await.unwrap();
    for (path, fields) in [
        ("/admin/knowledge-base/entries", vec![("site", site.key.as_str()), ("questions", "q"), ("answer", "a")]),
        (
            "/admin/knowledge-base/import",
            vec![("site", site.key.as_str()), ("format", "csv"), ("content", "questions,answer\nq,a\n")],
        ),
        (
            "/admin/bot",
            vec![("site", site.key.as_str()), ("enabled", "1"), ("threshold", "0.5"), ("idle_close_minutes", "5")],
        ),
    ] {
        let mut with_wrong_token = fields.clone();
        with_wrong_token.push(("csrf", "not-the-token"));
        let response =
            client().post(server.url(path)).bearer_auth(&admin.token).form(&with_wrong_token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let mut cross_site = fields.clone();
        cross_site.push(("csrf", admin.csrf.as_str()));
        let response = client()
            .post(server.url(path))
            .bearer_auth(&admin.token)
            .header("origin", "https://evil.example")
            .form(&cross_site)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert!(entries(&server, &site).await.is_empty());
    assert_eq!(before, server.app().bot.settings(&site.key).await.unwrap());
    // An unknown site is a 404 on every page.
    assert_eq!(admin.get_in(&server, "/admin/knowledge-base?site=nope", "en").await.0, StatusCode::NOT_FOUND);
    assert_eq!(admin.get_in(&server, "/admin/bot?site=nope", "en").await.0, StatusCode::NOT_FOUND);
    assert_eq!(admin.get_in(&server, "/admin/knowledge-base/export?site=nope", "en").await.0, StatusCode::NOT_FOUND);
    let (status, _, _) = admin.post(&server, "/admin/bot", &[("site", "nope"), ("threshold", "0.5")]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

//! A page of an origin the site does not allow: the widget settings answer a 403 the loader can
//! read (naming the origin and the site), the site's admin page lists the origin, and one click
//! allows it.

use reqwest::StatusCode;
use serde_json::Value;

use crate::admin::{ADMIN, Admin};
use crate::support::{TestServer, http};

const STRANGER: &str = "https://new-shop.example";

/// The widget settings as a page of `origin` asks for them: status, CORS header, body.
async fn settings_from(server: &TestServer, key: &str, origin: &str) -> (StatusCode, Option<String>, Value) {
    let response =
        http().get(server.url(&format!("/api/v1/sites/{key}/widget"))).header("origin", origin).send().await.unwrap();
    let allow = response.headers().get("access-control-allow-origin").map(|value| value.to_str().unwrap().to_owned());
    (response.status(), allow, response.json().await.unwrap())
}

async fn allowed_origins(server: &TestServer, key: &str) -> Vec<String> {
    server.app().sites.get(key).await.unwrap().unwrap().site.allowed_origins.clone()
}

#[tokio::test]
async fn a_refused_origin_is_named_listed_and_allowed_with_one_click() {
    let server = TestServer::start().await;
    server.create_admin(ADMIN).await;
    let site = server.create_site("Shop").await;

    // The allowed origin gets the settings; a stranger a readable refusal naming both.
    let (status, allow, _) = settings_from(&server, &site.key, "https://shop.example").await;
    assert_eq!((status, allow.as_deref()), (StatusCode::OK, Some("https://shop.example")));
    for _ in 0..3 {
        let (status, allow, body) = settings_from(&server, &site.key, STRANGER).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(allow.as_deref(), Some(STRANGER), "the loader must be able to read the refusal");
        assert_eq!(body["error"]["code"], "origin_not_allowed");
        assert_eq!((body["origin"].as_str(), body["site"].as_str()), (Some(STRANGER), Some(site.key.as_str())));
        assert!(body.get("name").is_none(), "a refused page learns nothing about the site: {body}");
    }

    // The site's admin page lists it, counted, with an Allow form.
    let admin = Admin::log_in(&server).await;
    let (status, page) = admin.get(&server, &format!("/admin/sites/{}", site.key)).await;
    assert_eq!(status, StatusCode::OK);
    let listed = &page[page.find("id=\"refused-origins\"").expect("the refused origins are listed")..];
    assert!(listed.contains(STRANGER) && listed.contains("<td>3</td>"), "{listed}");
    assert!(listed.contains(&format!("action=\"/admin/sites/{}/allow-origin\"", site.key)));

    // Bad input changes nothing: no CSRF token, or a value that is not an origin.
    let without_csrf = crate::admin::client()
        .post(server.url(&format!("/admin/sites/{}/allow-origin", site.key)))
        .bearer_auth(&admin.token)
        .form(&[("origin", STRANGER)])
        .send()
        .await
        .unwrap();
    assert!(without_csrf.status().is_client_error(), "{}", without_csrf.status());
    let (status, _, body) =
        admin.post(&server, &format!("/admin/sites/{}/allow-origin", site.key), &[("origin", "new shop")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("allowed_origins") || body.contains("not * or an origin"), "{body}");
    assert_eq!(allowed_origins(&server, &site.key).await, ["https://shop.example"]);

    // One click allows it: the page of that origin gets the settings, and the list forgets it.
    let (status, location, _) =
        admin.post(&server, &format!("/admin/sites/{}/allow-origin", site.key), &[("origin", STRANGER)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.starts_with(&format!("/admin/sites/{}", site.key)), "{location}");
    assert_eq!(allowed_origins(&server, &site.key).await, ["https://shop.example", STRANGER]);
    let (status, _, body) = settings_from(&server, &site.key, STRANGER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key"], site.key);
    let (_, page) = admin.get(&server, &format!("/admin/sites/{}", site.key)).await;
    assert!(!page.contains("id=\"refused-origins\""), "an allowed origin is no longer listed");
}

/// The row of the site's refused-origins list that names `origin`, if the page lists it.
async fn listed_row(server: &TestServer, admin: &Admin, key: &str, origin: &str) -> Option<String> {
    let (status, page) = admin.get(server, &format!("/admin/sites/{key}")).await;
    assert_eq!(status, StatusCode::OK);
    let listed = &page[page.find("id=\"refused-origins\"")?..];
    let listed = &listed[..listed.find("</section>").unwrap_or(listed.len())];
    let row = &listed[listed.find(origin)?..];
    Some(row[..row.find("</tr>").unwrap_or(row.len())].to_owned())
}

#[tokio::test]
async fn refused_origins_survive_a_restart_and_so_does_an_allow() {
    let mut server = TestServer::start().await;
    server.create_admin(ADMIN).await;
    let site = server.create_site("Shop").await;
    const OTHER: &str = "https://other-shop.example";
    for origin in [STRANGER, STRANGER, STRANGER, OTHER] {
        assert_eq!(settings_from(&server, &site.key, origin).await.0, StatusCode::FORBIDDEN);
    }

    // After a restart the list is still there, counted; refusals go on counting.
    server.restart().await;
    let admin = Admin::log_in(&server).await;
    let row = listed_row(&server, &admin, &site.key, STRANGER).await.expect("listed after the restart");
    assert!(row.contains("<td>3</td>"), "{row}");
    assert!(listed_row(&server, &admin, &site.key, OTHER).await.is_some());
    settings_from(&server, &site.key, STRANGER).await;
    let row = listed_row(&server, &admin, &site.key, STRANGER).await.expect("still listed");
    assert!(row.contains("<td>4</td>"), "{row}");

    // An origin allowed before a restart is not listed again after it.
    let (status, _, _) =
        admin.post(&server, &format!("/admin/sites/{}/allow-origin", site.key), &[("origin", STRANGER)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    server.restart().await;
    let admin = Admin::log_in(&server).await;
    assert_eq!(listed_row(&server, &admin, &site.key, STRANGER).await, None);
    assert!(listed_row(&server, &admin, &site.key, OTHER).await.is_some(), "the other origin stays listed");
}

#[tokio::test]
async fn a_deleted_site_leaves_nothing_kept_for_it_alone() {
    let server = TestServer::start().await;
    server.create_admin(ADMIN).await;
    let site = server.create_site("Shop").await;
    let kept = server.create_site("Kept").await;
    let app = server.app();
    let both = kefu::people::agents::NewAgent {
        email: "ann@shop.example".into(),
        name: "Ann".into(),
        password: "a long enough password".into(),
        role: kefu::people::agents::Role::Agent,
        sites: vec![site.key.clone(), kept.key.clone()],
        capacity: 3,
    };
    let ann = kefu::people::agents::create(server.store(), both).await.unwrap();
    for key in [&site.key, &kept.key] {
        assert_eq!(settings_from(&server, key, STRANGER).await.0, StatusCode::FORBIDDEN);
        let webhook = kefu::webhooks::NewWebhook {
            url: "https://crm.example/hook".into(),
            events: vec!["message.created".into()],
            allow_private: false,
        };
        kefu::webhooks::WebhookStore::create(server.store(), key.clone(), webhook).await.unwrap();
        kefu::people::blocking::BlockStore::block_address(server.store(), key.clone(), "203.0.113.9".into())
            .await
            .unwrap();
        let entry = kefu::bot::knowledge_base::EntryInput {
            questions: vec!["Where is my order?".into()],
            answer: "On its way.".into(),
            ..Default::default()
        };
        kefu::bot::knowledge_base::store::KnowledgeBaseStore::create_many(server.store(), key.clone(), vec![entry])
            .await
            .unwrap();
        let token = kefu::people::api_tokens::NewApiToken {
            name: "CRM".into(),
            site: key.clone(),
            read_only: true,
            created_by: ADMIN.into(),
        };
        kefu::people::api_tokens::ApiTokenStore::create_token(server.store(), token).await.unwrap();
    }
    app.refused_origins.save(server.store()).await.unwrap();

    let admin = Admin::log_in(&server).await;
    let (status, _, _) =
        admin.post(&server, &format!("/admin/sites/{}/delete", site.key), &[("confirm", &site.key)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // A refusal recorded before the deletion and saved after it writes nothing back.
    app.refused_origins.record(&site.key, "https://late.example");
    app.refused_origins.save(server.store()).await.unwrap();

    assert_eq!(kept_for(&server, &site.key).await, (false, 0, 0, 0, 0));
    assert_eq!(kept_for(&server, &kept.key).await, (true, 1, 1, 1, 1), "another site keeps its own");
    let ann = server.store().read(move |transaction| kefu::people::agents::get(transaction, ann.id)).await.unwrap();
    assert_eq!(ann.unwrap().sites, vec![kept.key.clone()], "the agent serves the site that is left");
}

/// What storage keeps for a site: (its refused origins, webhooks, blocked addresses,
/// knowledge-base entries, live API tokens).
async fn kept_for(server: &TestServer, key: &str) -> (bool, usize, usize, usize, usize) {
    let webhooks = kefu::webhooks::WebhookStore::of_site(server.store(), key).await.unwrap().len();
    let key = key.to_owned();
    let (refused, blocked, entries, live_tokens) = server
        .store()
        .read(move |transaction| {
            let refused = transaction.open_table(kefu::storage::tables::REFUSED_ORIGINS)?.get(key.as_str())?.is_some();
            let blocked = kefu::people::blocking::blocked_addresses(transaction)?
                .iter()
                .filter(|(blocked_on, _, _)| *blocked_on == key)
                .count();
            let entries = kefu::bot::knowledge_base::list(transaction, &key)?.len();
            let live_tokens = kefu::people::api_tokens::list(transaction)?
                .iter()
                .filter(|token| token.site == key && !token.is_revoked())
                .count();
            Ok((refused, blocked, entries, live_tokens))
        })
        .await
        .unwrap();
    (refused, webhooks, blocked, entries, live_tokens)
}

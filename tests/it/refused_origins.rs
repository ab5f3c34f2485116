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

//! The outbound guard: webhooks and the bot's language-model endpoint refuse every IANA
//! special-purpose address (documentation, benchmarking, NAT64, 6to4 and the rest, not only
//! the private ranges), and the model endpoint may use them only with `llm.allow_private_addresses`.

use serde_json::{Value, json};

use crate::support::{TestServer, call, call_expecting};

async fn create_webhook(server: &TestServer, token: &str, site: &str, url: &str) -> (u16, Value) {
    let body = json!({"url": url, "events": ["conversation.created"]});
    let (status, answer) = call(server, "POST", &format!("/api/v1/sites/{site}/webhooks"), token, Some(body)).await;
    (status.as_u16(), answer)
}

async fn put_llm(server: &TestServer, token: &str, site: &str, base_url: &str) -> (u16, Value) {
    let body = json!({"enabled": true, "llm": {"base_url": base_url, "model": "m", "timeout_ms": 1000}});
    let (status, answer) = call(server, "PUT", &format!("/api/v1/sites/{site}/bot"), token, Some(body)).await;
    (status.as_u16(), answer)
}

#[tokio::test]
async fn webhooks_to_special_purpose_addresses_are_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("root@shop.example").await;
    for url in [
        "http://192.0.2.2/hook",
        "http://198.18.0.1/hook",
        "http://198.51.100.7/hook",
        "http://203.0.113.9:8080/hook",
        "http://192.0.0.8/hook",
        "http://240.0.0.1/hook",
        "http://[2001:db8::1]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://[::ffff:192.0.2.2]/hook",
        "http://[2002:c000:202::1]/hook",
        "http://[100::1]/hook",
        "http://[3fff::1]/hook",
    ] {
        let (status, body) = create_webhook(&server, &admin, &site.key, url).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("special-purpose"), "{url}: {body}");
    }
    let listed =
        call_expecting(&server, "GET", &format!("/api/v1/sites/{}/webhooks", site.key), &admin, None, 200).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    let (status, body) = create_webhook(&server, &admin, &site.key, "https://hooks.example.com/x").await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn the_model_endpoint_is_guarded_unless_private_addresses_are_allowed() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("root@shop.example").await;
    for base_url in ["http://127.0.0.1:11434/v1", "http://[::1]:11434/v1", "http://192.0.2.2/v1", "http://10.0.0.5/v1"]
    {
        let (status, body) = put_llm(&server, &admin, &site.key, base_url).await;
        assert_eq!(status, 422, "{base_url}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("llm.base_url"), "{base_url}: {body}");
    }
    let stored = server.app().bot.settings(&site.key).await.unwrap();
    assert!(stored.llm.is_none(), "nothing was saved");
    let (status, body) = put_llm(&server, &admin, &site.key, "https://llm.example.com/v1").await;
    assert_eq!(status, 200, "{body}");

    let local = TestServer::start_with(|config| config.llm.allow_private_addresses = true).await;
    let site = local.create_site("Shop").await;
    let admin = local.admin_token("root@shop.example").await;
    let (status, body) = put_llm(&local, &admin, &site.key, "http://127.0.0.1:11434/v1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["llm"]["base_url"], "http://127.0.0.1:11434/v1");
}

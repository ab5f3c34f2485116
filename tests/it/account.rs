//! An agent's own account: changing the password, two-factor login (enrolment, login with a
//! code, replay, recovery codes, required by an admin, reset by an admin), pictures, and the
//! console's search staying within the agent's sites.

use std::time::Duration;

use kefu::people::two_factor;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Client, PASSWORD, TestServer, call, call_expecting, http};

const ANN: &str = "ann@shop.example";
const BOSS: &str = "boss@shop.example";

/// A 1×1 PNG.
pub(crate) const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0D, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0, 0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D,
    0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

pub(crate) async fn login(server: &TestServer, email: &str, password: &str) -> (StatusCode, Value) {
    let response = http()
        .post(server.url("/api/v1/agent/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn give_code(server: &TestServer, ticket: &str, code: &str) -> (StatusCode, Value) {
    let response = http()
        .post(server.url("/api/v1/agent/login/code"))
        .json(&json!({"ticket": ticket, "code": code}))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

/// The code an authenticator app shows for `secret`, `steps_ahead` steps from now.
pub fn code(secret: &str, steps_ahead: i64) -> String {
    let at = kefu::base::clock::now_millis() + steps_ahead * two_factor::STEP_SECS as i64 * 1000;
    two_factor::code_for(secret, at).expect("a base32 secret")
}

/// Enrols the agent of `token`; returns the secret and the recovery codes.
pub async fn enrol(server: &TestServer, token: &str) -> (String, Vec<String>) {
    let setup = call_expecting(server, "POST", "/api/v1/agent/two-factor/setup", token, None, 200).await;
    let secret = setup["secret"].as_str().unwrap().to_owned();
    assert!(setup["uri"].as_str().unwrap().starts_with("otpauth://totp/kefu%3A"), "{setup}");
    assert!(setup["qr_svg"].as_str().unwrap().contains("<svg"), "{setup}");
    let body = json!({"code": code(&secret, 0)});
    let confirmed = call_expecting(server, "POST", "/api/v1/agent/two-factor/confirm", token, Some(body), 200).await;
    let codes: Vec<String> =
        confirmed["recovery_codes"].as_array().unwrap().iter().map(|code| code.as_str().unwrap().to_owned()).collect();
    (secret, codes)
}

/// Logs in with password and code; returns the session token.
async fn login_with_code(server: &TestServer, email: &str, code: &str) -> String {
    let (status, body) = login(server, email, PASSWORD).await;
    assert_eq!((status, body["next"].as_str()), (StatusCode::OK, Some("code")), "{body}");
    assert!(body.get("token").is_none(), "no session before the code: {body}");
    let (status, body) = give_code(server, body["ticket"].as_str().unwrap(), code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// The close code an agent connection gets within a second, after the error frame.
async fn closed_within_a_second(socket: &mut Client) -> u16 {
    tokio::time::timeout(Duration::from_secs(1), async {
        socket.expect("error").await;
        socket.expect_close().await
    })
    .await
    .expect("the connection closed within a second")
}

#[tokio::test]
async fn a_password_change_needs_the_current_password_and_ends_the_other_sessions() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent(ANN, &site, 2).await;
    let here = server.login(ANN).await;
    let elsewhere = server.login(ANN).await;
    let mut elsewhere_socket = server.agent(&elsewhere).await;

    // A wrong current password, or a new one the admin form would refuse: nothing changes.
    let wrong = json!({"current_password": "not it at all", "new_password": "a brand new password"});
    let answer = call_expecting(&server, "POST", "/api/v1/agent/password", &here, Some(wrong), 422).await;
    assert!(answer["error"]["message"].as_str().unwrap().contains("current_password"), "{answer}");
    let short = json!({"current_password": PASSWORD, "new_password": "short"});
    let answer = call_expecting(&server, "POST", "/api/v1/agent/password", &here, Some(short), 422).await;
    assert!(answer["error"]["message"].as_str().unwrap().contains("password"), "{answer}");
    call_expecting(&server, "GET", "/api/v1/agent/me", &elsewhere, None, 200).await;
    assert_eq!(login(&server, ANN, PASSWORD).await.0, StatusCode::OK);

    let change = json!({"current_password": PASSWORD, "new_password": "a brand new password"});
    call_expecting(&server, "POST", "/api/v1/agent/password", &here, Some(change), 204).await;
    assert_eq!(closed_within_a_second(&mut elsewhere_socket).await, 4001);
    call_expecting(&server, "GET", "/api/v1/agent/me", &elsewhere, None, 401).await;
    call_expecting(&server, "GET", "/api/v1/agent/me", &here, None, 200).await;
    assert_eq!(login(&server, ANN, PASSWORD).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(login(&server, ANN, "a brand new password").await.0, StatusCode::OK);
}

#[tokio::test]
async fn wrong_current_passwords_are_limited_like_logins() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent(ANN, &site, 2).await;
    let token = server.login(ANN).await;
    let limit = server.app().config.limits.login_attempts;
    let wrong = json!({"current_password": "not it at all", "new_password": "a brand new password"});
    for _ in 0..limit {
        call_expecting(&server, "POST", "/api/v1/agent/password", &token, Some(wrong.clone()), 422).await;
    }
    let right = json!({"current_password": PASSWORD, "new_password": "a brand new password"});
    call_expecting(&server, "POST", "/api/v1/agent/password", &token, Some(right), 429).await;
    let agent = server.store().read(|transaction| kefu::people::agents::get_by_email(transaction, ANN)).await;
    assert!(kefu::base::secrets::verify_password(PASSWORD, &agent.unwrap().unwrap().password_hash));
}

#[tokio::test]
async fn two_factor_login_enrols_with_a_code_and_each_code_works_once() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent(ANN, &site, 2).await;
    let token = server.login(ANN).await;

    // A wrong first code leaves it off; a confirm without a setup is refused.
    call_expecting(&server, "POST", "/api/v1/agent/two-factor/confirm", &token, Some(json!({"code": "123456"})), 422)
        .await;
    let setup = call_expecting(&server, "POST", "/api/v1/agent/two-factor/setup", &token, None, 200).await;
    let wrong = if code(setup["secret"].as_str().unwrap(), 0) == "000000" { "111111" } else { "000000" };
    call_expecting(&server, "POST", "/api/v1/agent/two-factor/confirm", &token, Some(json!({"code": wrong})), 401)
        .await;
    let me = call_expecting(&server, "GET", "/api/v1/agent/me", &token, None, 200).await;
    assert_eq!(me["two_factor"], false);
    assert_eq!(login(&server, ANN, PASSWORD).await.1["next"], "done");

    let (secret, recovery_codes) = enrol(&server, &token).await;
    assert_eq!(recovery_codes.len(), two_factor::N_RECOVERY_CODES);
    let me = call_expecting(&server, "GET", "/api/v1/agent/me", &token, None, 200).await;
    assert_eq!(me["two_factor"], true);
    call_expecting(&server, "POST", "/api/v1/agent/two-factor/setup", &token, None, 409).await;

    // The password alone opens nothing: the ticket is not a session.
    let (_, first_step) = login(&server, ANN, PASSWORD).await;
    let ticket = first_step["ticket"].as_str().unwrap().to_owned();
    call_expecting(&server, "GET", "/api/v1/agent/me", &ticket, None, 401).await;
    call_expecting(&server, "GET", "/api/v1/conversations?state=open", &ticket, None, 401).await;
    let (status, _) = give_code(&server, &ticket, wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The next step's code (the current one was used to confirm), then never again.
    let next_code = code(&secret, 1);
    let (status, body) = give_code(&server, &ticket, &next_code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token"].as_str(), Some(ticket.as_str()));
    call_expecting(&server, "GET", "/api/v1/conversations?state=open", &ticket, None, 200).await;
    let (_, again) = login(&server, ANN, PASSWORD).await;
    let (status, _) = give_code(&server, again["ticket"].as_str().unwrap(), &next_code).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a used code is refused within its window");
    let (status, _) = give_code(&server, again["ticket"].as_str().unwrap(), &code(&secret, 0)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "so are the codes of earlier steps");

    // A recovery code works once, typed in capitals or without its dash too.
    let typed = recovery_codes[0].to_uppercase().replace('-', "");
    login_with_code(&server, ANN, &typed).await;
    let (_, third) = login(&server, ANN, PASSWORD).await;
    let (status, _) = give_code(&server, third["ticket"].as_str().unwrap(), &recovery_codes[0]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a recovery code is single-use");
    login_with_code(&server, ANN, &recovery_codes[1]).await;

    // Turning it off takes the password.
    let off = json!({"password": "not it at all"});
    call_expecting(&server, "POST", "/api/v1/agent/two-factor/disable", &token, Some(off), 422).await;
    let off = json!({"password": PASSWORD});
    let me = call_expecting(&server, "POST", "/api/v1/agent/two-factor/disable", &token, Some(off), 200).await;
    assert_eq!(me["two_factor"], false);
    assert_eq!(login(&server, ANN, PASSWORD).await.1["next"], "done");
}

#[tokio::test]
async fn wrong_codes_are_limited_like_wrong_passwords() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent(ANN, &site, 2).await;
    let token = server.login(ANN).await;
    let (secret, _) = enrol(&server, &token).await;
    let limit = server.app().config.limits.login_attempts;
    let (_, first_step) = login(&server, ANN, PASSWORD).await;
    let ticket = first_step["ticket"].as_str().unwrap();
    let right = code(&secret, 1);
    let wrong = if right == "000000" { "111111" } else { "000000" };
    // The password counted once, successfully; each wrong code counts as a failure.
    for _ in 0..limit {
        assert_eq!(give_code(&server, ticket, wrong).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(give_code(&server, ticket, &right).await.0, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_admin_requires_two_factor_login_and_resets_it() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann = server.create_agent(ANN, &site, 2).await;
    server.create_admin(BOSS).await;
    let boss = server.login(BOSS).await;
    let ann_token = server.login(ANN).await;
    let mut ann_socket = server.agent(&ann_token).await;

    // Not before the admin has it themself.
    let status = admin_form(&server, &boss, "/admin/two-factor", &[("required", "on")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!server.store().read(two_factor::required).await.unwrap());
    let (boss_secret, _) = enrol(&server, &boss).await;
    let status = admin_form(&server, &boss, "/admin/two-factor", &[("required", "on")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(server.store().read(two_factor::required).await.unwrap());
    let page = http().get(server.url("/admin/agents")).bearer_auth(&boss).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("name=\"required\" value=\"on\" checked"), "{page}");

    // Ann, without it, is logged out and, logging in again, can only enrol.
    assert_eq!(closed_within_a_second(&mut ann_socket).await, 4001);
    call_expecting(&server, "GET", "/api/v1/conversations?state=open", &ann_token, None, 401).await;
    let (status, body) = login(&server, ANN, PASSWORD).await;
    assert_eq!((status, body["next"].as_str()), (StatusCode::OK, Some("enrol")), "{body}");
    let enrolling = body["token"].as_str().unwrap().to_owned();
    let me = call_expecting(&server, "GET", "/api/v1/agent/me", &enrolling, None, 200).await;
    assert_eq!(me["must_enrol"], true);
    call_expecting(&server, "GET", "/api/v1/conversations?state=open", &enrolling, None, 401).await;
    let change = json!({"current_password": PASSWORD, "new_password": "a brand new password"});
    call_expecting(&server, "POST", "/api/v1/agent/password", &enrolling, Some(change), 403).await;
    let mut refused = Client::connect(&server.ws_url("/ws/agent"), None).await;
    refused.send(json!({"type": "hello", "token": enrolling})).await;
    assert_eq!(refused.expect_close().await, 4001);
    let (ann_secret, _) = enrol(&server, &enrolling).await;
    let me = call_expecting(&server, "GET", "/api/v1/agent/me", &enrolling, None, 200).await;
    assert_eq!(me["must_enrol"], false);
    call_expecting(&server, "GET", "/api/v1/conversations?state=open", &enrolling, None, 200).await;
    // Where it is required, an agent cannot turn it off themself.
    let off = json!({"password": PASSWORD});
    call_expecting(&server, "POST", "/api/v1/agent/two-factor/disable", &enrolling, Some(off), 403).await;
    login_with_code(&server, ANN, &code(&ann_secret, 1)).await;

    // A reset (a lost phone) ends Ann's sessions; she enrols again at her next login.
    let mut ann_socket = server.agent(&enrolling).await;
    let path = format!("/admin/agents/{ann}/two-factor/reset");
    assert_eq!(admin_form(&server, &boss, &path, &[]).await, StatusCode::SEE_OTHER);
    assert_eq!(closed_within_a_second(&mut ann_socket).await, 4001);
    call_expecting(&server, "GET", "/api/v1/agent/me", &enrolling, None, 401).await;
    assert_eq!(login(&server, ANN, PASSWORD).await.1["next"], "enrol");

    // The admin pages' login asks for the code too.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = no_redirects
        .post(server.url("/admin/login"))
        .form(&[("email", BOSS), ("password", PASSWORD), ("next", "/admin/agents")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers().get("set-cookie").is_none());
    let page = page.text().await.unwrap();
    let ticket = page.split("name=\"ticket\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let form = [("ticket", ticket.as_str()), ("code", "000000"), ("next", "/admin/agents"), ("email", BOSS)];
    let wrong = no_redirects.post(server.url("/admin/login")).form(&form).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right_code = code(&boss_secret, 1);
    let form = [("ticket", ticket.as_str()), ("code", right_code.as_str()), ("next", "/admin/agents"), ("email", BOSS)];
    let right = no_redirects.post(server.url("/admin/login")).form(&form).send().await.unwrap();
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    assert_eq!(right.headers()["location"], "/admin/agents");
    assert!(right.headers()["set-cookie"].to_str().unwrap().contains(&ticket));

    // The command line resets it too (the last admin lost their phone and recovery codes).
    let command = kefu::net::control::AdminCommand::ResetTwoFactor { email: BOSS.into() };
    let answer = kefu::net::control::send_to_server(server.store().data_dir(), &command).await.unwrap();
    assert!(answer.is_ok(), "{answer:?}");
    call_expecting(&server, "GET", "/api/v1/agent/me", &ticket, None, 401).await;
    assert_eq!(login(&server, BOSS, PASSWORD).await.1["next"], "enrol");
    let command = kefu::net::control::AdminCommand::ResetTwoFactor { email: "nobody@shop.example".into() };
    let answer = kefu::net::control::send_to_server(server.store().data_dir(), &command).await.unwrap();
    assert!(answer.is_err(), "{answer:?}");
}

async fn admin_form(server: &TestServer, admin_token: &str, path: &str, fields: &[(&str, &str)]) -> StatusCode {
    let mut fields = fields.to_vec();
    let csrf = kefu::net::admin::csrf_token(admin_token);
    fields.push(("csrf", &csrf));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    client.post(server.url(path)).bearer_auth(admin_token).form(&fields).send().await.unwrap().status()
}

pub(crate) async fn put_avatar(server: &TestServer, token: &str, bytes: &[u8]) -> (StatusCode, Value) {
    let response =
        http().put(server.url("/api/v1/agent/avatar")).bearer_auth(token).body(bytes.to_vec()).send().await.unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_agent_sets_a_picture_that_anyone_sees_and_only_images_are_taken() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann = server.create_agent(ANN, &site, 2).await;
    let token = server.login(ANN).await;

    // Without a picture: an SVG with the initial.
    let default = http().get(server.url(&format!("/api/v1/agents/{ann}/avatar"))).send().await.unwrap();
    assert_eq!(default.status(), StatusCode::OK);
    assert_eq!(default.headers()["content-type"], "image/svg+xml");
    assert!(default.headers()["content-security-policy"].to_str().unwrap().contains("sandbox"));
    assert!(default.text().await.unwrap().contains(">A</text>"));

    for refused in [&b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>"[..], b"just text"] {
        let (status, body) = put_avatar(&server, &token, refused).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    }
    let (status, _) = put_avatar(&server, &token, &vec![0u8; kefu::people::avatars::MAX_AVATAR_BYTES + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let me = call_expecting(&server, "GET", "/api/v1/agent/me", &token, None, 200).await;
    assert_eq!(me["avatar_url"], format!("/api/v1/agents/{ann}/avatar?v=0"));

    let (status, me) = put_avatar(&server, &token, PNG).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let url = me["avatar_url"].as_str().unwrap().to_owned();
    assert!(!url.ends_with("v=0"), "{url}");
    let picture = http().get(server.url(&url)).send().await.unwrap();
    assert_eq!(picture.headers()["content-type"], "image/png");
    assert_eq!(picture.bytes().await.unwrap().as_ref(), PNG);

    // A second picture replaces the first, whose file goes.
    let first_id = url.rsplit('=').next().unwrap().to_owned();
    let (_, me) = put_avatar(&server, &token, PNG).await;
    assert_ne!(me["avatar_url"].as_str().unwrap(), url);
    assert!(!kefu::chat::uploads::path_of(server.store().data_dir(), &first_id).exists());
    let (status, me) = call(&server, "DELETE", "/api/v1/agent/avatar", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(me["avatar_url"].as_str().unwrap().ends_with("v=0"));
    call_expecting(&server, "GET", "/api/v1/agents/999/avatar", &token, None, 404).await;
}

#[tokio::test]
async fn the_console_search_finds_chinese_and_english_only_on_the_agents_sites() {
    let server = TestServer::start().await;
    let site_a = server.create_site("a").await;
    let site_b = server.create_site("b").await;
    server.create_agent(ANN, &site_a, 5).await;
    let token = server.login(ANN).await;
    let store = server.store().clone();
    let now = kefu::base::clock::now_millis();
    crate::search::backdated(&store, &site_a.key, 1, &["我要退款 please refund"], now).await;
    crate::search::backdated(&store, &site_b.key, 2, &["退款 refund elsewhere"], now).await;
    server.index().wait_caught_up().await.unwrap();

    for query in ["q=%E9%80%80%E6%AC%BE", "q=refund"] {
        // The console searches with its cookie.
        let response = http()
            .get(server.url(&format!("/api/v1/search?{query}")))
            .header("cookie", format!("kefu_session={token}"))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        let hits = body["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 1, "{query}: {body}");
        assert_eq!(hits[0]["site"], site_a.key.as_str());
        assert!(hits[0]["snippet"].as_str().unwrap().contains("<b>"), "{body}");
    }
    let query = format!("/api/v1/search?q=refund&site={}", site_b.key);
    call_expecting(&server, "GET", &query, &token, None, 403).await;
}

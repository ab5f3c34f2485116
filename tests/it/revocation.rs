//! Every path that ends or changes an agent's rights closes their live connections at once.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Client, TestServer, http};

/// The longest a revoked connection may stay open.
const WITHIN: Duration = Duration::from_secs(1);

/// The close code the connection gets within [`WITHIN`], after an error frame saying why.
async fn closed_within_a_second(socket: &mut Client) -> (u16, Value) {
    tokio::time::timeout(WITHIN, async {
        let error = socket.expect("error").await;
        (socket.expect_close().await, error)
    })
    .await
    .expect("the connection closed within a second")
}

/// Still open: a ping gets its pong.
async fn still_open(socket: &mut Client) {
    socket.send(json!({"type": "ping"})).await;
    socket.expect("pong").await;
}

/// The close code a new agent connection with `token` gets for its hello.
async fn hello_close_code(server: &TestServer, token: &str) -> u16 {
    let mut socket = Client::connect(&server.ws_url("/ws/agent"), None).await;
    socket.send(json!({"type": "hello", "token": token})).await;
    socket.expect_close().await
}

async fn admin_form(server: &TestServer, admin_token: &str, path: &str, fields: &[(&str, &str)]) -> StatusCode {
    let mut fields = fields.to_vec();
    let csrf = kefu::net::admin::csrf_token(admin_token);
    fields.push(("csrf", &csrf));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    client.post(server.url(path)).bearer_auth(admin_token).form(&fields).send().await.unwrap().status()
}

#[tokio::test]
async fn a_logout_closes_the_connections_of_that_session_only() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let first = server.login("ann@shop.example").await;
    let second = server.login("ann@shop.example").await;
    let mut first_socket = server.agent(&first).await;
    let mut second_socket = server.agent(&second).await;

    let response = http().post(server.url("/api/v1/agent/logout")).bearer_auth(&first).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (code, error) = closed_within_a_second(&mut first_socket).await;
    assert_eq!(code, 4001);
    assert!(error["message"].as_str().unwrap().contains("logged out"), "{error}");
    still_open(&mut second_socket).await;

    // The logged-out token cannot open a new connection either.
    assert_eq!(hello_close_code(&server, &first).await, 4001);
}

#[tokio::test]
async fn a_password_reset_from_the_command_line_or_the_admin_pages_closes_every_connection() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann = server.create_agent("ann@shop.example", &site, 2).await;
    server.create_admin("boss@shop.example").await;
    let admin = server.login("boss@shop.example").await;

    // The command line, through the running server's control socket.
    let mut socket = server.agent(&server.login("ann@shop.example").await).await;
    let command = kefu::net::control::AdminCommand::ResetPassword {
        email: "ann@shop.example".into(),
        password: "a new long password".into(),
    };
    let answer = kefu::net::control::send_to_server(server.store().data_dir(), &command).await.unwrap();
    assert!(answer.is_ok(), "{answer:?}");
    let (code, error) = closed_within_a_second(&mut socket).await;
    assert_eq!(code, 4001);
    assert!(error["message"].as_str().unwrap().contains("password"), "{error}");

    // The admin pages.
    let mut socket = server.agent(&server.login_with("ann@shop.example", "a new long password").await).await;
    let path = format!("/admin/agents/{ann}/password");
    assert_eq!(admin_form(&server, &admin, &path, &[("password", "another long password")]).await, StatusCode::OK);
    assert_eq!(closed_within_a_second(&mut socket).await.0, 4001);
}

#[tokio::test]
async fn a_change_of_role_or_sites_and_a_disable_close_the_agents_connections() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let other_site = server.create_site("Other").await;
    let ann = server.create_agent("ann@shop.example", &site, 2).await;
    server.create_admin("boss@shop.example").await;
    let admin = server.login("boss@shop.example").await;
    let path = format!("/admin/agents/{ann}");

    // A change of sites: reconnect with the new rights.
    let ann_token = server.login("ann@shop.example").await;
    let mut socket = server.agent(&ann_token).await;
    let fields = [("name", "Ann"), ("role", "agent"), ("capacity", "2"), ("sites", other_site.key.as_str())];
    assert_eq!(admin_form(&server, &admin, &path, &fields).await, StatusCode::SEE_OTHER);
    assert_eq!(closed_within_a_second(&mut socket).await.0, 1012);
    let mut socket = server.agent(&ann_token).await;

    // A change of the name alone keeps the connection.
    let fields = [("name", "Ann B."), ("role", "agent"), ("capacity", "2"), ("sites", other_site.key.as_str())];
    assert_eq!(admin_form(&server, &admin, &path, &fields).await, StatusCode::SEE_OTHER);
    still_open(&mut socket).await;

    // Disabled: closed, and the token is dead.
    let fields = [
        ("name", "Ann B."),
        ("role", "agent"),
        ("capacity", "2"),
        ("sites", other_site.key.as_str()),
        ("disabled", "on"),
    ];
    assert_eq!(admin_form(&server, &admin, &path, &fields).await, StatusCode::SEE_OTHER);
    assert_eq!(closed_within_a_second(&mut socket).await.0, 4003);
    assert_eq!(hello_close_code(&server, &ann_token).await, 4001);
}

#[tokio::test]
async fn an_admin_pages_logout_closes_that_sessions_connections() {
    let server = TestServer::start().await;
    server.create_admin("boss@shop.example").await;
    let admin = server.login("boss@shop.example").await;
    let mut socket = server.agent(&admin).await;
    // The pages' own way: the session cookie, from kefu's own origin.
    let csrf = kefu::net::admin::csrf_token(&admin);
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let own_origin = server.url("");
    let response = client
        .post(server.url("/admin/logout"))
        .header("cookie", format!("kefu_session={admin}"))
        .header("origin", own_origin.trim_end_matches('/'))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(closed_within_a_second(&mut socket).await.0, 4001);
}

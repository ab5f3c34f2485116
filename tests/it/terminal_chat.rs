//! `kefu chat` (the kefu-client crate's terminal client) run as a process against a real server,
//! over WebSocket and over QUIC with Protobuf, and its refusals of bad input.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::support::{Client, TestServer, history};

/// The longest a `kefu chat` run may take here.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `kefu chat ARGS` with `input` on its standard input (closed after it, which ends the
/// client); returns (success, stdout, stderr).
async fn kefu_chat(args: &[&str], input: &str) -> (bool, String, String) {
    kefu_chat_with_password(args, input, None).await
}

/// [`kefu_chat`] with `KEFU_PASSWORD` set to `password` (agents), or unset.
async fn kefu_chat_with_password(args: &[&str], input: &str, password: Option<&str>) -> (bool, String, String) {
    kefu_chat_with_login(args, input, password, None).await
}

/// [`kefu_chat`] with `KEFU_PASSWORD` and `KEFU_TOTP_CODE` set to `password` and `code`, or unset.
async fn kefu_chat_with_login(
    args: &[&str],
    input: &str,
    password: Option<&str>,
    code: Option<&str>,
) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kefu"));
    for (variable, value) in [("KEFU_PASSWORD", password), ("KEFU_TOTP_CODE", code)] {
        match value {
            Some(value) => command.env(variable, value),
            None => command.env_remove(variable),
        };
    }
    let mut child = command
        .arg("chat")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting kefu chat");
    let mut stdin = child.stdin.take().expect("a piped stdin");
    stdin.write_all(input.as_bytes()).await.expect("writing to kefu chat");
    drop(stdin);
    let output =
        tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output()).await.expect("kefu chat ends in time").unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The conversation the agent is assigned next, after its messages so far; returns its id and
/// the texts of those messages.
async fn next_assignment(agent: &mut Client) -> (u64, Vec<String>) {
    let conversation_id = loop {
        let event = agent.expect("conversation").await;
        if event["event"] == "assigned" {
            break event["conversation"]["id"].as_u64().unwrap();
        }
    };
    let messages = agent.expect_replayed(conversation_id).await;
    (conversation_id, messages.iter().map(|message| message["text"].as_str().unwrap().to_owned()).collect())
}

/// A visitor who said `text`, in a conversation assigned to the agent of `agent_token` (online
/// through the returned connection); returns that connection, the visitor and the conversation.
async fn visitor_assigned_to(
    server: &TestServer,
    site: &kefu::sites::Site,
    agent_token: &str,
    text: &str,
) -> (Client, Client, u64) {
    let mut watcher = server.agent(agent_token).await;
    let (_, visitor_token) = server.visitor_session(site, None).await;
    let mut visitor = server.visitor(site, &visitor_token).await;
    let ack = visitor.say(None, "v-1", text).await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();
    next_assignment(&mut watcher).await;
    (watcher, visitor, conversation_id)
}

#[tokio::test]
async fn a_visitor_line_over_websocket_reaches_the_agent() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;

    let url = server.ws_url("");
    let (ok, stdout, stderr) = kefu_chat(&["--site", &site.key, "--url", &url], "你好，有人吗？\n").await;
    assert!(ok, "kefu chat failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("* sent #1 in conversation"), "{stdout}");

    let (conversation_id, texts) = next_assignment(&mut agent).await;
    assert_eq!(texts, ["你好，有人吗？"]);
    assert_eq!(history(&server, &agent_token, conversation_id).await["last_seq"], 1);
}

#[tokio::test]
async fn an_agent_takes_part_over_quic_in_protobuf() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let (_watcher, mut visitor, conversation_id) =
        visitor_assigned_to(&server, &site, &agent_token, "Where is my parcel?").await;

    // The agent answers from the terminal, over QUIC in Protobuf, into that conversation.
    let (quic, http) = (server.quic_url(), server.url(""));
    let input = format!("/to {conversation_id}\nIt left the warehouse today.\n");
    let args = [
        "--site",
        site.key.as_str(),
        "--url",
        &quic,
        "--http",
        &http,
        "--pin",
        &server.quic_fingerprint,
        "--protobuf",
        "--agent",
        "--email",
        "ann@shop.example",
    ];
    let (ok, stdout, stderr) = kefu_chat_with_password(&args, &input, Some(crate::support::PASSWORD)).await;
    assert!(ok, "kefu chat failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("* sent #2 in conversation {conversation_id}")), "{stdout}");
    assert!(!stdout.contains("{\""), "an agent sees readable lines, not raw frames:\n{stdout}");

    let reply = visitor.expect("message").await;
    assert_eq!(reply["text"], "It left the warehouse today.");
    assert_eq!(reply["sender"]["kind"], "agent");
}

#[tokio::test]
async fn an_agent_with_two_factor_login_gives_the_code() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let setup_token = server.login("ann@shop.example").await;
    let (secret, _) = crate::account::enrol(&server, &setup_token).await;
    let url = server.ws_url("");
    let args = ["--site", &site.key, "--url", &url, "--agent", "--email", "ann@shop.example"];
    let password = Some(crate::support::PASSWORD);

    // No code and no terminal to ask on: said so after the password, and no session is opened.
    let (ok, _, stderr) = kefu_chat_with_login(&args, "", password, None).await;
    assert!(!ok);
    assert!(stderr.contains("no two-factor code: set KEFU_TOTP_CODE"), "{stderr}");

    // A wrong code: the server's refusal is shown.
    let (ok, _, stderr) = kefu_chat_with_login(&args, "", password, Some("000000")).await;
    assert!(!ok);
    assert!(stderr.contains("/api/v1/agent/login/code answered 401"), "{stderr}");

    // The authenticator's code logs in; the agent then answers a visitor from the terminal.
    let (_watcher, mut visitor, conversation_id) =
        visitor_assigned_to(&server, &site, &setup_token, "Is anyone there?").await;
    let input = format!("/to {conversation_id}\nYes, how can I help?\n");
    // The next step's code: the current one confirmed the enrolment, and a code works once.
    let code = crate::account::code(&secret, 1);
    let (ok, stdout, stderr) = kefu_chat_with_login(&args, &input, password, Some(&code)).await;
    assert!(ok, "kefu chat failed:\n{stdout}\n{stderr}");
    let reply = visitor.expect("message").await;
    assert_eq!(reply["text"], "Yes, how can I help?");
}

#[tokio::test]
async fn bad_input_is_refused_clearly_and_sends_nothing() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;

    // A QUIC url without the HTTP address for the session: refused before any request.
    let quic = server.quic_url();
    let (ok, _, stderr) = kefu_chat(&["--site", &site.key, "--url", &quic], "hello\n").await;
    assert!(!ok);
    assert!(stderr.contains("--http http://HOST:PORT is needed"), "{stderr}");

    // A QUIC url with neither a pin nor --insecure.
    let http = server.url("");
    let (ok, _, stderr) = kefu_chat(&["--site", &site.key, "--url", &quic, "--http", &http], "hello\n").await;
    assert!(!ok);
    assert!(stderr.contains("needs --pin"), "{stderr}");

    // A wrong password: the login's refusal is shown.
    let url = server.ws_url("");
    let args = ["--site", &site.key, "--url", &url, "--agent", "--email", "ann@shop.example"];
    let (ok, _, stderr) = kefu_chat_with_password(&args, "hello\n", Some("wrong")).await;
    assert!(!ok);
    assert!(stderr.contains("/api/v1/agent/login answered 401"), "{stderr}");

    // No password at all, and no terminal to ask on: said so, before any request.
    let (ok, _, stderr) = kefu_chat(&args, "hello\n").await;
    assert!(!ok);
    assert!(stderr.contains("set KEFU_PASSWORD"), "{stderr}");

    // The password is never an argument (it would sit in the shell history and in ps).
    let mut with_flag = args.to_vec();
    with_flag.extend(["--password", "x"]);
    let (ok, _, stderr) = kefu_chat(&with_flag, "hello\n").await;
    assert!(!ok);
    assert!(stderr.contains("--password"), "{stderr}");

    // An HTTP address that is not http://.
    let args = ["--site", &site.key, "--url", &quic, "--http", "ftp://127.0.0.1:1", "--insecure"];
    let (ok, _, stderr) = kefu_chat(&args, "hello\n").await;
    assert!(!ok);
    assert!(stderr.contains("must start with http://"), "{stderr}");

    // None of it sent a message: the agent, now online, is assigned no conversation.
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(frame) = tokio::time::timeout_at(quiet_until, agent.next()).await {
        assert!(frame["type"] != "conversation" && frame["type"] != "message", "unexpected {frame}");
    }
}

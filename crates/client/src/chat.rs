//! `kefu chat`: a line-based terminal client for trying kefu as a visitor or an agent, built on
//! this crate. Type a line to send it; agents use `/take ID`, `/close ID`, `/resume ID`
//! and `/to ID` (the conversation plain lines go to).
//!
//! An agent's password is read from `KEFU_PASSWORD` or asked for on the terminal without echo,
//! never taken as an argument (which would leave it in the shell history and in `ps`); so is the
//! two-factor code (`KEFU_TOTP_CODE`) of an agent with two-factor login on.
//! Every frame is printed as a readable line, never as raw JSON.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::http::tool_client;
use crate::{Client, ClientConfig, Event};

/// The environment variable an agent's password may come from (for scripts).
pub const PASSWORD_VARIABLE: &str = "KEFU_PASSWORD";

/// The environment variable the two-factor code may come from, when the agent's account asks for
/// one (for scripts; a person is asked for it).
pub const CODE_VARIABLE: &str = "KEFU_TOTP_CODE";

/// The longest a login or session request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// What `kefu chat` was given.
pub struct ChatArgs {
    pub site: String,
    /// `quic://HOST:8443` or `ws://HOST:8080`.
    pub url: String,
    /// kefu's HTTP address for logging in or opening a visitor session; derived from `url` when absent.
    pub http: Option<String>,
    /// The agent's email, to chat as that agent (the password comes from [`PASSWORD_VARIABLE`]
    /// or a prompt).
    pub agent: Option<String>,
    pub pin: Option<String>,
    pub insecure: bool,
    pub protobuf: bool,
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let http = match &args.http {
        Some(http) => http.trim_end_matches('/').to_owned(),
        None => match args.url.strip_prefix("ws://") {
            Some(rest) => format!("http://{rest}"),
            None => bail!("--http http://HOST:PORT is needed with a quic:// url (for the session)"),
        },
    };
    let mut config = match &args.agent {
        Some(email) => {
            let token = agent_login(&http, email).await?;
            ClientConfig::agent(&args.url, &token)
        }
        None => {
            let body = post_json(&http, "/api/v1/visitor/session", &json!({"site": args.site})).await?;
            let token = body["token"].as_str().context("the session answer has no token")?;
            if let Some(welcome) = body["site"]["welcome_text"].as_str() {
                println!("* {welcome}");
            }
            ClientConfig::visitor(&args.url, &args.site, token)
        }
    };
    if args.url.starts_with("quic://") {
        config = match (&args.pin, args.insecure) {
            (Some(pin), _) => config.pin(pin),
            (None, true) => config.insecure(),
            (None, false) => bail!("a quic:// url needs --pin SHA256 (printed by kefu serve) or --insecure"),
        };
    }
    if args.protobuf {
        config = config.protobuf();
    }
    let is_agent = args.agent.is_some();
    let mut client = Client::connect(config);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut current: Option<u64> = None;
    println!("* type a line to send it{}", if is_agent { "; /take ID, /close ID, /resume ID, /to ID" } else { "" });
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { return Ok(()) };
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                if let Some(command) = line.strip_prefix('/') {
                    let mut words = command.split_whitespace();
                    let (name, id) = (words.next().unwrap_or_default(), words.next().and_then(|id| id.parse::<u64>().ok()));
                    match (name, id) {
                        ("take" | "close", Some(id)) => {
                            client.send_frame(json!({"type": name, "conversation_id": id})).await?;
                            current = Some(id);
                        }
                        ("resume", Some(id)) => {
                            client.send_frame(json!({"type": "resume", "conversation_id": id, "last_seq": 0, "epoch": 0})).await?;
                            current = Some(id);
                        }
                        ("to", Some(id)) => current = Some(id),
                        _ => println!("* commands: /take ID, /close ID, /resume ID, /to ID"),
                    }
                    continue;
                }
                match client.send(current, line).await {
                    Ok(ack) => {
                        current = Some(ack.conversation_id);
                        println!("* sent #{} in conversation {}", ack.seq, ack.conversation_id);
                    }
                    Err(error) => println!("* not sent: {error}"),
                }
            }
            event = client.next_event() => match event {
                None => return Ok(()),
                Some(Event::Connected(welcome)) => println!("* connected as {} ({} conversations)", welcome["role"], welcome["conversations"].as_array().map_or(0, Vec::len)),
                Some(Event::Disconnected { reason, will_retry }) => {
                    println!("* disconnected: {reason}{}", if will_retry { "; reconnecting" } else { "" });
                    if !will_retry {
                        return Ok(());
                    }
                }
                Some(Event::Frame(frame)) => print_frame(&frame, is_agent, &mut current),
            },
        }
    }
}

/// Logs the agent in (password, then the two-factor code when the server asks for one); returns
/// the session token.
async fn agent_login(http: &str, email: &str) -> anyhow::Result<String> {
    let password = secret(PASSWORD_VARIABLE, "password", &format!("Password for {email}: "))?;
    let body = post_json(http, "/api/v1/agent/login", &json!({"email": email, "password": password})).await?;
    let body = match body["next"].as_str() {
        Some("code") => {
            let ticket = body["ticket"].as_str().context("the login answer has no ticket")?;
            let code = secret(CODE_VARIABLE, "two-factor code", &format!("Two-factor code for {email}: "))?;
            post_json(http, "/api/v1/agent/login/code", &json!({"ticket": ticket, "code": code.trim()})).await?
        }
        Some("enrol") => bail!(
            "{email} must turn on two-factor login before chatting: log in to the console in a browser and follow its steps"
        ),
        _ => body,
    };
    Ok(body["token"].as_str().context("the login answer has no token")?.to_owned())
}

/// A secret the login needs (`what`): from the environment variable `variable`, or asked for on
/// the terminal without echo.
fn secret(variable: &str, what: &str, prompt: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if let Ok(value) = std::env::var(variable)
        && !value.is_empty()
    {
        return Ok(value);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no {what}: set {variable}, or run kefu chat in a terminal to be asked for it");
    }
    let value = rpassword::prompt_password(prompt).with_context(|| format!("reading the {what}"))?;
    if value.trim().is_empty() {
        bail!("no {what} given");
    }
    Ok(value)
}

fn print_frame(frame: &Value, is_agent: bool, current: &mut Option<u64>) {
    match frame["type"].as_str().unwrap_or_default() {
        "message" => {
            let sender = &frame["sender"];
            let name = sender["name"].as_str().filter(|name| !name.is_empty()).unwrap_or("visitor");
            println!(
                "[{}] {} ({}): {}",
                frame["conversation_id"],
                name,
                sender["kind"].as_str().unwrap_or("?"),
                frame["text"].as_str().unwrap_or_default()
            );
            if current.is_none() {
                *current = frame["conversation_id"].as_u64();
            }
        }
        "conversation" => {
            let conversation = &frame["conversation"];
            println!(
                "* conversation {} {} (status {})",
                conversation["id"],
                frame["event"].as_str().unwrap_or_default(),
                conversation["status"]
            );
            if !is_agent && current.is_none() {
                *current = conversation["id"].as_u64();
            }
        }
        "typing" if frame["active"] == true => {
            println!("* {} is typing in {}", frame["sender"]["name"], frame["conversation_id"])
        }
        "error" => println!("* error {}: {}", frame["code"], frame["message"].as_str().unwrap_or_default()),
        "activity" => {
            for item in frame["items"].as_array().into_iter().flatten() {
                println!(
                    "* activity in conversation {}: {} wrote \"{}\"",
                    item["conversation_id"],
                    item["sender_kind"].as_str().unwrap_or("someone"),
                    item["preview"].as_str().unwrap_or_default()
                );
            }
        }
        "visitor" => {
            let visitor = &frame["visitor"];
            let name = visitor["name"].as_str().unwrap_or_default();
            match frame["event"].as_str().unwrap_or_default() {
                "online" => println!("* visitor {name} is online, on {}", visitor["url"].as_str().unwrap_or("?")),
                "page" => println!("* visitor {name} is on {}", visitor["url"].as_str().unwrap_or("?")),
                "offline" => println!("* visitor {name} left"),
                other => println!("* visitor {name}: {other}"),
            }
        }
        "conversations" => {
            let n = frame["conversations"].as_array().map_or(0, Vec::len);
            println!("* {n} more open conversations");
        }
        "site_status" => match (frame["status"].as_str(), frame["next_open"]["local_time"].as_str()) {
            (Some("closed"), Some(time)) => println!(
                "* the site is closed; it opens at {time} ({}, {})",
                frame["next_open"]["local_date"].as_str().unwrap_or_default(),
                frame["next_open"]["time_zone"].as_str().unwrap_or_default()
            ),
            (Some(status), _) => println!("* the site is {status}"),
            (None, _) => {}
        },
        "bot_stream" => {}
        "reset" => println!(
            "* conversation {} must be reloaded ({}); /resume {} to read it again",
            frame["conversation_id"],
            frame["reason"].as_str().unwrap_or_default(),
            frame["conversation_id"]
        ),
        "goaway" => println!("* the server is restarting; reconnecting"),
        "replayed" | "typing" | "read" | "pong" | "presence" | "ack" | "welcome" => {}
        other => println!("* {other} frame"),
    }
}

/// A POST of JSON to a plain `http://` kefu, expecting a 200 with JSON (enough for a trial client).
pub async fn post_json(base: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
    let host = base.strip_prefix("http://").context("the HTTP address must start with http://")?;
    let client = tool_client(HTTP_TIMEOUT)?;
    let response = match client.post(format!("{base}{path}")).json(body).send().await {
        Ok(response) => response,
        Err(error) if error.is_connect() => return Err(error).with_context(|| format!("connecting to {host}")),
        Err(error) if error.is_timeout() => return Err(error).context("no answer in time"),
        Err(error) => return Err(error.into()),
    };
    let status = response.status();
    let text = response.text().await.context("no answer in time")?;
    if status != reqwest::StatusCode::OK {
        bail!("{path} answered {}: {text}", status.as_u16());
    }
    serde_json::from_str(&text).with_context(|| format!("{path} answered something other than JSON"))
}

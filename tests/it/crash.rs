//! Crash safety: a real `kefu serve` process killed with SIGKILL mid-load loses nothing it
//! acknowledged and duplicates nothing when clients resend.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::support::http;

const N_VISITORS: usize = 10;
const MESSAGES_PER_VISITOR: usize = 100;

pub(crate) fn kefu() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kefu"));
    command
        .env("KEFU_LIMITS__FRAMES_PER_SECOND", "100000")
        .env("KEFU_LIMITS__FRAME_BURST", "100000")
        .env("KEFU_METRICS", "off")
        .env("KEFU_QUIC", "127.0.0.1:0")
        .env("RUST_LOG", "warn");
    command
}

/// Starts `kefu serve` and waits for its `listening` line.
pub(crate) async fn serve(data_dir: &Path) -> (Child, String) {
    let mut command = kefu();
    command.args(["serve", "--data-dir", data_dir.to_str().unwrap(), "--http", "127.0.0.1:0"]);
    start(command).await
}

/// Spawns `command` (a `kefu serve`) and waits for its `listening` line; returns the child and
/// its HTTP address. Its stdout is drained; its other pipes are the caller's.
pub(crate) async fn start(mut command: Command) -> (Child, String) {
    let mut child = command.stdout(Stdio::piped()).kill_on_drop(true).spawn().expect("kefu starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next_line().await.unwrap().expect("kefu prints its address");
        if let Some(address) = line.strip_prefix("listening http=") {
            break address.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address)
}

pub(crate) async fn admin(data_dir: &Path, args: &[&str]) -> HashMap<String, String> {
    let output =
        kefu().arg("admin").args(args).args(["--data-dir", data_dir.to_str().unwrap()]).output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

pub(crate) async fn visitor_socket(
    address: &str,
    site: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{address}/ws/visitor?site={site}")).await.unwrap();
    socket.send(Message::Text(json!({"type": "hello", "token": token}).to_string().into())).await.unwrap();
    socket
}

pub(crate) fn send_frame(visitor: usize, n: usize) -> Message {
    Message::Text(json!({"type": "send", "client_id": format!("v{visitor}-m{n}"), "text": format!("message {n} of visitor {visitor}")}).to_string().into())
}

#[tokio::test]
async fn sigkill_under_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let site = admin(dir.path(), &["create-site", "--name", "Shop", "--origin", "*"]).await["site_key"].clone();
    let (mut child, address) = serve(dir.path()).await;

    let mut tokens = Vec::new();
    for _ in 0..N_VISITORS {
        let session: Value = visitor_session(&address, &site, None).await;
        tokens.push(session["token"].as_str().unwrap().to_owned());
    }

    // Every visitor pipelines its messages; acks are collected until the server dies.
    let n_acked = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for (visitor, token) in tokens.iter().enumerate() {
        let mut socket = visitor_socket(&address, &site, token).await;
        let n_acked = n_acked.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..MESSAGES_PER_VISITOR {
                if socket.send(send_frame(visitor, n)).await.is_err() {
                    break;
                }
            }
            let mut acked: HashMap<String, u64> = HashMap::new();
            while let Some(Ok(Message::Text(text))) = socket.next().await {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "ack" {
                    acked.insert(frame["client_id"].as_str().unwrap().to_owned(), frame["seq"].as_u64().unwrap());
                    n_acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            acked
        }));
    }
    let total = N_VISITORS * MESSAGES_PER_VISITOR;
    while n_acked.load(Ordering::Relaxed) < total / 3 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let mut acked: Vec<HashMap<String, u64>> = Vec::new();
    for sender in senders {
        acked.push(sender.await.unwrap());
    }
    let n_acked_before_kill: usize = acked.iter().map(HashMap::len).sum();
    assert!(n_acked_before_kill > 0);
    let log = std::fs::metadata(dir.path().join(kefu::storage::commit_log::LOG_FILE)).unwrap();
    assert!(log.len() > 0, "the killed server left batches that only its commit log holds, for the restart to replay");

    // After a restart, every acknowledged message is there, once, with its sequence number.
    let (_child, address) = serve(dir.path()).await;
    for (visitor, token) in tokens.iter().enumerate() {
        let session: Value = visitor_session(&address, &site, Some(token)).await;
        let stored = stored_messages(&address, token, &session).await;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (client_id, _) in &stored {
            *counts.entry(client_id.as_str()).or_default() += 1;
        }
        assert!(counts.values().all(|count| *count == 1), "no message is stored twice");
        for (client_id, seq) in &acked[visitor] {
            assert!(
                stored.contains(&(client_id.clone(), *seq)),
                "acknowledged {client_id} (seq {seq}) survived the crash"
            );
        }
        let seqs: Vec<u64> = stored.iter().map(|(_, seq)| *seq).collect();
        assert_eq!(seqs, (1..=stored.len() as u64).collect::<Vec<_>>(), "sequences have no holes");
    }

    // Clients resend everything unacknowledged (here: everything) with the same ids.
    resend_everything(&address, &site, &tokens, &acked).await;
}

/// Every visitor resends all its messages with their original client ids. A message acknowledged
/// before (`acked[visitor]`: client id → seq) comes back as a duplicate with its original seq, and
/// afterwards each visitor's messages are stored exactly once.
pub(crate) async fn resend_everything(address: &str, site: &str, tokens: &[String], acked: &[HashMap<String, u64>]) {
    for (visitor, token) in tokens.iter().enumerate() {
        let mut socket = visitor_socket(address, site, token).await;
        for n in 0..MESSAGES_PER_VISITOR {
            socket.send(send_frame(visitor, n)).await.unwrap();
        }
        let mut n_acks = 0;
        while n_acks < MESSAGES_PER_VISITOR {
            let Some(Ok(Message::Text(text))) = socket.next().await else { panic!("the socket closed") };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "ack" {
                n_acks += 1;
                if let Some(seq) = acked[visitor].get(frame["client_id"].as_str().unwrap()) {
                    assert_eq!(frame["seq"].as_u64(), Some(*seq), "a resend gets the original ack");
                    assert_eq!(frame["duplicate"], true, "an acknowledged message was already stored");
                }
            }
        }
        let session: Value = visitor_session(address, site, Some(token)).await;
        let stored = stored_messages(address, token, &session).await;
        assert_eq!(stored.len(), MESSAGES_PER_VISITOR, "every message exactly once after resending");
    }
}

/// Opens (or, with `token`, reopens) a visitor session on a server at `address`.
pub(crate) async fn visitor_session(address: &str, site: &str, token: Option<&str>) -> Value {
    http()
        .post(format!("http://{address}/api/v1/visitor/session"))
        .json(&json!({"site": site, "token": token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// (client id, seq) of every message in the visitor's conversations.
pub(crate) async fn stored_messages(address: &str, token: &str, session: &Value) -> Vec<(String, u64)> {
    let mut stored = Vec::new();
    for conversation in session["conversations"].as_array().unwrap() {
        let id = conversation["id"].as_u64().unwrap();
        let page: Value = http()
            .get(format!("http://{address}/api/v1/conversations/{id}/messages?limit=200"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for message in page["messages"].as_array().unwrap() {
            stored.push((message["client_id"].as_str().unwrap().to_owned(), message["seq"].as_u64().unwrap()));
        }
    }
    stored
}

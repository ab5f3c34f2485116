//! Operations: metrics, backup and restore under load, integrity checks, format versions,
//! SIGTERM under load with JSON logs, and the systemd unit.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{SinkExt, StreamExt};
use kefu::storage::{DATABASE_FILE, SCHEMA_VERSION, StorageError, Store, tables};
use redb::{Database, ReadableDatabase, ReadableTable, TableHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::crash::{admin, kefu, send_frame, visitor_socket};
use crate::support::{TestServer, http};

/// Runs the kefu binary with `args` on `data_dir`; returns (success, stdout, stderr).
async fn run_kefu(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = kefu().args(args).args(["--data-dir", data_dir.to_str().unwrap()]).output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every (conversation id, seq) stored in the message shards of the database file at `path`.
fn stored_keys(path: &Path) -> HashSet<(u64, u64)> {
    let database = Database::open(path).unwrap();
    let transaction = database.begin_read().unwrap();
    let mut keys = HashSet::new();
    for handle in transaction.list_tables().unwrap() {
        if tables::message_shard_day(handle.name()).is_none() {
            continue;
        }
        let table = transaction.open_table(tables::message_shard(handle.name())).unwrap();
        for entry in table.iter().unwrap() {
            keys.insert(entry.unwrap().0.value());
        }
    }
    keys
}

fn epoch_of(path: &Path) -> u64 {
    let database = Database::open(path).unwrap();
    let transaction = database.begin_read().unwrap();
    kefu::storage::read_meta(&transaction, "epoch").unwrap().unwrap()
}

#[tokio::test]
async fn the_metrics_endpoint_exposes_the_listed_series() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    visitor.say(None, "m1", "hello").await;

    let metrics_addr = server.metrics_addr().expect("metrics listen on a port of their own");
    let response = http().get(format!("http://{metrics_addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let body = response.text().await.unwrap();
    for series in [
        "kefu_connections{transport=\"websocket\",role=\"visitor\"}",
        "kefu_connections{transport=\"websocket\",role=\"agent\"}",
        "kefu_connections{transport=\"quic\",role=\"visitor\"}",
        "kefu_messages_total",
        "kefu_delivery_latency_seconds_bucket{le=\"+Inf\"}",
        "kefu_ack_latency_seconds_count",
        "kefu_commit_batch_size_bucket{le=\"1\"}",
        "kefu_commit_duration_seconds_sum",
        "kefu_commits_aborted_total",
        "kefu_checkpoints_total",
        "kefu_queue_length{queue=\"writer\"}",
        "kefu_queue_length{queue=\"dispatch\"}",
        "kefu_queue_length{queue=\"outbound\"}",
        "kefu_index_lag_messages",
        "kefu_bot_answers_total",
        "kefu_llm_requests_total",
        "kefu_llm_errors_total",
    ] {
        assert!(body.contains(&format!("{series} ")), "{series} is missing from\n{body}");
    }
    let value = |name: &str| -> f64 {
        body.lines().find_map(|line| line.strip_prefix(&format!("{name} "))).unwrap().parse().unwrap()
    };
    // The registry is process-wide (tests share it), so counts are at least this test's own.
    assert!(value("kefu_messages_total") >= 1.0);
    assert!(value("kefu_commit_duration_seconds_count") >= 1.0);
    assert!(value("kefu_connections{transport=\"websocket\",role=\"visitor\"}") >= 1.0);

    // The main port does not serve metrics.
    let response = http().get(server.url("/metrics")).send().await.unwrap();
    assert_ne!(response.status(), 200);
}

#[tokio::test]
async fn invalid_metrics_addresses_are_refused_at_start() {
    let overrides = kefu::base::config::ConfigOverrides { metrics: Some("localhost".into()), ..Default::default() };
    let error = kefu::base::config::Config::load(None, &overrides).unwrap_err().to_string();
    assert!(error.contains("metrics"), "{error}");
    let overrides = kefu::base::config::ConfigOverrides { metrics: Some("off".into()), ..Default::default() };
    assert_eq!(kefu::base::config::Config::load(None, &overrides).unwrap().metrics_addr(), None);
}

#[tokio::test]
async fn a_backup_under_write_load_restores_every_message_acknowledged_before_it() {
    const N_WRITERS: usize = 4;
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;

    // Writers send until told to stop, recording every acknowledged (conversation, seq).
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    let mut first_token = String::new();
    for writer in 0..N_WRITERS {
        let (_, token) = server.visitor_session(&site, None).await;
        if writer == 0 {
            first_token = token.clone();
        }
        let mut visitor = server.visitor(&site, &token).await;
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let ack = visitor.say(None, &format!("w{writer}-{n}"), "under load").await;
                acked.lock().await.push((ack["conversation_id"].as_u64().unwrap(), ack["seq"].as_u64().unwrap()));
                n += 1;
            }
        }));
    }
    while acked.lock().await.len() < 50 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }

    let acked_before_backup: Vec<(u64, u64)> = acked.lock().await.clone();
    let backup_dir = tempfile::tempdir().unwrap();
    let backup_file = backup_dir.path().join("kefu-backup.redb");
    let (ok, stdout, stderr) = run_kefu(server.dir.path(), &["backup", backup_file.to_str().unwrap()]).await;
    assert!(ok, "backup failed: {stdout}{stderr}");
    assert!(stderr.contains("the server is running"), "the running server took the snapshot: {stderr}");
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let n_acked_total = acked.lock().await.len();
    assert!(n_acked_total > acked_before_backup.len(), "writes went on during the backup");

    // A second backup to the same file is refused and leaves the first alone.
    let size = std::fs::metadata(&backup_file).unwrap().len();
    let (ok, _, stderr) = run_kefu(server.dir.path(), &["backup", backup_file.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::metadata(&backup_file).unwrap().len(), size);

    // Restoring into a fresh data directory yields every message acknowledged before the backup.
    let restored = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = run_kefu(restored.path(), &["restore", backup_file.to_str().unwrap()]).await;
    assert!(ok, "restore failed: {stdout}{stderr}");
    let restored_file = restored.path().join(DATABASE_FILE);
    let keys = stored_keys(&restored_file);
    for key in &acked_before_backup {
        assert!(keys.contains(key), "acknowledged message {key:?} is in the backup");
    }
    // The restored database has a new epoch, so clients resuming across the restore reload.
    assert_ne!(epoch_of(&restored_file), server.epoch());
    assert!(stdout.contains(&format!("epoch={}", epoch_of(&restored_file))), "{stdout}");

    let (ok, stdout, _) = run_kefu(restored.path(), &["check"]).await;
    assert!(ok, "{stdout}");
    assert!(stdout.contains("intact=true"), "{stdout}");

    let restored_epoch = epoch_of(&restored_file);
    // A server on the restored data tells a client resuming with the old epoch to reload.
    let (_child, address) = crate::crash::serve(restored.path()).await;
    let mut socket = visitor_socket(&address, &site.key, &first_token).await;
    let conversation_id = loop {
        let Some(Ok(Message::Text(text))) = socket.next().await else { panic!("the socket closed") };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "welcome" {
            break frame["conversations"][0]["id"].as_u64().expect("the visitor's conversation was restored");
        }
    };
    let resume = json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 1, "epoch": server.epoch()});
    socket.send(Message::Text(resume.to_string().into())).await.unwrap();
    loop {
        let Some(Ok(Message::Text(text))) = socket.next().await else { panic!("the socket closed") };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "reset" {
            assert_eq!(frame["reason"], "epoch_changed");
            assert_eq!(frame["epoch"].as_u64(), Some(restored_epoch));
            break;
        }
        assert_ne!(frame["type"], "message", "nothing is replayed across a restore: {frame}");
    }
}

#[tokio::test]
async fn a_lull_empties_the_commit_log_into_the_database() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    visitor.say(None, "m1", "hello").await;
    let log = server.dir.path().join(kefu::storage::commit_log::LOG_FILE);
    assert!(std::fs::metadata(&log).unwrap().len() > 0, "the acknowledged message is in the commit log");
    let started = std::time::Instant::now();
    while std::fs::metadata(&log).unwrap().len() > 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "no checkpoint came in the lull");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn after_a_crash_check_and_restore_first_apply_what_only_the_commit_log_held() {
    let dir = tempfile::tempdir().unwrap();
    let site = admin(dir.path(), &["create-site", "--name", "Shop", "--origin", "*"]).await["site_key"].clone();
    let (mut child, address) = crate::crash::serve(dir.path()).await;
    let backup_file = dir.path().join("backup.redb");
    let (ok, stdout, stderr) = run_kefu(dir.path(), &["backup", backup_file.to_str().unwrap()]).await;
    assert!(ok, "{stdout}{stderr}");
    let session = crate::crash::visitor_session(&address, &site, None).await;
    let mut socket = visitor_socket(&address, &site, session["token"].as_str().unwrap()).await;
    for n in 0..20 {
        socket.send(send_frame(0, n)).await.unwrap();
    }
    let mut acked = 0;
    while acked < 20 {
        let Some(Ok(Message::Text(text))) = socket.next().await else { panic!("the socket closed before every ack") };
        acked += usize::from(serde_json::from_str::<Value>(&text).unwrap()["type"] == "ack");
    }
    // Killed right after the acks, before a lull could bring a checkpoint.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let log = dir.path().join(kefu::storage::commit_log::LOG_FILE);
    assert!(std::fs::metadata(&log).unwrap().len() > 0, "the acknowledged messages are in the commit log");

    // `kefu check` on the stopped server replays the log into the file before checking it.
    let (ok, stdout, stderr) = run_kefu(dir.path(), &["check"]).await;
    assert!(ok && stdout.contains("intact=true") && stdout.contains("messages=20"), "{stdout}{stderr}");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
    assert_eq!(stored_keys(&dir.path().join(DATABASE_FILE)).len(), 20);

    // A crash again, then a restore: the replaced file keeps the logged batches, and the log is
    // not replayed into the restored database (which would refuse it at the next start).
    let (mut child, address) = crate::crash::serve(dir.path()).await;
    let session = crate::crash::visitor_session(&address, &site, None).await;
    let mut socket = visitor_socket(&address, &site, session["token"].as_str().unwrap()).await;
    socket.send(send_frame(1, 0)).await.unwrap();
    while let Some(Ok(Message::Text(text))) = socket.next().await {
        if serde_json::from_str::<Value>(&text).unwrap()["type"] == "ack" {
            break;
        }
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let (ok, _, stderr) = run_kefu(dir.path(), &["restore", backup_file.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("is not empty") && stderr.contains("--force"), "{stderr}");
    let (ok, stdout, stderr) = run_kefu(dir.path(), &["restore", backup_file.to_str().unwrap(), "--force"]).await;
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(stored_keys(&dir.path().join(kefu::history::backup::BEFORE_RESTORE_FILE)).len(), 21);
    assert!(std::fs::metadata(&log).map_or(true, |metadata| metadata.len() == 0));
    let (_child, address) = crate::crash::serve(dir.path()).await;
    let response = http().get(format!("http://{address}/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200, "the restored database starts");
}

#[tokio::test]
async fn restore_refuses_while_the_server_runs_and_changes_nothing() {
    let server = TestServer::start().await;
    let backup_dir = tempfile::tempdir().unwrap();
    let backup_file = backup_dir.path().join("b.redb");
    let (ok, _, stderr) = run_kefu(server.dir.path(), &["backup", backup_file.to_str().unwrap()]).await;
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run_kefu(server.dir.path(), &["restore", backup_file.to_str().unwrap(), "--force"]).await;
    assert!(!ok);
    assert!(stderr.contains("stop it before restoring"), "{stderr}");
    assert!(!server.dir.path().join(kefu::history::backup::BEFORE_RESTORE_FILE).exists());

    // A missing or foreign backup file is refused too.
    let (ok, _, stderr) = run_kefu(backup_dir.path(), &["restore", "/nonexistent/backup.redb"]).await;
    assert!(!ok && stderr.contains("does not exist"), "{stderr}");
    let junk = backup_dir.path().join("junk.redb");
    std::fs::write(&junk, vec![7u8; 10_000]).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run_kefu(empty.path(), &["restore", junk.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("damaged"), "{stderr}");
    assert!(!empty.path().join(DATABASE_FILE).exists(), "a refused restore leaves no database behind");
}

#[tokio::test]
async fn a_backup_holds_the_attachments_a_restore_serves_them_and_check_names_a_missing_one() {
    let mut server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut ids = Vec::new();
    for (name, body) in [("a.txt", b"first attachment".to_vec()), ("b.bin", vec![0xA5; 70_000])] {
        let uploaded = http()
            .post(server.url(&format!("/api/v1/uploads?name={name}")))
            .bearer_auth(&token)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(uploaded.status(), 201);
        let uploaded: Value = uploaded.json().await.unwrap();
        ids.push((uploaded["id"].as_str().unwrap().to_owned(), uploaded["url"].as_str().unwrap().to_owned(), body));
    }
    let backup_dir = tempfile::tempdir().unwrap();
    let archive = backup_dir.path().join("kefu-backup.tar");
    let (ok, stdout, stderr) = run_kefu(server.dir.path(), &["backup", archive.to_str().unwrap()]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("uploads=2"), "{stdout}");
    server.stop().await;

    // Into an empty directory; a non-empty one is refused without --force and left alone.
    let (ok, _, stderr) = run_kefu(server.dir.path(), &["restore", archive.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("is not empty"), "{stderr}");
    assert!(!server.dir.path().join(kefu::history::backup::BEFORE_RESTORE_FILE).exists());
    let restored = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = run_kefu(restored.path(), &["restore", archive.to_str().unwrap()]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("uploads=2"), "{stdout}");
    let (ok, stdout, stderr) = run_kefu(restored.path(), &["check"]).await;
    assert!(ok && stdout.contains("missing_uploads=0"), "{stdout}{stderr}");

    let (_child, address) = crate::crash::serve(restored.path()).await;
    for (_, url, body) in &ids {
        let served = http().get(format!("http://{address}{url}")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(served.status(), 200);
        assert_eq!(served.bytes().await.unwrap().as_ref(), body.as_slice(), "the attachment has the same bytes");
    }

    // A file lost from disk: `kefu check` (asking the running server) names it and fails.
    let (lost, _, _) = &ids[1];
    std::fs::remove_file(restored.path().join("uploads").join(lost)).unwrap();
    let (ok, stdout, stderr) = run_kefu(restored.path(), &["check"]).await;
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("missing_uploads=1") && stdout.contains(&format!("missing_upload={lost}")), "{stdout}");
    assert!(stderr.contains("1 attachments are missing"), "{stderr}");

    // An archive with an entry outside a backup's two kinds is refused and restores nothing.
    let bad = backup_dir.path().join("bad.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&bad).unwrap());
    let mut header = tar::Header::new_ustar();
    header.set_size(4);
    // Written by hand: the tar crate itself refuses to write a `..` path.
    header.as_mut_bytes()[..9].copy_from_slice(b"../escape");
    header.set_cksum();
    builder.append(&header, &b"evil"[..]).unwrap();
    builder.finish().unwrap();
    drop(builder);
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run_kefu(empty.path(), &["restore", bad.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("not part of a kefu backup"), "{stderr}");
    assert!(!empty.path().join(DATABASE_FILE).exists());
    assert!(!empty.path().join("../escape").exists());
}

#[tokio::test]
async fn check_reports_an_intact_database_and_detects_a_damaged_one() {
    let mut server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    for n in 0..200 {
        visitor.say(None, &format!("m{n}"), &format!("needle-{n:04} {}", "x".repeat(200))).await;
    }

    // While the server runs, check goes through the control socket.
    let (ok, stdout, stderr) = run_kefu(server.dir.path(), &["check"]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("intact=true") && stdout.contains("messages=200"), "{stdout}");
    assert!(stdout.contains(&format!("schema_version={SCHEMA_VERSION}")), "{stdout}");
    assert!(stdout.contains("day_shards=1"), "{stdout}");
    drop(visitor);
    server.stop().await;

    // Stopped, it checks the file itself.
    let (ok, stdout, _) = run_kefu(server.dir.path(), &["check"]).await;
    assert!(ok && stdout.contains("messages=200"), "{stdout}");

    // A copy with some bytes of stored messages overwritten fails the check.
    let damaged = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(server.dir.path().join(DATABASE_FILE)).unwrap();
    let at = bytes.windows(11).position(|window| window == b"needle-0100").expect("the text is in the file");
    bytes[at..at + 8].copy_from_slice(b"CORRUPT!");
    std::fs::write(damaged.path().join(DATABASE_FILE), &bytes).unwrap();
    let (ok, stdout, stderr) = run_kefu(damaged.path(), &["check"]).await;
    assert!(!ok, "a damaged file fails the check: {stdout}");
    assert!(stderr.contains("damaged"), "{stderr}");
    assert!(stdout.contains("intact=false"), "{stdout}");

    // The original is untouched by checking.
    let (ok, _, _) = run_kefu(server.dir.path(), &["check"]).await;
    assert!(ok);
}

#[tokio::test]
async fn a_database_of_a_newer_format_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let database = Database::create(dir.path().join(DATABASE_FILE)).unwrap();
        let transaction = database.begin_write().unwrap();
        transaction.open_table(tables::META).unwrap().insert("schema_version", SCHEMA_VERSION + 1).unwrap();
        transaction.commit().unwrap();
    }
    let config = kefu::base::config::StorageConfig::default();
    let path = dir.path().to_owned();
    let opened = tokio::task::spawn_blocking(move || Store::open(&path, &config, kefu::server::writer_hooks(None)))
        .await
        .unwrap();
    let Err(error) = opened else { panic!("a newer format must not open") };
    assert!(matches!(error, StorageError::NewerFormat { found } if found == SCHEMA_VERSION + 1));
    assert!(error.to_string().contains("newer kefu"), "{error}");

    let (ok, _, stderr) = run_kefu(dir.path(), &["serve", "--http", "127.0.0.1:0"]).await;
    assert!(!ok);
    assert!(stderr.contains("written by a newer kefu"), "{stderr}");
    let (ok, stdout, _) = run_kefu(dir.path(), &["check"]).await;
    assert!(!ok && stdout.contains("intact=false"), "{stdout}");
    // Nothing was changed: the version is still the newer one.
    let database = Database::open(dir.path().join(DATABASE_FILE)).unwrap();
    let transaction = database.begin_read().unwrap();
    assert_eq!(kefu::storage::read_meta(&transaction, "schema_version").unwrap(), Some(SCHEMA_VERSION + 1));
}

#[tokio::test]
async fn sigterm_under_load_loses_no_acknowledged_message_and_clients_resume() {
    const N_VISITORS: usize = 8;
    const MESSAGES_PER_VISITOR: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let site = admin(dir.path(), &["create-site", "--name", "Shop", "--origin", "*"]).await["site_key"].clone();

    let mut command = kefu();
    command
        .args(["serve", "--data-dir", dir.path().to_str().unwrap(), "--http", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "kefu=debug")
        .stderr(Stdio::piped());
    let (mut child, address) = crate::crash::start(command).await;
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let logs = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            lines.push(line);
        }
        lines
    });

    let mut tokens = Vec::new();
    for _ in 0..N_VISITORS {
        let session: Value = crate::crash::visitor_session(&address, &site, None).await;
        tokens.push(session["token"].as_str().unwrap().to_owned());
    }

    // Every visitor pipelines its messages and collects acks until the server closes the socket.
    let n_acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
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
            let mut close_code = None;
            let mut goaway = false;
            let mut ending = String::from("end of stream");
            while let Some(message) = socket.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        ending = error.to_string();
                        break;
                    }
                };
                match message {
                    Message::Text(text) => {
                        let frame: Value = serde_json::from_str(&text).unwrap();
                        if frame["type"] == "ack" {
                            acked.insert(
                                frame["client_id"].as_str().unwrap().to_owned(),
                                frame["seq"].as_u64().unwrap(),
                            );
                            n_acked.fetch_add(1, Ordering::Relaxed);
                        }
                        goaway |= frame["type"] == "goaway";
                    }
                    Message::Close(frame) => close_code = frame.map(|frame| u16::from(frame.code)),
                    _ => {}
                }
            }
            (acked, goaway, close_code, ending)
        }));
    }
    while n_acked.load(Ordering::Relaxed) < N_VISITORS * MESSAGES_PER_VISITOR / 4 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let pid = child.id().expect("the child runs").to_string();
    let killed = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    let status = child.wait().await.unwrap();
    assert!(status.success(), "kefu exits cleanly on SIGTERM: {status}");
    let logs = logs.await.unwrap();
    let late = logs.iter().any(|line| line.contains("connections did not close in time"));
    let mut acked = Vec::new();
    for sender in senders {
        let (visitor_acked, goaway, close_code, ending) = sender.await.unwrap();
        assert!(
            goaway,
            "every client is told to reconnect (close code {close_code:?}, {ending}; grace ran out: {late})"
        );
        assert_eq!(close_code, Some(1012), "the close code says the server restarts");
        acked.push(visitor_acked);
    }
    assert!(acked.iter().map(HashMap::len).sum::<usize>() > 0);

    // Every stage of a message logged its trace id, as a JSON field.
    let records: Vec<Value> = logs.iter().filter_map(|line| serde_json::from_str(line).ok()).collect();
    assert_eq!(records.len(), logs.len(), "every log line is JSON");
    let stages = |message: &str| -> HashSet<u64> {
        records
            .iter()
            .filter(|record| record["message"] == message)
            .filter_map(|record| record["trace_id"].as_u64())
            .collect()
    };
    let persisted = stages("message persisted");
    assert!(!persisted.is_empty());
    for stage in ["send validated", "send filtered", "message delivered"] {
        assert!(persisted.is_subset(&stages(stage)), "every persisted message has a {stage:?} line with its trace_id");
    }

    // Restarted, the server has every acknowledged message once; clients resend the rest.
    let (_child, address) = crate::crash::serve(dir.path()).await;
    crate::crash::resend_everything(&address, &site, &tokens, &acked).await;
}

#[tokio::test]
async fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Ok(found) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        println!("note: systemd-analyze is not installed; the unit was not verified");
        return;
    };
    assert!(found.status.success());
    // verify checks that ExecStart exists, so point it at the binary under test.
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/kefu.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/kefu serve"));
    let unit = unit.replace("/usr/local/bin/kefu", env!("CARGO_BIN_EXE_kefu"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kefu.service");
    std::fs::write(&path, unit).unwrap();
    let output = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify: {stderr}");
    assert!(!stderr.contains("kefu.service:"), "no warnings about the unit: {stderr}");
}

#[tokio::test]
async fn install_sh_is_safe_to_run_twice() {
    let root = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/install.sh");
    for _ in 0..2 {
        let output = std::process::Command::new("sh")
            .args([script, env!("CARGO_BIN_EXE_kefu"), root.path().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let installed = root.path().join("usr/local/bin/kefu");
    assert_eq!(
        std::fs::metadata(&installed).unwrap().len(),
        std::fs::metadata(env!("CARGO_BIN_EXE_kefu")).unwrap().len()
    );
    assert!(root.path().join("etc/systemd/system/kefu.service").exists());
    let config = std::fs::read_to_string(root.path().join("etc/kefu/kefu.toml")).unwrap();
    assert!(config.contains("data_dir = \"/var/lib/kefu\""));
    // The second run kept the first config and put the new example beside it.
    assert!(root.path().join("etc/kefu/kefu.toml.example").exists());
    // The installed config is valid.
    let loaded = kefu::base::config::Config::load(Some(&root.path().join("etc/kefu/kefu.toml")), &Default::default());
    assert_eq!(loaded.unwrap().data_dir, Path::new("/var/lib/kefu"));
}

/// Runs a shell script with `args`; returns (success, stdout and stderr together).
fn run_script(script: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new("sh").arg(script).args(args).envs(env.iter().copied()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// Every file under `root`, relative to it, in order.
fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn a_release_tarball_installs_after_its_sums_are_checked_and_a_damaged_one_changes_nothing() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    let dist = work.path().join("dist");
    let (made, log) = run_script(
        &repository.join("packaging/release.sh"),
        &["--out", dist.to_str().unwrap()],
        &[("KEFU_BINARY", env!("CARGO_BIN_EXE_kefu"))],
    );
    assert!(made, "release.sh: {log}");
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("kefu-{version}-x86_64-linux");
    let tarball = dist.join(format!("{name}.tar.gz"));
    let sum_file = std::fs::read_to_string(dist.join(format!("{name}.tar.gz.sha256"))).unwrap();
    let tarball_bytes = std::fs::read(&tarball).unwrap();
    let tarball_sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tarball_bytes));
    assert_eq!(sum_file, format!("{tarball_sum}  {name}.tar.gz\n"));

    // Unpacked, the folder holds the release and its sums.
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let status = std::process::Command::new("tar")
        .args(["-xzf", tarball.to_str().unwrap(), "-C", unpacked.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let folder = unpacked.join(&name);
    assert_eq!(
        files_under(&folder),
        ["README.md", "SHA256SUMS", "install.sh", "kefu", "kefu.service", "kefu.toml"].map(String::from)
    );
    let sums = std::fs::read_to_string(folder.join("SHA256SUMS")).unwrap();
    for file in ["README.md", "install.sh", "kefu", "kefu.service", "kefu.toml"] {
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(folder.join(file)).unwrap()));
        assert!(sums.contains(&format!("{digest}  {file}\n")), "{file} in SHA256SUMS: {sums}");
    }

    // `./install.sh` from the unpacked folder installs the binary beside it.
    let root = work.path().join("root");
    let (installed, log) = run_script(&folder.join("install.sh"), &["", root.to_str().unwrap()], &[]);
    assert!(installed, "install.sh: {log}");
    assert_eq!(files_under(&root), ["etc/kefu/kefu.toml", "etc/systemd/system/kefu.service", "usr/local/bin/kefu"]);
    let binary = std::fs::read(root.join("usr/local/bin/kefu")).unwrap();
    assert!(binary == std::fs::read(env!("CARGO_BIN_EXE_kefu")).unwrap(), "the installed binary is the packaged one");
    let version_output = std::process::Command::new(root.join("usr/local/bin/kefu")).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version_output.stdout).contains(version));

    // `install.sh TARBALL ROOT` unpacks, checks and installs; run again, it keeps the config.
    let second_root = work.path().join("second-root");
    for _ in 0..2 {
        let (installed, log) = run_script(
            &repository.join("packaging/install.sh"),
            &[tarball.to_str().unwrap(), second_root.to_str().unwrap()],
            &[],
        );
        assert!(installed, "install.sh with the tarball: {log}");
    }
    assert!(second_root.join("etc/kefu/kefu.toml.example").exists());
    assert!(std::fs::read(second_root.join("usr/local/bin/kefu")).unwrap() == binary);

    // A changed binary in the unpacked folder is refused, and nothing is installed.
    let mut altered = binary.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0xff;
    std::fs::write(folder.join("kefu"), &altered).unwrap();
    let refused_root = work.path().join("refused");
    let (installed, log) = run_script(&folder.join("install.sh"), &["", refused_root.to_str().unwrap()], &[]);
    assert!(!installed);
    assert!(log.contains("does not match SHA256SUMS") && log.contains("nothing was installed"), "{log}");
    assert!(!refused_root.exists());

    // A damaged tarball is refused by its .sha256 beside it, without one by gzip, and an
    // earlier installation stays as it was.
    let before = files_under(&second_root);
    let damaged = work.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    let damaged_tarball = damaged.join(format!("{name}.tar.gz"));
    let mut bytes = tarball_bytes.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged_tarball, &bytes).unwrap();
    std::fs::write(damaged.join(format!("{name}.tar.gz.sha256")), &sum_file).unwrap();
    let (installed, log) = run_script(
        &repository.join("packaging/install.sh"),
        &[damaged_tarball.to_str().unwrap(), second_root.to_str().unwrap()],
        &[],
    );
    assert!(!installed);
    assert!(log.contains("does not match") && log.contains(".sha256"), "{log}");
    std::fs::remove_file(damaged.join(format!("{name}.tar.gz.sha256"))).unwrap();
    let (installed, log) = run_script(
        &repository.join("packaging/install.sh"),
        &[damaged_tarball.to_str().unwrap(), second_root.to_str().unwrap()],
        &[],
    );
    assert!(!installed);
    assert!(log.contains("nothing was installed"), "{log}");
    assert_eq!(files_under(&second_root), before);
    assert!(std::fs::read(second_root.join("usr/local/bin/kefu")).unwrap() == binary);
}

/// The next notification on `socket`, within the frame timeout, without the newline that ends
/// its last line.
async fn next_notification(socket: &tokio::net::UnixDatagram) -> String {
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(crate::support::FRAME_TIMEOUT, socket.recv(&mut buffer))
        .await
        .expect("a notification in time")
        .unwrap();
    String::from_utf8_lossy(&buffer[..n]).trim_end_matches('\n').to_owned()
}

#[tokio::test]
async fn systemd_hears_ready_watchdog_and_a_start_timeout_extension_during_repair() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notifications = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let data_dir = dir.path().join("data");
    let spawn = || {
        kefu()
            .args(["serve", "--data-dir", data_dir.to_str().unwrap(), "--http", "127.0.0.1:0"])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "200000")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("kefu starts")
    };

    let mut child = spawn();
    assert_eq!(next_notification(&notifications).await, "READY=1\nSTATUS=serving");
    assert_eq!(next_notification(&notifications).await, "WATCHDOG=1");
    assert_eq!(next_notification(&notifications).await, "WATCHDOG=1");
    // Killed without a clean close, redb repairs the file at the next start.
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let mut child = spawn();
    let first = next_notification(&notifications).await;
    assert!(first.starts_with("EXTEND_TIMEOUT_USEC=60000000\nSTATUS=repairing the database"), "{first}");
    loop {
        let next = next_notification(&notifications).await;
        if next.starts_with("READY=1") {
            break;
        }
        assert!(next.starts_with("EXTEND_TIMEOUT_USEC="), "{next}");
    }
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    loop {
        let next = next_notification(&notifications).await;
        if next == "STOPPING=1" {
            break;
        }
        assert_eq!(next, "WATCHDOG=1");
    }
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn healthcheck_exits_zero_only_on_a_healthy_answer() {
    let server = TestServer::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = run_kefu(scratch.path(), &["healthcheck", "--url", &server.url("/healthz")]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("200"), "{stdout}");
    let (ok, _, stderr) = run_kefu(scratch.path(), &["healthcheck", "--url", &server.url("/no-such-page")]).await;
    assert!(!ok && stderr.contains("404"), "{stderr}");
    let (ok, _, stderr) = run_kefu(scratch.path(), &["healthcheck", "--url", "https://127.0.0.1:1/healthz"]).await;
    assert!(!ok && stderr.contains("http://"), "{stderr}");
    let (ok, _, stderr) = run_kefu(scratch.path(), &["healthcheck", "--url", "http://localhost:8080/healthz"]).await;
    assert!(!ok && stderr.contains("IP address"), "{stderr}");
}

#[tokio::test]
async fn logs_to_a_pipe_are_plain_text_and_the_favicon_is_served() {
    let data = tempfile::tempdir().unwrap();
    let mut command = kefu();
    command
        .args(["serve", "--data-dir", data.path().to_str().unwrap(), "--http", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    let (mut child, address) = crate::crash::start(command).await;
    let favicon = http().get(format!("http://{address}/favicon.ico")).send().await.unwrap();
    assert_eq!(favicon.status(), 200);
    assert_eq!(favicon.headers()["content-type"], "image/x-icon");
    assert_eq!(&favicon.bytes().await.unwrap()[..4], [0, 0, 1, 0], "an icon file");
    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("kefu is listening"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in a log that is not a terminal:\n{stderr}");
}

#[tokio::test]
async fn a_bad_http_flag_is_named_as_the_flag_and_localhost_is_understood() {
    let data = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run_kefu(data.path(), &["serve", "--http", "shop.example:8080"]).await;
    assert!(!ok);
    // The message (a backtrace may follow when RUST_BACKTRACE is set).
    let stderr = stderr.lines().next().unwrap_or_default();
    assert!(stderr.contains("`http` (from command-line flags)"), "{stderr}");
    assert!(stderr.contains("0.0.0.0:8080") && stderr.contains("localhost:8080"), "{stderr}");
    assert!(!stderr.contains("ConfigOverrides") && !stderr.contains("kefu::"), "an internal name: {stderr}");

    let mut command = kefu();
    command.args(["serve", "--data-dir", data.path().to_str().unwrap(), "--http", "localhost:0"]);
    let (_child, address) = crate::crash::start(command).await;
    assert!(address.starts_with("127.0.0.1:"), "{address}");
}

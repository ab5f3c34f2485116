//! A cluster node killed with SIGKILL mid-stream, and NATS restarted: three real `kefu serve`
//! processes on one PostgreSQL and one nats-server, behind nginx running
//! `packaging/nginx-cluster.conf`. Visitors stream their messages through nginx and the node
//! holding most of them is killed a third of the way; the visitors it held reconnect through
//! nginx to another node, and every visitor resends what was not acknowledged with the same
//! client ids. Two thirds of the way nats-server is killed and started again, losing the events
//! in flight: the nodes reconnect, and what NATS lost reaches the agent from PostgreSQL.
//! Afterwards every acknowledged message is stored with its sequence number, every message
//! exactly once, and the agent (whose connection is resumed through nginx if it was on the killed
//! node) received each exactly once, in order.
//!
//! Skipped (one line) without PostgreSQL, nats-server or nginx, unless `CI` is set for nginx.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::crash::{kefu, send_frame, start};
use crate::support::nats::NatsServer;
use crate::support::proxy::{self, ProxiedStream};
use crate::support::{FRAME_TIMEOUT, PASSWORD};

const N_VISITORS: usize = 6;
const MESSAGES_PER_VISITOR: usize = 60;

/// A WebSocket through nginx at `proxy`, said hello to (with `resume` when given).
async fn connect(
    proxy: std::net::SocketAddr,
    path: &str,
    token: &str,
    resume: Vec<Value>,
) -> (tokio_tungstenite::WebSocketStream<ProxiedStream>, Value) {
    let mut socket = proxy::websocket_through(proxy, "127.0.0.1", path).await;
    let hello = json!({"type": "hello", "token": token, "resume": resume});
    socket.send(Message::Text(hello.to_string().into())).await.unwrap();
    loop {
        let Message::Text(text) = tokio::time::timeout(FRAME_TIMEOUT, socket.next()).await.unwrap().unwrap().unwrap()
        else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "welcome" {
            return (socket, frame);
        }
    }
}

/// One visitor: sends its messages a few at a time, each few once the previous ones are
/// acknowledged, and after losing its connection reconnects through nginx and resends every
/// message not acknowledged yet, until all are. Returns the acknowledgements (client id → seq),
/// those that came before the kill, and how many times it reconnected.
async fn visitor(
    proxy: std::net::SocketAddr,
    site: String,
    token: String,
    index: usize,
    n_acked: Arc<AtomicUsize>,
    killed: tokio::sync::watch::Receiver<bool>,
) -> (HashMap<String, u64>, HashMap<String, u64>, usize) {
    let path = format!("/ws/visitor?site={site}");
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut before_kill: HashMap<String, u64> = HashMap::new();
    let mut reconnects = 0;
    'connection: loop {
        let (mut socket, _) = connect(proxy, &path, &token, Vec::new()).await;
        let pending: Vec<usize> =
            (0..MESSAGES_PER_VISITOR).filter(|n| !acked.contains_key(&format!("v{index}-m{n}"))).collect();
        for few in pending.chunks(3) {
            for n in few {
                if socket.send(send_frame(index, *n)).await.is_err() {
                    break;
                }
            }
            while few.iter().any(|n| !acked.contains_key(&format!("v{index}-m{n}"))) {
                let Ok(Some(Ok(message))) = tokio::time::timeout(FRAME_TIMEOUT, socket.next()).await else {
                    // Closed, reset or silent: the node is gone.
                    reconnects += 1;
                    assert!(reconnects < 5, "visitor {index} could not get its messages acknowledged");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'connection;
                };
                let Message::Text(text) = message else { continue };
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] != "ack" {
                    continue;
                }
                let client_id = frame["client_id"].as_str().unwrap().to_owned();
                let seq = frame["seq"].as_u64().unwrap();
                match acked.insert(client_id.clone(), seq) {
                    Some(earlier) => assert_eq!(earlier, seq, "{client_id}: a resend gets the original seq"),
                    None => {
                        n_acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !*killed.borrow() {
                    before_kill.insert(client_id, seq);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        return (acked, before_kill, reconnects);
    }
}

#[tokio::test]
async fn a_node_killed_mid_stream_loses_nothing_acknowledged_and_nothing_comes_twice() {
    let Some(url) = crate::support::postgres::database("cluster_failover").await else { return };
    let Some(nats) = NatsServer::start("cluster_failover") else { return };
    let Some(binary) = proxy::installed(proxy::nginx_binary(), "nginx") else { return };

    // The site and the agent, written straight into the cluster's database.
    let sites = kefu::cluster::sites::PostgresSites::open(&url).await.unwrap();
    let new_site =
        kefu::sites::NewSite { name: "Shop".into(), allowed_origins: vec!["*".into()], ..Default::default() };
    let site = kefu::sites::store::SiteStore::create(&sites, new_site).await.unwrap();
    let agents = kefu::cluster::agents::PostgresAgents::open(&url).await.unwrap();
    let new_agent = kefu::people::agents::NewAgent {
        email: "wang@shop.example".into(),
        name: "王".into(),
        password: PASSWORD.into(),
        role: kefu::people::agents::Role::Agent,
        sites: vec![site.key.clone()],
        capacity: 50,
    };
    kefu::people::agents::create(&agents, new_agent).await.unwrap();

    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (dir, ip) in dirs.iter().zip(["127.0.0.21", "127.0.0.22", "127.0.0.23"]) {
        let mut command = kefu();
        command
            .args(["serve", "--data-dir", dir.path().to_str().unwrap(), "--http", &format!("{ip}:0")])
            .env("KEFU_STORAGE__BACKEND", "postgres")
            .env("KEFU_STORAGE__POSTGRES_URL", &url)
            .env("KEFU_CLUSTER__NATS_URL", nats.url())
            .env("KEFU_ROUTING__OFFLINE_GRACE_SECS", "0");
        nodes.push(start(command).await);
    }
    let addresses = [0, 1, 2].map(|index| nodes[index].1.parse().unwrap());
    let nginx = proxy::start_nginx_cluster(binary, addresses);

    let agent_token = proxy::login_through(nginx.address, "wang@shop.example").await;
    let (mut agent, welcome) = connect(nginx.address, "/ws/agent", &agent_token, Vec::new()).await;
    let epoch = welcome["epoch"].as_u64().unwrap();
    // Both other nodes know the agent is online before the visitors come.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let mut tokens = Vec::new();
    for _ in 0..N_VISITORS {
        let session = proxy::post_json(nginx.address, "/api/v1/visitor/session", json!({"site": site.key})).await;
        tokens.push(session["token"].as_str().unwrap().to_owned());
    }
    let (killed_tx, killed) = tokio::sync::watch::channel(false);
    let n_acked = Arc::new(AtomicUsize::new(0));
    let mut visitors = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        let (site, token, n_acked) = (site.key.clone(), token.clone(), n_acked.clone());
        visitors.push(tokio::spawn(visitor(nginx.address, site, token, index, n_acked, killed.clone())));
    }

    // The agent's side: every message of its conversations, with a resume through nginx when its
    // connection is lost. Kill the first node once a third of the messages reached the agent.
    let total = N_VISITORS * MESSAGES_PER_VISITOR;
    let mut received: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut killed_node = false;
    // NATS goes down for a second two thirds of the way, while the visitors go on sending.
    let nats_restart = {
        let n_acked = n_acked.clone();
        let mut nats = nats;
        tokio::spawn(async move {
            while n_acked.load(Ordering::Relaxed) < total * 2 / 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let before = n_acked.load(Ordering::Relaxed);
            nats.restart_after(Duration::from_secs(1)).await;
            (nats, n_acked.load(Ordering::Relaxed) - before)
        })
    };
    let mut agent_reconnects = 0;
    while received.values().map(Vec::len).sum::<usize>() < total {
        let frame = match tokio::time::timeout(Duration::from_secs(10), agent.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Value>(&text).unwrap(),
            Ok(Some(Ok(_))) => continue,
            Ok(_) | Err(_) => {
                agent_reconnects += 1;
                assert!(agent_reconnects < 5, "the agent could not resume");
                let resume: Vec<Value> = received
                    .iter()
                    .map(|(id, seqs)| json!({"conversation_id": id, "last_seq": seqs.last().copied().unwrap_or(0), "epoch": epoch}))
                    .collect();
                let (socket, welcome) = connect(nginx.address, "/ws/agent", &agent_token, resume).await;
                agent = socket;
                // Conversations assigned while it was away start from the beginning.
                for listed in welcome["conversations"].as_array().into_iter().flatten() {
                    let id = listed["id"].as_u64().unwrap();
                    if !received.contains_key(&id) {
                        let frame = json!({"type": "resume", "conversation_id": id, "last_seq": 0, "epoch": epoch});
                        agent.send(Message::Text(frame.to_string().into())).await.unwrap();
                    }
                }
                continue;
            }
        };
        if frame["type"] == "message" {
            let (conversation, seq) = (frame["conversation_id"].as_u64().unwrap(), frame["seq"].as_u64().unwrap());
            received.entry(conversation).or_default().push(seq);
        }
        if !killed_node && n_acked.load(Ordering::Relaxed) >= total / 3 {
            // The node holding the most visitors' connections (each lists its own).
            let mut holding = Vec::new();
            for (_, address) in &nodes {
                let (_, online) =
                    crate::support::call_at(address, "GET", "/api/v1/visitors/online", &agent_token).await;
                holding.push(online.as_array().map_or(0, Vec::len));
            }
            let victim = (0..nodes.len()).max_by_key(|index| holding[*index]).unwrap();
            assert!(holding[victim] > 0, "{holding:?}");
            killed_tx.send(true).unwrap();
            nodes[victim].0.start_kill().unwrap();
            nodes[victim].0.wait().await.unwrap();
            killed_node = true;
        }
    }
    assert!(killed_node);
    let (nats, acked_while_nats_was_down) = nats_restart.await.unwrap();
    assert!(acked_while_nats_was_down > 0, "the visitors went on sending while NATS was down");

    let mut n_reconnected = 0;
    let mut n_acked_before_kill = 0;
    let database = crate::support::postgres::connect(&url).await;
    for (index, handle) in visitors.into_iter().enumerate() {
        let (acked, before_kill, reconnects) = handle.await.unwrap();
        n_reconnected += usize::from(reconnects > 0);
        n_acked_before_kill += before_kill.len();
        let rows = database
            .query(
                "SELECT m.client_id, m.seq FROM messages m WHERE m.client_id LIKE $1 ORDER BY m.conversation_id, m.seq",
                &[&format!("v{index}-m%")],
            )
            .await
            .unwrap();
        let stored: Vec<(String, u64)> =
            rows.iter().map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1) as u64)).collect();
        assert_eq!(stored.len(), MESSAGES_PER_VISITOR, "visitor {index}: every message stored exactly once");
        let ids: BTreeSet<&String> = stored.iter().map(|(client_id, _)| client_id).collect();
        assert_eq!(ids.len(), MESSAGES_PER_VISITOR, "visitor {index}: no client id twice");
        for (client_id, seq) in &before_kill {
            assert!(stored.contains(&(client_id.clone(), *seq)), "acknowledged {client_id} (seq {seq}) was kept");
        }
        for (client_id, seq) in &acked {
            assert!(
                stored.contains(&(client_id.clone(), *seq)),
                "{client_id} is stored with the seq it was acknowledged with"
            );
        }
    }
    assert!(n_acked_before_kill > 0, "acknowledgements came before the kill");
    assert!(n_reconnected > 0, "some visitors were on the killed node and reconnected through nginx");
    // The agent got each message of each conversation once, in order.
    assert_eq!(received.len(), N_VISITORS);
    for (conversation, seqs) in &received {
        assert_eq!(seqs, &(1..=MESSAGES_PER_VISITOR as u64).collect::<Vec<_>>(), "conversation {conversation}");
    }
    drop((nginx, nats));
}

//! `kefu bench soak`: mixed traffic for a duration — visitors that send, upload, disconnect and
//! resume; agents that answer and resume; server restarts with SIGTERM (or, with `--crash`,
//! SIGKILL) on the same data — then
//! a check that every message was delivered exactly once: every acknowledged client id is in
//! history once, every stored visitor message reached an agent once, every agent answer
//! reached its visitor once. Server memory and file descriptors are sampled throughout.
//!
//! Clients behave as docs/protocol.md asks: they keep unacknowledged messages and resend them
//! with the same client id after reconnecting, and resume with the last seq they saw.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::TargetArgs;
use super::client::{self, Endpoint, Frame, Http, Ws};
use super::target::Target;

/// A 1×1 PNG, the body of the soak's uploads.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0A, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// How long clients wait before reconnecting after losing their connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// How long the final phase waits for outstanding acks and deliveries.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Errors kept verbatim for the printout.
const KEPT_ERRORS: usize = 10;

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// How long to run, in seconds (such as 1800 for 30 minutes, 259200 for 72 hours).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Visitors.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub visitors: usize,
    /// Agents.
    #[arg(long, default_value_t = 4)]
    pub agents: usize,
    /// Aggregate visitor messages per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Agents answer one visitor message in this many.
    #[arg(long, default_value_t = 3)]
    pub reply_every: u64,
    /// One visitor message in this many carries an upload.
    #[arg(long, default_value_t = 25)]
    pub upload_every: u64,
    /// Mean seconds a visitor stays connected before dropping and resuming.
    #[arg(long, default_value_t = 30.0)]
    pub reconnect_every: f64,
    /// Seconds between server restarts (SIGTERM, then start on the same data); 0: never.
    #[arg(long, default_value_t = 300.0)]
    pub restart_every: f64,
    /// Restart with SIGKILL instead of SIGTERM: a crash, after which the server replays its
    /// commit log.
    #[arg(long)]
    pub crash: bool,
    /// Seconds between samples of the server's memory and file descriptors.
    #[arg(long, default_value_t = 30.0)]
    pub sample_every: f64,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Default)]
struct Ledger {
    visitor_sent: HashSet<String>,
    visitor_acked: HashMap<String, (u64, u64)>,
    agent_sent: HashSet<String>,
    agent_acked: HashMap<String, (u64, u64)>,
    /// `(conversation, seq)` → times an agent received it.
    agent_receipts: HashMap<(u64, u64), u32>,
    /// `(conversation, seq)` → times its visitor received it.
    visitor_receipts: HashMap<(u64, u64), u32>,
    /// Conversation → a visitor token that can read it.
    conversations: HashMap<u64, String>,
    /// `(conversation, after seq, up to seq)` skipped by a `reset` (reloaded over HTTP).
    reset_ranges: Vec<(u64, u64, u64)>,
    duplicate_acks: u64,
    reconnects: u64,
    connect_failures: u64,
    uploads: u64,
    errors: u64,
    error_texts: Vec<String>,
}

impl Ledger {
    fn error(&mut self, text: String) {
        self.errors += 1;
        if self.error_texts.len() < KEPT_ERRORS {
            self.error_texts.push(text);
        }
    }
}

type Shared = Arc<Mutex<Ledger>>;

/// What the clients are told: keep sending, or stop sending (and settle), or leave.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    Run,
    Settle,
    Leave,
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    super::print_machine();
    let mut target = Target::open(&args.target, args.agents, args.visitors + args.agents).await?;
    if target.endpoint.bare {
        bail!("soak needs kefu's full protocol (sessions, resume, uploads, history), not a bare relay");
    }
    println!("mode: soak; target: {}", target.description);
    println!(
        "inputs: duration={}s visitors={} agents={} rate={}/s reply 1 in {} upload 1 in {} reconnect every ~{}s restart every {}s{} sample every {}s",
        args.duration,
        args.visitors,
        target.agents.len(),
        args.rate,
        args.reply_every,
        args.upload_every,
        args.reconnect_every,
        args.restart_every,
        if args.crash { " (SIGKILL)" } else { "" },
        args.sample_every
    );
    println!("load generator: 1 client process, 1 source address (127.0.0.1)");
    let ledger: Shared = Arc::new(Mutex::new(Ledger::default()));
    let (stage_sender, stage) = watch::channel(Stage::Run);
    let mut tasks = Vec::new();
    for (number, (email, password)) in target.agents.clone().into_iter().enumerate() {
        let agent = SoakAgent::new(target.endpoint.clone(), number, email, password, args.reply_every);
        tasks.push(tokio::spawn(agent.run(ledger.clone(), stage.clone())));
    }
    for index in 0..args.visitors {
        let visitor = SoakVisitor::new(target.endpoint.clone(), target.site.clone(), index, &args);
        tasks.push(tokio::spawn(visitor.run(ledger.clone(), stage.clone())));
    }

    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    let sample_every = Duration::from_secs_f64(args.sample_every.max(1.0));
    let restart_every =
        (args.restart_every > 0.0 && target.can_restart()).then(|| Duration::from_secs_f64(args.restart_every));
    let mut next_sample = started;
    let mut next_restart = restart_every.map(|every| started + every);
    let mut samples = Vec::new();
    let mut restarts = 0;
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>6} {:>9} {:>9} {:>7} {:>9}",
        "seconds", "VmRSS", "RssAnon", "RssFile", "fds", "sent", "acked", "errors", "restarts"
    );
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            let sample = target.sample();
            let (sent, acked, errors) = {
                let ledger = ledger.lock();
                (
                    ledger.visitor_sent.len() + ledger.agent_sent.len(),
                    ledger.visitor_acked.len() + ledger.agent_acked.len(),
                    ledger.errors,
                )
            };
            if let Some(sample) = sample {
                println!(
                    "{:>8.0} {:>10} {:>10} {:>10} {:>6} {:>9} {:>9} {:>7} {:>9}",
                    started.elapsed().as_secs_f64(),
                    super::kib(sample.rss_kib),
                    super::kib(sample.rss_anon_kib),
                    super::kib(sample.rss_file_kib),
                    sample.fds,
                    sent,
                    acked,
                    errors,
                    restarts
                );
                samples.push((started.elapsed().as_secs_f64(), sample.rss_kib, sample.fds, sample.rss_anon_kib));
            }
            next_sample += sample_every;
        }
        if let Some(at) = next_restart {
            if now >= at {
                match args.crash {
                    true => target.crash_and_restart().await.context("crashing and restarting the server")?,
                    false => target.restart().await.context("restarting the server")?,
                }
                restarts += 1;
                next_restart = restart_every.map(|every| at + every);
            }
        }
        let wake = [Some(next_sample), next_restart, Some(end)].into_iter().flatten().min().unwrap_or(end);
        tokio::time::sleep_until(wake.into()).await;
    }

    // Stop sending; wait until everything sent is acknowledged and delivered.
    {
        let _counting = ledger.lock();
        stage_sender.send_replace(Stage::Settle);
    }
    let settling = Instant::now();
    loop {
        let (unacked, undelivered) = {
            let ledger = ledger.lock();
            let unacked = ledger.visitor_sent.len() - ledger.visitor_acked.len() + ledger.agent_sent.len()
                - ledger.agent_acked.len();
            let undelivered =
                ledger.visitor_acked.values().filter(|key| !ledger.agent_receipts.contains_key(key)).count()
                    + ledger.agent_acked.values().filter(|key| !ledger.visitor_receipts.contains_key(key)).count();
            (unacked, undelivered)
        };
        if (unacked == 0 && undelivered == 0) || settling.elapsed() > SETTLE_TIMEOUT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled_sample = target.sample();
    stage_sender.send_replace(Stage::Leave);
    for task in tasks {
        let _ = task.await;
    }

    let verdict = check(&target, &ledger).await?;
    let pass = {
        let ledger = ledger.lock();
        println!("--- soak finished after {:.0}s ({restarts} server restarts)", started.elapsed().as_secs_f64());
        println!(
            "visitor messages: {} sent, {} acked ({} uploads); agent answers: {} sent, {} acked",
            ledger.visitor_sent.len(),
            ledger.visitor_acked.len(),
            ledger.uploads,
            ledger.agent_sent.len(),
            ledger.agent_acked.len()
        );
        println!(
            "reconnects {}, connect attempts refused while restarting {}, duplicate acks after resends {}, resets {}",
            ledger.reconnects,
            ledger.connect_failures,
            ledger.duplicate_acks,
            ledger.reset_ranges.len()
        );
        println!("history: {} conversations checked, {} messages", verdict.conversations, verdict.history_messages);
        println!(
            "lost {}, duplicated in history {}, unacknowledged {}, undelivered {}, delivered twice {}, errors {}",
            verdict.lost,
            verdict.duplicated,
            verdict.unacked,
            verdict.undelivered,
            verdict.delivered_twice,
            ledger.errors
        );
        for text in &ledger.error_texts {
            println!("error: {text}");
        }
        for text in &verdict.examples {
            println!("finding: {text}");
        }
        if let (Some(first), Some(last)) =
            (samples.iter().find(|sample| sample.0 >= args.duration * 0.1).or(samples.first()), samples.last())
        {
            let max = samples.iter().map(|sample| sample.1).max().unwrap_or(0);
            let max_fds = samples.iter().map(|sample| sample.2).max().unwrap_or(0);
            let max_anon = samples.iter().map(|sample| sample.3).max().unwrap_or(0);
            println!(
                "server memory: VmRSS {} at {:.0}s, {} at {:.0}s, max {}; RssAnon {} → {}, max {}; fds {} → {}, max {}",
                super::kib(first.1),
                first.0,
                super::kib(last.1),
                last.0,
                super::kib(max),
                super::kib(first.3),
                super::kib(last.3),
                super::kib(max_anon),
                first.2,
                last.2,
                max_fds
            );
        }
        if let Some(sample) = settled_sample {
            println!("server after settling: VmRSS {}, fds {}", super::kib(sample.rss_kib), sample.fds);
        }
        let pass = verdict.lost == 0
            && verdict.duplicated == 0
            && verdict.unacked == 0
            && verdict.undelivered == 0
            && verdict.delivered_twice == 0
            && ledger.errors == 0;
        println!("exactly-once: {}", if pass { "PASS" } else { "FAIL" });
        pass
    };
    target.finish().await?;
    if !pass {
        bail!("the soak found lost, duplicated or undelivered messages, or errors");
    }
    Ok(())
}

#[derive(Default)]
struct Verdict {
    conversations: usize,
    history_messages: usize,
    lost: usize,
    duplicated: usize,
    unacked: usize,
    undelivered: usize,
    delivered_twice: usize,
    examples: Vec<String>,
}

impl Verdict {
    fn example(&mut self, text: String) {
        if self.examples.len() < KEPT_ERRORS {
            self.examples.push(text);
        }
    }
}

/// Compares what was acknowledged with what was delivered and with history.
async fn check(target: &Target, ledger: &Shared) -> anyhow::Result<Verdict> {
    let conversations: Vec<(u64, String)> =
        ledger.lock().conversations.iter().map(|(id, token)| (*id, token.clone())).collect();
    let http = Http::new(target.endpoint.addr)?;
    let mut stored: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let mut verdict = Verdict { conversations: conversations.len(), ..Verdict::default() };
    for (conversation, token) in conversations {
        let mut before: Option<u64> = None;
        loop {
            let path = match before {
                Some(before) => format!("/api/v1/conversations/{conversation}/messages?limit=200&before={before}"),
                None => format!("/api/v1/conversations/{conversation}/messages?limit=200"),
            };
            let page = http.json(Method::GET, &path, Some(&token), None).await?;
            for message in page["messages"].as_array().into_iter().flatten() {
                verdict.history_messages += 1;
                if let (Some(client_id), Some(seq)) = (message["client_id"].as_str(), message["seq"].as_u64()) {
                    stored.entry(client_id.to_owned()).or_default().push((conversation, seq));
                }
            }
            match page["next_before"].as_u64() {
                Some(next) => before = Some(next),
                None => break,
            }
        }
    }
    let ledger = ledger.lock();
    let in_reset = |conversation: u64, seq: u64| {
        ledger.reset_ranges.iter().any(|&(id, after, upto)| id == conversation && seq > after && seq <= upto)
    };
    for (sent, acked, receipts, who) in [
        (&ledger.visitor_sent, &ledger.visitor_acked, &ledger.agent_receipts, "visitor message"),
        (&ledger.agent_sent, &ledger.agent_acked, &ledger.visitor_receipts, "agent answer"),
    ] {
        for client_id in sent {
            let Some(&key) = acked.get(client_id) else {
                verdict.unacked += 1;
                verdict.example(format!("{who} {client_id} was never acknowledged"));
                continue;
            };
            match stored.get(client_id).map(Vec::len).unwrap_or(0) {
                0 => {
                    verdict.lost += 1;
                    verdict.example(format!("{who} {client_id} acknowledged as {key:?} is not in history"));
                }
                1 => {}
                n => {
                    verdict.duplicated += 1;
                    verdict.example(format!("{who} {client_id} is in history {n} times"));
                }
            }
            match receipts.get(&key).copied().unwrap_or(0) {
                0 if in_reset(key.0, key.1) => {}
                0 => {
                    verdict.undelivered += 1;
                    verdict.example(format!("{who} {client_id} {key:?} was never delivered"));
                }
                1 => {}
                n => {
                    verdict.delivered_twice += 1;
                    verdict.example(format!("{who} {client_id} {key:?} was delivered {n} times"));
                }
            }
        }
    }
    Ok(verdict)
}

struct Pending {
    client_id: String,
    text: String,
    attachment_id: Option<String>,
}

struct SoakVisitor {
    endpoint: Endpoint,
    site: String,
    index: usize,
    period: Duration,
    reconnect_every: f64,
    upload_every: u64,
    token: Option<String>,
    conversation: Option<(u64, u64)>,
    last_seq: u64,
    pending: Vec<Pending>,
    sequence: u64,
}

impl SoakVisitor {
    fn new(endpoint: Endpoint, site: String, index: usize, args: &SoakArgs) -> SoakVisitor {
        SoakVisitor {
            endpoint,
            site,
            index,
            period: Duration::from_secs_f64(args.visitors as f64 / args.rate.max(0.001)),
            reconnect_every: args.reconnect_every,
            upload_every: args.upload_every,
            token: None,
            conversation: None,
            last_seq: 0,
            pending: Vec::new(),
            sequence: 0,
        }
    }

    async fn run(mut self, ledger: Shared, mut stage: watch::Receiver<Stage>) {
        let http = match Http::new(self.endpoint.addr) {
            Ok(http) => http,
            Err(error) => {
                ledger.lock().error(format!("{error:#}"));
                return;
            }
        };
        let mut first = true;
        // Spread the first messages over one period.
        let offset = self.period.mul_f64(rand::random::<f64>());
        let mut next_send = Instant::now() + offset;
        loop {
            if *stage.borrow() == Stage::Leave {
                return;
            }
            if !first {
                ledger.lock().reconnects += 1;
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
            first = false;
            let mut ws = match self.connect(&http).await {
                Ok(ws) => ws,
                Err(_) => {
                    ledger.lock().connect_failures += 1;
                    continue;
                }
            };
            // Resend what was not acknowledged, with the same client ids.
            let mut broken = false;
            for index in 0..self.pending.len() {
                let frame = self.send_frame(&self.pending[index]);
                if client::send_frame(&mut ws, &frame).await.is_err() {
                    broken = true;
                    break;
                }
            }
            if broken {
                continue;
            }
            let stay = Duration::from_secs_f64(self.reconnect_every * 2.0 * rand::random::<f64>());
            let drop_at = Instant::now() + stay;
            loop {
                let current = *stage.borrow();
                if current == Stage::Leave {
                    let _ = ws.close(None).await;
                    return;
                }
                let sending = current == Stage::Run;
                let dropping = sending && self.reconnect_every > 0.0;
                tokio::select! {
                    _ = stage.changed() => {}
                    _ = tokio::time::sleep_until(next_send.into()), if sending => {
                        next_send += self.period;
                        if next_send < Instant::now() {
                            next_send = Instant::now() + self.period;
                        }
                        if self.send_new(&mut ws, &http, &ledger, &stage).await.is_err() {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(drop_at.into()), if dropping => {
                        let _ = ws.close(None).await;
                        break;
                    }
                    frame = client::next_frame(&mut ws) => match frame {
                        Ok(Some(frame)) => {
                            if !self.handle(frame, &ledger) {
                                let _ = ws.close(None).await;
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            }
        }
    }

    async fn connect(&mut self, http: &Http) -> anyhow::Result<Ws> {
        let (token, _) = client::visitor_session(http, &self.site, self.token.as_deref()).await?;
        if self.token.as_deref().is_some_and(|old| old != token) {
            bail!("the server gave visitor {} a new identity", self.index);
        }
        self.token = Some(token.clone());
        let mut hello = json!({ "type": "hello", "token": token });
        if let Some((conversation, epoch)) = self.conversation {
            hello["resume"] = json!([{ "conversation_id": conversation, "last_seq": self.last_seq, "epoch": epoch }]);
        }
        let path = format!("/ws/visitor?site={}", self.site);
        Ok(client::ws_connect(&self.endpoint, None, &path, hello).await?.0)
    }

    fn send_frame(&self, pending: &Pending) -> Value {
        let mut frame = json!({ "type": "send", "client_id": pending.client_id, "text": pending.text });
        if let Some((conversation, _)) = self.conversation {
            frame["conversation_id"] = json!(conversation);
        }
        if let Some(attachment) = &pending.attachment_id {
            frame["attachment_id"] = json!(attachment);
        }
        frame
    }

    async fn send_new(
        &mut self,
        ws: &mut Ws,
        http: &Http,
        ledger: &Shared,
        stage: &watch::Receiver<Stage>,
    ) -> anyhow::Result<()> {
        self.sequence += 1;
        let client_id = format!("sv{}-{}", self.index, self.sequence);
        let mut attachment_id = None;
        if self.upload_every > 0 && self.sequence % self.upload_every == 0 {
            let token = self.token.clone().unwrap_or_default();
            let path = match self.conversation {
                Some((conversation, _)) => format!("/api/v1/uploads?conversation_id={conversation}&name=dot.png"),
                None => "/api/v1/uploads?name=dot.png".to_owned(),
            };
            match http.request(Method::POST, &path, Some(&token), "application/octet-stream", PNG).await {
                Ok((201, body)) => {
                    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    attachment_id = answer["id"].as_str().map(str::to_owned);
                    ledger.lock().uploads += 1;
                }
                // A restart may cut an upload; the message goes without one.
                Ok((status, body)) if status >= 500 => {
                    let _ = body;
                }
                Ok((status, body)) => {
                    ledger.lock().error(format!("upload: {status} {}", String::from_utf8_lossy(&body)));
                }
                Err(_) => {}
            }
        }
        let pending = Pending { client_id: client_id.clone(), text: format!("soak {client_id}"), attachment_id };
        let frame = self.send_frame(&pending);
        {
            // Checked under the ledger's lock, which the switch to settling takes too: a message
            // is either counted before the settle check or not sent at all.
            let mut ledger = ledger.lock();
            if *stage.borrow() != Stage::Run {
                return Ok(());
            }
            ledger.visitor_sent.insert(client_id);
        }
        self.pending.push(pending);
        client::send_frame(ws, &frame).await
    }

    /// Handles one frame; false when the client should reconnect.
    fn handle(&mut self, frame: Frame, ledger: &Shared) -> bool {
        match frame.kind.as_str() {
            "ack" => {
                let (Some(client_id), Some(conversation), Some(seq)) =
                    (frame.client_id, frame.conversation_id, frame.seq)
                else {
                    return true;
                };
                let Some(position) = self.pending.iter().position(|pending| pending.client_id == client_id) else {
                    return true;
                };
                self.pending.remove(position);
                let epoch = frame.epoch.unwrap_or(0);
                if self.conversation.is_none_or(|(id, _)| id != conversation) {
                    self.conversation = Some((conversation, epoch));
                }
                self.last_seq = self.last_seq.max(seq);
                let mut ledger = ledger.lock();
                if let Some(token) = &self.token {
                    ledger.conversations.entry(conversation).or_insert_with(|| token.clone());
                }
                if frame.duplicate == Some(true) {
                    ledger.duplicate_acks += 1;
                }
                if let Some(previous) = ledger.visitor_acked.insert(client_id.clone(), (conversation, seq)) {
                    if previous != (conversation, seq) {
                        ledger.error(format!(
                            "{client_id} acknowledged as {previous:?} and then {:?}",
                            (conversation, seq)
                        ));
                    }
                }
            }
            "message" => {
                let (Some(conversation), Some(seq)) = (frame.conversation_id, frame.seq) else { return true };
                self.last_seq = self.last_seq.max(seq);
                if frame.sender.as_ref().is_some_and(|sender| sender.kind == "agent") {
                    *ledger.lock().visitor_receipts.entry((conversation, seq)).or_default() += 1;
                }
            }
            "replayed" => self.last_seq = self.last_seq.max(frame.last_seq.unwrap_or(0)),
            "reset" => {
                let (Some(conversation), Some(last_seq)) = (frame.conversation_id, frame.last_seq) else { return true };
                ledger.lock().reset_ranges.push((conversation, self.last_seq, last_seq));
                self.last_seq = last_seq;
                if let Some(epoch) = frame.epoch {
                    self.conversation = Some((conversation, epoch));
                }
            }
            "error" => {
                // `unavailable` while the server shuts down: resend after reconnecting.
                if frame.code.as_deref() == Some("unavailable") {
                    return false;
                }
                ledger.lock().error(format!(
                    "visitor {}: error {:?} {:?} for {:?}",
                    self.index, frame.code, frame.message, frame.client_id
                ));
            }
            _ => {}
        }
        true
    }
}

struct SoakAgent {
    endpoint: Endpoint,
    number: usize,
    email: String,
    password: String,
    reply_every: u64,
    token: Option<String>,
    me: u64,
    /// Conversation → (epoch, last seq seen).
    known: HashMap<u64, (u64, u64)>,
    /// Conversations adopted with `resume` from 0 whose `replayed` has not come yet: live frames
    /// sent before the server took the resume overlap the replay, and are dropped by seq.
    replaying: HashSet<u64>,
    /// Every `(conversation, seq)` this agent has received.
    seen: HashSet<(u64, u64)>,
    pending: Vec<(String, u64, String)>,
    received: u64,
    sequence: u64,
}

impl SoakAgent {
    fn new(endpoint: Endpoint, number: usize, email: String, password: String, reply_every: u64) -> SoakAgent {
        SoakAgent {
            endpoint,
            number,
            email,
            password,
            reply_every,
            token: None,
            me: 0,
            known: HashMap::new(),
            replaying: HashSet::new(),
            seen: HashSet::new(),
            pending: Vec::new(),
            received: 0,
            sequence: 0,
        }
    }

    async fn run(mut self, ledger: Shared, mut stage: watch::Receiver<Stage>) {
        let http = match Http::new(self.endpoint.addr) {
            Ok(http) => http,
            Err(error) => {
                ledger.lock().error(format!("{error:#}"));
                return;
            }
        };
        let mut first = true;
        loop {
            if *stage.borrow() == Stage::Leave {
                return;
            }
            if !first {
                ledger.lock().reconnects += 1;
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
            first = false;
            let mut ws = match self.connect(&http, &ledger).await {
                Ok(ws) => ws,
                Err(_) => {
                    ledger.lock().connect_failures += 1;
                    continue;
                }
            };
            let mut broken = false;
            for (client_id, conversation, text) in self.pending.clone() {
                let frame =
                    json!({ "type": "send", "client_id": client_id, "conversation_id": conversation, "text": text });
                if client::send_frame(&mut ws, &frame).await.is_err() {
                    broken = true;
                    break;
                }
            }
            if broken {
                continue;
            }
            loop {
                if *stage.borrow() == Stage::Leave {
                    let _ = ws.close(None).await;
                    return;
                }
                tokio::select! {
                    _ = stage.changed() => {}
                    frame = client::next_frame(&mut ws) => match frame {
                        Ok(Some(frame)) => {
                            if self.handle(&mut ws, frame, &ledger).await.is_err() {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            }
        }
    }

    async fn connect(&mut self, http: &Http, ledger: &Shared) -> anyhow::Result<Ws> {
        let token = match &self.token {
            Some(token) => token.clone(),
            None => client::agent_login(http, &self.email, &self.password).await?,
        };
        let resume: Vec<Value> = self
            .known
            .iter()
            .map(|(id, (epoch, last_seq))| json!({ "conversation_id": id, "last_seq": last_seq, "epoch": epoch }))
            .collect();
        let hello = json!({ "type": "hello", "token": token, "resume": resume });
        let (mut ws, welcome) = match client::ws_connect(&self.endpoint, None, "/ws/agent", hello).await {
            Ok(connected) => connected,
            Err(error) => {
                // A refused token (sessions may not survive): log in again next time.
                self.token = None;
                return Err(error);
            }
        };
        self.token = Some(token);
        self.me = welcome.agent_id.unwrap_or(0);
        // Conversations assigned to this agent while it was away: read them from the start.
        for conversation in welcome.conversations {
            if conversation.assigned_agent == Some(self.me) && !self.known.contains_key(&conversation.id) {
                self.adopt(&mut ws, conversation.id, conversation.epoch, ledger).await?;
            }
        }
        Ok(ws)
    }

    async fn adopt(&mut self, ws: &mut Ws, conversation: u64, epoch: u64, _ledger: &Shared) -> anyhow::Result<()> {
        self.known.insert(conversation, (epoch, 0));
        self.replaying.insert(conversation);
        let frame = json!({ "type": "resume", "conversation_id": conversation, "last_seq": 0, "epoch": epoch });
        client::send_frame(ws, &frame).await
    }

    async fn handle(&mut self, ws: &mut Ws, frame: Frame, ledger: &Shared) -> anyhow::Result<()> {
        match frame.kind.as_str() {
            "conversation" => {
                let Some(conversation) = frame.conversation else { return Ok(()) };
                if frame.event.as_deref() == Some("assigned")
                    && conversation.assigned_agent == Some(self.me)
                    && !self.known.contains_key(&conversation.id)
                {
                    self.adopt(ws, conversation.id, conversation.epoch, ledger).await?;
                }
            }
            "message" => {
                let (Some(conversation), Some(seq)) = (frame.conversation_id, frame.seq) else { return Ok(()) };
                if !self.known.contains_key(&conversation) {
                    // Live before its assignment event: read it from the start; the replay brings this one.
                    return self.adopt(ws, conversation, frame.epoch.unwrap_or(0), ledger).await;
                }
                let replaying = self.replaying.contains(&conversation);
                if !self.seen.insert((conversation, seq)) && replaying {
                    return Ok(());
                }
                let entry = self.known.entry(conversation).or_insert((frame.epoch.unwrap_or(0), 0));
                if seq <= entry.1 && !replaying {
                    ledger.lock().error(format!(
                        "agent {}: conversation {conversation} seq {seq} after seq {}",
                        self.number, entry.1
                    ));
                }
                entry.1 = entry.1.max(seq);
                if frame.sender.as_ref().is_some_and(|sender| sender.kind == "visitor") {
                    self.received += 1;
                    let answer = (self.reply_every > 0 && self.received % self.reply_every == 0).then(|| {
                        self.sequence += 1;
                        format!("sa{}-{}", self.number, self.sequence)
                    });
                    {
                        // The receipt and the answer it brings are recorded together, so the
                        // settle check never sees the one without the other.
                        let mut ledger = ledger.lock();
                        *ledger.agent_receipts.entry((conversation, seq)).or_default() += 1;
                        if let Some(client_id) = &answer {
                            ledger.agent_sent.insert(client_id.clone());
                        }
                    }
                    if let Some(client_id) = answer {
                        let text = format!("answer {client_id}");
                        self.pending.push((client_id.clone(), conversation, text.clone()));
                        let frame = json!({ "type": "send", "client_id": client_id, "conversation_id": conversation, "text": text });
                        client::send_frame(ws, &frame).await?;
                    }
                }
            }
            "ack" => {
                let (Some(client_id), Some(conversation), Some(seq)) =
                    (frame.client_id, frame.conversation_id, frame.seq)
                else {
                    return Ok(());
                };
                self.pending.retain(|pending| pending.0 != client_id);
                if let Some(entry) = self.known.get_mut(&conversation) {
                    entry.1 = entry.1.max(seq);
                }
                let mut ledger = ledger.lock();
                if frame.duplicate == Some(true) {
                    ledger.duplicate_acks += 1;
                }
                ledger.agent_acked.insert(client_id, (conversation, seq));
            }
            "replayed" => {
                if let (Some(conversation), Some(last_seq)) = (frame.conversation_id, frame.last_seq) {
                    self.replaying.remove(&conversation);
                    if let Some(entry) = self.known.get_mut(&conversation) {
                        entry.1 = entry.1.max(last_seq);
                    }
                }
            }
            "reset" => {
                if let (Some(conversation), Some(last_seq)) = (frame.conversation_id, frame.last_seq) {
                    self.replaying.remove(&conversation);
                    let entry = self.known.entry(conversation).or_insert((0, 0));
                    ledger.lock().reset_ranges.push((conversation, entry.1, last_seq));
                    entry.1 = last_seq;
                    if let Some(epoch) = frame.epoch {
                        entry.0 = epoch;
                    }
                }
            }
            // `unavailable` while the server shuts down: resend after reconnecting.
            "error" if frame.code.as_deref() == Some("unavailable") => bail!("the server is unavailable"),
            "error" => {
                ledger.lock().error(format!(
                    "agent {}: error {:?} {:?} for {:?}",
                    self.number, frame.code, frame.message, frame.client_id
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

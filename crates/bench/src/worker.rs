//! Visitor fleets in worker processes.
//!
//! One process holds at most ~19,900 sockets here (20,000 open files, not raisable), and one
//! source address gives ~28,000 ephemeral ports, so the coordinator spreads visitors over
//! several copies of itself (`kefu bench worker`), each binding its sockets to its own
//! 127.0.0.x address. A worker reads its spec as JSON from its arguments, then talks over
//! stdin/stdout, one JSON line per message:
//!
//! - worker → coordinator: `{"event":"connected",...}` once every visitor is connected,
//!   then `{"event":"done",...}` with a [`StepReport`] after each step;
//! - coordinator → worker: `go RATE SECONDS` runs a step (RATE is the aggregate rate over all
//!   workers' visitors; 0 with a window means pipelined: each visitor keeps up to a window of
//!   messages unacknowledged, refilled once half of it is acknowledged), `stop` ends.

use std::net::IpAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Semaphore, watch};

use super::client::{self, Endpoint, Http, Ws};

/// Visitors one worker process holds at most, below the 20,000 open files per process.
pub const MAX_VISITORS_PER_WORKER: usize = 15_000;

/// Visitors one worker connects at the same time.
const CONNECT_CONCURRENCY: usize = 64;

/// How long after a step's end the visitors keep reading late acks and replies.
const DRAIN: Duration = Duration::from_secs(2);

/// What one worker does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub addr: std::net::SocketAddr,
    pub bare: bool,
    pub site: String,
    /// The worker's first visitor's index among all workers' visitors.
    pub first_index: usize,
    pub count: usize,
    pub total: usize,
    pub source_ip: Option<IpAddr>,
    /// Send one untimed message after connecting, so each visitor has a conversation.
    pub warmup: bool,
    /// Unacknowledged messages per visitor in pipelined steps (0: paced steps).
    pub window: usize,
}

/// What one worker measured in one step.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StepReport {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Send → ack, microseconds.
    pub ack_us: Vec<u32>,
    /// Agent send → visitor receipt, microseconds.
    pub a2v_us: Vec<u32>,
    /// Acks per whole second of the step.
    pub acks_per_second: Vec<u64>,
}

impl StepReport {
    pub fn merge(&mut self, other: StepReport) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.ack_us.extend(other.ack_us);
        self.a2v_us.extend(other.a2v_us);
        if self.acks_per_second.len() < other.acks_per_second.len() {
            self.acks_per_second.resize(other.acks_per_second.len(), 0);
        }
        for (slot, count) in self.acks_per_second.iter_mut().zip(other.acks_per_second) {
            *slot += count;
        }
    }

    fn error(&mut self, error: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Idle,
    Step { rate: f64, seconds: f64, generation: u64 },
    Stop,
}

struct Shared {
    report: Mutex<StepReport>,
    per_second: Vec<AtomicU64>,
    finished: AtomicUsize,
    step_start: Mutex<Instant>,
}

/// `kefu bench worker SPEC`: runs a visitor fleet until told to stop.
pub async fn run(spec_json: &str) -> anyhow::Result<()> {
    let spec: WorkerSpec = serde_json::from_str(spec_json).context("a malformed worker spec")?;
    let endpoint = Endpoint { addr: spec.addr, bare: spec.bare };
    let mut stdout = tokio::io::stdout();

    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let http = Http::new(endpoint.addr)?;
    let (phase_sender, phase) = watch::channel(Phase::Idle);
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let settled = Arc::new(tokio::sync::Notify::new());
    let shared = Arc::new(Shared {
        report: Mutex::new(StepReport::default()),
        per_second: (0..3600).map(|_| AtomicU64::new(0)).collect(),
        finished: AtomicUsize::new(0),
        step_start: Mutex::new(Instant::now()),
    });
    let step_done = Arc::new(tokio::sync::Notify::new());

    for offset in 0..spec.count {
        let index = spec.first_index + offset;
        let spec = spec.clone();
        let endpoint = endpoint.clone();
        let permits = permits.clone();
        let http = http.clone();
        let phase = phase.clone();
        let (connected, failed, first_failure, settled) =
            (connected.clone(), failed.clone(), first_failure.clone(), settled.clone());
        let (shared, step_done) = (shared.clone(), step_done.clone());
        tokio::spawn(async move {
            let opened = {
                let _permit = permits.acquire().await;
                let opened = open_visitor(&endpoint, &spec, index, &http).await;
                // This task's handle on the HTTP connections goes; the fleet is WebSockets only.
                drop(http);
                opened
            };
            let visitor = match opened {
                Ok(visitor) => {
                    connected.fetch_add(1, Ordering::Relaxed);
                    Some(visitor)
                }
                Err(error) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_failure.lock().get_or_insert_with(|| format!("{error:#}"));
                    None
                }
            };
            if connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) == spec.count {
                settled.notify_one();
            }
            if let Some(visitor) = visitor {
                visitor.run(spec, index, phase, shared, step_done).await;
            } else {
                // Take part in every step's count so the step still finishes.
                let mut phase = phase;
                let mut last_generation = 0;
                loop {
                    let current = *phase.borrow_and_update();
                    match current {
                        Phase::Stop => break,
                        Phase::Step { generation, .. } if generation != last_generation => {
                            last_generation = generation;
                            finish_step(&shared, &step_done, spec.count);
                        }
                        _ => {}
                    }
                    if phase.changed().await.is_err() {
                        break;
                    }
                }
            }
        });
    }
    if spec.count > 0 {
        settled.notified().await;
    }
    // Wait until the counters are final (notify_one may fire before the last increment is seen).
    while connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < spec.count {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The pooled HTTP connections are not part of the fleet: close them before the server is measured.
    drop(http);
    let line = json!({
        "event": "connected",
        "connected": connected.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "first_failure": first_failure.lock().clone(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    stdout.write_all(format!("{line}\n").as_bytes()).await?;
    stdout.flush().await?;

    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    let mut generation = 0;
    while let Some(command) = commands.next_line().await? {
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["go", rate, seconds] => {
                generation += 1;
                let rate: f64 = rate.parse().context("go RATE SECONDS")?;
                let seconds: f64 = seconds.parse().context("go RATE SECONDS")?;
                for slot in &shared.per_second {
                    slot.store(0, Ordering::Relaxed);
                }
                *shared.step_start.lock() = Instant::now();
                shared.finished.store(0, Ordering::Relaxed);
                let done = step_done.notified();
                phase_sender.send_replace(Phase::Step { rate, seconds, generation });
                if spec.count > 0 {
                    done.await;
                }
                let mut report = std::mem::take(&mut *shared.report.lock());
                let whole = seconds.ceil() as usize;
                report.acks_per_second =
                    shared.per_second.iter().take(whole).map(|slot| slot.load(Ordering::Relaxed)).collect();
                let line = json!({ "event": "done", "report": report });
                stdout.write_all(format!("{line}\n").as_bytes()).await?;
                stdout.flush().await?;
                phase_sender.send_replace(Phase::Idle);
            }
            ["stop"] => break,
            _ => bail!("unknown worker command {command:?}"),
        }
    }
    phase_sender.send_replace(Phase::Stop);
    Ok(())
}

fn finish_step(shared: &Shared, step_done: &tokio::sync::Notify, count: usize) {
    if shared.finished.fetch_add(1, Ordering::AcqRel) + 1 == count {
        step_done.notify_one();
    }
}

struct Visitor {
    ws: Ws,
    conversation_id: Option<u64>,
}

async fn open_visitor(endpoint: &Endpoint, spec: &WorkerSpec, index: usize, http: &Http) -> anyhow::Result<Visitor> {
    let token = if endpoint.bare {
        format!("visitor{index}")
    } else {
        client::visitor_session(http, &spec.site, None).await?.0
    };
    let path = format!("/ws/visitor?site={}", spec.site);
    let (mut ws, _welcome) =
        client::ws_connect(endpoint, spec.source_ip, &path, json!({ "type": "hello", "token": token })).await?;
    let mut conversation_id = None;
    if spec.warmup {
        client::send_frame(&mut ws, &json!({ "type": "send", "client_id": format!("warm{index}"), "text": "warmup" }))
            .await?;
        loop {
            let frame = tokio::time::timeout(client::ANSWER_TIMEOUT, client::next_frame(&mut ws))
                .await
                .context("no ack for the warmup message")??
                .context("closed before the warmup ack")?;
            match frame.kind.as_str() {
                "ack" => {
                    conversation_id = frame.conversation_id;
                    break;
                }
                "error" => bail!("warmup refused: {:?} {:?}", frame.code, frame.message),
                _ => {}
            }
        }
    }
    Ok(Visitor { ws, conversation_id })
}

impl Visitor {
    async fn run(
        mut self,
        spec: WorkerSpec,
        index: usize,
        mut phase: watch::Receiver<Phase>,
        shared: Arc<Shared>,
        step_done: Arc<tokio::sync::Notify>,
    ) {
        let mut sequence = 0u64;
        let mut alive = true;
        let mut last_generation = 0;
        loop {
            // Between steps: keep reading (pings) until the next step.
            let (rate, seconds) = loop {
                let current = *phase.borrow_and_update();
                match current {
                    Phase::Stop => return,
                    Phase::Step { rate, seconds, generation } if generation != last_generation => {
                        last_generation = generation;
                        break (rate, seconds);
                    }
                    _ => {}
                }
                tokio::select! {
                    changed = phase.changed() => {
                        if changed.is_err() { return; }
                    }
                    frame = client::next_frame(&mut self.ws), if alive => {
                        if !matches!(frame, Ok(Some(_))) { alive = false; }
                    }
                }
            };
            let mut report = StepReport::default();
            if alive {
                self.step(&spec, index, rate, seconds, &mut sequence, &mut report, &shared).await;
            } else {
                report.error("the connection was closed before the step");
            }
            shared.report.lock().merge(report);
            finish_step(&shared, &step_done, spec.count);
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn step(
        &mut self,
        spec: &WorkerSpec,
        index: usize,
        rate: f64,
        seconds: f64,
        sequence: &mut u64,
        report: &mut StepReport,
        shared: &Shared,
    ) {
        let start = *shared.step_start.lock();
        let end = start + Duration::from_secs_f64(seconds);
        let pipelined = spec.window > 0;
        let period = if rate > 0.0 { Duration::from_secs_f64(spec.total as f64 / rate) } else { Duration::MAX };
        let mut next_send = if rate > 0.0 {
            start + Duration::from_secs_f64(index as f64 / rate)
        } else {
            end + Duration::from_secs(3600)
        };
        let mut in_flight = 0usize;
        if pipelined {
            if let Err(error) = self.send_many(spec.window, index, sequence).await {
                report.error(error);
                return;
            }
            report.sent += spec.window as u64;
            in_flight += spec.window;
        }
        let drain_end = end + DRAIN;
        loop {
            let now = Instant::now();
            if now >= drain_end || (now >= end && in_flight == 0) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next_send.into()), if !pipelined && next_send < end => {
                    if let Err(error) = self.send_many(1, index, sequence).await {
                        report.error(error);
                        return;
                    }
                    report.sent += 1;
                    in_flight += 1;
                    next_send += period;
                }
                _ = tokio::time::sleep_until(drain_end.into()) => {}
                _ = tokio::time::sleep_until(end.into()), if in_flight == 0 && now < end && (pipelined || next_send >= end) => {}
                frame = client::next_frame(&mut self.ws) => {
                    let frame = match frame {
                        Ok(Some(frame)) => frame,
                        Ok(None) => { report.error("the server closed the connection"); return; }
                        Err(error) => { report.error(format!("{error:#}")); return; }
                    };
                    match frame.kind.as_str() {
                        "ack" => {
                            in_flight = in_flight.saturating_sub(1);
                            report.acked += 1;
                            if let Some(latency) = frame.text.as_deref().and_then(client::latency_of) {
                                report.ack_us.push(latency);
                            }
                            let second = start.elapsed().as_secs() as usize;
                            if let Some(slot) = shared.per_second.get(second) {
                                slot.fetch_add(1, Ordering::Relaxed);
                            }
                            // Refilled in bursts of half a window, one write each, so the
                            // load generator spends less than a system call per message.
                            if pipelined && in_flight <= spec.window / 2 && Instant::now() < end {
                                let refill = spec.window - in_flight;
                                if let Err(error) = self.send_many(refill, index, sequence).await {
                                    report.error(error);
                                    return;
                                }
                                report.sent += refill as u64;
                                in_flight += refill;
                            }
                        }
                        "message" => {
                            let from_agent = frame.sender.as_ref().is_some_and(|sender| sender.kind == "agent");
                            if from_agent {
                                if let Some(latency) = frame.text.as_deref().and_then(client::latency_of) {
                                    report.a2v_us.push(latency);
                                }
                            }
                        }
                        "error" => {
                            in_flight = in_flight.saturating_sub(1);
                            report.error(format!("error frame {:?}: {:?}", frame.code, frame.message));
                        }
                        _ => {}
                    }
                }
            }
        }
        if in_flight > 0 {
            report.error(format!("{in_flight} messages without an ack"));
        }
    }

    /// Sends `n` timed messages and flushes once.
    async fn send_many(&mut self, n: usize, index: usize, sequence: &mut u64) -> anyhow::Result<()> {
        for _ in 0..n {
            *sequence += 1;
            let mut frame =
                json!({ "type": "send", "client_id": format!("v{index}-{sequence}"), "text": client::timed_text() });
            if let Some(conversation_id) = self.conversation_id {
                frame["conversation_id"] = json!(conversation_id);
            }
            client::queue_frame(&mut self.ws, &frame).await?;
        }
        futures_util::SinkExt::flush(&mut self.ws).await.context("sending frames")
    }
}

/// The coordinator's handle on its worker processes.
pub struct Fleet {
    workers: Vec<WorkerProcess>,
    pub source_ips: usize,
    pub connected: usize,
    pub failed: usize,
    pub first_failure: Option<String>,
    pub connect_seconds: f64,
}

struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Fleet {
    /// Starts enough workers for `total` visitors (at least `min_workers`), spread over
    /// `source_ips` 127.0.0.x addresses, and waits until every visitor is connected.
    pub async fn start(
        endpoint: &Endpoint,
        site: &str,
        total: usize,
        min_workers: usize,
        source_ips: usize,
        warmup: bool,
        window: usize,
    ) -> anyhow::Result<Fleet> {
        let n_workers = total.div_ceil(MAX_VISITORS_PER_WORKER).max(min_workers).max(1);
        let source_ips = source_ips.max(1);
        let program = std::env::current_exe().context("finding the kefu binary")?;
        let mut workers = Vec::new();
        let mut first_index = 0;
        for worker in 0..n_workers {
            let count = total / n_workers + usize::from(worker < total % n_workers);
            let source_ip =
                endpoint.addr.ip().is_loopback().then(|| IpAddr::from([127, 0, 0, 2 + (worker % source_ips) as u8]));
            let spec = WorkerSpec {
                addr: endpoint.addr,
                bare: endpoint.bare,
                site: site.to_owned(),
                first_index,
                count,
                total,
                source_ip,
                warmup,
                window,
            };
            first_index += count;
            let mut child = Command::new(&program)
                .args(["bench", "worker", &serde_json::to_string(&spec)?])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a bench worker")?;
            let stdin = child.stdin.take().context("a worker without stdin")?;
            let stdout = child.stdout.take().context("a worker without stdout")?;
            workers.push(WorkerProcess { child, stdin, lines: BufReader::new(stdout).lines() });
        }
        let mut fleet = Fleet {
            workers,
            source_ips: source_ips.min(n_workers),
            connected: 0,
            failed: 0,
            first_failure: None,
            connect_seconds: 0.0,
        };
        for worker in &mut fleet.workers {
            let line = worker.next_line().await?;
            fleet.connected += line["connected"].as_u64().unwrap_or(0) as usize;
            fleet.failed += line["failed"].as_u64().unwrap_or(0) as usize;
            fleet.connect_seconds = fleet.connect_seconds.max(line["seconds"].as_f64().unwrap_or(0.0));
            if fleet.first_failure.is_none() {
                fleet.first_failure = line["first_failure"].as_str().map(str::to_owned);
            }
        }
        Ok(fleet)
    }

    pub fn processes(&self) -> usize {
        self.workers.len()
    }

    /// Runs one step on every worker and merges their reports.
    pub async fn step(&mut self, rate: f64, seconds: f64) -> anyhow::Result<StepReport> {
        for worker in &mut self.workers {
            worker.stdin.write_all(format!("go {rate} {seconds}\n").as_bytes()).await?;
            worker.stdin.flush().await?;
        }
        let mut merged = StepReport::default();
        for worker in &mut self.workers {
            let line = worker.next_line().await?;
            let report: StepReport = serde_json::from_value(line["report"].clone()).context("a worker's report")?;
            merged.merge(report);
        }
        Ok(merged)
    }

    /// Tells the workers to close their connections and waits for them to exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for worker in &mut self.workers {
            let _ = worker.stdin.write_all(b"stop\n").await;
            let _ = worker.stdin.flush().await;
        }
        for worker in &mut self.workers {
            let status = worker.child.wait().await?;
            if !status.success() {
                bail!("a bench worker exited with {status}");
            }
        }
        Ok(())
    }
}

impl WorkerProcess {
    async fn next_line(&mut self) -> anyhow::Result<serde_json::Value> {
        let line = self.lines.next_line().await?.context("a bench worker exited early")?;
        serde_json::from_str(&line).with_context(|| format!("a malformed worker line {line:?}"))
    }
}

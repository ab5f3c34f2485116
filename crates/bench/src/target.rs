//! The server under test: a kefu child process on a temporary data directory (the default),
//! a baseline started from `--target-cmd`, or a running server named by `--url`; and the
//! figures read from its process (`/proc/PID/status`, `/proc/PID/stat`, `/proc/PID/fd`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::TargetArgs;
use super::client::Endpoint;

/// Password of the agents the bench creates.
const AGENT_PASSWORD: &str = "bench-agent-password";

/// How long a started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The server under test.
pub struct Target {
    pub endpoint: Endpoint,
    /// The site visitors use (`bare` relays ignore it).
    pub site: String,
    /// `(email, password)` of the agents available to the bench.
    pub agents: Vec<(String, String)>,
    /// The server's process, when the bench knows it.
    pub pid: Option<u32>,
    /// What was run, for the printout.
    pub description: String,
    child: Option<Child>,
    spawn: Option<Spawn>,
}

/// The open files a kefu child may count on: this machine's limit of 20,000, which cannot be raised.
const CHILD_OPEN_FILES: usize = 20_000;

/// Plain-HTTP connections a kefu child may hold beside `connections` WebSocket ones: up to 4,096,
/// at least 256, and within [`CHILD_OPEN_FILES`] with kefu's reserve of 256 and a margin.
fn http_connections(connections: usize) -> usize {
    CHILD_OPEN_FILES.saturating_sub(connections + 512).clamp(256, 4096)
}

/// How to start the server again on the same data (for restarts).
struct Spawn {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    keep_data: bool,
}

impl Target {
    /// Starts or names the server as `args` say, with `agents` agents for kefu children, which
    /// must take `connections` WebSocket connections at once.
    pub async fn open(args: &TargetArgs, agents: usize, connections: usize) -> anyhow::Result<Target> {
        if let Some(url) = &args.url {
            let addr = parse_url(url)?;
            let agents = args
                .agent
                .iter()
                .map(|pair| {
                    pair.split_once(':')
                        .map(|(email, password)| (email.to_owned(), password.to_owned()))
                        .context("--agent takes EMAIL:PASSWORD")
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if !args.bare && args.site.is_none() {
                bail!("--url needs --site KEY (and --agent EMAIL:PASSWORD for modes with agents), or --bare");
            }
            return Ok(Target {
                endpoint: Endpoint { addr, bare: args.bare },
                site: args.site.clone().unwrap_or_else(|| "bench".to_owned()),
                agents: if args.bare { bare_agents(agents.len().max(1)) } else { agents },
                pid: args.server_pid,
                description: format!("running server at {url}{}", if args.bare { " (bare protocol)" } else { "" }),
                child: None,
                spawn: None,
            });
        }
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Some(command) = &args.target_cmd {
            let command = command.replace("{port}", &port.to_string());
            let spawn = Spawn {
                program: PathBuf::from("sh"),
                args: vec!["-c".to_owned(), format!("exec {command}")],
                envs: vec![("PORT".to_owned(), port.to_string())],
                data_dir: None,
                keep_data: args.keep_data,
            };
            let mut target = Target {
                endpoint: Endpoint { addr, bare: true },
                site: "bench".to_owned(),
                agents: bare_agents(agents),
                pid: None,
                description: format!("`{command}` (bare protocol)"),
                child: None,
                spawn: Some(spawn),
            };
            target.start().await?;
            return Ok(target);
        }

        let program = std::env::current_exe().context("finding the kefu binary")?;
        let data_dir =
            std::env::temp_dir().join(format!("kefu-bench-{}-{}", std::process::id(), super::client::now_micros()));
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let site = admin(&program, &data_dir, &["create-site", "--name", "bench", "--origin", "*"])?;
        let site = site
            .lines()
            .find_map(|line| line.strip_prefix("site_key="))
            .context("create-site printed no key")?
            .to_owned();
        let mut agent_list = Vec::new();
        for index in 0..agents {
            let email = format!("agent{index}@bench.invalid");
            admin(
                &program,
                &data_dir,
                &[
                    "create-agent",
                    "--email",
                    &email,
                    "--password",
                    AGENT_PASSWORD,
                    "--site",
                    &site,
                    "--capacity",
                    "1000000",
                ],
            )?;
            agent_list.push((email, AGENT_PASSWORD.to_owned()));
        }
        let mut envs = vec![
            ("KEFU_LOG__LEVEL".to_owned(), "warn".to_owned()),
            // The bench's visitors pipeline and its agents answer thousands of messages per
            // second; the per-connection rate limit would measure the limiter, not the server.
            ("KEFU_LIMITS__FRAMES_PER_SECOND".to_owned(), "1000000".to_owned()),
            ("KEFU_LIMITS__FRAME_BURST".to_owned(), "1000000".to_owned()),
            ("KEFU_LIMITS__OUTBOUND_QUEUE".to_owned(), "4096".to_owned()),
            // The load comes from one machine: its visitors must not meet the per-address budgets.
            ("KEFU_LIMITS__VISITOR_SESSIONS_PER_ADDRESS_PER_HOUR".to_owned(), "1000000000".to_owned()),
            ("KEFU_LIMITS__UPLOADS_PER_ADDRESS_PER_HOUR".to_owned(), "1000000000".to_owned()),
            ("KEFU_LIMITS__OFFLINE_MESSAGES_PER_ADDRESS_PER_HOUR".to_owned(), "1000000000".to_owned()),
            // Its HTTP client keeps connections open for reuse, one per visitor opening a session
            // at once: more than the per-address cap of plain-HTTP connections.
            // Within what the open-file limit leaves beside the WebSocket connections, which kefu
            // would otherwise cap to make room for HTTP ones.
            ("KEFU_LIMITS__MAX_HTTP_CONNECTIONS_PER_IP".to_owned(), http_connections(connections).to_string()),
            ("KEFU_LIMITS__MAX_HTTP_CONNECTIONS".to_owned(), http_connections(connections).to_string()),
            // The bench drives WebSocket traffic; QUIC and metrics take fixed ports that several
            // bench servers (or a running kefu) would fight over.
            ("KEFU_QUIC".to_owned(), "off".to_owned()),
            ("KEFU_METRICS".to_owned(), "off".to_owned()),
        ];
        for pair in &args.server_env {
            let (name, value) = pair.split_once('=').context("--server-env takes NAME=VALUE")?;
            envs.push((name.to_owned(), value.to_owned()));
        }
        let description = format!(
            "kefu child `{} serve --data-dir {} --http {addr}` with {}",
            program.display(),
            data_dir.display(),
            envs.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join(" ")
        );
        let spawn = Spawn {
            program,
            args: vec![
                "serve".to_owned(),
                "--data-dir".to_owned(),
                data_dir.display().to_string(),
                "--http".to_owned(),
                addr.to_string(),
            ],
            envs,
            data_dir: Some(data_dir),
            keep_data: args.keep_data,
        };
        let mut target = Target {
            endpoint: Endpoint { addr, bare: false },
            site,
            agents: agent_list,
            pid: None,
            description,
            child: None,
            spawn: Some(spawn),
        };
        target.start().await?;
        Ok(target)
    }

    /// Whether the bench can stop and start the server.
    pub fn can_restart(&self) -> bool {
        self.spawn.is_some()
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let Some(spawn) = &self.spawn else { bail!("the bench did not start this server") };
        let log = match &spawn.data_dir {
            Some(dir) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("server.log"))
                    .context("opening the server log")?,
            ),
            None => Stdio::null(),
        };
        let child = Command::new(&spawn.program)
            .args(&spawn.args)
            .envs(spawn.envs.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", spawn.program.display()))?;
        self.pid = Some(child.id());
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(self.endpoint.addr).await.is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("the server exited at start: {status}");
                }
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("the server did not accept connections within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.take() else { return Ok(()) };
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        let status = self.wait_for(child).await?;
        // Baselines without a SIGTERM handler die of the signal; that is a clean stop too.
        let killed_by_term = std::os::unix::process::ExitStatusExt::signal(&status) == Some(15);
        if !status.success() && !killed_by_term {
            bail!("the server exited with {status} after SIGTERM");
        }
        Ok(())
    }

    /// SIGTERM, wait, and start again on the same data directory and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.start().await
    }

    /// SIGKILL (a crash: nothing is flushed or checkpointed), then start again on the same data.
    pub async fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            self.wait_for(child).await?;
        }
        self.start().await
    }

    async fn wait_for(&mut self, mut child: std::process::Child) -> anyhow::Result<std::process::ExitStatus> {
        let status = tokio::task::spawn_blocking(move || child.wait()).await??;
        self.pid = None;
        Ok(status)
    }

    /// The server process's figures now, if the bench knows its process.
    pub fn sample(&self) -> Option<ProcSample> {
        ProcSample::read(self.pid?)
    }

    /// Stops the server and removes its temporary data.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        let stopped = self.stop().await;
        if let Some(spawn) = &self.spawn {
            if let Some(dir) = &spawn.data_dir {
                if spawn.keep_data {
                    println!("data kept in {}", dir.display());
                } else {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        stopped
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn bare_agents(count: usize) -> Vec<(String, String)> {
    (0..count).map(|index| (format!("agent{index}"), String::new())).collect()
}

fn admin(program: &PathBuf, data_dir: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("KEFU_LOG__LEVEL", "warn")
        .output()
        .context("running kefu admin")?;
    if !output.status.success() {
        bail!("kefu admin {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn parse_url(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host = rest.split('/').next().unwrap_or(rest);
    let mut addrs = std::net::ToSocketAddrs::to_socket_addrs(host).with_context(|| format!("resolving {host}"))?;
    addrs.next().with_context(|| format!("{host} resolves to nothing"))
}

/// Figures of a process from /proc.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub rss_kib: u64,
    /// The anonymous part of the RSS (heap, stacks, redb's cache): what a leak grows.
    pub rss_anon_kib: u64,
    /// The file-backed part (mapped index files, the binary), which the kernel can reclaim.
    pub rss_file_kib: u64,
    pub fds: usize,
    /// user + system CPU time, in clock ticks (100 per second on Linux).
    pub cpu_ticks: u64,
    pub at: Instant,
}

/// Clock ticks per second in /proc/PID/stat (USER_HZ; 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

impl ProcSample {
    pub fn read(pid: u32) -> Option<ProcSample> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field_kib = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        };
        let rss_kib = field_kib("VmRSS:")?;
        let (rss_anon_kib, rss_file_kib) = (field_kib("RssAnon:").unwrap_or(0), field_kib("RssFile:").unwrap_or(0));
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count()).unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start at the state, field 3.
        let after = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(ProcSample { rss_kib, rss_anon_kib, rss_file_kib, fds, cpu_ticks: utime + stime, at: Instant::now() })
    }

    /// CPU use between two samples, in percent of one core.
    pub fn cpu_percent_since(&self, earlier: &ProcSample) -> f64 {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64();
        if seconds <= 0.0 {
            return 0.0;
        }
        (self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64 / TICKS_PER_SECOND) / seconds * 100.0
    }
}

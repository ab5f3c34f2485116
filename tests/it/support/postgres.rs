//! A private PostgreSQL 15 for the cluster tests: one cluster per test run, started on the first
//! use in a temporary directory on a free port, and a fresh database for each test.
//!
//! The cluster runs Debian's binaries (`/usr/lib/postgresql/15/bin`) as the `postgres` user when
//! the tests run as root (PostgreSQL refuses root), with fsync on, listening on 127.0.0.1 and on
//! a Unix socket in its directory. A small shell keeper owns it: it waits for its standard input
//! to close, which happens when the test process ends however it ends (the cluster lives in a
//! static, which is never dropped), then stops PostgreSQL and removes the directory.
//! Without the binaries, each cluster test prints one line saying it was skipped and why, and
//! passes; `.ci/run` installs Debian's `postgresql`, so CI runs them.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// A running cluster. Dropping it (or the test process ending) stops it and removes its directory.
pub struct PostgresCluster {
    pub port: u16,
    keeper: Mutex<Option<Child>>,
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        if let Some(mut keeper) = self.keeper.lock().take() {
            // Closing its standard input tells the keeper to stop PostgreSQL and clean up.
            drop(keeper.stdin.take());
            let _ = keeper.wait();
        }
    }
}

/// Stops PostgreSQL (immediate shutdown: the data is thrown away) and removes the directory once
/// the standard input closes. `$4...` is the command prefix that runs PostgreSQL as its user.
const KEEPER: &str = r#"
dir=$1; port=$2; bin=$3; shift 3
"$@" "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 \
    -c fsync=on -c max_connections=300 >"$dir/postgres.log" 2>&1 &
pid=$!
cat >/dev/null
kill -QUIT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;

static CLUSTER: OnceLock<PostgresCluster> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty database on the shared cluster, as a connection URL; `None` (with one line
/// saying so) when PostgreSQL 15 is not installed.
pub async fn database(test: &str) -> Option<String> {
    let postgres = Path::new(BIN_DIR).join("postgres");
    if !postgres.exists() {
        // Written to stderr itself, not through the test's captured output, so `cargo test`
        // shows it for a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "cluster test {test} skipped: PostgreSQL 15 is not installed ({} is missing; .ci/run installs Debian's postgresql)",
            postgres.display()
        );
        return None;
    }
    let cluster = CLUSTER.get_or_init(start);
    let name = format!("kefu_test_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
    let (client, connection) = tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(connection);
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create a test database");
    Some(cluster.url(&name))
}

/// A plain connection to a test database, for what a test reads and writes itself.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// Connections to a migrated test database, one for each node a test simulates.
pub async fn migrated_nodes(url: &str, n_nodes: usize) -> Vec<tokio_postgres::Client> {
    let mut first = connect(url).await;
    kefu::cluster::postgres::migrate(&mut first).await.expect("migrate");
    let mut clients = vec![first];
    for _ in 1..n_nodes {
        clients.push(connect(url).await);
    }
    clients
}

/// A node's name, which the tests' names always are.
pub fn node_name(name: &str) -> kefu::cluster::node::NodeName {
    kefu::cluster::node::NodeName::new(name).expect("a node name")
}

/// The rows of `table` (or of a `FROM` clause: `outbox WHERE status = 'pending'`).
pub async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get(0)
}

impl PostgresCluster {
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

/// The command prefix that runs a program as the `postgres` user, when the tests run as root.
fn as_postgres_user() -> Vec<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Vec::new();
    }
    vec!["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
}

fn chown_to_postgres(path: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    // SAFETY: a NUL-terminated name; the returned entry is read before any other getpw call.
    let (uid, gid) = unsafe {
        let entry = libc::getpwnam(c"postgres".as_ptr());
        assert!(!entry.is_null(), "the postgres user exists (Debian's postgresql package creates it)");
        ((*entry).pw_uid, (*entry).pw_gid)
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("give the cluster directory to postgres");
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

fn start() -> PostgresCluster {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos());
    // As root, /tmp: the postgres user must be able to reach the directory, which a TMPDIR
    // under root's home would not let it.
    // SAFETY: geteuid has no preconditions.
    let parent = if unsafe { libc::geteuid() } == 0 { std::path::PathBuf::from("/tmp") } else { std::env::temp_dir() };
    let dir = parent.join(format!("kefu-postgres-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).expect("create the cluster directory");
    chown_to_postgres(&dir);
    let prefix = as_postgres_user();

    let initdb_path = format!("{BIN_DIR}/initdb");
    let mut initdb = match prefix.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(&initdb_path);
            command
        }
        None => Command::new(&initdb_path),
    };
    let initdb = initdb
        .arg("-D")
        .arg(dir.join("data"))
        // The cluster is thrown away after the run: initdb need not sync its files, the server does.
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"])
        .output()
        .expect("run initdb");
    assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));

    let port = free_port();
    let mut keeper = Command::new("sh")
        .args(["-c", KEEPER, "sh"])
        .arg(&dir)
        .arg(port.to_string())
        .arg(BIN_DIR)
        .args(&prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the PostgreSQL keeper");
    let started = Instant::now();
    loop {
        let ready = Command::new(format!("{BIN_DIR}/pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if ready {
            break;
        }
        let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
        if started.elapsed() > Duration::from_secs(60) || keeper.try_wait().ok().flatten().is_some() {
            drop(keeper.stdin.take());
            panic!("PostgreSQL did not start on port {port}: {log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    PostgresCluster { port, keeper: Mutex::new(Some(keeper)) }
}

//! Smoke runs of every `kefu bench` mode with tiny numbers, so the tool keeps working.
//! They check that each mode runs to the end and reports; they assert no timings.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kefu"))
        .arg("bench")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running kefu bench")
}

fn succeeds(args: &[&str]) -> String {
    let output = bench(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kefu bench {args:?} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn connections_reports_memory_per_connection() {
    let out = succeeds(&["connections", "-n", "20", "--hold", "0", "--workers", "2", "--source-ips", "2"]);
    assert!(out.contains("connected: 20 ok, 0 failed"), "{out}");
    assert!(out.contains("load generator: 2 client processes, 2 source addresses"), "{out}");
    assert!(out.contains("server memory per connection:"), "{out}");
}

#[test]
fn relay_reports_latency_both_ways() {
    let out =
        succeeds(&["relay", "-n", "10", "--agents", "2", "--rates", "20,40", "--duration", "1", "--reply-every", "2"]);
    assert!(out.contains("all 10 conversations assigned"), "{out}");
    assert_eq!(out.matches("visitor → agent: n=").count(), 2, "{out}");
    assert!(out.contains("agent → visitor: n="), "{out}");
    assert_eq!(out.matches("in flight during a host stall; the others: n=").count(), 2, "{out}");
    assert_eq!(out.matches("\nhost stalls: ").count(), 2, "{out}");
    assert!(out.contains("agent errors: 0"), "{out}");
}

#[test]
fn ingest_reports_acks_per_second() {
    let out = succeeds(&["ingest", "-n", "5", "--window", "4", "--duration", "1"]);
    assert!(out.contains("durable ingest:"), "{out}");
    assert!(out.contains("errors 0"), "{out}");
}

/// A short soak with a restart every 2 s, and `extra` arguments; returns its output after
/// checking that it passed.
fn short_soak(extra: &[&str]) -> String {
    let mut args = vec![
        "soak",
        "--duration",
        "4",
        "-n",
        "5",
        "--agents",
        "2",
        "--rate",
        "20",
        "--restart-every",
        "2",
        "--reconnect-every",
        "1",
        "--upload-every",
        "3",
        "--sample-every",
        "1",
    ];
    args.extend_from_slice(extra);
    let out = succeeds(&args);
    assert!(out.contains("(1 server restarts)") || out.contains("(2 server restarts)"), "{out}");
    assert!(out.contains("exactly-once: PASS"), "{out}");
    // The uploads go through the bench's HTTP client; some must have been stored.
    assert!(!out.contains("(0 uploads)"), "{out}");
    out
}

#[test]
fn soak_checks_exactly_once_across_a_restart() {
    short_soak(&[]);
}

#[test]
fn soak_checks_exactly_once_across_a_crash() {
    let out = short_soak(&["--crash"]);
    assert!(out.contains("restart every 2s (SIGKILL)"), "{out}");
}

#[test]
fn a_url_without_a_site_is_refused_clearly() {
    let output = bench(&["relay", "--url", "http://127.0.0.1:9"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--url needs --site"), "{stderr}");
}

#[test]
fn quic_connections_reports_memory_per_connection() {
    let out = succeeds(&["quic", "connections", "20"]);
    assert!(out.contains("connected: 20 of 20"), "{out}");
    assert!(out.contains("server memory per QUIC connection:"), "{out}");
}

#[test]
fn quic_relay_reports_latency() {
    let out = succeeds(&["quic", "relay", "4", "1", "40"]);
    assert!(out.contains("messages received by the agent: 40 of 40"), "{out}");
    assert!(out.contains("latency p99:"), "{out}");
}

#[test]
fn a_quic_relay_without_visitors_is_refused_clearly() {
    let output = bench(&["quic", "relay", "0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("visitors, seconds and rate must each be at least 1"), "{stderr}");
}

#[test]
fn storage_measures_history_search_export_and_reports() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let dir = dir.to_str().unwrap();
    let out = succeeds(&["storage", "--dir", dir, "--messages", "300", "--days", "2", "--samples", "5"]);
    for line in [
        "fill: 300 messages",
        "history page (50 messages, newest): samples=5",
        "full index build",
        "export Csv: messages=300",
        "report (",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
}

#[test]
fn storage_without_daily_figures_counts_them_after_the_fill_and_the_reports_agree() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let dir = dir.to_str().unwrap();
    let args = ["storage", "--dir", dir, "--messages", "300", "--days", "2", "--samples", "5"];
    let out = succeeds(&[&args[..], &["--without-daily-figures"]].concat());
    // The bench stops with an error when the figures disagree with the raw data.
    for line in ["daily_figures=counted after the fill", "fill: 300 messages", "daily figures counted after the fill"] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(out.contains("report (3 days, all sites, from daily figures): conversations=5"), "{out}");
}

#[test]
fn storage_refuses_conversations_without_messages_and_writes_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let output = bench(&["storage", "--dir", dir.to_str().unwrap(), "--per-conversation", "0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--per-conversation"), "{stderr}");
    assert!(!dir.exists(), "nothing is written on bad input");
}

//! `kefu migrate-to-postgres --from DATA_DIR --to URL`: copies a stopped appliance's history into
//! cluster mode's PostgreSQL (`cluster::redb_copy`), then prints the verification table. Its lines are in Chinese when the locale (LC_ALL, LC_MESSAGES, LANG) is.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::base::language::{Lang, fill};
use crate::cluster::redb_copy::{self, Copied, LoadMethod, Source, Verified};

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The data directory of a stopped kefu (the one holding kefu.redb); opened read-only.
    #[arg(long)]
    from: PathBuf,
    /// The PostgreSQL connection URL, such as postgresql://kefu@127.0.0.1:5432/kefu.
    #[arg(long, env = "KEFU_POSTGRES_URL")]
    to: String,
    /// Only compare the data directory with the target (counts and checksums); write nothing.
    #[arg(long)]
    verify_only: bool,
    /// Rows per transaction.
    #[arg(long, default_value_t = redb_copy::DEFAULT_BATCH_ROWS)]
    batch_rows: usize,
    /// How rows are loaded: `copy` (COPY FROM STDIN) or `insert` (multi-row INSERT).
    #[arg(long, value_enum, default_value_t = LoadMethod::Copy)]
    load: LoadMethod,
}

/// How often a long copy says where it stands.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The command's lines in one language.
struct Texts {
    copying: &'static str,
    copied: &'static str,
    progress: &'static str,
    earlier: &'static str,
    header: [&'static str; 4],
    yes: &'static str,
    no: &'static str,
    checked: &'static str,
    differs: &'static str,
}

const ENGLISH: Texts = Texts {
    copying: "copying the history of {from} (epoch {epoch}) into PostgreSQL",
    copied: "{table}: {rows} rows copied in {seconds} s ({rate} rows/s)",
    progress: "{table}: {done} of {total} rows copied so far",
    earlier: "; {rows} copied by an earlier run",
    header: ["table", "rows in redb", "rows in PostgreSQL", "checksum equal"],
    yes: "yes",
    no: "NO",
    checked: "counts and checksums of both sides read in {seconds} s",
    differs: "PostgreSQL differs from the data directory in: {tables}",
};

const CHINESE: Texts = Texts {
    copying: "正在把 {from}（epoch {epoch}）的历史记录复制到 PostgreSQL",
    copied: "{table}：复制了 {rows} 行，用时 {seconds} 秒（每秒 {rate} 行）",
    progress: "{table}：已复制 {done} / {total} 行",
    earlier: "；之前中断的运行已复制 {rows} 行",
    header: ["表", "redb 中的行数", "PostgreSQL 中的行数", "校验和一致"],
    yes: "是",
    no: "否",
    checked: "两边的行数和校验和读取用时 {seconds} 秒",
    differs: "PostgreSQL 与数据目录不一致的表：{tables}",
};

fn texts() -> &'static Texts {
    let locale = ["LC_ALL", "LC_MESSAGES", "LANG"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.is_empty())
        .unwrap_or_default();
    if Lang::from_tag(&locale) == Some(Lang::Zh) { &CHINESE } else { &ENGLISH }
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let texts = texts();
    let from = args.from.clone();
    let source = tokio::task::spawn_blocking(move || Source::open(&from)).await??;
    // Counted and checked before the target is touched: a row PostgreSQL cannot store stops the
    // copy before its first write.
    let started = Instant::now();
    let source_summary = source.summary().await?;
    let mut checking = started.elapsed();
    let mut client = redb_copy::connect(&args.to).await?;
    if !args.verify_only {
        println!("{}", fill(texts.copying, &[("from", &args.from.display()), ("epoch", &source.epoch)]));
        // A long copy shows where it stands every few seconds, on stderr.
        let mut last_shown = Instant::now();
        let mut show = |copied: &Copied, total: u64| {
            if last_shown.elapsed() >= PROGRESS_EVERY {
                last_shown = Instant::now();
                let done = copied.rows_before + copied.rows;
                eprintln!(
                    "{}",
                    fill(texts.progress, &[("table", &copied.table.name()), ("done", &done), ("total", &total)])
                );
            }
        };
        let copied =
            redb_copy::copy(&source, &source_summary, &mut client, args.batch_rows, args.load, &mut show).await?;
        for table in &copied {
            println!("{}", copied_line(texts, table));
        }
    }
    let started = Instant::now();
    let target_summary = redb_copy::target_summary(&client).await.context("reading the target back")?;
    checking += started.elapsed();
    let verified = redb_copy::compare(&source_summary, &target_summary);
    print_table(texts, &verified);
    println!("{}", fill(texts.checked, &[("seconds", &format!("{:.2}", checking.as_secs_f64()))]));
    let differing: Vec<&str> = verified.iter().filter(|line| !line.equal()).map(|line| line.table.name()).collect();
    if !differing.is_empty() {
        anyhow::bail!("{}", fill(texts.differs, &[("tables", &differing.join(", "))]));
    }
    Ok(())
}

fn copied_line(texts: &Texts, copied: &Copied) -> String {
    let rate = if copied.seconds > 0.0 { (copied.rows as f64 / copied.seconds).round() } else { 0.0 };
    let mut line = fill(
        texts.copied,
        &[
            ("table", &copied.table.name()),
            ("rows", &copied.rows),
            ("seconds", &format!("{:.2}", copied.seconds)),
            ("rate", &rate),
        ],
    );
    if copied.rows_before > 0 {
        line.push_str(&fill(texts.earlier, &[("rows", &copied.rows_before)]));
    }
    line
}

fn print_table(texts: &Texts, verified: &[Verified]) {
    let mut lines = vec![texts.header.map(str::to_owned)];
    for line in verified {
        lines.push([
            line.table.name().to_owned(),
            line.source.rows.to_string(),
            line.target.rows.to_string(),
            (if line.equal() { texts.yes } else { texts.no }).to_owned(),
        ]);
    }
    // Widths in characters; a CJK character takes two columns in a terminal.
    let width = |text: &str| text.chars().map(|character| if character.is_ascii() { 1 } else { 2 }).sum::<usize>();
    let widths: Vec<usize> =
        (0..4).map(|column| lines.iter().map(|line| width(&line[column])).max().unwrap_or(0)).collect();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, column_width)| format!("{cell}{}", " ".repeat(column_width - width(cell))))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

//! Cluster mode's periodic jobs on a real PostgreSQL 15 (support/postgres.rs), with two nodes
//! simulated as two connections: ticking at once, they run each slot once in all; a node never
//! waits for a job another node is running; a failed run records nothing; retention's partition
//! drop runs on one node.
//!
//! Each test prints one line and passes when PostgreSQL is not installed.

use futures_util::future::join_all;
use kefu::cluster::jobs::{self, JobRun};
use kefu::cluster::postgres::{self, PostgresError};
use tokio::sync::oneshot;

use crate::support::postgres::{count, database, migrated_nodes, node_name as node};

/// A migrated database with a table the test job writes to, and one connection per node.
async fn two_nodes(url: &str) -> [tokio_postgres::Client; 2] {
    let clients = migrated_nodes(url, 2).await;
    clients[0]
        .batch_execute("CREATE TABLE job_effects (slot bigint NOT NULL, node text NOT NULL)")
        .await
        .expect("create");
    let Ok(clients) = clients.try_into() else { unreachable!("two connections were made") };
    clients
}

/// The test job: one row per run, after a short pause so two nodes' runs would overlap.
async fn record_run(transaction: &tokio_postgres::Transaction<'_>, slot: i64, node: &str) -> Result<(), PostgresError> {
    transaction.execute("SELECT pg_sleep(0.005)", &[]).await?;
    transaction.execute("INSERT INTO job_effects (slot, node) VALUES ($1, $2)", &[&slot, &node]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_ticking_at_once_run_each_slot_once_in_all() {
    let Some(url) = database("jobs_once_per_tick").await else { return };
    let mut clients = two_nodes(&url).await;
    let ticks = 40;
    let mut runs_by_node = [0, 0];
    for slot in 1..=ticks {
        let outcomes = join_all(clients.iter_mut().enumerate().map(|(n, client)| async move {
            let name = format!("node-{n}");
            jobs::run_once(client, &node(&name), "test job", slot, async |transaction| {
                record_run(transaction, slot, &name).await
            })
            .await
            .expect("tick")
        }))
        .await;
        let ran: Vec<usize> = (0..2).filter(|n| outcomes[*n] == JobRun::Ran(())).collect();
        assert_eq!(ran.len(), 1, "slot {slot}: {outcomes:?}");
        runs_by_node[ran[0]] += 1;
        let other = &outcomes[1 - ran[0]];
        assert!(
            matches!(other, JobRun::Busy)
                || matches!(other, JobRun::AlreadyRan { last_slot, .. } if *last_slot == slot),
            "slot {slot}: {other:?}"
        );
    }
    assert_eq!(count(&clients[0], "job_effects").await, ticks);
    assert_eq!(count(&clients[0], "(SELECT DISTINCT slot FROM job_effects) slots").await, ticks);
    println!("periodic job: {ticks} ticks of two nodes, runs by node {runs_by_node:?}");

    // An earlier slot than the last run is not run again.
    let old = jobs::run_once(&mut clients[1], &node("node-1"), "test job", 3, async |_| Ok(())).await.expect("tick");
    assert!(matches!(old, JobRun::AlreadyRan { last_slot, .. } if last_slot == ticks), "{old:?}");
    // Another job has its own slots.
    let other = jobs::run_once(&mut clients[1], &node("node-1"), "another job", 1, async |_| Ok(7)).await;
    assert_eq!(other.expect("tick"), JobRun::Ran(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_skips_a_job_running_elsewhere_and_a_failed_run_records_nothing() {
    let Some(url) = database("jobs_busy_and_failed").await else { return };
    let [mut first, mut second] = two_nodes(&url).await;
    let (started, is_running) = oneshot::channel();
    let (finish, may_finish) = oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        let outcome = jobs::run_once(&mut first, &node("node-a"), "slow job", 1, async |transaction| {
            record_run(transaction, 1, "node-a").await?;
            let _ = started.send(());
            let _ = may_finish.await;
            Ok("done")
        })
        .await;
        (outcome, first)
    });
    is_running.await.expect("the job started");
    // The lock is held: the other node does not wait, it skips.
    let skipped = jobs::run_once(&mut second, &node("node-b"), "slow job", 1, async |_| Ok("twice")).await;
    assert_eq!(skipped.expect("tick"), JobRun::Busy);
    finish.send(()).expect("finish the job");
    let (outcome, first) = running.await.expect("the job's task");
    assert_eq!(outcome.expect("tick"), JobRun::Ran("done"));
    let after = jobs::run_once(&mut second, &node("node-b"), "slow job", 1, async |_| Ok("twice")).await;
    assert_eq!(after.expect("tick"), JobRun::AlreadyRan { last_slot: 1, node: "node-a".to_owned() });

    // A run that fails rolls back with its work: the slot is still to run.
    let failed = jobs::run_once(&mut second, &node("node-b"), "slow job", 2, async |transaction| {
        record_run(transaction, 2, "node-b").await?;
        transaction.execute("SELECT 1 / 0", &[]).await?;
        Ok(())
    })
    .await;
    assert!(matches!(failed, Err(PostgresError::Database(_))), "{failed:?}");
    assert_eq!(count(&first, "job_effects WHERE slot = 2").await, 0);
    let retried = jobs::run_once(&mut second, &node("node-b"), "slow job", 2, async |transaction| {
        record_run(transaction, 2, "node-b").await
    })
    .await;
    assert_eq!(retried.expect("tick"), JobRun::Ran(()));
    assert_eq!(count(&first, "job_effects").await, 2);

    // A name that is not one is refused before anything is locked or written.
    for name in ["", "bad\0name"] {
        let refused = jobs::run_once(&mut second, &node("node-b"), name, 9, async |_| Ok(())).await;
        assert!(matches!(refused, Err(PostgresError::Invalid(_))), "{name:?}: {refused:?}");
    }
    assert_eq!(count(&first, "periodic_job_runs").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_partitions_on_one_node() {
    let Some(url) = database("jobs_retention").await else { return };
    let mut clients = two_nodes(&url).await;
    let today = kefu::base::clock::day_of(kefu::base::clock::now_millis());
    let first_day = today - 10;
    postgres::create_partitions(&clients[0], first_day, 10).await.expect("create partitions");
    let first_kept_day = today - 4;

    let outcomes = join_all(clients.iter_mut().enumerate().map(|(n, client)| async move {
        jobs::drop_message_partitions_once(client, &node(&format!("node-{n}")), first_kept_day).await.expect("tick")
    }))
    .await;
    let dropped: Vec<&Vec<String>> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            JobRun::Ran(dropped) => Some(dropped),
            _ => None,
        })
        .collect();
    assert_eq!(dropped.len(), 1, "{outcomes:?}");
    assert_eq!(dropped[0].len(), 6, "{dropped:?}");
    let left = postgres::partitions(&clients[0]).await.expect("partitions");
    assert_eq!(left.len(), 4, "{left:?}");
    let again = jobs::drop_message_partitions_once(&mut clients[1], &node("node-1"), first_kept_day).await;
    assert!(matches!(again.expect("tick"), JobRun::AlreadyRan { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_own_retention_deletes_its_old_messages_from_the_kept_partitions_once() {
    let Some(url) = database("jobs_site_retention").await else { return };
    let mut clients = two_nodes(&url).await;
    let today = kefu::base::clock::day_of(kefu::base::clock::now_millis());
    postgres::create_partitions(&clients[0], today - 6, 7).await.expect("create partitions");
    // Two sites' conversations, each with a message on every day from six days ago to today.
    for (id, site) in [(1i64, "short"), (2, "forever")] {
        clients[0]
            .execute(
                "INSERT INTO conversations (id, site, visitor_id, status, created_at, updated_at, last_day, last_seq)
                 VALUES ($1, $2, $1, 'closed', 0, 0, $3, 7)",
                &[&id, &site, &(today as i32)],
            )
            .await
            .unwrap();
        for seq in 1..=7i64 {
            let day = today as i32 - 7 + seq as i32;
            clients[0]
                .execute(
                    "INSERT INTO messages (conversation_id, seq, day, lsn, trace_id, created_at, sender_kind,
                                           sender_id, sender_name, kind, internal, client_id, text)
                     VALUES ($1, $2, date '1970-01-01' + $3::integer, $5, 0, 0, 1, $1, 'v', 'text',
                             false, $4, 'hello')",
                    &[&id, &seq, &day, &format!("c-{seq}"), &(id * 100 + seq)],
                )
                .await
                .unwrap();
            clients[0]
                .execute(
                    "INSERT INTO client_ids (sender_kind, sender_id, client_id, conversation_id, seq, day, created_at)
                     VALUES (1, $1, $4, $1, $2, date '1970-01-01' + $3::integer, 0)",
                    &[&id, &seq, &day, &format!("c-{seq}")],
                )
                .await
                .unwrap();
        }
    }
    // Their attachments: an old and a recent one of each site, sharing one content with
    // another site's old one, and one of "short" no message attached.
    clients[0]
        .execute(
            "INSERT INTO upload_contents (id, sha256, size, n_chunks) VALUES
                 (1, decode(repeat('01', 32), 'hex'), 1, 1), (2, decode(repeat('02', 32), 'hex'), 1, 1),
                 (3, decode(repeat('03', 32), 'hex'), 1, 1)",
            &[],
        )
        .await
        .unwrap();
    for (id, site, conversation, days_ago, attached, content) in [
        ("old-short", "short", Some(1i64), 6i64, true, 1i64),
        ("new-short", "short", Some(1), 0, true, 2),
        ("old-forever", "forever", Some(2), 6, true, 1),
        ("lone-short", "short", None, 6, false, 3),
    ] {
        let created_at = (i64::from(today) - days_ago) * kefu::base::clock::MILLIS_PER_DAY;
        clients[0]
            .execute(
                "INSERT INTO uploads (id, conversation_id, uploader_kind, uploader_id, name, size, content_type, kind,
                                      created_at, site, attached, content_id)
                 VALUES ($1, $2, 1, 1, 'a.txt', 1, 'text/plain', 'file', $3, $4, $5, $6)",
                &[&id, &conversation, &created_at, &site, &attached, &content],
            )
            .await
            .unwrap();
    }
    // "short" keeps three days: today and the two before.
    let first_kept = vec![("short".to_owned(), kefu::history::retention::first_day_kept(3, today))];
    let outcomes = join_all(clients.iter_mut().enumerate().map(|(n, client)| {
        let first_kept = first_kept.clone();
        async move {
            jobs::expire_site_messages_once(client, &node(&format!("node-{n}")), &first_kept, today)
                .await
                .expect("tick")
        }
    }))
    .await;
    let ran: Vec<&jobs::Expired> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            JobRun::Ran(expired) => Some(expired),
            _ => None,
        })
        .collect();
    assert_eq!(ran, [&jobs::Expired { messages: 4, attachments: 1 }], "one node deleted the oldest: {outcomes:?}");
    let uploads: Vec<String> = clients[0]
        .query("SELECT id FROM uploads ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(uploads, ["lone-short", "new-short", "old-forever"], "the unattached one waits for its own sweep");
    assert_eq!(count(&clients[0], "upload_contents").await, 3, "a content another upload shares is kept");
    assert_eq!(count(&clients[0], "messages WHERE conversation_id = 1").await, 3);
    assert_eq!(count(&clients[0], "client_ids WHERE conversation_id = 1").await, 3);
    assert_eq!(count(&clients[0], "messages WHERE conversation_id = 2").await, 7, "the other site keeps all");
    let kept: i32 = clients[0]
        .query_one("SELECT min(day) - date '1970-01-01' FROM messages WHERE conversation_id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, today as i32 - 2);
    let again = jobs::expire_site_messages_once(&mut clients[1], &node("node-1"), &first_kept, today).await;
    assert!(matches!(again.expect("tick"), JobRun::AlreadyRan { .. }));

    // Any node's sweep removes what no message attached within the grace, and its bytes.
    let uploads = kefu::cluster::uploads::PostgresUploads::open(&url).await.expect("open the uploads");
    assert_eq!(uploads.sweep_unattached(std::time::Duration::from_secs(3600)).await.expect("sweep"), 1);
    assert_eq!(uploads.sweep_unattached(std::time::Duration::from_secs(3600)).await.expect("sweep again"), 0);
    assert_eq!(count(&clients[0], "upload_contents").await, 2);
}

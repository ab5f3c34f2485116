//! Cluster mode's outbox on a real PostgreSQL 15 (support/postgres.rs), with two nodes simulated
//! as two connections: rows claimed concurrently go to one node each, a dead node's claim is
//! taken over once it runs out, failed attempts follow the appliance's backoff until it gives
//! up, and bad input is refused with nothing changed.
//!
//! Each test prints one line and passes when PostgreSQL is not installed.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use kefu::cluster::node::NodeName;
use kefu::cluster::outbox::{
    self, NewOutboxRow, OutboxContent, OutboxError, OutboxKind, OutboxSettings, OutboxStatus, OutboxWorker, Retry,
};
use kefu::cluster::postgres::PostgresError;
use kefu::email::EmailKind;

use crate::support::postgres::{count, database, migrated_nodes, node_name};

/// A migrated database and one connection per node.
fn settings(claim_for: Duration) -> OutboxSettings {
    OutboxSettings { claim_for, retry_base: Duration::from_millis(200), give_up_after: Duration::from_secs(3600) }
}

fn worker(node: &str, kind: OutboxKind, settings: &OutboxSettings) -> OutboxWorker {
    OutboxWorker::new(node_name(node), kind, settings).expect("a worker")
}

fn webhook(n: usize) -> NewOutboxRow {
    NewOutboxRow {
        site: Some("shop".to_owned()),
        content: OutboxContent::Webhook {
            webhook_id: "wh_1".to_owned(),
            event_type: "message.created".to_owned(),
            payload: format!(r#"{{"type":"message.created","n":{n}}}"#),
            trace_id: Some(u64::MAX - n as u64),
            about: None,
        },
        delay: Duration::ZERO,
    }
}

fn email(kind: EmailKind, text: &str) -> NewOutboxRow {
    NewOutboxRow {
        site: None,
        content: OutboxContent::Email {
            email_kind: kind,
            to_address: "agent@example.com".to_owned(),
            to_name: "客服 Agent".to_owned(),
            subject: "subject".to_owned(),
            text: text.to_owned(),
            html: format!("<p>{text}</p>"),
            unless_read: None,
            transcript_of: None,
            about: None,
        },
        delay: Duration::ZERO,
    }
}

/// Writes `rows` in one transaction, as an event's commit would.
async fn enqueue_all(client: &mut tokio_postgres::Client, rows: &[NewOutboxRow]) -> Vec<u64> {
    let transaction = client.transaction().await.expect("begin");
    let mut ids = Vec::new();
    for row in rows {
        ids.push(outbox::enqueue(&transaction, row).await.expect("enqueue"));
    }
    transaction.commit().await.expect("commit");
    ids
}

async fn row(client: &tokio_postgres::Client, id: u64) -> outbox::OutboxRow {
    outbox::get(client, id).await.expect("read").expect("the row exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_at_once_never_get_the_same_row() {
    let Some(url) = database("outbox_concurrent_claims").await else { return };
    let mut clients = migrated_nodes(&url, 3).await;
    let rounds = 5;
    let per_round = 300;
    let mut claimed_in_all = HashSet::new();
    for round in 0..rounds {
        let rows: Vec<_> = (0..per_round).map(|n| webhook(round * per_round + n)).collect();
        let ids = enqueue_all(&mut clients[2], &rows).await;
        // An email row waits for the email worker; the webhook workers never take it.
        let email_ids = enqueue_all(&mut clients[2], &[email(EmailKind::MissedChat, "no answer yet")]).await;
        let settings = settings(Duration::from_secs(60));
        let claims = clients[..2].iter().enumerate().map(|(n, client)| {
            let worker = worker(&format!("node-{n}"), OutboxKind::Webhook, &settings);
            async move {
                let mut mine = Vec::new();
                loop {
                    let claimed = worker.claim(client, 7).await.expect("claim");
                    if claimed.is_empty() {
                        break;
                    }
                    for row in claimed {
                        assert_eq!(row.taken_over_from, None);
                        worker.complete(client, row.id, Some(204)).await.expect("complete");
                        mine.push(row.id);
                    }
                }
                mine
            }
        });
        let claimed_by_node = join_all(claims).await;
        let all: Vec<u64> = claimed_by_node.iter().flatten().copied().collect();
        let distinct: HashSet<u64> = all.iter().copied().collect();
        assert_eq!(all.len(), distinct.len(), "round {round}: a row was claimed twice");
        assert_eq!(distinct, ids.iter().copied().collect(), "round {round}: every row was claimed once");
        assert!(
            claimed_by_node.iter().all(|mine| !mine.is_empty()),
            "round {round}: both nodes claimed rows ({} and {})",
            claimed_by_node[0].len(),
            claimed_by_node[1].len()
        );
        claimed_in_all.extend(distinct);
        let email_row = row(&clients[2], email_ids[0]).await;
        assert_eq!((email_row.status, email_row.claimed_by.as_deref()), (OutboxStatus::Pending, None));
        let emails = worker("node-0", OutboxKind::Email, &settings);
        assert_eq!(emails.claim(&clients[0], 10).await.expect("claim").len(), 1);
    }
    assert_eq!(claimed_in_all.len(), rounds * per_round);
    let delivered =
        count(&clients[2], "outbox WHERE status = 'delivered' AND attempts = 1 AND last_status = 204").await;
    assert_eq!(delivered, (rounds * per_round) as i64);

    // A row exists only with its event: a rolled-back transaction leaves none.
    let before = count(&clients[2], "outbox").await;
    let transaction = clients[2].transaction().await.expect("begin");
    outbox::enqueue(&transaction, &webhook(0)).await.expect("enqueue");
    transaction.rollback().await.expect("roll back");
    assert_eq!(count(&clients[2], "outbox").await, before);
}

#[tokio::test]
async fn a_claim_never_finished_is_taken_over_after_its_deadline() {
    let Some(url) = database("outbox_dead_claimer").await else { return };
    let mut clients = migrated_nodes(&url, 2).await;
    let claim_for = Duration::from_millis(400);
    let settings = settings(claim_for);
    let (dying, survivor) =
        (worker("node-dying", OutboxKind::Webhook, &settings), worker("node-survivor", OutboxKind::Webhook, &settings));
    let ids = enqueue_all(&mut clients[0], &[webhook(1)]).await;

    let claimed = dying.claim(&clients[0], 10).await.expect("claim");
    assert_eq!(claimed.iter().map(|row| row.id).collect::<Vec<_>>(), ids);
    // The dying node never finishes: until its claim runs out, nobody else gets the row.
    assert!(survivor.claim(&clients[1], 10).await.expect("claim").is_empty());
    tokio::time::sleep(claim_for + Duration::from_millis(100)).await;
    let taken = survivor.claim(&clients[1], 10).await.expect("claim after the deadline");
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].id, taken[0].taken_over_from.as_deref()), (ids[0], Some("node-dying")));
    assert_eq!(taken[0].attempts, 0, "a cut-off attempt is not counted");

    // The dying node coming back records nothing: the row is the survivor's.
    let late = dying.complete(&clients[0], ids[0], Some(200)).await;
    assert!(matches!(&late, Err(OutboxError::NotClaimed { state, .. }) if state.contains("node-survivor")), "{late:?}");
    let late_retry = dying.retry_later(&clients[0], ids[0], "timed out", None).await;
    assert!(matches!(late_retry, Err(OutboxError::NotClaimed { .. })), "{late_retry:?}");
    let held = row(&clients[0], ids[0]).await;
    assert_eq!(
        (held.status, held.attempts, held.claimed_by.as_deref()),
        (OutboxStatus::Pending, 0, Some("node-survivor"))
    );

    survivor.complete(&clients[1], ids[0], Some(200)).await.expect("complete");
    let done = row(&clients[0], ids[0]).await;
    assert_eq!(
        (done.status, done.attempts, done.next_attempt_at, done.claimed_by),
        (OutboxStatus::Delivered, 1, None, None)
    );
    assert!(done.finished_at.is_some());
}

#[tokio::test]
async fn failed_attempts_follow_the_backoff_and_stop_after_the_last() {
    let Some(url) = database("outbox_backoff").await else { return };
    let mut clients = migrated_nodes(&url, 2).await;
    let retry_base = Duration::from_millis(100);
    let give_up_after = Duration::from_millis(1500);
    let claim_for = Duration::from_secs(30);
    let settings = OutboxSettings { claim_for, retry_base, give_up_after };
    // The two nodes take turns: whichever claims the row records its failure.
    let workers = [worker("node-a", OutboxKind::Email, &settings), worker("node-b", OutboxKind::Email, &settings)];
    // A password reset: its body holds a secret, blanked once the row is finished.
    let ids =
        enqueue_all(&mut clients[0], &[email(EmailKind::PasswordReset, "https://kefu.example/reset/SECRET")]).await;
    let created_at = row(&clients[0], ids[0]).await.created_at;

    let mut due_at = created_at;
    let mut attempts: u32 = 0;
    let gave_up = loop {
        let turn = (attempts % 2) as usize;
        let claimed = loop {
            let claimed = workers[turn].claim(&clients[turn], 10).await.expect("claim");
            if let Some(claimed) = claimed.into_iter().next() {
                break claimed;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!((claimed.id, claimed.attempts), (ids[0], attempts));
        let claimed_at = claimed.claimed_until - claim_for.as_millis() as i64;
        assert!(claimed_at >= due_at, "claimed at {claimed_at}, before it was due at {due_at}");
        match workers[turn].retry_later(&clients[turn], ids[0], "550 mailbox unavailable", None).await.expect("retry") {
            Retry::Rescheduled { attempts: counted, next_attempt_at, delay } => {
                attempts += 1;
                assert_eq!(counted, attempts);
                // The appliance's backoff: base × 2^(attempts-1), times 0.5 to 1.5.
                let expected = retry_base * 2u32.pow(attempts - 1);
                assert!(
                    delay >= expected.mul_f64(0.5) && delay <= expected.mul_f64(1.5),
                    "attempt {attempts}: {delay:?} against {expected:?}"
                );
                assert!(next_attempt_at - created_at <= give_up_after.as_millis() as i64);
                let pending = row(&clients[0], ids[0]).await;
                assert_eq!(
                    (pending.status, pending.claimed_by, pending.next_attempt_at),
                    (OutboxStatus::Pending, None, Some(next_attempt_at))
                );
                assert_eq!(pending.last_error.as_deref(), Some("550 mailbox unavailable"));
                due_at = next_attempt_at;
            }
            Retry::GaveUp { attempts: counted } => break counted,
        }
        assert!(attempts < 10, "the retries never stopped");
    };
    assert_eq!(gave_up, attempts + 1);
    assert!(gave_up >= 3, "100 ms doubling fits at least three attempts in 1.5 s: {gave_up}");

    let failed = row(&clients[0], ids[0]).await;
    assert_eq!(
        (failed.status, failed.attempts, failed.next_attempt_at, failed.claimed_by),
        (OutboxStatus::Failed, gave_up, None, None)
    );
    let OutboxContent::Email { text, html, to_address, .. } = failed.content else { panic!("an email row") };
    assert_eq!(
        (text.as_str(), html.as_str(), to_address.as_str()),
        ("", "", "agent@example.com"),
        "the secret is blanked"
    );
    // Nobody claims it again, and a late outcome changes nothing.
    tokio::time::sleep(retry_base * 2).await;
    assert!(workers[0].claim(&clients[0], 10).await.expect("claim").is_empty());
    let late = workers[0].retry_later(&clients[0], ids[0], "again", None).await;
    assert!(matches!(&late, Err(OutboxError::NotClaimed { state, .. }) if state.contains("failed")), "{late:?}");
    assert_eq!(row(&clients[0], ids[0]).await.attempts, gave_up);

    // A row no longer needed is skipped without counting an attempt.
    let skipped = enqueue_all(&mut clients[0], &[email(EmailKind::Reply, "answer")]).await;
    assert_eq!(workers[1].claim(&clients[1], 10).await.expect("claim").len(), 1);
    workers[1].skip(&clients[1], skipped[0], "the visitor read it in the chat").await.expect("skip");
    let skipped = row(&clients[0], skipped[0]).await;
    assert_eq!((skipped.status, skipped.attempts, skipped.next_attempt_at), (OutboxStatus::Skipped, 0, None));
    assert_eq!(skipped.last_error.as_deref(), Some("the visitor read it in the chat"));
}

#[tokio::test]
async fn unknown_ids_and_bad_input_are_refused_and_change_nothing() {
    let Some(url) = database("outbox_bad_input").await else { return };
    let mut clients = migrated_nodes(&url, 1).await;
    let settings = settings(Duration::from_secs(60));
    let webhooks = worker("node-a", OutboxKind::Webhook, &settings);
    let emails = worker("node-a", OutboxKind::Email, &settings);
    let ids = enqueue_all(&mut clients[0], &[webhook(1), webhook(2)]).await;
    let claimed = webhooks.claim(&clients[0], 1).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let client = &clients[0];
    let snapshot = || async {
        let rows = client
            .query(
                "SELECT id, status, attempts, next_attempt_at, claimed_by, content::text FROM outbox ORDER BY id",
                &[],
            )
            .await
            .expect("read");
        rows.iter()
            .map(|row| {
                let values: (i64, String, i32, Option<i64>, Option<String>, String) =
                    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
                format!("{values:?}")
            })
            .collect::<Vec<_>>()
    };
    let before = snapshot().await;

    for unknown in [9_999_999, u64::MAX] {
        let completed = webhooks.complete(client, unknown, Some(200)).await;
        assert!(matches!(completed, Err(OutboxError::NotFound(id)) if id == unknown), "{completed:?}");
        let retried = webhooks.retry_later(client, unknown, "boom", None).await;
        assert!(matches!(retried, Err(OutboxError::NotFound(_))), "{retried:?}");
        let skipped = webhooks.skip(client, unknown, "not needed").await;
        assert!(matches!(skipped, Err(OutboxError::NotFound(_))), "{skipped:?}");
        assert!(outbox::get(client, unknown).await.expect("read").is_none());
    }
    // A row this node never claimed, and a row of another kind.
    let unclaimed = ids.iter().copied().find(|id| *id != claimed[0].id).expect("the other row");
    let refused = webhooks.complete(client, unclaimed, None).await;
    assert!(matches!(&refused, Err(OutboxError::NotClaimed { state, .. }) if state.contains("nobody")), "{refused:?}");
    let refused = emails.complete(client, claimed[0].id, None).await;
    assert!(matches!(&refused, Err(OutboxError::NotClaimed { state, .. }) if state.contains("webhook")), "{refused:?}");

    let invalid =
        |result: Result<_, OutboxError>| matches!(result, Err(OutboxError::Postgres(PostgresError::Invalid(_))));
    assert!(invalid(webhooks.claim(client, 0).await.map(|_| ())));
    assert!(invalid(webhooks.claim(client, outbox::MAX_CLAIM + 1).await.map(|_| ())));
    for name in ["", "node\nb", &"n".repeat(201)] {
        assert!(matches!(NodeName::new(name), Err(PostgresError::Invalid(_))), "{name:?}");
    }
    for bad in [
        OutboxSettings { claim_for: Duration::ZERO, ..settings.clone() },
        OutboxSettings { retry_base: Duration::ZERO, ..settings.clone() },
        OutboxSettings { give_up_after: Duration::from_secs(365 * 24 * 3600), ..settings.clone() },
    ] {
        let made = OutboxWorker::new(NodeName::new("node-a").expect("name"), OutboxKind::Email, &bad);
        assert!(matches!(made, Err(PostgresError::Invalid(_))), "{bad:?}");
    }
    assert_eq!(snapshot().await, before, "refusals changed nothing");

    // A row PostgreSQL cannot store is refused before it is written; the transaction goes on.
    let transaction = clients[0].transaction().await.expect("begin");
    let nul = outbox::enqueue(&transaction, &email(EmailKind::Test, "a\0b")).await;
    assert!(matches!(&nul, Err(PostgresError::Invalid(detail)) if detail.contains("U+0000")), "{nul:?}");
    let bad_site = NewOutboxRow { site: Some(String::new()), ..webhook(3) };
    assert!(matches!(outbox::enqueue(&transaction, &bad_site).await, Err(PostgresError::Invalid(_))));
    let stored = outbox::enqueue(&transaction, &webhook(4)).await.expect("a good row after the refusals");
    transaction.commit().await.expect("commit");
    assert_eq!(count(&clients[0], "outbox").await, 3);
    assert!(outbox::get(&clients[0], stored).await.expect("read").is_some());

    // Finishing twice: the second is refused and changes nothing.
    webhooks.complete(&clients[0], claimed[0].id, Some(200)).await.expect("complete");
    let finished = row(&clients[0], claimed[0].id).await;
    let again = webhooks.complete(&clients[0], claimed[0].id, Some(200)).await;
    assert!(matches!(&again, Err(OutboxError::NotClaimed { state, .. }) if state.contains("delivered")), "{again:?}");
    let after = row(&clients[0], claimed[0].id).await;
    assert_eq!((after.attempts, after.finished_at), (finished.attempts, finished.finished_at));
}

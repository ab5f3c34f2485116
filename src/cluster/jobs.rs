//! Periodic jobs (retention's partition drop, for one) that every node ticks but only one runs:
//! [`run_once`] runs a job's slot (a day, for a daily job) on one node, once in all.
//!
//! The job runs inside one transaction that first takes `pg_try_advisory_xact_lock` for the
//! job's name. A transaction-level lock rather than a session lock on a dedicated connection:
//! it is released by the COMMIT or ROLLBACK that ends the job, and by the server when the node's
//! connection dies mid-job, so there is no unlock to forget, no lock left behind by a node that
//! was killed, and no connection to keep open only to hold it. The try form never waits: a node
//! that finds the lock taken skips the tick, since another node is running the job.
//! The lock alone keeps two runs from overlapping, not a second node from running the job again
//! right after the first one's COMMIT; so the same transaction records the slot it ran in
//! `periodic_job_runs`, and a node holding the lock runs a slot only if no later or equal one is
//! recorded. The job's work and that record commit together: a job that fails records nothing
//! and the next tick runs it again.

use tokio_postgres::{Client, Transaction};

use crate::cluster::node::{NodeName, check_name};
use crate::cluster::postgres::{self, PostgresError};

/// The first key of the jobs' advisory locks ("jobs" in ASCII); the second is the hash of the
/// job's name. Two-key locks never collide with the one-key locks of migrations and partitions.
const JOB_LOCK_CLASS: i32 = 0x6a6f_6273;

/// The name of retention's job, which drops the message partitions of days past the retention.
pub const RETENTION_JOB: &str = "message retention";

/// The name of the job that deletes, inside the kept partitions, the messages of the sites whose
/// own retention is shorter.
pub const SITE_RETENTION_JOB: &str = "site message retention";

/// What a tick of a job did on this node.
#[derive(Debug, PartialEq, Eq)]
pub enum JobRun<T> {
    /// This node ran it; the work's output.
    Ran(T),
    /// The slot (or a later one) already ran, on `node`.
    AlreadyRan { last_slot: i64, node: String },
    /// Another node is running the job now.
    Busy,
}

/// Runs `work` for `slot` of job `name` on this node unless another node is running the job or
/// the slot already ran. `work` runs in the transaction that holds the lock and records the run.
pub async fn run_once<T>(
    client: &mut Client,
    node: &NodeName,
    name: &str,
    slot: i64,
    work: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, PostgresError>,
) -> Result<JobRun<T>, PostgresError> {
    check_name("job name", name)?;
    let transaction = client.transaction().await?;
    let locked: bool = transaction
        .query_one("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", &[&JOB_LOCK_CLASS, &name])
        .await?
        .try_get(0)?;
    if !locked {
        return Ok(JobRun::Busy);
    }
    let last = transaction.query_opt("SELECT last_slot, node FROM periodic_job_runs WHERE name = $1", &[&name]).await?;
    if let Some(last) = last {
        let last_slot: i64 = last.try_get(0)?;
        if last_slot >= slot {
            return Ok(JobRun::AlreadyRan { last_slot, node: last.try_get(1)? });
        }
    }
    let output = work(&transaction).await?;
    transaction
        .execute(
            "INSERT INTO periodic_job_runs (name, last_slot, node, ran_at) VALUES ($1, $2, $3, kefu_now_ms())
             ON CONFLICT (name) DO UPDATE SET last_slot = excluded.last_slot, node = excluded.node,
                                              ran_at = excluded.ran_at",
            &[&name, &slot, &node.as_str()],
        )
        .await?;
    transaction.commit().await?;
    Ok(JobRun::Ran(output))
}

/// Retention on one node: drops the message partitions of the days before `first_kept_day` (a
/// UTC day number), once per day across the nodes; the day is the slot.
/// What a site's retention removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub messages: u64,
    pub attachments: u64,
}

/// Deletes, once per `today` in all, the messages each site of `first_kept` no longer keeps
/// (those of the days before its first kept day) from the partitions still there, with their
/// client ids and the visitors' verdicts on them (their search entries go with the rows), and
/// the site's attachments made before the day before (the appliance's rule: the message may be a
/// day later than its upload).
pub async fn expire_site_messages_once(
    client: &mut Client,
    node: &NodeName,
    first_kept: &[(String, u32)],
    today: u32,
) -> Result<JobRun<Expired>, PostgresError> {
    let days = postgres::partition_days(client).await?;
    run_once(client, node, SITE_RETENTION_JOB, i64::from(today), async |transaction| {
        let mut expired = Expired::default();
        for (site, first_kept_day) in first_kept {
            let cutoff = i64::from(first_kept_day.saturating_sub(1)) * crate::base::clock::MILLIS_PER_DAY;
            let condition = "site = $1 AND attached AND conversation_id IS NOT NULL AND created_at < $2";
            expired.attachments +=
                crate::cluster::uploads::delete_where(transaction, condition, &[site, &cutoff]).await?;
            for day in days.iter().filter(|day| **day < *first_kept_day) {
                let row = transaction
                    .query_one(
                        "WITH doomed AS (
                             DELETE FROM messages m USING conversations c
                             WHERE c.id = m.conversation_id AND c.site = $1
                               AND m.day = date '1970-01-01' + $2::integer
                             RETURNING m.conversation_id, m.seq),
                         verdicts AS (
                             DELETE FROM bot_feedback b USING doomed d
                             WHERE b.conversation_id = d.conversation_id AND b.seq = d.seq RETURNING 1),
                         dedup AS (
                             DELETE FROM client_ids i USING doomed d
                             WHERE i.conversation_id = d.conversation_id AND i.seq = d.seq RETURNING 1)
                         SELECT count(*) FROM doomed",
                        &[site, &(*day as i32)],
                    )
                    .await?;
                expired.messages += row.try_get::<_, i64>(0)? as u64;
            }
        }
        Ok(expired)
    })
    .await
}

pub async fn drop_message_partitions_once(
    client: &mut Client,
    node: &NodeName,
    first_kept_day: u32,
) -> Result<JobRun<Vec<String>>, PostgresError> {
    run_once(client, node, RETENTION_JOB, i64::from(first_kept_day), async |transaction| {
        postgres::drop_partitions_before(transaction, first_kept_day).await
    })
    .await
}

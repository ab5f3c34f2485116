//! Reports on the cluster's PostgreSQL: [`PostgresMessages`] implements `ReportStore` by counting
//! the figures of the range from the conversations and messages themselves, with the appliance's
//! own counting (`daily_figures::Tally`) and report building (`reports::from_tally`,
//! `reports::today_of_tally`), so both backends give the same report of the same history.
//!
//! The appliance keeps daily figures up to date at every commit; a node counts on demand instead:
//! the conversations that started, closed or were rated in the range (one day either side, for
//! the sites' time zones), and the messages of the range's day partitions grouped in SQL by site,
//! sender and quarter of an hour (every time zone's day starts on one), each group then counted
//! on its day in its site's time zone. The cost grows with the range's conversations and the
//! number of groups, not with each message's row crossing to the node.

use crate::base::clock;
use crate::cluster::messages::{CONVERSATION_COLUMNS, PostgresMessages, conversation_of, sender_kind_of, unsigned};
use crate::cluster::postgres::{Readers, database, records_where};
use crate::history::daily_figures::{MessageFacts, Tally, Zones};
use crate::history::reports::{self, Report, ReportFilter, ReportStore, Today};
use crate::people::agents::Agent;
use crate::sites::Site;
use crate::storage::StorageError;

const DAY_MS: i64 = 86_400_000;

/// Messages are grouped by this many milliseconds: a quarter of an hour.
const BUCKET_MS: i64 = 900_000;

impl ReportStore for PostgresMessages {
    async fn report(&self, filter: ReportFilter) -> Result<Report, StorageError> {
        let (from, to) = (i64::from(filter.from_day) * DAY_MS, (i64::from(filter.to_day) + 1) * DAY_MS);
        let (tally, _) = tally_between(&self.readers, from - DAY_MS, to + DAY_MS, filter.site.as_deref()).await?;
        let client = self.readers.client().await?;
        let agents: Vec<Agent> = records_where(&*client, "agent", "SELECT record::text FROM agents", &[]).await?;
        Ok(reports::from_tally(&tally, &filter, &agents))
    }

    async fn today(&self, site: Option<String>, now: i64) -> Result<Today, StorageError> {
        let (tally, sites) = tally_between(&self.readers, now - 2 * DAY_MS, now + DAY_MS, site.as_deref()).await?;
        Ok(reports::today_of_tally(&tally, &sites, site.as_deref(), now))
    }
}

/// Every figure of the conversations (of `site`, or all) with an event in `[from, to)` Unix
/// milliseconds, and of the messages sent in it; with the sites.
async fn tally_between(
    readers: &Readers,
    from: i64,
    to: i64,
    site: Option<&str>,
) -> Result<(Tally, Vec<Site>), StorageError> {
    let client = readers.client().await?;
    let sites: Vec<Site> = records_where(&*client, "site", "SELECT record::text FROM sites", &[]).await?;
    let zones = Zones::from_sites(sites.clone());
    let mut tally = Tally::default();
    let rows = client
        .query(
            &format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations
                 WHERE ($3::text IS NULL OR site = $3)
                   AND (created_at >= $1 AND created_at < $2
                        OR closed_at >= $1 AND closed_at < $2
                        OR (rating->>'rated_at')::bigint >= $1 AND (rating->>'rated_at')::bigint < $2)"
            ),
            &[&from, &to, &site],
        )
        .await
        .map_err(database)?;
    for row in &rows {
        let conversation = conversation_of(row)?;
        tally.add_conversation(&conversation, zones.get(&conversation.site));
    }
    let (first_day, last_day) = (clock::day_of(from) as i32, clock::day_of(to) as i32);
    let rows = client
        .query(
            "SELECT c.site, m.sender_kind, m.sender_id, m.internal, m.created_at / $5 AS bucket, count(*)
             FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.day BETWEEN date '1970-01-01' + $1::integer AND date '1970-01-01' + $2::integer
               AND m.created_at >= $3 AND m.created_at < $4 AND ($6::text IS NULL OR c.site = $6)
             GROUP BY 1, 2, 3, 4, 5",
            &[&first_day, &last_day, &from, &to, &BUCKET_MS, &site],
        )
        .await
        .map_err(database)?;
    for row in &rows {
        let site: String = row.try_get(0).map_err(database)?;
        let message = MessageFacts {
            sender_kind: sender_kind_of(row.try_get(1).map_err(database)?)?,
            sender_id: unsigned(row.try_get(2).map_err(database)?)?,
            internal: row.try_get(3).map_err(database)?,
            created_at: row.try_get::<_, i64>(4).map_err(database)? * BUCKET_MS,
        };
        let n = unsigned(row.try_get(5).map_err(database)?)?;
        tally.add_site_messages(&site, message, zones.get(&site), n);
    }
    Ok((tally, sites))
}

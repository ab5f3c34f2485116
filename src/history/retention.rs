//! Retention: each site keeps its history for `retention_days` (or forever); older messages go.
//!
//! A day shard holds the messages of every site for that UTC day, so the rule is:
//!
//! - A whole shard is dropped (one `delete_table`, cheap whatever its size) when every site's
//!   retention has passed for that day: the day is older than the longest retention of any site.
//!   If any site keeps its history forever, no shard is ever dropped whole.
//! - Inside a shard that is still kept, the messages of a site whose own retention has passed are
//!   deleted row by row (in bounded writer operations).
//!
//! With the messages go their `conversation_days_v1` entries, their `client_ids_v1` dedup records,
//! their search index documents and the uploads they attached (a day later, see
//! `uploads::remove_expired`). The cleanup of those runs first and the messages go last,
//! so a run interrupted by a crash is simply done again by the next run.
//!
//! A day D is kept for a site with retention N days while `D > today - N`: with N = 1 only
//! today is kept. The server runs retention every [`RETENTION_INTERVAL`]; `kefu retention
//! --dry-run` prints the plan without changing anything.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};
use serde::Serialize;

use crate::search::Search;
use crate::storage::{StorageError, Store, tables};
use crate::{chat::conversations, chat::messages, sites};

/// How often the server applies retention.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Keys deleted per writer operation, so retention never holds the writer for long.
const DELETE_CHUNK: usize = 8_192;

/// Entries read per read transaction while looking for what to delete.
const SCAN_CHUNK: usize = 50_000;

#[derive(Clone, Debug, Default, Serialize)]
pub struct RetentionPlan {
    /// Day shards dropped whole, as `YYYY-MM-DD`, with their message counts.
    pub drop_days: Vec<DayDrop>,
    /// Sites whose messages are deleted from shards that are kept.
    pub site_days: Vec<SiteDayDrop>,
    /// Sites that keep history forever (they prevent whole-shard drops).
    pub kept_forever: Vec<String>,
    pub messages: u64,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DayDrop {
    pub date: String,
    #[serde(skip)]
    pub day: u32,
    pub messages: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SiteDayDrop {
    pub site: String,
    pub date: String,
    #[serde(skip)]
    pub day: u32,
    pub messages: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("search index: {0}")]
    Search(#[from] crate::search::SearchError),
}

/// Whether a site with `retention_days` keeps the shard of `day` when it is `today`.
fn keeps(retention_days: u32, day: u32, today: u32) -> bool {
    u64::from(day) + u64::from(retention_days.max(1)) > u64::from(today)
}

/// The longest retention of the sites when none keeps its history forever: the days it has
/// passed are past every site's, and their shards go whole.
fn longest_retention(sites: &[crate::sites::Site]) -> Option<u32> {
    match sites.iter().any(|site| site.retention_days.is_none()) {
        true => None,
        false => sites.iter().filter_map(|site| site.retention_days).max(),
    }
}

/// The first day every site still keeps on `today`: a cluster drops the message partitions of
/// the days before it whole. `None` while a site keeps its history forever.
pub fn first_day_kept_by_all(sites: &[crate::sites::Site], today: u32) -> Option<u32> {
    longest_retention(sites).map(|longest| first_day_kept(longest, today))
}

/// The first day a site with `retention_days` keeps on `today` ([`keeps`] of the days from it on).
pub fn first_day_kept(retention_days: u32, today: u32) -> u32 {
    (today + 1).saturating_sub(retention_days.max(1))
}

/// Each site with a retention and the first day it keeps on `today`: a cluster deletes the
/// site's messages of the earlier days from the partitions it keeps.
pub fn first_days_kept_by_site(sites: &[crate::sites::Site], today: u32) -> Vec<(String, u32)> {
    sites.iter().filter_map(|site| Some((site.key.clone(), first_day_kept(site.retention_days?, today)))).collect()
}

/// What retention would remove on `today`.
pub fn plan(transaction: &ReadTransaction, today: u32) -> Result<RetentionPlan, StorageError> {
    let sites = sites::list(transaction)?;
    let kept_forever: Vec<String> =
        sites.iter().filter(|site| site.retention_days.is_none()).map(|site| site.key.clone()).collect();
    let longest = longest_retention(&sites);
    let mut result = RetentionPlan { kept_forever, ..RetentionPlan::default() };
    let limited: Vec<(String, u32)> =
        sites.iter().filter_map(|site| Some((site.key.clone(), site.retention_days?))).collect();
    for day in messages::shard_days(transaction)? {
        if longest.is_some_and(|longest| !keeps(longest, day, today)) {
            let shard = transaction.open_table(tables::message_shard(&tables::message_shard_name(day)))?;
            let n_messages = shard.len()?;
            result.messages += n_messages;
            result.drop_days.push(DayDrop { date: crate::base::clock::day_to_date(day), day, messages: n_messages });
            continue;
        }
        let expired: HashSet<&str> =
            limited.iter().filter(|(_, days)| !keeps(*days, day, today)).map(|(site, _)| site.as_str()).collect();
        if expired.is_empty() {
            continue;
        }
        let mut counts: HashMap<String, u64> = HashMap::new();
        for_each_site_row(transaction, day, |site, _| {
            if expired.contains(site) {
                *counts.entry(site.to_owned()).or_default() += 1;
            }
        })?;
        let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
        counts.sort();
        for (site, n_messages) in counts {
            result.messages += n_messages;
            result.site_days.push(SiteDayDrop {
                site,
                date: crate::base::clock::day_to_date(day),
                day,
                messages: n_messages,
            });
        }
    }
    Ok(result)
}

/// Calls `visit(site, key)` for every message of a shard, within one read transaction (used
/// by the plan, which only counts).
fn for_each_site_row(
    transaction: &ReadTransaction,
    day: u32,
    mut visit: impl FnMut(&str, (u64, u64)),
) -> Result<(), StorageError> {
    let shard = transaction.open_table(tables::message_shard(&tables::message_shard_name(day)))?;
    let mut current: Option<(u64, String)> = None;
    for entry in shard.iter()? {
        let (key, _) = entry?;
        let (conversation_id, seq) = key.value();
        if current.as_ref().is_none_or(|(id, _)| *id != conversation_id) {
            let site = conversations::get(transaction, conversation_id)?.map(|found| found.site).unwrap_or_default();
            current = Some((conversation_id, site));
        }
        let site = current.as_ref().map(|(_, site)| site.as_str()).unwrap_or_default();
        visit(site, (conversation_id, seq));
    }
    Ok(())
}

/// Plans and, unless `dry_run`, applies retention as of now.
pub async fn run(store: &Store, search: &Search, dry_run: bool) -> Result<RetentionPlan, RetentionError> {
    let today = crate::base::clock::day_of(crate::base::clock::now_millis());
    let mut plan = store.read(move |transaction| plan(transaction, today)).await?;
    plan.dry_run = dry_run;
    if !dry_run {
        remove_expired_uploads(store, today).await?;
    }
    if dry_run || (plan.drop_days.is_empty() && plan.site_days.is_empty()) {
        return Ok(plan);
    }
    let dropped_days: BTreeSet<u32> = plan.drop_days.iter().map(|drop| drop.day).collect();
    let site_days: HashSet<(String, u32)> = plan.site_days.iter().map(|drop| (drop.site.clone(), drop.day)).collect();

    // 1. Dedup records of the removed messages.
    remove_client_ids(store, &dropped_days, &site_days).await?;
    // 2. Search documents.
    for day in &dropped_days {
        search.delete_day(*day, None).await?;
    }
    for (site, day) in &site_days {
        search.delete_day(*day, Some(site.clone())).await?;
    }
    // 3. Per-site rows (and their conversation days), then whole shards (and theirs).
    for drop in &plan.site_days {
        remove_site_rows(store, &drop.site, drop.day).await?;
    }
    remove_conversation_days(store, &dropped_days).await?;
    // 4. Visitors' verdicts on bot answers, which copy the question and the answer.
    let (expired_days, expired_site_days) = (dropped_days.clone(), site_days.clone());
    crate::bot::feedback::remove_expired(store, move |site, day| {
        expired_days.contains(&day) || expired_site_days.contains(&(site.to_owned(), day))
    })
    .await?;
    for day in dropped_days {
        let name = tables::message_shard_name(day);
        store
            .write(move |context| {
                context.transaction.delete_table(tables::message_shard(&name))?;
                Ok(Ok::<(), StorageError>(()))
            })
            .await?;
    }
    tracing::info!(
        days = plan.drop_days.len(),
        site_days = plan.site_days.len(),
        messages = plan.messages,
        "retention removed expired history"
    );
    Ok(plan)
}

/// Removes the files and records of attached uploads whose messages retention removes (see
/// `uploads::remove_expired`); sites that keep history forever keep their uploads.
async fn remove_expired_uploads(store: &Store, today: u32) -> Result<(), StorageError> {
    let retention_of: HashMap<String, u32> = store
        .read(|transaction| {
            Ok(sites::list(transaction)?
                .into_iter()
                .filter_map(|site| Some((site.key, site.retention_days?)))
                .collect())
        })
        .await?;
    if retention_of.is_empty() {
        return Ok(());
    }
    let expired = move |site: &str, day: u32| retention_of.get(site).is_some_and(|days| !keeps(*days, day, today));
    let n_removed = crate::chat::uploads::remove_expired(store, expired).await?;
    if n_removed > 0 {
        tracing::info!(uploads = n_removed, "retention removed uploads of expired history");
    }
    Ok(())
}

/// The site of each conversation, looked up once.
fn site_of<'a>(
    cache: &'a mut HashMap<u64, String>,
    transaction: &ReadTransaction,
    conversation_id: u64,
) -> Result<&'a str, StorageError> {
    if !cache.contains_key(&conversation_id) {
        let site = conversations::get(transaction, conversation_id)?.map(|found| found.site).unwrap_or_default();
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(conversation_id, site);
    }
    Ok(cache.get(&conversation_id).map(String::as_str).unwrap_or_default())
}

async fn remove_client_ids(
    store: &Store,
    dropped_days: &BTreeSet<u32>,
    site_days: &HashSet<(String, u32)>,
) -> Result<(), StorageError> {
    let mut after: Option<(u8, u64, String)> = None;
    let mut sites: HashMap<u64, String> = HashMap::new();
    loop {
        let (dropped, scanned, next, cache) = {
            let dropped_days = dropped_days.clone();
            let site_days = site_days.clone();
            let after = after.clone();
            let mut cache = std::mem::take(&mut sites);
            store
                .read(move |transaction| {
                    let table = transaction.open_table(tables::CLIENT_IDS)?;
                    let range = match &after {
                        Some((kind, id, client)) => table.range((
                            std::ops::Bound::Excluded((*kind, *id, client.as_str())),
                            std::ops::Bound::Unbounded,
                        ))?,
                        None => table.range::<(u8, u64, &str)>(..)?,
                    };
                    let mut dropped = Vec::new();
                    let mut scanned = 0;
                    let mut last = None;
                    for entry in range.take(SCAN_CHUNK) {
                        let (key, value) = entry?;
                        let (kind, id, client) = key.value();
                        scanned += 1;
                        last = Some((kind, id, client.to_owned()));
                        let (conversation_id, day) = messages::ack_location(value.value())?;
                        let expired = dropped_days.contains(&day)
                            || (!site_days.is_empty()
                                && site_days
                                    .contains(&(site_of(&mut cache, transaction, conversation_id)?.to_owned(), day)));
                        if expired {
                            dropped.push((kind, id, client.to_owned()));
                        }
                    }
                    Ok((dropped, scanned, last, cache))
                })
                .await?
        };
        sites = cache;
        for chunk in dropped.chunks(DELETE_CHUNK) {
            let chunk = chunk.to_vec();
            store
                .write(move |context| {
                    let mut table = context.transaction.open_table(tables::CLIENT_IDS)?;
                    for (kind, id, client) in &chunk {
                        table.remove((*kind, *id, client.as_str()))?;
                    }
                    Ok(Ok::<(), StorageError>(()))
                })
                .await?;
        }
        if scanned < SCAN_CHUNK {
            return Ok(());
        }
        after = next;
    }
}

async fn remove_conversation_days(store: &Store, dropped_days: &BTreeSet<u32>) -> Result<(), StorageError> {
    if dropped_days.is_empty() {
        return Ok(());
    }
    let mut after: Option<(u64, u32)> = None;
    loop {
        let dropped_days = dropped_days.clone();
        let (dropped, scanned, next) = store
            .read(move |transaction| {
                let table = transaction.open_table(tables::CONVERSATION_DAYS)?;
                let range = match after {
                    Some(key) => table.range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))?,
                    None => table.range::<(u64, u32)>(..)?,
                };
                let mut dropped = Vec::new();
                let mut scanned = 0;
                let mut last = None;
                for entry in range.take(SCAN_CHUNK) {
                    let key = entry?.0.value();
                    scanned += 1;
                    last = Some(key);
                    if dropped_days.contains(&key.1) {
                        dropped.push(key);
                    }
                }
                Ok((dropped, scanned, last))
            })
            .await?;
        delete_conversation_days(store, dropped).await?;
        if scanned < SCAN_CHUNK {
            return Ok(());
        }
        after = next;
    }
}

async fn delete_conversation_days(store: &Store, keys: Vec<(u64, u32)>) -> Result<(), StorageError> {
    for chunk in keys.chunks(DELETE_CHUNK) {
        let chunk = chunk.to_vec();
        store
            .write(move |context| {
                let mut table = context.transaction.open_table(tables::CONVERSATION_DAYS)?;
                for key in &chunk {
                    table.remove(*key)?;
                }
                Ok(Ok::<(), StorageError>(()))
            })
            .await?;
    }
    Ok(())
}

async fn remove_site_rows(store: &Store, site: &str, day: u32) -> Result<(), StorageError> {
    let mut after: Option<(u64, u64)> = None;
    let mut conversations_of_site: BTreeSet<u64> = BTreeSet::new();
    loop {
        let site_key = site.to_owned();
        let (rows, scanned, next) = store
            .read(move |transaction| {
                let chunk = messages::scan_shard(transaction, day, after, SCAN_CHUNK)?;
                let mut cache = HashMap::new();
                let mut rows = Vec::new();
                for (key, _) in &chunk {
                    if site_of(&mut cache, transaction, key.conversation_id)? == site_key {
                        rows.push((key.conversation_id, key.seq));
                    }
                }
                let last = chunk.last().map(|(key, _)| (key.conversation_id, key.seq));
                Ok((rows, chunk.len(), last))
            })
            .await?;
        conversations_of_site.extend(rows.iter().map(|(conversation_id, _)| *conversation_id));
        let name = tables::message_shard_name(day);
        for chunk in rows.chunks(DELETE_CHUNK) {
            let chunk = chunk.to_vec();
            let name = name.clone();
            store
                .write(move |context| {
                    let mut shard = context.transaction.open_table(tables::message_shard(&name))?;
                    for key in &chunk {
                        shard.remove(*key)?;
                    }
                    Ok(Ok::<(), StorageError>(()))
                })
                .await?;
        }
        if scanned < SCAN_CHUNK {
            break;
        }
        after = next;
    }
    // Every message of these conversations in this shard is gone (a conversation has one site).
    delete_conversation_days(store, conversations_of_site.into_iter().map(|id| (id, day)).collect()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(key: &str, retention_days: Option<u32>) -> crate::sites::Site {
        crate::sites::Site { key: key.into(), retention_days, ..crate::sites::Site::default() }
    }

    #[test]
    fn the_first_day_kept_by_all_is_the_first_the_longest_retention_keeps() {
        let today = 20_000;
        let sites = [site("a", Some(30)), site("b", Some(7))];
        let first = first_day_kept_by_all(&sites, today).unwrap();
        assert!(keeps(30, first, today) && !keeps(30, first - 1, today));
        assert_eq!(first_day_kept_by_all(&[site("a", Some(1))], today), Some(today));
        assert_eq!(first_day_kept_by_all(&[site("a", Some(7)), site("b", None)], today), None);
        assert_eq!(first_day_kept_by_all(&[], today), None);
    }
}

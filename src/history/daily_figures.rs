//! Daily figures: what reports count, kept up to date as conversations change, so a report of a
//! year reads at most 366 rows per site, team and agent instead of every conversation and message.
//!
//! Two tables hold them (`report_cells_v1`, `report_messages_v1`), keyed by the day in the site's
//! time zone. A *cell* is what the conversations of one site, team and holding agent add to one
//! day: started (with first response times), closed (with resolution times, and whether nobody
//! answered), ratings by score. [`record`] runs before every commit of the writer: for each
//! conversation the batch changed it takes back what the conversation added before and adds what
//! it adds now, and it counts the batch's messages, so the figures change in the same commit as
//! the conversations. [`rebuild`] counts a site (or everything) again from the raw data: the
//! one-time backfill ([`migrate`]) and a change of a site's time zone. [`Tally::from_raw`] is the
//! same count done in memory, against which tests check the tables.
//!
//! The figures outlive retention: removing old messages leaves the counts of their days.

use std::collections::{BTreeMap, HashMap, HashSet};

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::base::clock;
use crate::chat::conversations::Conversation;
use crate::chat::delivery::CommittedEvent;
use crate::chat::messages::{self, MessageRecord};
use crate::chat::writes::ChatWrites;
use crate::protocol::SenderKind;
use crate::storage::writer::WriterExtension;
use crate::storage::{StorageError, Store, WriteContext, decode_json, decode_postcard, encode_postcard, tables};

/// The meta key of the figures' format; [`migrate`] counts everything again when it is older.
const VERSION_KEY: &str = "report_figures_version";
const VERSION: u64 = 1;

/// Conversations whose contribution the writer remembers between batches; past this it forgets
/// them all and reads the stored conversation again when one changes.
const RECORDED_LIMIT: usize = 100_000;

/// Where figures are kept: a day in the site's time zone, the site, the team (0 for none) and the
/// holding agent (0 for none).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellKey {
    pub day: u32,
    pub site: String,
    pub team: u64,
    pub agent: u64,
}

/// Messages of one day, site and sender (an agent's id, or 0 for visitors, the bot and the system).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageKey {
    pub day: u32,
    pub site: String,
    pub sender: u64,
}

/// The figures of one cell. Times are kept as sorted samples, so medians and percentiles over any
/// set of cells are exact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCell {
    /// Conversations started.
    pub created: u64,
    /// Conversations closed.
    pub closed: u64,
    /// Conversations closed without an agent's answer while waiting for a person.
    pub missed: u64,
    /// Milliseconds from start to the first agent answer, of the conversations started (sorted).
    pub first_responses: Vec<i64>,
    /// Milliseconds from start to close, of the conversations closed (sorted).
    pub resolutions: Vec<i64>,
    /// Ratings given, by score: index 0 counts score 1.
    pub satisfaction: [u64; 5],
}

impl DayCell {
    fn is_empty(&self) -> bool {
        *self == DayCell::default()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sign {
    Add,
    Remove,
}

fn count(value: &mut u64, sign: Sign) {
    match sign {
        Sign::Add => *value += 1,
        Sign::Remove => *value = value.saturating_sub(1),
    }
}

fn sample(samples: &mut Vec<i64>, value: i64, sign: Sign) {
    match sign {
        Sign::Add => {
            let at = samples.partition_point(|&sample| sample < value);
            samples.insert(at, value);
        }
        Sign::Remove => {
            if let Ok(at) = samples.binary_search(&value) {
                samples.remove(at);
            }
        }
    }
}

/// What one conversation adds to the figures, in its site's time zone.
#[derive(Clone, Debug, PartialEq)]
struct Contribution {
    site: String,
    team: u64,
    agent: u64,
    /// The day it started, and its first response time.
    created: (u32, Option<i64>),
    /// The day it closed, its resolution time, and whether it was missed.
    closed: Option<(u32, i64, bool)>,
    /// The day it was rated, and the score.
    rated: Option<(u32, u8)>,
}

impl Contribution {
    fn of(conversation: &Conversation, zone: &jiff::tz::TimeZone) -> Contribution {
        let day = |millis| clock::day_in(zone, millis);
        let first_response = conversation.first_response_at.map(|at| (at - conversation.created_at).max(0));
        Contribution {
            site: conversation.site.clone(),
            team: conversation.team.unwrap_or(0),
            agent: conversation.assigned_agent.unwrap_or(0),
            created: (day(conversation.created_at), first_response),
            closed: conversation.closed_at.map(|closed_at| {
                let missed = conversation.first_response_at.is_none() && !conversation.bot_active;
                (day(closed_at), (closed_at - conversation.created_at).max(0), missed)
            }),
            rated: conversation
                .rating
                .as_ref()
                .filter(|rating| (1..=5).contains(&rating.score))
                .map(|rating| (day(rating.rated_at), rating.score)),
        }
    }

    fn key(&self, day: u32) -> CellKey {
        CellKey { day, site: self.site.clone(), team: self.team, agent: self.agent }
    }

    fn keys(&self) -> impl Iterator<Item = CellKey> + '_ {
        let days = [Some(self.created.0), self.closed.map(|closed| closed.0), self.rated.map(|rated| rated.0)];
        days.into_iter().flatten().map(|day| self.key(day))
    }

    fn apply(&self, sign: Sign, cells: &mut BTreeMap<CellKey, DayCell>) {
        let (day, first_response) = self.created;
        let cell = cells.entry(self.key(day)).or_default();
        count(&mut cell.created, sign);
        if let Some(first_response) = first_response {
            sample(&mut cell.first_responses, first_response, sign);
        }
        if let Some((day, resolution, missed)) = self.closed {
            let cell = cells.entry(self.key(day)).or_default();
            count(&mut cell.closed, sign);
            sample(&mut cell.resolutions, resolution, sign);
            if missed {
                count(&mut cell.missed, sign);
            }
        }
        if let Some((day, score)) = self.rated {
            count(&mut cells.entry(self.key(day)).or_default().satisfaction[usize::from(score - 1)], sign);
        }
    }
}

/// The fields of a conversation its contribution is worked out from (with its site's time zone,
/// which changes only through [`rebuild`]). Most batches change a conversation only by a new
/// message, which changes none of them, so comparing these few numbers spares working the
/// contribution out again (days in the site's time zone, its site copied) per message.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Inputs {
    created_at: i64,
    first_response_at: Option<i64>,
    closed_at: Option<i64>,
    rated: Option<(u8, i64)>,
    team: Option<u64>,
    assigned_agent: Option<u64>,
    bot_active: bool,
}

impl Inputs {
    fn of(conversation: &Conversation) -> Inputs {
        Inputs {
            created_at: conversation.created_at,
            first_response_at: conversation.first_response_at,
            closed_at: conversation.closed_at,
            rated: conversation.rating.as_ref().map(|rating| (rating.score, rating.rated_at)),
            team: conversation.team,
            assigned_agent: conversation.assigned_agent,
            bot_active: conversation.bot_active,
        }
    }
}

/// The key a message counts under, or `None` for an internal note.
fn message_key(site: &str, record: &MessageRecord, zone: &jiff::tz::TimeZone) -> Option<MessageKey> {
    let MessageRecord { created_at, sender_kind, sender_id, internal, .. } = *record;
    message_key_of(site, MessageFacts { created_at, sender_kind, sender_id, internal }, zone)
}

/// What the figures read of a message.
#[derive(Clone, Copy, Debug)]
pub struct MessageFacts {
    pub created_at: i64,
    pub sender_kind: SenderKind,
    pub sender_id: u64,
    pub internal: bool,
}

fn message_key_of(site: &str, message: MessageFacts, zone: &jiff::tz::TimeZone) -> Option<MessageKey> {
    if message.internal {
        return None;
    }
    let sender = if message.sender_kind == SenderKind::Agent { message.sender_id } else { 0 };
    Some(MessageKey { day: clock::day_in(zone, message.created_at), site: site.to_owned(), sender })
}

/// Every figure counted from the raw data, in memory.
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    pub cells: BTreeMap<CellKey, DayCell>,
    pub messages: BTreeMap<MessageKey, u64>,
}

impl Tally {
    /// Counts every conversation and message (of one site, or all) from a read transaction: the
    /// reference the tables are checked against.
    pub fn from_raw(transaction: &ReadTransaction, site: Option<&str>) -> Result<Tally, StorageError> {
        let zones = Zones::from_sites(crate::sites::list(transaction)?);
        let conversations = transaction.open_table(tables::CONVERSATIONS)?;
        let mut tally = Tally::default();
        let sites_of = tally.add_conversations(&conversations, site, &zones)?;
        for day in messages::shard_days(transaction)? {
            messages::visit_shard(transaction, day, |conversation_id, record| {
                tally.add_message(&sites_of, conversation_id, record, &zones);
            })?;
        }
        Ok(tally)
    }

    /// Adds every stored conversation (of one site, or all); returns their sites by id.
    fn add_conversations(
        &mut self,
        conversations: &impl ReadableTable<u64, &'static [u8]>,
        site: Option<&str>,
        zones: &Zones,
    ) -> Result<HashMap<u64, String>, StorageError> {
        let mut sites_of = HashMap::new();
        for entry in conversations.iter()? {
            let (_, value) = entry?;
            let conversation: Conversation = decode_json(value.value())?;
            if site.is_some_and(|site| site != conversation.site) {
                continue;
            }
            Contribution::of(&conversation, zones.get(&conversation.site)).apply(Sign::Add, &mut self.cells);
            sites_of.insert(conversation.id, conversation.site);
        }
        Ok(sites_of)
    }

    /// Adds one conversation, counted in `zone`.
    pub fn add_conversation(&mut self, conversation: &Conversation, zone: &jiff::tz::TimeZone) {
        Contribution::of(conversation, zone).apply(Sign::Add, &mut self.cells);
    }

    /// Adds one message of a conversation of `site`, counted in `zone`.
    pub fn add_site_message(&mut self, site: &str, record: &MessageRecord, zone: &jiff::tz::TimeZone) {
        if let Some(key) = message_key(site, record, zone) {
            *self.messages.entry(key).or_default() += 1;
        }
    }

    /// Adds `n` messages of a conversation of `site` alike in what the figures read of them.
    pub fn add_site_messages(&mut self, site: &str, message: MessageFacts, zone: &jiff::tz::TimeZone, n: u64) {
        if let Some(key) = message_key_of(site, message, zone) {
            *self.messages.entry(key).or_default() += n;
        }
    }

    fn add_message(
        &mut self,
        sites_of: &HashMap<u64, String>,
        conversation_id: u64,
        record: &MessageRecord,
        zones: &Zones,
    ) {
        if let Some(site) = sites_of.get(&conversation_id) {
            self.add_site_message(site, record, zones.get(site));
        }
    }

    /// The figures stored in the tables (of one site, or all), read the same way.
    pub fn stored(transaction: &ReadTransaction, site: Option<&str>) -> Result<Tally, StorageError> {
        let mut tally = Tally::default();
        for entry in transaction.open_table(tables::REPORT_CELLS)?.iter()? {
            let (key, value) = entry?;
            let (day, cell_site, team, agent) = key.value();
            if site.is_none_or(|site| site == cell_site) {
                let key = CellKey { day, site: cell_site.to_owned(), team, agent };
                tally.cells.insert(key, decode_postcard(value.value())?);
            }
        }
        for entry in transaction.open_table(tables::REPORT_MESSAGES)?.iter()? {
            let (key, value) = entry?;
            let (day, message_site, sender) = key.value();
            if site.is_none_or(|site| site == message_site) {
                tally.messages.insert(MessageKey { day, site: message_site.to_owned(), sender }, value.value());
            }
        }
        Ok(tally)
    }
}

/// Each site's time zone, UTC for a site that no longer exists.
pub struct Zones(HashMap<String, jiff::tz::TimeZone>);

impl Zones {
    pub fn from_sites(sites: Vec<crate::sites::Site>) -> Zones {
        Zones(sites.into_iter().map(|site| (site.key.clone(), site.time_zone())).collect())
    }

    pub fn get(&self, site: &str) -> &jiff::tz::TimeZone {
        static UTC: jiff::tz::TimeZone = jiff::tz::TimeZone::UTC;
        self.0.get(site).unwrap_or(&UTC)
    }

    /// The zones of `sites` inside the writer: those the writer knows, and the others read.
    fn load<'s>(context: &mut WriteContext<'_>, sites: impl Iterator<Item = &'s str>) -> Result<Zones, StorageError> {
        let mut zones = HashMap::new();
        let known = &context.extension::<DailyFiguresState>().zones;
        let mut unknown = Vec::new();
        for key in sites {
            match known.get(key) {
                Some(zone) => {
                    zones.insert(key.to_owned(), zone.clone());
                }
                None => unknown.push(key.to_owned()),
            }
        }
        if !unknown.is_empty() {
            let table = context.transaction.open_table(tables::SITES)?;
            for key in unknown {
                if let Some(value) = table.get(key.as_str())? {
                    let site: crate::sites::Site = decode_json(value.value())?;
                    zones.insert(key, site.time_zone());
                }
            }
            drop(table);
            context
                .extension::<DailyFiguresState>()
                .zones
                .extend(zones.iter().map(|(key, zone)| (key.clone(), zone.clone())));
        }
        Ok(Zones(zones))
    }
}

/// What the writer remembers between batches: each recently changed conversation's contribution
/// as stored, and the fields it was worked out from, so a message that changes nothing the
/// figures count costs no read and no new contribution, and the sites' time zones (a zone changes
/// only through [`rebuild`], which forgets them).
#[derive(Default)]
pub struct DailyFiguresState {
    recorded: HashMap<u64, (Inputs, Contribution)>,
    zones: HashMap<String, jiff::tz::TimeZone>,
}

impl WriterExtension for DailyFiguresState {
    fn trim(&mut self) {
        if self.recorded.len() > RECORDED_LIMIT {
            self.recorded.clear();
        }
    }
}

/// Brings the figures up to date with what the batch changed: a step `server.rs` runs before
/// each commit, so the figures and the conversations commit together.
pub fn record(context: &mut WriteContext<'_>) -> Result<(), StorageError> {
    let changed = context.changed_conversations();
    let published_messages: Vec<(String, std::sync::Arc<MessageRecord>)> = context
        .published()
        .iter()
        .filter_map(|event| match event {
            CommittedEvent::Message { site, record, .. } => Some((site.clone(), record.clone())),
            _ => None,
        })
        .collect();
    if changed.is_empty() && published_messages.is_empty() {
        return Ok(());
    }
    let sites = changed.iter().map(|conversation| conversation.site.as_str());
    let zones = Zones::load(context, sites.chain(published_messages.iter().map(|(site, _)| site.as_str())))?;

    // What each changed conversation added before this batch, and adds now.
    let mut moves = Vec::new();
    let mut unknown = Vec::new();
    for conversation in &changed {
        let inputs = Inputs::of(conversation);
        let recorded = &mut context.extension::<DailyFiguresState>().recorded;
        let before = match recorded.get_mut(&conversation.id) {
            Some((seen, _)) if *seen == inputs => continue,
            Some((seen, before)) => Some((seen, before)),
            None => None,
        };
        let now = Contribution::of(conversation, zones.get(&conversation.site));
        match before {
            Some((seen, before)) if *before == now => *seen = inputs,
            Some((_, before)) => moves.push((Some(before.clone()), now, inputs, conversation.id)),
            None => unknown.push((now, inputs, conversation.id)),
        }
    }
    if !unknown.is_empty() {
        let table = context.transaction.open_table(tables::CONVERSATIONS)?;
        for (now, inputs, id) in unknown {
            let stored: Option<Conversation> = table.get(id)?.map(|value| decode_json(value.value())).transpose()?;
            let before = stored.map(|stored| Contribution::of(&stored, zones.get(&stored.site)));
            if before.as_ref() != Some(&now) {
                moves.push((before, now, inputs, id));
            } else {
                context.extension::<DailyFiguresState>().recorded.insert(id, (inputs, now));
            }
        }
    }

    if !moves.is_empty() {
        let mut table = context.transaction.open_table(tables::REPORT_CELLS)?;
        let mut cells = BTreeMap::new();
        for key in
            moves.iter().flat_map(|(before, now, _, _)| before.iter().flat_map(Contribution::keys).chain(now.keys()))
        {
            if cells.contains_key(&key) {
                continue;
            }
            let stored = table.get((key.day, key.site.as_str(), key.team, key.agent))?;
            let cell: DayCell = stored.map(|value| decode_postcard(value.value())).transpose()?.unwrap_or_default();
            cells.insert(key, cell);
        }
        for (before, now, _, _) in &moves {
            if let Some(before) = before {
                before.apply(Sign::Remove, &mut cells);
            }
            now.apply(Sign::Add, &mut cells);
        }
        write_cells(&mut table, cells)?;
        let recorded = &mut context.extension::<DailyFiguresState>().recorded;
        for (_, now, inputs, id) in moves {
            recorded.insert(id, (inputs, now));
        }
    }

    if !published_messages.is_empty() {
        let mut counts: BTreeMap<MessageKey, u64> = BTreeMap::new();
        for (site, record) in &published_messages {
            if let Some(key) = message_key(site, record, zones.get(site)) {
                *counts.entry(key).or_default() += 1;
            }
        }
        let mut table = context.transaction.open_table(tables::REPORT_MESSAGES)?;
        for (key, added) in counts {
            let stored = table.get((key.day, key.site.as_str(), key.sender))?.map(|value| value.value()).unwrap_or(0);
            table.insert((key.day, key.site.as_str(), key.sender), stored + added)?;
        }
    }
    Ok(())
}

fn write_cells(
    table: &mut crate::storage::commit_log::LoggedTable<'_, (u32, &'static str, u64, u64), &'static [u8]>,
    cells: BTreeMap<CellKey, DayCell>,
) -> Result<(), StorageError> {
    for (key, cell) in cells {
        let key = (key.day, key.site.as_str(), key.team, key.agent);
        if cell.is_empty() {
            table.remove(key)?;
        } else {
            table.insert(key, encode_postcard(&cell).as_slice())?;
        }
    }
    Ok(())
}

/// Counts the figures of one site (or of all) again from the stored conversations and messages,
/// inside a writer operation. Messages this batch already published are left to [`record`].
pub fn rebuild(context: &mut WriteContext<'_>, site: Option<&str>) -> Result<(), StorageError> {
    let state = context.extension::<DailyFiguresState>();
    state.recorded.clear();
    state.zones.clear();
    let in_batch: HashSet<u64> = context
        .published()
        .iter()
        .filter_map(|event| match event {
            CommittedEvent::Message { record, .. } => Some(record.lsn),
            _ => None,
        })
        .collect();
    let zones = {
        let table = context.transaction.open_table(tables::SITES)?;
        let mut sites = Vec::new();
        for entry in table.iter()? {
            sites.push(decode_json::<crate::sites::Site>(entry?.1.value())?);
        }
        Zones::from_sites(sites)
    };
    let mut tally = Tally::default();
    let sites_of = {
        let conversations = context.transaction.open_table(tables::CONVERSATIONS)?;
        tally.add_conversations(&conversations, site, &zones)?
    };
    let mut days: Vec<u32> = Vec::new();
    {
        let conversation_days = context.transaction.open_table(tables::CONVERSATION_DAYS)?;
        for entry in conversation_days.iter()? {
            let (conversation_id, day) = entry?.0.value();
            if sites_of.contains_key(&conversation_id) {
                days.push(day);
            }
        }
    }
    days.sort_unstable();
    days.dedup();
    for day in days {
        let name = tables::message_shard_name(day);
        let shard = context.transaction.open_table(tables::message_shard(&name))?;
        for entry in shard.iter()? {
            let (key, value) = entry?;
            let record = messages::decode_record(value.value())?;
            if !in_batch.contains(&record.lsn) {
                tally.add_message(&sites_of, key.value().0, &record, &zones);
            }
        }
    }

    let mut cells = context.transaction.open_table(tables::REPORT_CELLS)?;
    cells.retain(|(_, cell_site, _, _), _| site.is_some_and(|site| site != cell_site))?;
    write_cells(&mut cells, tally.cells)?;
    drop(cells);
    let mut counts = context.transaction.open_table(tables::REPORT_MESSAGES)?;
    counts.retain(|(_, message_site, _), _| site.is_some_and(|site| site != message_site))?;
    for (key, count) in tally.messages {
        counts.insert((key.day, key.site.as_str(), key.sender), count)?;
    }
    Ok(())
}

/// Counts every site's figures again from the raw data, in one write.
pub async fn recount(store: &Store) -> Result<(), StorageError> {
    store
        .write(|context| {
            rebuild(context, None)?;
            Ok(Ok::<(), StorageError>(()))
        })
        .await
}

/// Counts every figure from the raw data once, the first time a server of this version opens the
/// database (an older one kept no figures); later changes keep them up to date.
pub async fn migrate(store: &Store) -> Result<(), StorageError> {
    let version = store.read(|transaction| crate::storage::read_meta(transaction, VERSION_KEY)).await?;
    if version.is_some_and(|version| version >= VERSION) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    store
        .write(|context| {
            rebuild(context, None)?;
            context.transaction.open_table(tables::META)?.insert(VERSION_KEY, VERSION)?;
            Ok(Ok::<(), StorageError>(()))
        })
        .await?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "daily report figures counted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::conversations::Rating;

    #[test]
    fn a_change_moves_a_conversation_between_cells() {
        let zone = jiff::tz::TimeZone::UTC;
        let day = clock::MILLIS_PER_DAY;
        let open = Conversation { id: 1, site: "a".into(), created_at: 10 * day, ..Conversation::default() };
        let answered =
            Conversation { first_response_at: Some(10 * day + 5_000), assigned_agent: Some(7), ..open.clone() };
        let closed = Conversation {
            closed_at: Some(11 * day),
            rating: Some(Rating { score: 4, comment: String::new(), rated_at: 11 * day }),
            ..answered.clone()
        };
        let mut cells = BTreeMap::new();
        Contribution::of(&open, &zone).apply(Sign::Add, &mut cells);
        for (before, now) in [(&open, &answered), (&answered, &closed)] {
            Contribution::of(before, &zone).apply(Sign::Remove, &mut cells);
            Contribution::of(now, &zone).apply(Sign::Add, &mut cells);
        }
        cells.retain(|_, cell| !cell.is_empty());
        let key = |day, agent| CellKey { day, site: "a".into(), team: 0, agent };
        assert_eq!(cells.keys().cloned().collect::<Vec<_>>(), [key(10, 7), key(11, 7)]);
        assert_eq!(cells[&key(10, 7)], DayCell { created: 1, first_responses: vec![5_000], ..DayCell::default() });
        let second = &cells[&key(11, 7)];
        assert_eq!((second.closed, second.missed, second.satisfaction), (1, 0, [0, 0, 0, 1, 0]));
        assert_eq!(second.resolutions, [day]);
    }
}

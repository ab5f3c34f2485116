//! Reports: conversation figures per day and per agent for a date range, optionally for one
//! site or one team, drawn by the admin pages (`admin/reports.rs`) as charts, tables and CSV.
//!
//! Days are calendar days in each site's time zone. Each figure counts on the day its event
//! happened: a conversation on the day it started (with its first response time), a close on the
//! day it closed (with its resolution time), a rating on the day it was given, a message on the
//! day it was sent. A report reads the daily figures (`history::daily_figures`), one row per day
//! and site, team and agent, so its cost grows with the days asked for, not with the history
//! stored; [`compute_from_raw`] counts the same report from every conversation and message, the
//! reference the tests hold the daily figures to. The admin pages ask through [`ReportStore`],
//! which a cluster node answers by counting on demand (`cluster::reports`).

use std::collections::HashMap;

use redb::ReadTransaction;

use crate::base::clock;
use crate::history::daily_figures::{CellKey, DayCell, MessageKey, Tally};
use crate::people::agents::{self, Agent};
use crate::people::teams::Team;
use crate::storage::{StorageError, decode_postcard, tables};

/// The longest range a report covers, in days: a year, leap day included.
pub const MAX_RANGE_DAYS: u32 = 366;

/// The range a report covers when none is given: the last 30 days, today included.
pub const DEFAULT_RANGE_DAYS: u32 = 30;

/// Which conversations a report covers.
#[derive(Clone, Debug)]
pub struct ReportFilter {
    /// First and last day (days since 1970-01-01 of the calendar date), inclusive.
    pub from_day: u32,
    pub to_day: u32,
    /// Only this site's conversations.
    pub site: Option<String>,
    /// Only conversations waiting for this team or held by one of its members.
    pub team: Option<Team>,
}

impl ReportFilter {
    /// The default range ending today: `DEFAULT_RANGE_DAYS` days.
    pub fn default_days(today: u32) -> (u32, u32) {
        (today.saturating_sub(DEFAULT_RANGE_DAYS - 1), today)
    }

    /// Reads a `YYYY-MM-DD` range of at most [`MAX_RANGE_DAYS`] days, or says what is wrong.
    pub fn parse_days(from: &str, to: &str) -> Result<(u32, u32), String> {
        let (from_day, to_day) = crate::history::export::ExportRequest::dates(from, to)?;
        let n_days = to_day - from_day + 1;
        if n_days > MAX_RANGE_DAYS {
            return Err(format!("the range is {n_days} days long; choose at most {MAX_RANGE_DAYS} days"));
        }
        Ok((from_day, to_day))
    }

    /// The number of days in the range.
    pub fn n_days(&self) -> usize {
        (self.to_day - self.from_day + 1) as usize
    }

    /// Whether the conversations of a cell count: those of the site, and those waiting for the
    /// team or held by one of its members.
    fn covers(&self, key: &CellKey) -> bool {
        self.site.as_ref().is_none_or(|site| *site == key.site)
            && self.team.as_ref().is_none_or(|team| {
                (key.team != 0 && key.team == team.id) || (key.agent != 0 && team.members.contains(&key.agent))
            })
    }

    /// Whether messages count: those of the site, and with a team those its members sent.
    fn covers_messages(&self, key: &MessageKey) -> bool {
        self.site.as_ref().is_none_or(|site| *site == key.site)
            && self.team.as_ref().is_none_or(|team| key.sender != 0 && team.members.contains(&key.sender))
    }

    /// The index in the range of `day`, if it falls inside.
    fn day_index(&self, day: u32) -> Option<usize> {
        (self.from_day..=self.to_day).contains(&day).then(|| (day - self.from_day) as usize)
    }
}

/// The figures of one day, or of the whole range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Conversations started.
    pub created: u64,
    /// Conversations closed.
    pub closed: u64,
    /// Conversations closed that no agent answered while the visitor waited for a person.
    pub missed: u64,
    /// Messages sent to the conversation, by anyone (internal notes not counted).
    pub messages: u64,
    /// Conversations started that an agent answered (the first response samples).
    pub answered: u64,
    /// From start to the first agent answer, over the conversations started.
    pub median_first_response_ms: Option<i64>,
    pub p90_first_response_ms: Option<i64>,
    /// From start to close, over the conversations closed.
    pub median_resolution_ms: Option<i64>,
    /// Ratings given.
    pub ratings: u64,
    pub average_rating: Option<f64>,
}

/// One day's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct DayFigures {
    pub day: u32,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub figures: Figures,
}

/// One agent's figures over the range.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentFigures {
    pub agent_id: u64,
    pub name: String,
    pub email: String,
    /// Conversations started in the range that the agent holds (or held when they closed).
    pub conversations: u64,
    /// Messages the agent sent to visitors in the range (internal notes not counted).
    pub messages: u64,
    /// Median first response time of the conversations counted in `conversations`.
    pub median_first_response_ms: Option<i64>,
}

/// Everything a report shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Every day of the range, oldest first, empty days included.
    pub days: Vec<DayFigures>,
    pub totals: Figures,
    /// Ratings by score: index 0 counts score 1, index 4 score 5.
    pub satisfaction: [u64; 5],
    /// Agents with a conversation or a message in the range: most conversations first.
    pub agents: Vec<AgentFigures>,
}

/// Computes the report of `filter` from the daily figures, in one read transaction.
pub fn compute(transaction: &ReadTransaction, filter: &ReportFilter) -> Result<Report, StorageError> {
    let mut builder = ReportBuilder::new(filter);
    let (from, past_end) = (filter.from_day, filter.to_day + 1);
    let cells = transaction.open_table(tables::REPORT_CELLS)?;
    for entry in cells.range::<(u32, &str, u64, u64)>((from, "", 0, 0)..(past_end, "", 0, 0))? {
        let (key, value) = entry?;
        let (day, site, team, agent) = key.value();
        let key = CellKey { day, site: site.to_owned(), team, agent };
        if filter.covers(&key) {
            builder.add_cell(&key, &decode_postcard(value.value())?);
        }
    }
    let counts = transaction.open_table(tables::REPORT_MESSAGES)?;
    for entry in counts.range::<(u32, &str, u64)>((from, "", 0)..(past_end, "", 0))? {
        let (key, value) = entry?;
        let (day, site, sender) = key.value();
        builder.add_messages(&MessageKey { day, site: site.to_owned(), sender }, value.value());
    }
    Ok(builder.finish(&agents::list(transaction)?))
}

/// Computes the report of `filter` from every stored conversation and message: what [`compute`]
/// answers, the slow way.
pub fn compute_from_raw(transaction: &ReadTransaction, filter: &ReportFilter) -> Result<Report, StorageError> {
    let tally = Tally::from_raw(transaction, filter.site.as_deref())?;
    Ok(from_tally(&tally, filter, &agents::list(transaction)?))
}

/// The report of `filter` over figures counted in memory.
pub fn from_tally(tally: &Tally, filter: &ReportFilter, known_agents: &[Agent]) -> Report {
    let mut builder = ReportBuilder::new(filter);
    for (key, cell) in &tally.cells {
        if filter.covers(key) {
            builder.add_cell(key, cell);
        }
    }
    for (key, count) in &tally.messages {
        builder.add_messages(key, *count);
    }
    builder.finish(known_agents)
}

/// What a site (or every site) did so far today, each site's today in its own time zone.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Today {
    /// Conversations started today.
    pub conversations: u64,
    /// Messages sent today (internal notes not counted).
    pub messages: u64,
    /// Conversations closed today that no agent answered.
    pub missed: u64,
    /// Median first response of today's conversations that were answered.
    pub median_first_response_ms: Option<i64>,
}

/// Today's figures of one site (or of all), at `now`.
pub fn today(transaction: &ReadTransaction, site: Option<&str>, now: i64) -> Result<Today, StorageError> {
    let cells = transaction.open_table(tables::REPORT_CELLS)?;
    let counts = transaction.open_table(tables::REPORT_MESSAGES)?;
    let mut sum = TodaySum::default();
    for known in crate::sites::list(transaction)? {
        if site.is_some_and(|site| site != known.key) {
            continue;
        }
        let day = clock::day_in(&known.time_zone(), now);
        let key = known.key.as_str();
        for entry in cells.range::<(u32, &str, u64, u64)>((day, key, 0, 0)..=(day, key, u64::MAX, u64::MAX))? {
            sum.add_cell(&decode_postcard(entry?.1.value())?);
        }
        for entry in counts.range::<(u32, &str, u64)>((day, key, 0)..=(day, key, u64::MAX))? {
            sum.today.messages += entry?.1.value();
        }
    }
    Ok(sum.finish())
}

/// [`today`] over figures counted in memory (`tally` holding at least each site's today).
pub fn today_of_tally(tally: &Tally, sites: &[crate::sites::Site], site: Option<&str>, now: i64) -> Today {
    let today_of: HashMap<&str, u32> = sites
        .iter()
        .filter(|known| site.is_none_or(|site| site == known.key))
        .map(|known| (known.key.as_str(), clock::day_in(&known.time_zone(), now)))
        .collect();
    let is_today = |day: u32, site: &str| today_of.get(site) == Some(&day);
    let mut sum = TodaySum::default();
    for (_, cell) in tally.cells.iter().filter(|(key, _)| is_today(key.day, &key.site)) {
        sum.add_cell(cell);
    }
    for (_, count) in tally.messages.iter().filter(|(key, _)| is_today(key.day, &key.site)) {
        sum.today.messages += count;
    }
    sum.finish()
}

/// [`Today`] summed from the cells and message counts of each site's today.
#[derive(Default)]
struct TodaySum {
    today: Today,
    first_responses: Vec<i64>,
}

impl TodaySum {
    fn add_cell(&mut self, cell: &DayCell) {
        self.today.conversations += cell.created;
        self.today.missed += cell.missed;
        self.first_responses.extend_from_slice(&cell.first_responses);
    }

    fn finish(mut self) -> Today {
        self.first_responses.sort_unstable();
        self.today.median_first_response_ms = median(&self.first_responses);
        self.today
    }
}

/// Where reports are read: the appliance's daily figures, or a cluster's conversations and
/// messages counted on demand (`cluster::reports`); both build a [`Report`] the same way.
pub trait ReportStore: Send + Sync {
    /// The report of `filter`.
    fn report(&self, filter: ReportFilter) -> impl std::future::Future<Output = Result<Report, StorageError>> + Send;

    /// What a site (or every site) did so far today, at `now`.
    fn today(
        &self,
        site: Option<String>,
        now: i64,
    ) -> impl std::future::Future<Output = Result<Today, StorageError>> + Send;
}

impl ReportStore for crate::storage::Store {
    async fn report(&self, filter: ReportFilter) -> Result<Report, StorageError> {
        self.read(move |transaction| compute(transaction, &filter)).await
    }

    async fn today(&self, site: Option<String>, now: i64) -> Result<Today, StorageError> {
        self.read(move |transaction| today(transaction, site.as_deref(), now)).await
    }
}

/// The samples behind one [`Figures`].
#[derive(Default)]
struct Samples {
    created: u64,
    closed: u64,
    missed: u64,
    messages: u64,
    first_responses: Vec<i64>,
    resolutions: Vec<i64>,
    ratings: u64,
    rating_sum: u64,
}

impl Samples {
    fn add(&mut self, cell: &DayCell) {
        self.created += cell.created;
        self.closed += cell.closed;
        self.missed += cell.missed;
        self.first_responses.extend_from_slice(&cell.first_responses);
        self.resolutions.extend_from_slice(&cell.resolutions);
        for (score, count) in (1..=5u64).zip(cell.satisfaction) {
            self.ratings += count;
            self.rating_sum += score * count;
        }
    }

    fn finish(mut self) -> Figures {
        self.first_responses.sort_unstable();
        self.resolutions.sort_unstable();
        Figures {
            created: self.created,
            closed: self.closed,
            missed: self.missed,
            messages: self.messages,
            answered: self.first_responses.len() as u64,
            median_first_response_ms: median(&self.first_responses),
            p90_first_response_ms: percentile(&self.first_responses, 90.0),
            median_resolution_ms: median(&self.resolutions),
            ratings: self.ratings,
            average_rating: (self.ratings > 0).then(|| self.rating_sum as f64 / self.ratings as f64),
        }
    }
}

#[derive(Default)]
struct AgentSamples {
    conversations: u64,
    messages: u64,
    first_responses: Vec<i64>,
}

/// Collects daily figures into a report; separate from storage so the arithmetic is tested on
/// its own.
struct ReportBuilder<'f> {
    filter: &'f ReportFilter,
    days: Vec<Samples>,
    totals: Samples,
    satisfaction: [u64; 5],
    agents: HashMap<u64, AgentSamples>,
}

impl<'f> ReportBuilder<'f> {
    fn new(filter: &'f ReportFilter) -> ReportBuilder<'f> {
        ReportBuilder {
            filter,
            days: (0..filter.n_days()).map(|_| Samples::default()).collect(),
            totals: Samples::default(),
            satisfaction: [0; 5],
            agents: HashMap::new(),
        }
    }

    /// Adds a cell the filter covers; one outside the range is ignored.
    fn add_cell(&mut self, key: &CellKey, cell: &DayCell) {
        let Some(index) = self.filter.day_index(key.day) else {
            return;
        };
        for samples in [&mut self.days[index], &mut self.totals] {
            samples.add(cell);
        }
        for (total, count) in self.satisfaction.iter_mut().zip(cell.satisfaction) {
            *total += count;
        }
        if key.agent != 0 && cell.created > 0 {
            let agent = self.agents.entry(key.agent).or_default();
            agent.conversations += cell.created;
            agent.first_responses.extend_from_slice(&cell.first_responses);
        }
    }

    /// Adds the messages of one day, site and sender, if the filter covers them.
    fn add_messages(&mut self, key: &MessageKey, count: u64) {
        let Some(index) = self.filter.day_index(key.day) else {
            return;
        };
        if !self.filter.covers_messages(key) {
            return;
        }
        self.days[index].messages += count;
        self.totals.messages += count;
        if key.sender != 0 {
            self.agents.entry(key.sender).or_default().messages += count;
        }
    }

    fn finish(self, known_agents: &[Agent]) -> Report {
        let names: HashMap<u64, &Agent> = known_agents.iter().map(|agent| (agent.id, agent)).collect();
        let mut agents: Vec<AgentFigures> = self
            .agents
            .into_iter()
            .map(|(agent_id, mut samples)| {
                samples.first_responses.sort_unstable();
                let (name, email) = match names.get(&agent_id) {
                    Some(agent) => (agent.name.clone(), agent.email.clone()),
                    None => (format!("agent {agent_id}"), String::new()),
                };
                AgentFigures {
                    agent_id,
                    name,
                    email,
                    conversations: samples.conversations,
                    messages: samples.messages,
                    median_first_response_ms: median(&samples.first_responses),
                }
            })
            .collect();
        agents.sort_by(|a, b| {
            (b.conversations, b.messages).cmp(&(a.conversations, a.messages)).then_with(|| a.name.cmp(&b.name))
        });
        let from_day = self.filter.from_day;
        Report {
            days: self
                .days
                .into_iter()
                .enumerate()
                .map(|(index, samples)| {
                    let day = from_day + index as u32;
                    DayFigures { day, date: clock::day_to_date(day), figures: samples.finish() }
                })
                .collect(),
            totals: self.totals.finish(),
            satisfaction: self.satisfaction,
            agents,
        }
    }
}

/// The `percent`-th percentile (0 to 100) of `sorted` (ascending), interpolated linearly between
/// the two nearest ranks and rounded to a whole millisecond; `None` for no values.
///
/// **Rationale:** interpolation makes the median of an even count the mean of the two middle
/// values (the usual median), with one rule for every percentile.
pub fn percentile(sorted: &[i64], percent: f64) -> Option<i64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = percent.clamp(0.0, 100.0) / 100.0 * last as f64;
    let (below, above) = (rank.floor() as usize, rank.ceil() as usize);
    let (low, high) = (sorted[below] as f64, sorted[above] as f64);
    Some((low + (high - low) * (rank - below as f64)).round() as i64)
}

/// The median of `sorted` (ascending); `None` for no values.
pub fn median(sorted: &[i64]) -> Option<i64> {
    percentile(sorted, 50.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::MILLIS_PER_DAY;
    use crate::chat::conversations::{Conversation, ConversationStatus, Rating};
    use crate::chat::messages::{MessageKind, MessageRecord};
    use crate::protocol::SenderKind;

    const MINUTE: i64 = 60_000;

    fn day_start(day: u32) -> i64 {
        i64::from(day) * MILLIS_PER_DAY
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        assert_eq!(median(&[]), None);
        assert_eq!(percentile(&[], 90.0), None);
        assert_eq!(median(&[7]), Some(7));
        assert_eq!(percentile(&[7], 90.0), Some(7));
        assert_eq!(median(&[1, 3, 8]), Some(3));
        assert_eq!(median(&[1, 3, 8, 10]), Some(6), "the mean of the two middle values");
        assert_eq!(median(&[1, 2]), Some(2), "1.5 rounds half away from zero");
        let hundred: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 90.0), Some(90), "rank 89.1 between 90 and 91");
        assert_eq!(percentile(&[10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 90.0), Some(91));
        assert_eq!(percentile(&[10, 20], 0.0), Some(10));
        assert_eq!(percentile(&[10, 20], 100.0), Some(20));
        assert_eq!(percentile(&[10, 20], 250.0), Some(20), "out-of-range percents are clamped");
    }

    fn conversation(id: u64, site: &str, created_at: i64) -> Conversation {
        Conversation {
            id,
            site: site.to_owned(),
            status: ConversationStatus::Queued,
            created_at,
            ..Conversation::default()
        }
    }

    fn agent_message(sender_id: u64, internal: bool) -> MessageRecord {
        MessageRecord {
            lsn: 1,
            trace_id: 0,
            created_at: day_start(100),
            sender_kind: SenderKind::Agent,
            sender_id,
            sender_name: "ann".into(),
            kind: MessageKind::Text,
            internal,
            client_id: None,
            text: "hello".into(),
            attachment: None,
            bot_source: None,
            offline_message_id: None,
        }
    }

    fn filter(site: Option<&str>, team: Option<Team>) -> ReportFilter {
        ReportFilter { from_day: 100, to_day: 102, site: site.map(str::to_owned), team }
    }

    /// Three days (100 to 102) of a site "a", and one conversation of site "b".
    fn sample() -> Vec<Conversation> {
        let day = day_start;
        let answered = |id, created_at, after: i64, agent| Conversation {
            first_response_at: Some(created_at + after),
            assigned_agent: Some(agent),
            status: ConversationStatus::Assigned,
            ..conversation(id, "a", created_at)
        };
        let closed = |base: Conversation, after: i64, score: Option<u8>| Conversation {
            closed_at: Some(base.created_at + after),
            status: ConversationStatus::Closed,
            rating: score.map(|score| Rating { score, comment: String::new(), rated_at: base.created_at + after }),
            ..base
        };
        vec![
            // Before the range: only its close on day 100 counts.
            closed(answered(1, day(99) + 23 * 60 * MINUTE, MINUTE, 7), 2 * 60 * MINUTE, Some(2)),
            closed(answered(2, day(100), MINUTE, 7), 10 * MINUTE, Some(5)),
            closed(answered(3, day(100) + MINUTE, 3 * MINUTE, 8), 30 * MINUTE, Some(4)),
            answered(4, day(100) + 2 * MINUTE, 5 * MINUTE, 7),
            conversation(5, "a", day(102)),
            conversation(6, "b", day(102)),
            // After the range.
            answered(7, day(103), MINUTE, 8),
        ]
    }

    fn build(filter: &ReportFilter, messages: &[(u64, MessageRecord)]) -> Report {
        let utc = jiff::tz::TimeZone::UTC;
        let conversations = sample();
        let mut tally = Tally::default();
        for conversation in &conversations {
            tally.add_conversation(conversation, &utc);
        }
        for (conversation_id, record) in messages {
            let site = &conversations.iter().find(|conversation| conversation.id == *conversation_id).unwrap().site;
            tally.add_site_message(site, record, &utc);
        }
        from_tally(&tally, filter, &[])
    }

    #[test]
    fn figures_count_each_event_on_its_day() {
        let report = build(&filter(None, None), &[]);
        assert_eq!(report.days.len(), 3);
        let first = &report.days[0];
        assert_eq!(first.date, clock::day_to_date(100));
        assert_eq!((first.figures.created, first.figures.closed, first.figures.answered), (3, 3, 3));
        assert_eq!(first.figures.median_first_response_ms, Some(3 * MINUTE));
        assert_eq!(first.figures.p90_first_response_ms, Some(4 * MINUTE + 36_000), "rank 1.8 of 1, 3, 5 min");
        // Resolutions on day 100: 10 min, 30 min, and 120 min for conversation 1 from day 99.
        assert_eq!(first.figures.median_resolution_ms, Some(30 * MINUTE));
        assert_eq!(first.figures.ratings, 3);
        assert_eq!(first.figures.average_rating, Some(11.0 / 3.0));
        assert_eq!(report.days[1].figures, Figures::default(), "an empty day is listed");
        assert_eq!(report.days[2].figures.created, 2);
        assert_eq!(report.days[2].figures.median_first_response_ms, None);
        assert_eq!(report.totals.created, 5);
        assert_eq!(report.totals.closed, 3);
        assert_eq!(report.totals.answered, 3);
        assert_eq!(report.satisfaction, [0, 1, 0, 1, 1]);
    }

    #[test]
    fn agents_get_their_conversations_messages_and_first_responses() {
        let messages = [(2, agent_message(7, false)), (2, agent_message(7, true)), (6, agent_message(9, false))];
        let report = build(&filter(None, None), &messages);
        let rows: Vec<(u64, u64, u64, Option<i64>)> = report
            .agents
            .iter()
            .map(|agent| (agent.agent_id, agent.conversations, agent.messages, agent.median_first_response_ms))
            .collect();
        assert_eq!(rows, [(7, 2, 1, Some(3 * MINUTE)), (8, 1, 0, Some(3 * MINUTE)), (9, 0, 1, None)]);
        assert_eq!(report.agents[0].name, "agent 7", "an agent that no longer exists keeps a name");
    }

    #[test]
    fn a_site_or_team_filter_narrows_conversations_and_messages() {
        let messages = [(2, agent_message(7, false)), (6, agent_message(9, false))];
        let site_b = build(&filter(Some("b"), None), &messages);
        assert_eq!(site_b.totals.created, 1);
        assert_eq!(site_b.agents.iter().map(|agent| (agent.agent_id, agent.messages)).collect::<Vec<_>>(), [(9, 1)]);

        let team = Team { id: 1, site: "a".into(), name: "Refunds".into(), members: vec![8] };
        let refunds = build(&filter(None, Some(team)), &messages);
        assert_eq!(refunds.totals.created, 1, "only conversation 3 is held by a member");
        assert_eq!(refunds.totals.median_resolution_ms, Some(30 * MINUTE));
        assert!(refunds.agents.iter().all(|agent| agent.agent_id == 8), "only members' messages count");
    }

    #[test]
    fn ranges_are_limited_and_checked() {
        assert_eq!(ReportFilter::parse_days("2026-01-01", "2026-12-31").map(|(from, to)| to - from), Ok(364));
        assert!(ReportFilter::parse_days("2024-01-01", "2024-12-31").is_ok(), "a leap year is 366 days");
        let too_long = ReportFilter::parse_days("2025-01-01", "2026-01-02").unwrap_err();
        assert!(too_long.contains("367 days"), "{too_long}");
        assert!(ReportFilter::parse_days("2026-02-30", "2026-03-01").unwrap_err().contains("from"));
        assert!(ReportFilter::parse_days("2026-03-02", "2026-03-01").unwrap_err().contains("before"));
        assert_eq!(ReportFilter::default_days(100), (71, 100));
    }
}

//! The reports page (`/admin/reports`): a live card of today's figures (refreshed from
//! `/admin/reports/today.json` by `admin.js`), a filter form (date range in the site's time zone,
//! site, team), summary tiles, three SVG charts and three tables, each table also as a CSV
//! download (`/admin/reports/{daily,agents,satisfaction}.csv`) with a UTF-8 byte order mark so
//! spreadsheets read Chinese names correctly.
//!
//! A table is defined once ([`ReportTable::build`]) as typed cells; the page shows them for
//! people (durations like "1 min 5 s") and the CSV writes them for spreadsheets (seconds).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::charts::{self, Bar, Labels, Point, Series};
use super::{AdminUser, Layout, Texts, fill, internal_error, message_page, render};
use crate::base::clock;
use crate::history::export::UTF8_BOM;
use crate::history::reports::{self, Report, ReportFilter, ReportStore, Today};
use crate::net::AppState;
use crate::people::team_store::TeamStore;
use crate::people::teams::Team;
use crate::sites::store::SiteStore;
use crate::sites::{self, Site};

/// The filter as typed: every field is text so a wrong value can be shown back as it was.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReportQuery {
    from: String,
    to: String,
    site: String,
    team: String,
}

impl ReportQuery {
    /// Empty dates become the default range ending `today`.
    fn with_defaults(mut self, today: u32) -> ReportQuery {
        let (from_day, to_day) = ReportFilter::default_days(today);
        if self.from.trim().is_empty() {
            self.from = clock::day_to_date(from_day);
        }
        if self.to.trim().is_empty() {
            self.to = clock::day_to_date(to_day);
        }
        self
    }

    /// The report filter these values describe, or what is wrong with them.
    fn filter(&self, sites: &[Site], teams: &[Team]) -> Result<ReportFilter, String> {
        let (from_day, to_day) = ReportFilter::parse_days(self.from.trim(), self.to.trim())?;
        let site = match self.site.trim() {
            "" => None,
            key if sites.iter().any(|site| site.key == key) => Some(key.to_owned()),
            key => return Err(format!("site: there is no site with the key {key:?}")),
        };
        let team = match self.team.trim() {
            "" => None,
            id => match id.parse::<u64>().ok().and_then(|id| teams.iter().find(|team| team.id == id)) {
                Some(team) if site.as_ref().is_some_and(|site| *site != team.site) => {
                    return Err(format!("team: {} is a team of another site; choose its site or all sites", team.name));
                }
                Some(team) => Some(team.clone()),
                None => return Err(format!("team: there is no team {id:?}")),
            },
        };
        Ok(ReportFilter { from_day, to_day, site, team })
    }
}

/// The query string of a filter, for the CSV links.
fn query_string(filter: &ReportFilter) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("from", &clock::day_to_date(filter.from_day));
    query.append_pair("to", &clock::day_to_date(filter.to_day));
    if let Some(site) = &filter.site {
        query.append_pair("site", site);
    }
    if let Some(team) = &filter.team {
        query.append_pair("team", &team.id.to_string());
    }
    query.finish()
}

/// A duration for people: "420 ms", "4.2 s", "42 s", "3 min 5 s", "2 h 10 min", "3 d 4 h" (the
/// units of `t`).
pub fn human_duration(millis: i64, t: &Texts) -> String {
    let seconds = millis as f64 / 1000.0;
    let whole_seconds = (millis + 500) / 1000;
    let (ms, s, min, h, d) = (t.unit_ms, t.unit_s, t.unit_min, t.unit_h, t.unit_d);
    match whole_seconds {
        _ if millis < 1_000 => format!("{millis} {ms}"),
        _ if seconds < 10.0 => format!("{seconds:.1} {s}"),
        0..60 => format!("{whole_seconds} {s}"),
        60..3_600 => format!("{} {min} {} {s}", whole_seconds / 60, whole_seconds % 60),
        3_600..172_800 => format!("{} {h} {} {min}", whole_seconds / 3_600, whole_seconds % 3_600 / 60),
        _ => format!("{} {d} {} {h}", whole_seconds / 86_400, whole_seconds % 86_400 / 3_600),
    }
}

/// One value of a table.
pub enum Cell {
    Text(String),
    Count(u64),
    /// Milliseconds; `None` when there was nothing to measure.
    Duration(Option<i64>),
    Rating(Option<f64>),
    Percent(f64),
}

impl Cell {
    /// The value for a spreadsheet: plain numbers, durations in seconds, empty for none.
    pub fn csv(&self) -> String {
        match self {
            Cell::Text(text) => text.clone(),
            Cell::Count(count) => count.to_string(),
            Cell::Duration(millis) => millis.map(|millis| format!("{:.1}", millis as f64 / 1000.0)).unwrap_or_default(),
            Cell::Rating(rating) => rating.map(|rating| format!("{rating:.2}")).unwrap_or_default(),
            Cell::Percent(percent) => format!("{percent:.1}"),
        }
    }

    /// The value for people.
    pub fn display(&self, t: &Texts) -> String {
        match self {
            Cell::Duration(Some(millis)) => human_duration(*millis, t),
            Cell::Duration(None) | Cell::Rating(None) => "–".to_owned(),
            Cell::Percent(percent) => format!("{percent:.1} %"),
            other => other.csv(),
        }
    }

    pub fn is_numeric(&self) -> bool {
        !matches!(self, Cell::Text(_))
    }
}

/// A column: its CSV header and its heading on the page.
pub struct Column {
    pub csv: &'static str,
    pub label: &'static str,
}

pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

/// The tables of a report, each shown on the page and downloadable as CSV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportTable {
    Daily,
    Agents,
    Satisfaction,
}

impl ReportTable {
    const ALL: [ReportTable; 3] = [ReportTable::Daily, ReportTable::Agents, ReportTable::Satisfaction];

    /// The name in its download path and file name.
    pub fn name(self) -> &'static str {
        match self {
            ReportTable::Daily => "daily",
            ReportTable::Agents => "agents",
            ReportTable::Satisfaction => "satisfaction",
        }
    }

    fn title(self, t: &'static Texts) -> &'static str {
        match self {
            ReportTable::Daily => t.per_day,
            ReportTable::Agents => t.per_agent,
            ReportTable::Satisfaction => t.satisfaction,
        }
    }

    pub fn build(self, report: &Report, t: &'static Texts) -> Table {
        let column = |csv, label| Column { csv, label };
        match self {
            ReportTable::Daily => Table {
                columns: vec![
                    column("date", t.day),
                    column("conversations", t.conversations),
                    column("closed", t.closed),
                    column("median_first_response_seconds", t.median_first_response),
                    column("p90_first_response_seconds", t.p90_first_response),
                    column("median_resolution_seconds", t.median_resolution),
                    column("ratings", t.ratings),
                    column("average_rating", t.average_rating),
                    column("missed", t.missed),
                    column("messages", t.messages),
                ],
                rows: report
                    .days
                    .iter()
                    .map(|day| {
                        let figures = &day.figures;
                        vec![
                            Cell::Text(day.date.clone()),
                            Cell::Count(figures.created),
                            Cell::Count(figures.closed),
                            Cell::Duration(figures.median_first_response_ms),
                            Cell::Duration(figures.p90_first_response_ms),
                            Cell::Duration(figures.median_resolution_ms),
                            Cell::Count(figures.ratings),
                            Cell::Rating(figures.average_rating),
                            Cell::Count(figures.missed),
                            Cell::Count(figures.messages),
                        ]
                    })
                    .collect(),
            },
            ReportTable::Agents => Table {
                columns: vec![
                    column("agent_id", t.id),
                    column("name", t.agent),
                    column("email", t.email),
                    column("conversations", t.conversations),
                    column("messages", t.messages_sent),
                    column("median_first_response_seconds", t.median_first_response),
                ],
                rows: report
                    .agents
                    .iter()
                    .map(|agent| {
                        vec![
                            Cell::Count(agent.agent_id),
                            Cell::Text(agent.name.clone()),
                            Cell::Text(agent.email.clone()),
                            Cell::Count(agent.conversations),
                            Cell::Count(agent.messages),
                            Cell::Duration(agent.median_first_response_ms),
                        ]
                    })
                    .collect(),
            },
            ReportTable::Satisfaction => {
                let n_ratings: u64 = report.satisfaction.iter().sum();
                Table {
                    columns: vec![column("score", t.score), column("ratings", t.ratings), column("percent", t.share)],
                    rows: (1..=5u64)
                        .rev()
                        .map(|score| {
                            let count = report.satisfaction[(score - 1) as usize];
                            let share = if n_ratings == 0 { 0.0 } else { count as f64 * 100.0 / n_ratings as f64 };
                            vec![Cell::Count(score), Cell::Count(count), Cell::Percent(share)]
                        })
                        .collect(),
                }
            }
        }
    }
}

/// A summary figure above the charts.
pub struct Tile {
    pub label: &'static str,
    pub value: String,
    pub detail: String,
}

/// A table on the page with its download link.
pub struct TableView {
    pub name: &'static str,
    pub title: &'static str,
    pub csv_url: String,
    pub table: Table,
}

/// What the page shows once the filter is valid.
pub struct ReportView {
    pub range: String,
    pub tiles: Vec<Tile>,
    pub daily_chart: String,
    pub times_chart: String,
    pub satisfaction_chart: String,
    pub tables: Vec<TableView>,
}

/// A team in the filter's list.
pub struct TeamChoice {
    pub id: String,
    pub label: String,
}

/// Today's figures as the card shows them.
#[derive(serde::Serialize)]
pub struct TodayView {
    /// `YYYY-MM-DD` in the zone of the card.
    pub date: String,
    pub conversations: u64,
    pub messages: u64,
    pub missed: u64,
    /// For people ("–" when nothing was answered yet).
    pub median_first_response: String,
    pub median_first_response_ms: Option<i64>,
    /// When these figures were read, `HH:MM:SS` in the zone of the card.
    pub updated: String,
}

#[derive(Template)]
#[template(path = "admin/reports.html")]
struct ReportsPage {
    layout: Layout,
    query: ReportQuery,
    sites: Vec<Site>,
    teams: Vec<TeamChoice>,
    error: String,
    report: Option<ReportView>,
    today: TodayView,
    today_url: String,
    /// The time zone the days are counted in, for people.
    zone_label: String,
    zone_note: String,
}

/// The sites, the teams, the report of a query (or what is wrong with the query) and today's
/// figures, all from one read transaction.
struct Loaded {
    sites: Vec<Site>,
    teams: Vec<Team>,
    outcome: Result<(ReportFilter, Report), String>,
    today: Today,
    zone: Zone,
}

/// The time zone a page counts its days in: the chosen site's, else the one every site shares,
/// else (sites in several zones) each site's own, with the server's for "today".
#[derive(Clone)]
struct Zone {
    zone: jiff::tz::TimeZone,
    /// The IANA name, or `None` when the sites' zones differ.
    name: Option<String>,
}

impl Zone {
    fn of(sites: &[Site], chosen: &str) -> Zone {
        let names: Vec<&str> = match sites.iter().find(|site| site.key == chosen.trim()) {
            Some(site) => vec![site.business_hours.time_zone.as_str()],
            None => sites.iter().map(|site| site.business_hours.time_zone.as_str()).collect(),
        };
        let shared = names.first().filter(|first| names.iter().all(|name| name == *first));
        let name = match shared {
            Some(name) => (*name).to_owned(),
            None if names.is_empty() => crate::sites::server_time_zone(),
            None => {
                return Zone {
                    zone: jiff::tz::TimeZone::get(&crate::sites::server_time_zone()).unwrap_or(jiff::tz::TimeZone::UTC),
                    name: None,
                };
            }
        };
        Zone { zone: jiff::tz::TimeZone::get(&name).unwrap_or(jiff::tz::TimeZone::UTC), name: Some(name) }
    }

    fn today(&self, now: i64) -> u32 {
        clock::day_in(&self.zone, now)
    }

    fn label(&self, t: &Texts) -> String {
        self.name.clone().unwrap_or_else(|| t.each_site_zone.to_owned())
    }
}

async fn load(app: &AppState, query: &ReportQuery) -> Result<(ReportQuery, Loaded), Response> {
    let now = clock::now_millis();
    let read = async {
        let mut sites = SiteStore::list(&app.store).await?;
        sites::sort_by_name(&mut sites);
        let teams = TeamStore::list(&app.store).await?;
        let zone = Zone::of(&sites, &query.site);
        let query = query.clone().with_defaults(zone.today(now));
        let outcome = match query.filter(&sites, &teams) {
            Ok(filter) => Ok((filter.clone(), ReportStore::report(&app.store, filter).await?)),
            Err(message) => Err(message),
        };
        let site = sites.iter().find(|site| site.key == query.site.trim()).map(|site| site.key.clone());
        let today = ReportStore::today(&app.store, site, now).await?;
        Ok::<_, crate::storage::StorageError>((query, Loaded { sites, teams, outcome, today, zone }))
    };
    read.await.map_err(internal_error)
}

fn today_view(today: &Today, zone: &Zone, t: &Texts) -> TodayView {
    let now = jiff::Timestamp::now().to_zoned(zone.zone.clone());
    TodayView {
        date: now.date().to_string(),
        conversations: today.conversations,
        messages: today.messages,
        missed: today.missed,
        median_first_response: today
            .median_first_response_ms
            .map_or_else(|| "–".to_owned(), |millis| human_duration(millis, t)),
        median_first_response_ms: today.median_first_response_ms,
        updated: now.strftime("%H:%M:%S").to_string(),
    }
}

/// `GET /admin/reports`
pub async fn page(State(app): State<AppState>, admin: AdminUser, Query(query): Query<ReportQuery>) -> Response {
    let t = admin.t();
    let (query, loaded) = match load(&app, &query).await {
        Ok(loaded) => loaded,
        Err(response) => return response,
    };
    let teams = loaded
        .teams
        .iter()
        .map(|team| {
            let site =
                loaded.sites.iter().find(|site| site.key == team.site).map_or(team.site.as_str(), |site| &site.name);
            TeamChoice { id: team.id.to_string(), label: format!("{site} · {}", team.name) }
        })
        .collect();
    let (status, error, report) = match loaded.outcome {
        Ok((filter, report)) => (StatusCode::OK, String::new(), Some(view(&filter, &report, t))),
        Err(message) => (StatusCode::UNPROCESSABLE_ENTITY, super::texts::field_message(admin.lang, &message), None),
    };
    let zone_label = loaded.zone.label(t);
    let zone_note = fill(t.zone_note, &[("zone", &zone_label)]);
    let today_url = match query.site.trim() {
        "" => "/admin/reports/today.json".to_owned(),
        site => format!(
            "/admin/reports/today.json?site={}",
            url::form_urlencoded::byte_serialize(site.as_bytes()).collect::<String>()
        ),
    };
    let page = ReportsPage {
        layout: admin.layout("reports", None),
        today: today_view(&loaded.today, &loaded.zone, t),
        today_url,
        zone_label,
        zone_note,
        query,
        sites: loaded.sites,
        teams,
        error,
        report,
    };
    render(status, &page)
}

/// `GET /admin/reports/today.json?site=KEY`: the figures of the today card, for its refresh.
pub async fn today_json(State(app): State<AppState>, admin: AdminUser, Query(query): Query<ReportQuery>) -> Response {
    let site = query.site.trim().to_owned();
    let now = clock::now_millis();
    let read = async {
        let sites = SiteStore::list(&app.store).await?;
        let known = sites.iter().any(|known| known.key == site);
        let zone = Zone::of(&sites, &site);
        let today = ReportStore::today(&app.store, known.then(|| site.clone()), now).await?;
        Ok::<_, crate::storage::StorageError>((known || site.is_empty(), today, zone))
    };
    let read = read.await;
    match read {
        Ok((true, today, zone)) => {
            let mut response = axum::Json(today_view(&today, &zone, admin.t())).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Ok((false, ..)) => super::not_found(admin.lang, admin.t().noun_site),
        Err(error) => internal_error(error),
    }
}

/// `GET /admin/reports/daily.csv`
pub async fn daily_csv(State(app): State<AppState>, admin: AdminUser, Query(query): Query<ReportQuery>) -> Response {
    download(&app, &admin, query, ReportTable::Daily).await
}

/// `GET /admin/reports/agents.csv`
pub async fn agents_csv(State(app): State<AppState>, admin: AdminUser, Query(query): Query<ReportQuery>) -> Response {
    download(&app, &admin, query, ReportTable::Agents).await
}

/// `GET /admin/reports/satisfaction.csv`
pub async fn satisfaction_csv(
    State(app): State<AppState>,
    admin: AdminUser,
    Query(query): Query<ReportQuery>,
) -> Response {
    download(&app, &admin, query, ReportTable::Satisfaction).await
}

async fn download(app: &AppState, admin: &AdminUser, query: ReportQuery, table: ReportTable) -> Response {
    let (filter, report) = match load(app, &query).await {
        Ok((_, Loaded { outcome: Ok(made), .. })) => made,
        Ok((_, Loaded { outcome: Err(message), .. })) => {
            let message = super::texts::field_message(admin.lang, &message);
            return message_page(admin.lang, StatusCode::UNPROCESSABLE_ENTITY, admin.t().no_report, &message);
        }
        Err(response) => return response,
    };
    let built = table.build(&report, admin.t());
    let mut bytes = UTF8_BOM.to_vec();
    let mut writer = csv::Writer::from_writer(&mut bytes);
    let written = writer.write_record(built.columns.iter().map(|column| column.csv)).and_then(|()| {
        built.rows.iter().try_for_each(|row| {
            writer.write_record(
                row.iter().map(|cell| crate::base::csv_cells::neutralize_formula(&cell.csv()).into_owned()),
            )
        })
    });
    if let Err(error) = written {
        return internal_error(error);
    }
    if let Err(error) = writer.flush() {
        return internal_error(error);
    }
    drop(writer);
    let file_name = format!(
        "kefu-{}-{}-to-{}.csv",
        table.name(),
        clock::day_to_date(filter.from_day),
        clock::day_to_date(filter.to_day)
    );
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    response
}

/// The unit a time chart draws in, picked so the largest value reads well.
fn time_unit(largest_millis: i64, t: &'static Texts) -> (&'static str, f64) {
    match largest_millis {
        ..2_000 => (t.unit_ms, 1.0),
        2_000..120_000 => (t.unit_s, 1_000.0),
        120_000..7_200_000 => (t.unit_min, 60_000.0),
        _ => (t.unit_h, 3_600_000.0),
    }
}

fn view(filter: &ReportFilter, report: &Report, t: &'static Texts) -> ReportView {
    let totals = &report.totals;
    let duration = |millis: Option<i64>| millis.map_or_else(|| "–".to_owned(), |millis| human_duration(millis, t));
    let tiles = vec![
        Tile {
            label: t.conversations,
            value: totals.created.to_string(),
            detail: fill(t.answered_by_agent, &[("n", &totals.answered)]),
        },
        Tile { label: t.closed, value: totals.closed.to_string(), detail: fill(t.missed_n, &[("n", &totals.missed)]) },
        Tile {
            label: t.median_first_response,
            value: duration(totals.median_first_response_ms),
            detail: fill(t.p90_within, &[("time", &duration(totals.p90_first_response_ms))]),
        },
        Tile { label: t.median_resolution, value: duration(totals.median_resolution_ms), detail: String::new() },
        Tile {
            label: t.satisfaction,
            value: totals.average_rating.map_or_else(|| "–".to_owned(), |rating| format!("{rating:.2} / 5")),
            detail: fill(t.n_ratings, &[("n", &totals.ratings)]),
        },
    ];
    // Short labels under the bars: the month and day.
    let short_dates: Vec<String> =
        report.days.iter().map(|day| day.date.get(5..).unwrap_or(&day.date).to_owned()).collect();
    let daily_bars: Vec<Bar> = report
        .days
        .iter()
        .zip(&short_dates)
        .map(|(day, label)| Bar {
            label: label.clone(),
            value: day.figures.created as f64,
            title: fill(
                t.bar_title,
                &[("date", &day.date), ("created", &day.figures.created), ("closed", &day.figures.closed)],
            ),
        })
        .collect();
    let daily_chart = charts::bar_chart(
        &Labels { id: "chart-daily", caption: t.chart_daily, x_axis: t.day, y_axis: t.conversations },
        &daily_bars,
        true,
    );

    let largest = report
        .days
        .iter()
        .flat_map(|day| [day.figures.p90_first_response_ms, day.figures.median_resolution_ms])
        .flatten()
        .max()
        .unwrap_or(0);
    let (unit, millis_per_unit) = time_unit(largest, t);
    let line = |name: &str, pick: fn(&reports::Figures) -> Option<i64>| Series {
        name: name.to_owned(),
        points: report
            .days
            .iter()
            .map(|day| {
                pick(&day.figures).map(|millis| Point {
                    value: millis as f64 / millis_per_unit,
                    title: format!("{}: {name} {}", day.date, human_duration(millis, t)),
                })
            })
            .collect(),
    };
    let times_chart = charts::line_chart(
        &Labels {
            id: "chart-times",
            caption: t.chart_times,
            x_axis: t.day,
            y_axis: &fill(t.time_axis, &[("unit", &unit)]),
        },
        &short_dates,
        &[
            line(t.median_first_response, |figures| figures.median_first_response_ms),
            line(t.p90_first_response, |figures| figures.p90_first_response_ms),
            line(t.median_resolution, |figures| figures.median_resolution_ms),
        ],
    );

    let satisfaction_bars: Vec<Bar> = (1..=5u8)
        .map(|score| {
            let count = report.satisfaction[usize::from(score - 1)];
            Bar {
                label: format!("{score} ★"),
                value: count as f64,
                title: fill(t.score_title, &[("score", &score), ("n", &count)]),
            }
        })
        .collect();
    let satisfaction_chart = charts::bar_chart(
        &Labels { id: "chart-satisfaction", caption: t.satisfaction, x_axis: t.score, y_axis: t.ratings },
        &satisfaction_bars,
        true,
    );

    let query = query_string(filter);
    ReportView {
        range: fill(
            t.range,
            &[
                ("from", &clock::day_to_date(filter.from_day)),
                ("to", &clock::day_to_date(filter.to_day)),
                ("n", &filter.n_days()),
            ],
        ),
        tiles,
        daily_chart,
        times_chart,
        satisfaction_chart,
        tables: ReportTable::ALL
            .into_iter()
            .map(|table| TableView {
                name: table.name(),
                title: table.title(t),
                csv_url: format!("/admin/reports/{}.csv?{query}", table.name()),
                table: table.build(report, t),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::admin::Lang;

    #[test]
    fn durations_read_naturally() {
        let en = Lang::En.texts();
        assert_eq!(human_duration(420, en), "420 ms");
        assert_eq!(human_duration(4_200, en), "4.2 s");
        assert_eq!(human_duration(42_000, en), "42 s");
        assert_eq!(human_duration(185_000, en), "3 min 5 s");
        assert_eq!(human_duration(7_800_000, en), "2 h 10 min");
        assert_eq!(human_duration(273_600_000, en), "3 d 4 h");
        assert_eq!(human_duration(185_000, Lang::Zh.texts()), "3 分 5 秒");
    }

    #[test]
    fn cells_are_numbers_in_csv_and_words_on_the_page() {
        assert_eq!(Cell::Duration(Some(65_000)).csv(), "65.0");
        let en = Lang::En.texts();
        assert_eq!(Cell::Duration(Some(65_000)).display(en), "1 min 5 s");
        assert_eq!(Cell::Duration(None).csv(), "");
        assert_eq!(Cell::Duration(None).display(en), "–");
        assert_eq!(Cell::Rating(Some(13.0 / 3.0)).csv(), "4.33");
        assert_eq!(Cell::Percent(50.0).display(en), "50.0 %");
    }

    #[test]
    fn a_query_names_what_is_wrong() {
        let site = Site { key: "shop".into(), ..Site::default() };
        let team = Team { id: 3, site: "other".into(), name: "Refunds".into(), members: Vec::new() };
        let check = |from: &str, to: &str, site_key: &str, team_id: &str| {
            let query = ReportQuery { from: from.into(), to: to.into(), site: site_key.into(), team: team_id.into() };
            query.filter(std::slice::from_ref(&site), std::slice::from_ref(&team))
        };
        assert!(check("2026-11-01", "2026-11-30", "shop", "").is_ok());
        assert!(check("2026-11-31", "2026-11-30", "", "").unwrap_err().contains("from"));
        assert!(check("2026-11-01", "2026-11-30", "nope", "").unwrap_err().contains("no site"));
        assert!(check("2026-11-01", "2026-11-30", "", "9").unwrap_err().contains("no team"));
        assert!(check("2026-11-01", "2026-11-30", "shop", "3").unwrap_err().contains("another site"));
        assert_eq!(check("2026-11-01", "2026-11-30", "", "3").unwrap().team.map(|team| team.id), Some(3));
    }
}

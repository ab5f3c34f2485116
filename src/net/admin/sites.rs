//! Admin pages for sites: list, create, edit (widget, business hours, words list, routing
//! rules), rotate the secret, delete, and allow an origin kefu refused.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Redirect, Response};

use super::form::FieldErrors;
use super::texts::fill;
use super::{AdminPost, AdminUser, Layout, Notice, done, internal_error, not_found, render};
use crate::chat::sensitive_words::SensitiveMode;
use crate::net::AppState;
use crate::people::team_store::TeamStore;
use crate::people::teams::Team;
use crate::routing::rules::{RoutingRule, RuleCondition};
use crate::sites::business_hours::{BusinessHours, DayHours, WEEKDAYS};
use crate::sites::store::SiteStore;
use crate::sites::{self, Site, SiteError};

/// Empty routing-rule rows offered below the existing ones.
const BLANK_RULE_ROWS: usize = 2;

#[derive(Template)]
#[template(path = "admin/sites.html")]
struct SitesPage {
    layout: Layout,
    sites: Vec<Site>,
}

/// One weekday row of the hours table, as typed.
pub struct WeekdayRow {
    pub index: usize,
    pub name: &'static str,
    pub open: String,
    pub close: String,
}

/// One routing-rule row, as typed.
pub struct RuleRow {
    pub kind: String,
    pub value: String,
    pub team: String,
}

/// A site's settings as the form shows them: what was stored, or what was typed.
pub struct SiteForm {
    pub name: String,
    pub allowed_origins: String,
    pub welcome_text: String,
    pub color: String,
    pub position: String,
    pub prechat_form: bool,
    pub satisfaction_rating: bool,
    pub enforce_identity: bool,
    pub sensitive_mode: String,
    pub sensitive_words: String,
    pub retention_days: String,
    pub hours_enabled: bool,
    pub time_zone: String,
    pub weekdays: Vec<WeekdayRow>,
    pub holidays: String,
    pub default_team: String,
    pub rules: Vec<RuleRow>,
    pub email_language: String,
    pub transcript_on_close: bool,
}

#[derive(Template)]
#[template(path = "admin/site_form.html")]
struct SiteFormPage {
    layout: Layout,
    /// `None` while creating.
    site: Option<Site>,
    form: SiteForm,
    errors: FieldErrors,
    teams: Vec<Team>,
    snippet: String,
    /// Origins refused lately (pages that embed the widget but are not allowed), to allow.
    refused: Vec<RefusedRow>,
}

/// One refused origin as the site page lists it.
pub struct RefusedRow {
    pub origin: String,
    pub count: u64,
    /// When it was last refused, `YYYY-MM-DD HH:MM` UTC.
    pub last_seen: String,
}

impl SiteFormPage {
    /// Every time zone name jiff knows, offered while typing.
    fn time_zones(&self) -> Vec<String> {
        jiff::tz::db().available().map(|name| name.to_string()).collect()
    }
}

/// The seven weekday rows, Monday first, with `times(index)` giving (opens, closes).
fn weekday_rows(times: impl Fn(usize) -> (String, String)) -> Vec<WeekdayRow> {
    WEEKDAYS
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let (open, close) = times(index);
            WeekdayRow { index, name, open, close }
        })
        .collect()
}

impl SiteForm {
    fn from_site(site: &Site) -> SiteForm {
        let hours = &site.business_hours;
        let mut rules: Vec<RuleRow> = site
            .routing_rules
            .iter()
            .map(|rule| {
                let (kind, value) = match &rule.condition {
                    RuleCondition::Keywords { keywords } => ("keywords", keywords.join(", ")),
                    RuleCondition::Category { category } => ("category", category.clone()),
                };
                RuleRow { kind: kind.to_owned(), value, team: rule.team.to_string() }
            })
            .collect();
        rules.extend((0..BLANK_RULE_ROWS).map(|_| RuleRow {
            kind: "keywords".to_owned(),
            value: String::new(),
            team: String::new(),
        }));
        SiteForm {
            name: site.name.clone(),
            allowed_origins: site.allowed_origins.join("\n"),
            welcome_text: site.welcome_text.clone(),
            color: site.color.clone(),
            position: site.position.clone(),
            prechat_form: site.prechat_form,
            satisfaction_rating: site.satisfaction_rating,
            enforce_identity: site.enforce_identity,
            sensitive_mode: match site.sensitive_mode {
                SensitiveMode::Mask => "mask",
                SensitiveMode::Reject => "reject",
            }
            .to_owned(),
            sensitive_words: site.sensitive_words.join("\n"),
            retention_days: site.retention_days.map(|days| days.to_string()).unwrap_or_default(),
            hours_enabled: hours.enabled,
            time_zone: hours.time_zone.clone(),
            weekdays: weekday_rows(|index| {
                let day = hours.weekly[index];
                let format = |minutes: fn(DayHours) -> u16| day.map(|day| DayHours::format_minutes(minutes(day)));
                (format(|day| day.open).unwrap_or_default(), format(|day| day.close).unwrap_or_default())
            }),
            holidays: hours.holidays.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
            default_team: site.default_team.map(|team| team.to_string()).unwrap_or_default(),
            rules,
            email_language: site.email_language.clone(),
            transcript_on_close: site.transcript_on_close,
        }
    }

    fn from_post(form: &super::FormData) -> SiteForm {
        let kinds = form.all("rule_kind");
        let values = form.all("rule_value");
        let teams = form.all("rule_team");
        let rules = kinds
            .into_iter()
            .zip(values)
            .zip(teams)
            .map(|((kind, value), team)| RuleRow { kind, value, team })
            .collect();
        SiteForm {
            name: form.text("name"),
            allowed_origins: form.text("allowed_origins"),
            welcome_text: form.text("welcome_text"),
            color: form.text("color"),
            position: form.text("position"),
            prechat_form: form.checked("prechat_form"),
            satisfaction_rating: form.checked("satisfaction_rating"),
            enforce_identity: form.checked("enforce_identity"),
            sensitive_mode: form.text("sensitive_mode"),
            sensitive_words: form.text("sensitive_words"),
            retention_days: form.text("retention_days"),
            hours_enabled: form.checked("hours_enabled"),
            time_zone: form.text("time_zone"),
            weekdays: weekday_rows(|index| (form.text(&format!("open_{index}")), form.text(&format!("close_{index}")))),
            holidays: form.text("holidays"),
            default_team: form.text("default_team"),
            rules,
            email_language: form.text("email_language"),
            transcript_on_close: form.checked("transcript_on_close"),
        }
    }

    /// The site these values describe, on top of `base`; every unreadable value is named.
    fn apply(&self, base: Site) -> Result<Site, FieldErrors> {
        let mut errors = FieldErrors::default();
        let lines = |text: &str| -> Vec<String> {
            text.lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect()
        };
        let sensitive_mode = match self.sensitive_mode.as_str() {
            "mask" => SensitiveMode::Mask,
            "reject" => SensitiveMode::Reject,
            _ => {
                errors.add("sensitive_mode", "choose mask or reject");
                SensitiveMode::Mask
            }
        };
        let retention_days = match self.retention_days.trim() {
            "" => None,
            days => match days.parse::<u32>() {
                Ok(days) => Some(days),
                Err(_) => {
                    errors.add("retention_days", "a whole number of days, or empty to keep forever");
                    None
                }
            },
        };
        let mut weekly = [None; 7];
        for row in &self.weekdays {
            let (open, close) = (row.open.trim(), row.close.trim());
            if open.is_empty() && close.is_empty() {
                continue;
            }
            match (DayHours::parse_minutes(open), DayHours::parse_minutes(close)) {
                (Some(open), Some(close)) => weekly[row.index] = Some(DayHours { open, close }),
                _ => errors.add("weekly", format!("{}: times look like 09:00 and 18:00", row.name)),
            }
        }
        let mut holidays = Vec::new();
        for line in lines(&self.holidays) {
            match line.parse() {
                Ok(date) => holidays.push(date),
                Err(_) => errors.add("holidays", format!("{line:?} is not a date like 2026-12-25")),
            }
        }
        let parse_team = |text: &str| text.trim().parse::<u64>().ok();
        let mut routing_rules = Vec::new();
        for (number, row) in self.rules.iter().enumerate().map(|(index, row)| (index + 1, row)) {
            if row.value.trim().is_empty() {
                continue;
            }
            let condition = match row.kind.as_str() {
                "keywords" => RuleCondition::Keywords {
                    keywords: row
                        .value
                        .split([',', '，'])
                        .map(str::trim)
                        .filter(|word| !word.is_empty())
                        .map(str::to_owned)
                        .collect(),
                },
                "category" => RuleCondition::Category { category: row.value.trim().to_owned() },
                _ => {
                    errors.add("routing_rules", format!("rule {number}: choose keywords or category"));
                    continue;
                }
            };
            match parse_team(&row.team) {
                Some(team) => routing_rules.push(RoutingRule { condition, team }),
                None => errors.add("routing_rules", format!("rule {number}: choose a team")),
            }
        }
        let default_team = match self.default_team.trim() {
            "" => None,
            team => match parse_team(team) {
                Some(team) => Some(team),
                None => {
                    errors.add("default_team", "choose a team");
                    None
                }
            },
        };
        let site = Site {
            name: self.name.trim().to_owned(),
            allowed_origins: lines(&self.allowed_origins),
            welcome_text: self.welcome_text.trim().to_owned(),
            color: self.color.trim().to_lowercase(),
            position: self.position.clone(),
            prechat_form: self.prechat_form,
            satisfaction_rating: self.satisfaction_rating,
            enforce_identity: self.enforce_identity,
            sensitive_mode,
            sensitive_words: lines(&self.sensitive_words),
            retention_days,
            business_hours: BusinessHours {
                enabled: self.hours_enabled,
                time_zone: self.time_zone.trim().to_owned(),
                weekly,
                holidays,
            },
            routing_rules,
            default_team,
            email_language: self.email_language.trim().to_owned(),
            transcript_on_close: self.transcript_on_close,
            ..base
        };
        for (field, message) in site.validate() {
            if errors.of(field).is_empty() {
                errors.add(field, message);
            }
        }
        if errors.is_empty() { Ok(site) } else { Err(errors) }
    }
}

/// `GET /admin`: the sites list is the admin's home.
pub async fn home(_admin: AdminUser) -> Redirect {
    Redirect::to("/admin/sites")
}

/// `GET /admin/sites`
pub async fn list(State(app): State<AppState>, admin: AdminUser, Query(notice): Query<Notice>) -> Response {
    match SiteStore::list_by_name(&app.store).await {
        Ok(sites) => render(StatusCode::OK, &SitesPage { layout: admin.layout("sites", notice.take()), sites }),
        Err(error) => internal_error(error),
    }
}

fn form_page(
    admin: &AdminUser,
    notice: Option<String>,
    site: Option<Site>,
    form: SiteForm,
    errors: FieldErrors,
    teams: Vec<Team>,
    base_url: &str,
) -> SiteFormPage {
    let snippet = site.as_ref().map(|site| sites::embed_snippet(base_url, &site.key)).unwrap_or_default();
    SiteFormPage { layout: admin.layout("sites", notice), site, form, errors, teams, snippet, refused: Vec::new() }
}

/// `GET /admin/sites/new`
pub async fn new_form(admin: AdminUser, headers: HeaderMap) -> Response {
    let mut form = SiteForm::from_site(&Site::default());
    form.time_zone = sites::server_time_zone();
    let page = form_page(
        &admin,
        None,
        None,
        form,
        FieldErrors::default(),
        Vec::new(),
        &crate::net::http::own_origin(&headers),
    );
    render(StatusCode::OK, &page)
}

/// `POST /admin/sites/new`
pub async fn create(State(app): State<AppState>, headers: HeaderMap, post: AdminPost) -> Response {
    let form = SiteForm::from_post(&post.form);
    let mut site = match form.apply(Site::default()) {
        Ok(site) => site,
        Err(errors) => {
            let page =
                form_page(&post.admin, None, None, form, errors, Vec::new(), &crate::net::http::own_origin(&headers));
            return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    // Teams belong to a site, so a new site has none to route to yet.
    site.routing_rules.clear();
    site.default_team = None;
    let new_site = sites::NewSite { name: site.name.clone(), ..sites::NewSite::default() };
    let created = match SiteStore::create(&app.store, new_site).await {
        Ok(created) => created,
        Err(error) => return internal_error(error),
    };
    let site = Site { key: created.key.clone(), secret: created.secret, created_at: created.created_at, ..site };
    if let Err(error) = SiteStore::save(&app.store, site).await {
        return internal_error(error);
    }
    post.admin.audit(&app, "site.create", &created.key, format!("name {:?}", created.name)).await;
    done(&format!("/admin/sites/{}", created.key), post.admin.t().site_created)
}

/// `GET /admin/sites/{key}`
pub async fn edit_form(
    State(app): State<AppState>,
    admin: AdminUser,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(notice): Query<Notice>,
) -> Response {
    let Some((site, teams)) = (match load(&app, &key).await {
        Ok(found) => found,
        Err(response) => return response,
    }) else {
        return not_found(admin.lang, admin.t().noun_site);
    };
    let form = SiteForm::from_site(&site);
    let mut page = form_page(
        &admin,
        notice.take(),
        Some(site),
        form,
        FieldErrors::default(),
        teams,
        &crate::net::http::own_origin(&headers),
    );
    page.refused = app
        .refused_origins
        .list(&key)
        .into_iter()
        .map(|refused| RefusedRow {
            last_seen: jiff::Timestamp::from_millisecond(refused.last_seen)
                .map(|at| at.strftime("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
            origin: refused.origin,
            count: refused.count,
        })
        .collect();
    render(StatusCode::OK, &page)
}

/// `POST /admin/sites/{key}/allow-origin`: adds an origin (from the refused list) to the site's
/// allowed origins.
pub async fn allow_origin(State(app): State<AppState>, Path(key): Path<String>, post: AdminPost) -> Response {
    let (lang, t) = (post.admin.lang, post.admin.t());
    let origin = post.form.text("origin").trim().trim_end_matches('/').to_owned();
    let Some((stored, _)) = (match load(&app, &key).await {
        Ok(found) => found,
        Err(response) => return response,
    }) else {
        return not_found(lang, t.noun_site);
    };
    if stored.allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(&origin)) {
        app.refused_origins.forget(&key, &origin);
        return done(&format!("/admin/sites/{key}"), &fill(t.origin_already_allowed, &[("origin", &origin)]));
    }
    let mut site = stored;
    site.allowed_origins.push(origin.clone());
    match SiteStore::save(&app.store, site).await {
        Ok(_) => {}
        Err(SiteError::Invalid(error)) => {
            let why = super::texts::field_message(lang, &error.message);
            return super::message_page(
                lang,
                StatusCode::UNPROCESSABLE_ENTITY,
                t.origin_not_allowed,
                &fill(t.not_changed, &[("why", &why)]),
            );
        }
        Err(SiteError::NotFound(_)) => return not_found(lang, t.noun_site),
        Err(error) => return internal_error(error),
    }
    app.sites.invalidate(&key);
    app.refused_origins.forget(&key, &origin);
    post.admin.audit(&app, "site.allow_origin", &key, format!("origin {origin:?}")).await;
    done(&format!("/admin/sites/{key}"), &fill(t.origin_allowed, &[("origin", &origin)]))
}

/// `POST /admin/sites/{key}`
pub async fn save(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    post: AdminPost,
) -> Response {
    let Some((stored, teams)) = (match load(&app, &key).await {
        Ok(found) => found,
        Err(response) => return response,
    }) else {
        return not_found(post.admin.lang, post.admin.t().noun_site);
    };
    let form = SiteForm::from_post(&post.form);
    let invalid = |form: SiteForm, errors: FieldErrors, site: Site, teams: Vec<Team>| {
        let page =
            form_page(&post.admin, None, Some(site), form, errors, teams, &crate::net::http::own_origin(&headers));
        render(StatusCode::UNPROCESSABLE_ENTITY, &page)
    };
    let site = match form.apply(stored.clone()) {
        Ok(site) => site,
        Err(errors) => return invalid(form, errors, stored, teams),
    };
    let detail = changes(&stored, &site);
    match SiteStore::save(&app.store, site).await {
        Ok(_) => {}
        Err(SiteError::Invalid(error)) => {
            let mut errors = FieldErrors::default();
            errors.add_error(error);
            return invalid(form, errors, stored, teams);
        }
        Err(SiteError::NotFound(_)) => return not_found(post.admin.lang, post.admin.t().noun_site),
        Err(error) => return internal_error(error),
    }
    app.sites.invalidate(&key);
    post.admin.audit(&app, "site.update", &key, detail).await;
    done(&format!("/admin/sites/{key}"), post.admin.t().site_saved)
}

/// `POST /admin/sites/{key}/rotate-secret`
pub async fn rotate_secret(State(app): State<AppState>, Path(key): Path<String>, post: AdminPost) -> Response {
    match SiteStore::rotate_secret(&app.store, &key).await {
        Ok(_) => {}
        Err(SiteError::NotFound(_)) => return not_found(post.admin.lang, post.admin.t().noun_site),
        Err(error) => return internal_error(error),
    }
    app.sites.invalidate(&key);
    post.admin.audit(&app, "site.rotate_secret", &key, "new secret; the old one no longer signs".into()).await;
    done(&format!("/admin/sites/{key}"), post.admin.t().secret_rotated)
}

/// `POST /admin/sites/{key}/delete`: the form repeats the key to confirm.
pub async fn delete(State(app): State<AppState>, Path(key): Path<String>, post: AdminPost) -> Response {
    if post.form.text("confirm").trim() != key {
        let t = post.admin.t();
        return super::message_page(
            post.admin.lang,
            StatusCode::UNPROCESSABLE_ENTITY,
            t.not_deleted,
            t.type_key_to_delete,
        );
    }
    let site = match SiteStore::delete(&app.store, &key).await {
        Ok(site) => site,
        Err(SiteError::NotFound(_)) => return not_found(post.admin.lang, post.admin.t().noun_site),
        Err(error) => return internal_error(error),
    };
    app.sites.invalidate(&key);
    app.refused_origins.forget_site(&key);
    post.admin.audit(&app, "site.delete", &key, format!("name {:?}", site.name)).await;
    done("/admin/sites", &super::fill(post.admin.t().site_deleted, &[("name", &site.name)]))
}

/// A site and its teams, `Ok(None)` if there is no such site.
async fn load(app: &AppState, key: &str) -> Result<Option<(Site, Vec<Team>)>, Response> {
    let loaded = async {
        let Some(site) = SiteStore::get(&app.store, key).await? else {
            return Ok(None);
        };
        let teams = TeamStore::list(&app.store).await?.into_iter().filter(|team| team.site == key).collect();
        Ok::<_, crate::storage::StorageError>(Some((site, teams)))
    };
    loaded.await.map_err(internal_error)
}

/// The settings that differ between two versions of a site, for the audit log.
fn changes(before: &Site, after: &Site) -> String {
    let (before, after) = (serde_json::to_value(before), serde_json::to_value(after));
    let (Ok(serde_json::Value::Object(before)), Ok(serde_json::Value::Object(after))) = (before, after) else {
        return String::new();
    };
    let changed: Vec<String> = after
        .iter()
        .filter(|(field, value)| *field != "secret" && before.get(*field) != Some(value))
        .map(|(field, value)| format!("{field}: {value}"))
        .collect();
    if changed.is_empty() { "no change".to_owned() } else { changed.join("; ") }
}

//! Admin page for the audit log: every admin action, newest first, filterable.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::form::FieldErrors;
use super::{AdminUser, Layout, internal_error, render};
use crate::history::audit::{self, AuditEntry, AuditFilter, AuditLog};
use crate::net::AppState;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    before: Option<u64>,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    layout: Layout,
    query: AuditQuery,
    entries: Vec<AuditEntry>,
    errors: FieldErrors,
    /// The link to the next (older) page, if there may be one.
    older: Option<String>,
}

impl AuditPage {
    fn when(&self, millis: &i64) -> String {
        crate::base::clock::format_utc(*millis)
    }
}

fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// `GET /admin/audit?actor=&action=&target=&from=YYYY-MM-DD&to=YYYY-MM-DD&before=ID`
pub async fn list(State(app): State<AppState>, admin: AdminUser, Query(query): Query<AuditQuery>) -> Response {
    let mut errors = FieldErrors::default();
    let mut day_start = |field: &str, text: &str, plus_days: u32| match text.trim() {
        "" => None,
        date => match crate::base::clock::date_to_day(date) {
            Some(day) => Some(i64::from(day + plus_days) * crate::base::clock::MILLIS_PER_DAY),
            None => {
                errors.add(field, format!("{date:?} is not a date like 2026-11-27"));
                None
            }
        },
    };
    let from = day_start("from", &query.from, 0);
    let until = day_start("to", &query.to, 1);
    let filter = AuditFilter {
        actor: optional(&query.actor),
        action: optional(&query.action),
        target: optional(&query.target),
        from,
        until,
        before: query.before,
    };
    let entries = if errors.is_empty() {
        match AuditLog::search(&app.store, filter).await {
            Ok(entries) => entries,
            Err(error) => return internal_error(error),
        }
    } else {
        Vec::new()
    };
    let older = (entries.len() == audit::PAGE_SIZE).then(|| {
        let last = entries.last().map_or(0, |entry| entry.id);
        let pairs = [
            ("actor", query.actor.as_str()),
            ("action", query.action.as_str()),
            ("target", query.target.as_str()),
            ("from", query.from.as_str()),
            ("to", query.to.as_str()),
        ];
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        serializer.extend_pairs(pairs.iter().filter(|(_, value)| !value.is_empty()));
        serializer.append_pair("before", &last.to_string());
        format!("/admin/audit?{}", serializer.finish())
    });
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    render(status, &AuditPage { layout: admin.layout("audit", None), query, entries, errors, older })
}

//! The bot's evaluation page: an admin pastes labelled visitor messages (the JSON Lines of
//! `kefu kb eval`, with the site's entry ids) and sees precision, recall and wrong answers per
//! threshold, language and kind, the precision–recall curve, and every wrong answer.
//!
//! Messages are ranked by [`crate::bot::Bot::rank`], the bot's own ranking with the site's
//! terms and semantic tier, so the figures are those of the live bot at each threshold.

use std::collections::HashSet;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::form::FieldErrors;
use super::knowledge_base::{PageQuery, sites_and_site};
use super::texts::{Texts, fill};
use super::{AdminPost, AdminUser, Layout, internal_error, render};
use crate::bot::knowledge_base::eval::{self, CurveLabels, Figures, Judged};
use crate::net::AppState;
use crate::sites::Site;

/// Most messages one evaluation ranks: each may ask the embeddings endpoint.
const MAX_EVAL_MESSAGES: usize = 2000;

/// Wrong answers listed under the figures.
const LISTED_WRONG: usize = 200;

/// One row of a figures table.
struct Row {
    label: String,
    figures: Figures,
    marked: bool,
}

impl Row {
    fn percent(value: Option<f64>) -> String {
        value.map_or_else(|| "–".into(), |value| format!("{:.1}%", value * 100.0))
    }
}

/// A message the bot would answer with the wrong entry.
struct Wrong {
    message: String,
    top: String,
    confidence: String,
    expected: String,
}

/// What an evaluation found.
struct Outcome {
    n_messages: usize,
    threshold: String,
    by_threshold: Vec<Row>,
    by_group: Vec<Row>,
    curve: String,
    wrong: Vec<Wrong>,
}

#[derive(Template)]
#[template(path = "admin/kb_eval.html")]
struct EvalPage {
    layout: Layout,
    t: &'static Texts,
    sites: Vec<Site>,
    site: Option<Site>,
    messages: String,
    errors: FieldErrors,
    outcome: Option<Outcome>,
}

impl EvalPage {
    fn percent(&self, value: &Option<f64>) -> String {
        Row::percent(*value)
    }
}

fn labels(t: &'static Texts) -> CurveLabels {
    CurveLabels { recall: t.recall, precision: t.precision, threshold: t.threshold_word }
}

/// Why an evaluation gave no figures.
enum EvalFailure {
    /// The messages cannot be evaluated: said under the form.
    Invalid(String),
    /// Reading the site failed.
    Internal(String),
}

/// Ranks every message as the bot would and gathers the figures at the site's threshold.
async fn evaluate(app: &AppState, site: &Site, text: &str, t: &'static Texts) -> Result<Outcome, EvalFailure> {
    let internal = |error: crate::storage::StorageError| EvalFailure::Internal(error.to_string());
    let settings = app.bot.settings(&site.key).await.map_err(internal)?;
    let knowledge = app.bot.knowledge().site(&site.key).await.map_err(internal)?;
    if knowledge.entries.is_empty() {
        return Err(EvalFailure::Invalid(t.eval_no_entries.to_owned()));
    }
    let known: HashSet<String> = knowledge.entries.iter().map(|entry| entry.id.to_string()).collect();
    let messages = eval::parse_messages(t.eval_messages, text, Some(&known))
        .map_err(|error| EvalFailure::Invalid(error.to_string()))?;
    if messages.len() > MAX_EVAL_MESSAGES {
        return Err(EvalFailure::Invalid(fill(t.eval_too_many, &[("max", &MAX_EVAL_MESSAGES)])));
    }
    let mut judged = Vec::with_capacity(messages.len());
    for message in messages {
        let ranked = app.bot.rank(&site.key, &knowledge, &settings, &message.message).await;
        let top = ranked.first().map(|best| (best.entry_id.to_string(), best.confidence));
        judged.push(Judged { message, top });
    }
    let threshold = settings.threshold;
    let all: Vec<&Judged> = judged.iter().collect();
    let by_threshold = eval::thresholds(threshold)
        .into_iter()
        .map(|step| Row {
            label: eval::threshold_label(step),
            figures: eval::figures(&all, step),
            marked: (step - threshold).abs() < 0.001,
        })
        .collect();
    let mut by_group =
        vec![Row { label: t.eval_all.to_owned(), figures: eval::figures(&all, threshold), marked: true }];
    by_group.extend(eval::groups(&judged).into_iter().map(|(label, members)| Row {
        label,
        figures: eval::figures(&members, threshold),
        marked: false,
    }));
    let wrong = judged
        .iter()
        .filter(|one| one.outcome(threshold) == "wrong")
        .take(LISTED_WRONG)
        .map(|one| {
            let (top, confidence) = one.top.clone().unwrap_or_default();
            Wrong {
                message: one.message.message.clone(),
                top,
                confidence: format!("{confidence:.3}"),
                expected: one.message.expected.clone().unwrap_or_else(|| "–".into()),
            }
        })
        .collect();
    let title = format!("{} ({} {})", site.name, judged.len(), t.eval_messages);
    Ok(Outcome {
        n_messages: judged.len(),
        threshold: format!("{threshold:.2}"),
        by_threshold,
        by_group,
        curve: eval::curve_svg(&judged, threshold, &title, &labels(t)),
        wrong,
    })
}

async fn eval_page(
    app: &AppState,
    admin: &AdminUser,
    site_key: Option<String>,
    messages: String,
    run: bool,
) -> Response {
    let lang = admin.lang;
    let (sites, site) = match sites_and_site(app, site_key, lang).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let t = lang.texts();
    let (mut errors, mut outcome) = (FieldErrors::default(), None);
    if let (true, Some(site)) = (run, &site) {
        match evaluate(app, site, &messages, t).await {
            Ok(found) => outcome = Some(found),
            Err(EvalFailure::Invalid(message)) => errors.add("messages", message),
            Err(EvalFailure::Internal(error)) => return internal_error(error),
        }
    }
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let page = EvalPage { layout: admin.layout("bot", None), t, sites, site, messages, errors, outcome };
    render(status, &page)
}

/// `GET /admin/bot/eval?site=KEY`
pub async fn form(State(app): State<AppState>, admin: AdminUser, Query(query): Query<PageQuery>) -> Response {
    eval_page(&app, &admin, query.site, String::new(), false).await
}

/// `POST /admin/bot/eval`: `site` and `messages` (JSON Lines).
pub async fn run(State(app): State<AppState>, post: AdminPost) -> Response {
    let site = Some(post.form.text("site")).filter(|key| !key.is_empty());
    eval_page(&app, &post.admin, site, post.form.text("messages"), true).await
}

//! Search and export over HTTP, for agents and admins.
//!
//! `GET /api/v1/search` answers a page of hits, newest first, with a cursor for the next one.
//! `GET /api/v1/export` streams CSV or JSON Lines. Agents see only their sites, API tokens their
//! one site; admins see all; visitors get 403.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{Caller, staff_only};
use crate::chat::conversations::ConversationStatus;
use crate::history::export::{ExportFormat, ExportRequest, HistoryExport};
use crate::net::AppState;
use crate::people::principal::Principal;
use crate::search::{MAX_LIMIT, SearchError, SearchPage, SearchRequest};

/// Hits in a search page when the client does not say.
const DEFAULT_LIMIT: usize = 20;

/// Every parameter arrives as text, so a wrong one gets a 422 that names it.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words to find.
    #[param(required = true, min_length = 1, pattern = r"\S")]
    q: Option<String>,
    /// Only this site's messages.
    site: Option<String>,
    /// Only conversations of this agent id.
    #[param(value_type = Option<u64>)]
    agent: Option<String>,
    /// Only this visitor id's conversations.
    #[param(value_type = Option<u64>)]
    visitor: Option<String>,
    /// From this day (YYYY-MM-DD, UTC).
    #[param(value_type = Option<String>, format = Date)]
    from: Option<String>,
    /// Up to this day (YYYY-MM-DD, UTC).
    #[param(value_type = Option<String>, format = Date)]
    to: Option<String>,
    /// Only conversations in this state.
    #[param(value_type = Option<SearchState>, inline)]
    state: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]+$")]
    cursor: Option<String>,
    /// 1 to 100; 20 when left out.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// The conversation states a search may be narrowed to (documentation only: the handler reads
/// the text, so a wrong one gets a 422 that names it).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Only its derived documentation is used.
pub enum SearchState {
    Queued,
    Assigned,
    Closed,
}

/// The export formats (documentation only, like [`SearchState`]).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Only its derived documentation is used.
pub enum ExportFormatName {
    Csv,
    Jsonl,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// First day (YYYY-MM-DD, UTC).
    #[param(required = true, value_type = String, format = Date)]
    from: Option<String>,
    /// Last day (YYYY-MM-DD, UTC), not before `from`.
    #[param(required = true, value_type = String, format = Date)]
    to: Option<String>,
    /// Only this site's messages.
    site: Option<String>,
    /// Only conversations of this agent id.
    #[param(value_type = Option<u64>)]
    agent: Option<String>,
    /// `csv` (the default) or `jsonl`.
    #[param(value_type = Option<ExportFormatName>, inline)]
    format: Option<String>,
    /// `true` starts a CSV with a byte-order mark (for spreadsheet programs).
    #[param(value_type = Option<bool>)]
    bom: Option<String>,
}

impl From<SearchError> for ApiError {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::BadQuery(_) => ApiError::Unprocessable(error.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The sites the caller may see (`None`: all), after checking the requested one.
fn visible_sites(principal: Principal, site: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    let caller = staff_only(principal)?;
    if let Some(site) = site
        && !caller.serves_site(site)
    {
        return Err(ApiError::Forbidden(format!("you do not serve site {site}")));
    }
    Ok(caller.visible_sites())
}

fn number(name: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    value
        .filter(|text| !text.is_empty())
        .map(|text| text.parse::<u64>().map_err(|_| ApiError::Unprocessable(format!("{name}: must be a number"))))
        .transpose()
}

fn day(name: &str, value: Option<&str>) -> Result<Option<u32>, ApiError> {
    value
        .filter(|text| !text.is_empty())
        .map(|text| {
            crate::base::clock::date_to_day(text)
                .ok_or_else(|| ApiError::Unprocessable(format!("{name}: must be a date, YYYY-MM-DD")))
        })
        .transpose()
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|text| !text.is_empty())
}

/// `GET /api/v1/search?q=...&site=&agent=&visitor=&from=&to=&state=&cursor=&limit=`
#[utoipa::path(get, path = "/api/v1/search", tag = "search and export",
    params(SearchParams),
    responses((status = 200, description = "A page of hits, newest first", body = SearchPage), super::openapi::CommonErrors))]
pub async fn search(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(params): Query<SearchParams>,
) -> Result<axum::Json<SearchPage>, ApiError> {
    let site = non_empty(params.site);
    let visible_sites = visible_sites(principal, site.as_deref())?;
    let query = params.q.unwrap_or_default();
    if query.trim().is_empty() {
        return Err(ApiError::Unprocessable("q: must not be empty".into()));
    }
    let state = match params.state.as_deref().filter(|text| !text.is_empty()) {
        None => None,
        Some("queued") => Some(ConversationStatus::Queued),
        Some("assigned") => Some(ConversationStatus::Assigned),
        Some("closed") => Some(ConversationStatus::Closed),
        Some(_) => return Err(ApiError::Unprocessable("state: must be queued, assigned or closed".into())),
    };
    let limit = number("limit", params.limit.as_deref())?.unwrap_or(DEFAULT_LIMIT as u64);
    if limit == 0 || limit > MAX_LIMIT as u64 {
        return Err(ApiError::Unprocessable(format!("limit: must be 1 to {MAX_LIMIT}")));
    }
    let request = SearchRequest {
        query,
        visible_sites,
        site,
        agent: number("agent", params.agent.as_deref())?,
        visitor: number("visitor", params.visitor.as_deref())?,
        from_day: day("from", params.from.as_deref())?,
        to_day: day("to", params.to.as_deref())?,
        state,
        before_lsn: number("cursor", params.cursor.as_deref())?,
        limit: limit as usize,
    };
    Ok(axum::Json(app.search.search(request).await?))
}

/// `GET /api/v1/export?from=YYYY-MM-DD&to=YYYY-MM-DD&site=&agent=&format=csv|jsonl&bom=true`
#[utoipa::path(get, path = "/api/v1/export", tag = "search and export",
    params(ExportParams),
    responses(
        (status = 200, description = "The messages of the date range, streamed", content(
            (String = "text/csv"),
            (String = "application/x-ndjson"))),
        super::openapi::CommonErrors))]
pub async fn export(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(params): Query<ExportParams>,
) -> Result<Response, ApiError> {
    let site = non_empty(params.site);
    let visible_sites = visible_sites(principal, site.as_deref())?;
    let (Some(from), Some(to)) = (non_empty(params.from), non_empty(params.to)) else {
        return Err(ApiError::Unprocessable("from and to: both are required (YYYY-MM-DD)".into()));
    };
    let (from_day, to_day) = ExportRequest::dates(&from, &to).map_err(ApiError::Unprocessable)?;
    let format = ExportFormat::parse(params.format.as_deref().unwrap_or("csv")).map_err(ApiError::Unprocessable)?;
    let bom = match params.bom.as_deref() {
        None | Some("") | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(ApiError::Unprocessable("bom: must be true or false".into())),
    };
    let request = ExportRequest {
        from_day,
        to_day,
        site,
        agent: number("agent", params.agent.as_deref())?,
        visible_sites,
        format,
        bom,
    };
    let extension = match format {
        ExportFormat::Csv => "csv",
        ExportFormat::Jsonl => "jsonl",
    };
    let receiver = app.store.start_export(request);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let item = receiver.recv().await?;
        if let Err(error) = &item {
            tracing::error!(%error, "export failed; the response is cut short");
        }
        Some((item, receiver))
    });
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"kefu-{from}-{to}.{extension}\"")),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

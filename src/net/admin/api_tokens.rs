//! Admin pages for API tokens: the list per site with a form to make one (shown once, right
//! after), and revoking.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::form::FieldErrors;
use super::{AdminPost, AdminUser, Layout, Notice, done, internal_error, not_found, render};
use crate::net::AppState;
use crate::people::api_tokens::ApiTokenStore;
use crate::people::api_tokens::{ApiToken, ApiTokenError, NewApiToken};
use crate::sites::Site;
use crate::sites::store::SiteStore;

/// A token as the list shows it.
struct TokenRow {
    id: u64,
    name: String,
    read_only: bool,
    created_at: String,
    created_by: String,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

/// The tokens of one site.
struct SiteTokens {
    site: String,
    site_name: String,
    tokens: Vec<TokenRow>,
}

/// A token just made, shown on this one page.
struct CreatedToken {
    name: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "admin/api_tokens.html")]
struct ApiTokensPage {
    layout: Layout,
    sites: Vec<Site>,
    groups: Vec<SiteTokens>,
    created: Option<CreatedToken>,
    errors: FieldErrors,
    form_name: String,
    form_site: String,
    form_read_only: bool,
}

/// Unix milliseconds as `2026-01-31 14:05 UTC`.
fn when(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis)
        .map(|at| at.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

fn row(token: ApiToken) -> TokenRow {
    TokenRow {
        id: token.id,
        name: token.name,
        read_only: token.read_only,
        created_at: when(token.created_at),
        created_by: token.created_by,
        last_used_at: token.last_used_at.map(when),
        revoked_at: token.revoked_at.map(when),
    }
}

/// The page with every site's tokens; `form` keeps what was typed after a refusal.
async fn page(
    app: &AppState,
    admin: &AdminUser,
    notice: Option<String>,
    created: Option<CreatedToken>,
    errors: FieldErrors,
    form: (String, String, bool),
) -> Result<ApiTokensPage, Response> {
    let sites = SiteStore::list(&app.store).await.map_err(internal_error)?;
    let tokens = app.store.tokens().await.map_err(internal_error)?;
    let mut groups: Vec<SiteTokens> = Vec::new();
    for token in tokens {
        let site_name = sites.iter().find(|site| site.key == token.site).map_or("(deleted site)", |site| &site.name);
        match groups.iter_mut().find(|group| group.site == token.site) {
            Some(group) => group.tokens.push(row(token)),
            None => groups.push(SiteTokens {
                site: token.site.clone(),
                site_name: site_name.to_owned(),
                tokens: vec![row(token)],
            }),
        }
    }
    groups.sort_by(|a, b| a.site_name.cmp(&b.site_name));
    let (form_name, form_site, form_read_only) = form;
    Ok(ApiTokensPage {
        layout: admin.layout("api-tokens", notice),
        sites,
        groups,
        created,
        errors,
        form_name,
        form_site,
        form_read_only,
    })
}

/// `GET /admin/api-tokens`
pub async fn list(State(app): State<AppState>, admin: AdminUser, Query(notice): Query<Notice>) -> Response {
    match page(&app, &admin, notice.take(), None, FieldErrors::default(), Default::default()).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(response) => response,
    }
}

/// `POST /admin/api-tokens`: makes a token and shows it, this once.
pub async fn create(State(app): State<AppState>, post: AdminPost) -> Response {
    let (name, site, read_only) = (post.form.text("name"), post.form.text("site"), post.form.checked("read_only"));
    let request =
        NewApiToken { name: name.clone(), site: site.clone(), read_only, created_by: post.admin.agent.email.clone() };
    let (status, created, errors) = match app.store.create_token(request).await {
        Ok(created) => {
            let access = if read_only { "read-only" } else { "read and write" };
            let detail = format!("id {}, name {:?}, site {}, {access}", created.token.id, created.token.name, site);
            post.admin.audit(&app, "api_token.create", &created.token.name, detail).await;
            (StatusCode::CREATED, Some(CreatedToken { name: created.token.name, secret: created.secret }), None)
        }
        Err(ApiTokenError::Invalid(error)) => {
            let mut errors = FieldErrors::default();
            errors.add_error(error);
            (StatusCode::UNPROCESSABLE_ENTITY, None, Some(errors))
        }
        Err(error) => return internal_error(error),
    };
    let form = match created {
        Some(_) => Default::default(),
        None => (name, site, read_only),
    };
    match page(&app, &post.admin, None, created, errors.unwrap_or_default(), form).await {
        Ok(page) => render(status, &page),
        Err(response) => response,
    }
}

/// `POST /admin/api-tokens/{id}/revoke`
pub async fn revoke(State(app): State<AppState>, Path(id): Path<u64>, post: AdminPost) -> Response {
    let token = match app.store.revoke_token(id).await {
        Ok(token) => token,
        Err(ApiTokenError::NotFound) => return not_found(post.admin.lang, post.admin.t().noun_api_token),
        Err(ApiTokenError::AlreadyRevoked) => return done("/admin/api-tokens", post.admin.t().token_already_revoked),
        Err(error) => return internal_error(error),
    };
    app.api_budgets.forget(id);
    post.admin.audit(&app, "api_token.revoke", &token.name, format!("id {id}, site {}", token.site)).await;
    done("/admin/api-tokens", &super::fill(post.admin.t().token_revoked, &[("name", &token.name)]))
}

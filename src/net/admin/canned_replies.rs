//! Admin page for canned replies: per site, with shortcut codes agents type as `/code`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::form::FieldErrors;
use super::{AdminPost, AdminUser, Layout, Notice, done, internal_error, not_found, render};
use crate::chat::canned_replies::{CannedReply, CannedReplyError, CannedReplyStore};
use crate::net::AppState;
use crate::sites::Site;
use crate::sites::store::SiteStore;

#[derive(Template)]
#[template(path = "admin/canned_replies.html")]
struct CannedRepliesPage {
    layout: Layout,
    sites: Vec<Site>,
    /// The site shown.
    site: Option<Site>,
    replies: Vec<CannedReply>,
    /// The reply whose form failed (`None` for the new-reply form) with what was typed.
    failed: Option<(Option<u64>, String, String)>,
    errors: FieldErrors,
}

impl CannedRepliesPage {
    /// What a reply's form shows: what was typed if its save failed, else what is stored.
    fn typed(&self, reply: &CannedReply) -> (String, String) {
        match &self.failed {
            Some((Some(id), shortcut, text)) if *id == reply.id => (shortcut.clone(), text.clone()),
            _ => (reply.shortcut.clone(), reply.text.clone()),
        }
    }

    /// What the new-reply form shows.
    fn typed_new(&self) -> (String, String) {
        match &self.failed {
            Some((None, shortcut, text)) => (shortcut.clone(), text.clone()),
            _ => Default::default(),
        }
    }

    /// The error of a reply's form, or empty.
    fn error_of(&self, reply: &CannedReply) -> String {
        match &self.failed {
            Some((Some(id), _, _)) if *id == reply.id => self.layout.error(&self.errors, "reply"),
            _ => String::new(),
        }
    }

    /// The error of the new-reply form, or empty.
    fn error_new(&self) -> String {
        match &self.failed {
            Some((None, _, _)) => self.layout.error(&self.errors, "reply"),
            _ => String::new(),
        }
    }
}

#[derive(Deserialize)]
pub struct SiteQuery {
    site: Option<String>,
    #[serde(flatten)]
    notice: Notice,
}

async fn page(
    app: &AppState,
    admin: &AdminUser,
    notice: Option<String>,
    site_key: Option<String>,
    failed: Option<(Option<u64>, String, String)>,
    errors: FieldErrors,
) -> Response {
    let loaded = async {
        let sites = app.store.list_by_name().await?;
        let site =
            site_key.and_then(|key| sites.iter().find(|site| site.key == key).cloned()).or(sites.first().cloned());
        let replies = match &site {
            Some(site) => CannedReplyStore::of_site(&app.store, &site.key).await?,
            None => Vec::new(),
        };
        Ok::<_, crate::storage::StorageError>((sites, site, replies))
    }
    .await;
    let (sites, site, replies) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return internal_error(error),
    };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let layout = admin.layout("canned", notice);
    render(status, &CannedRepliesPage { layout, sites, site, replies, failed, errors })
}

/// `GET /admin/canned-replies?site=KEY`
pub async fn list(State(app): State<AppState>, admin: AdminUser, Query(query): Query<SiteQuery>) -> Response {
    page(&app, &admin, query.notice.take(), query.site, None, FieldErrors::default()).await
}

async fn save_reply(app: &AppState, post: AdminPost, id: Option<u64>) -> Response {
    let site = post.form.text("site");
    let (shortcut, text) = (post.form.text("shortcut"), post.form.text("text"));
    if !matches!(app.sites.get(&site).await, Ok(Some(_))) {
        return not_found(post.admin.lang, post.admin.t().noun_site);
    }
    match CannedReplyStore::save(&app.store, id, site.clone(), &shortcut, &text).await {
        Ok(reply) => {
            let action = if id.is_some() { "canned_reply.update" } else { "canned_reply.create" };
            post.admin.audit(app, action, &format!("{site} /{}", reply.shortcut), reply.text.clone()).await;
            let notice = super::fill(post.admin.t().canned_saved, &[("shortcut", &reply.shortcut)]);
            done(&format!("/admin/canned-replies?site={site}"), &notice)
        }
        Err(CannedReplyError::NotFound) => not_found(post.admin.lang, post.admin.t().noun_canned_reply),
        Err(CannedReplyError::Storage(error)) => internal_error(error),
        Err(error) => {
            let mut errors = FieldErrors::default();
            errors.add("reply", error.to_string());
            page(app, &post.admin, None, Some(site), Some((id, shortcut, text)), errors).await
        }
    }
}

/// `POST /admin/canned-replies`
pub async fn create(State(app): State<AppState>, post: AdminPost) -> Response {
    save_reply(&app, post, None).await
}

/// `POST /admin/canned-replies/{id}`
pub async fn save(State(app): State<AppState>, Path(id): Path<u64>, post: AdminPost) -> Response {
    save_reply(&app, post, Some(id)).await
}

/// `POST /admin/canned-replies/{id}/delete`
pub async fn delete(State(app): State<AppState>, Path(id): Path<u64>, post: AdminPost) -> Response {
    let site = post.form.text("site");
    match CannedReplyStore::delete(&app.store, id, site.clone()).await {
        Ok(()) => {
            post.admin.audit(&app, "canned_reply.delete", &format!("{site} #{id}"), String::new()).await;
            done(&format!("/admin/canned-replies?site={site}"), post.admin.t().deleted)
        }
        Err(CannedReplyError::NotFound) => not_found(post.admin.lang, post.admin.t().noun_canned_reply),
        Err(error) => internal_error(error),
    }
}

//! Admin page for blocks: blocked visitors and addresses, with unblock, and blocking an address.

use std::net::IpAddr;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::form::FieldErrors;
use super::{AdminPost, AdminUser, Layout, Notice, done, internal_error, not_found, render};
use crate::net::AppState;
use crate::people::blocking::{self, BlockError, BlockStore};
use crate::people::visitors::{self, Visitor};
use crate::sites::Site;
use crate::sites::store::SiteStore;
use crate::storage::StorageError;

#[derive(Template)]
#[template(path = "admin/blocked.html")]
struct BlockedPage {
    layout: Layout,
    visitors: Vec<(Visitor, i64)>,
    addresses: Vec<(String, String, i64)>,
    sites: Vec<Site>,
    /// The block-an-address form as typed.
    site: String,
    address: String,
    errors: FieldErrors,
}

impl BlockedPage {
    fn when(&self, millis: &i64) -> String {
        crate::base::clock::format_utc(*millis)
    }

    /// The visitor's name, or "Visitor" in the page's language (the number is shown beside it).
    fn visitor_name(&self, visitor: &Visitor) -> String {
        match visitor.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => visitors::display_name(visitor),
            _ => self.layout.t.visitor.to_owned(),
        }
    }
}

async fn page(
    app: &AppState,
    admin: &AdminUser,
    notice: Option<String>,
    typed: (String, String),
    errors: FieldErrors,
) -> Response {
    let loaded = async {
        Ok::<_, StorageError>((
            app.store.blocked_visitors().await?,
            app.store.blocked_addresses().await?,
            SiteStore::list_by_name(&app.store).await?,
        ))
    }
    .await;
    let (visitors, addresses, sites) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return internal_error(error),
    };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let (site, address) = typed;
    let layout = admin.layout("blocked", notice);
    render(status, &BlockedPage { layout, visitors, addresses, sites, site, address, errors })
}

/// `GET /admin/blocked`
pub async fn list(State(app): State<AppState>, admin: AdminUser, Query(notice): Query<Notice>) -> Response {
    page(&app, &admin, notice.take(), Default::default(), FieldErrors::default()).await
}

/// `POST /admin/blocked/visitors/{id}/unblock`
pub async fn unblock_visitor(State(app): State<AppState>, Path(id): Path<u64>, post: AdminPost) -> Response {
    match app.store.set_visitor_blocked(id, false, None).await {
        Ok(visitor) => {
            post.admin.audit(&app, "visitor.unblock", &format!("visitor {id}"), format!("site {}", visitor.site)).await;
            done("/admin/blocked", &super::fill(post.admin.t().visitor_unblocked, &[("id", &id)]))
        }
        Err(BlockError::NotFound) => not_found(post.admin.lang, post.admin.t().noun_visitor),
        Err(BlockError::Storage(error)) => internal_error(error),
    }
}

/// `POST /admin/blocked/addresses`: blocks an address on a site and closes its live visitors.
pub async fn block_address(State(app): State<AppState>, post: AdminPost) -> Response {
    let (site, address) = (post.form.text("site"), post.form.text("address").trim().to_owned());
    let mut errors = FieldErrors::default();
    if !matches!(app.sites.get(&site).await, Ok(Some(_))) {
        errors.add("site", "choose a site");
    }
    let parsed = address.parse::<IpAddr>();
    if parsed.is_err() {
        errors.add("address", format!("{address:?} is not an IPv4 or IPv6 address"));
    }
    let Ok(ip) = parsed.map(|ip| ip.to_string()) else {
        return page(&app, &post.admin, None, (site, address), errors).await;
    };
    if !errors.is_empty() {
        return page(&app, &post.admin, None, (site, address), errors).await;
    }
    if let Err(error) = app.store.block_address(site.clone(), ip.clone()).await {
        return internal_error(error);
    }
    blocking::disconnect_address(&app.hub, &app.online_visitors, &site, &ip);
    post.admin.audit(&app, "address.block", &ip, format!("site {site}")).await;
    done("/admin/blocked", &super::fill(post.admin.t().address_blocked, &[("address", &ip), ("site", &site)]))
}

/// `POST /admin/blocked/addresses/unblock`
pub async fn unblock_address(State(app): State<AppState>, post: AdminPost) -> Response {
    let (site, address) = (post.form.text("site"), post.form.text("address"));
    match app.store.unblock_address(site.clone(), address.clone()).await {
        Ok(()) => {
            post.admin.audit(&app, "address.unblock", &address, format!("site {site}")).await;
            done(
                "/admin/blocked",
                &super::fill(post.admin.t().address_unblocked, &[("address", &address), ("site", &site)]),
            )
        }
        Err(BlockError::NotFound) => not_found(post.admin.lang, post.admin.t().noun_blocked_address),
        Err(BlockError::Storage(error)) => internal_error(error),
    }
}

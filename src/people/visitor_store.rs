//! The visitors' storage boundary: what the widget's session and the connections need of
//! visitors, in domain terms, so a second backend (the cluster's PostgreSQL,
//! `cluster::visitors`) implements these calls and not redb's tables. [`Store`] implements it
//! with `people::visitors`; both decide a session with `visitors::resolve_session`.

use std::collections::BTreeMap;
use std::future::Future;

use crate::base::secrets::{self, TokenDigest};
use crate::people::visitors::{self, OpenedSession, SessionRequest, TOKEN_PREFIX, Visitor, VisitorError};
use crate::sites::Site;
use crate::storage::{StorageError, Store};

pub trait VisitorStore: Send + Sync {
    /// Finds or makes the visitor for a session request (docs/protocol.md).
    fn open_session(
        &self,
        site: &Site,
        request: SessionRequest,
    ) -> impl Future<Output = Result<OpenedSession, VisitorError>> + Send;

    /// The visitor a token's digest belongs to.
    fn authenticate(&self, digest: &TokenDigest) -> impl Future<Output = Result<Option<Visitor>, StorageError>> + Send;

    /// One visitor.
    fn get(&self, id: u64) -> impl Future<Output = Result<Option<Visitor>, StorageError>> + Send;

    /// Sets or removes (a null value) a visitor's attributes (checked by
    /// `visitors::check_attribute_changes`, applied by `Visitor::change_attributes`); returns the
    /// visitor as changed. A refused change changes nothing.
    fn update_attributes(
        &self,
        visitor_id: u64,
        changes: BTreeMap<String, serde_json::Value>,
    ) -> impl Future<Output = Result<Visitor, VisitorError>> + Send;

    /// Whether `token` is a live session of a visitor of `site`, so opening a session with it
    /// makes no new visitor (the per-address budget of new sessions counts only those that do).
    fn token_is_live(
        &self,
        site: &str,
        token: Option<&str>,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send {
        async move {
            let Some(token) = token.filter(|token| token.starts_with(TOKEN_PREFIX)) else {
                return Ok(false);
            };
            let visitor = self.authenticate(&secrets::token_digest(token)).await?;
            Ok(visitor.is_some_and(|visitor| visitor.site == site))
        }
    }
}

impl VisitorStore for Store {
    async fn open_session(&self, site: &Site, request: SessionRequest) -> Result<OpenedSession, VisitorError> {
        visitors::open_session(self, site, request).await
    }

    async fn authenticate(&self, digest: &TokenDigest) -> Result<Option<Visitor>, StorageError> {
        let digest = *digest;
        self.read(move |transaction| visitors::authenticate(transaction, &digest)).await
    }

    async fn get(&self, id: u64) -> Result<Option<Visitor>, StorageError> {
        self.read(move |transaction| visitors::get(transaction, id)).await
    }

    async fn update_attributes(
        &self,
        visitor_id: u64,
        changes: BTreeMap<String, serde_json::Value>,
    ) -> Result<Visitor, VisitorError> {
        visitors::update_attributes(self, visitor_id, changes).await
    }
}

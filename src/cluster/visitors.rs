//! Visitors on the cluster's PostgreSQL: the [`VisitorStore`] boundary over the `visitors`,
//! `visitor_tokens` and `visitor_identities` record tables (migration 7), so a visitor's token
//! and verified identity work through any node. A session is decided by the appliance's own
//! `visitors::resolve_session`; this module only reads and stores, in one transaction.
//!
//! Two nodes opening sessions for one identity at once take turns on an advisory lock of that
//! identity, so it never ends up with two visitor records; the visitor rows a session changes
//! are locked (`FOR UPDATE`) until it commits.

use std::collections::BTreeMap;
use tokio_postgres::Transaction;

use crate::base::clock;
use crate::base::secrets::{self, TokenDigest};
use crate::cluster::postgres::Readers;
use crate::cluster::postgres::{self, PostgresError, Writers, database, put_record};
use crate::people::visitor_store::VisitorStore;
use crate::people::visitors::{
    CheckedRequest, OpenedSession, ResolvedSession, SessionLookup, SessionRequest, Visitor, VisitorError,
    resolve_session,
};
use crate::sites::Site;
use crate::storage::StorageError;

/// Connections a node's reads take in turn.
const READ_CONNECTIONS: usize = 2;

/// Sessions opened at once on a node, each on one of these connections for its transaction.
const SESSION_CONNECTIONS: usize = 4;

pub struct PostgresVisitors {
    readers: Readers,
    writers: Writers,
}

fn signed(id: u64) -> Result<i64, StorageError> {
    i64::try_from(id).map_err(|_| StorageError::Corrupt(format!("visitor id {id} is beyond bigint")))
}

/// The visitor `id`, locked until the transaction ends.
async fn locked_visitor(transaction: &Transaction<'_>, id: i64) -> Result<Option<Visitor>, StorageError> {
    postgres::record_where(transaction, "visitor", "SELECT record::text FROM visitors WHERE id = $1 FOR UPDATE", &[&id])
        .await
}

impl PostgresVisitors {
    /// Connects and applies the migrations the database lacks (visitors need migration 7).
    pub async fn open(url: &str) -> Result<PostgresVisitors, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresVisitors {
            readers: Readers::new(url, READ_CONNECTIONS),
            writers: Writers::new(url, SESSION_CONNECTIONS),
        })
    }

    async fn lookup(
        transaction: &Transaction<'_>,
        site_key: &str,
        checked: &CheckedRequest,
    ) -> Result<SessionLookup, StorageError> {
        if let Some(user_id) = checked.verified_user_id() {
            transaction
                .execute("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))", &[&site_key, &user_id])
                .await
                .map_err(database)?;
        }
        let token_visitor = match checked.presented_digest() {
            Some(digest) => {
                let owner = transaction
                    .query_opt(
                        "SELECT (record #>> '{}')::bigint FROM visitor_tokens WHERE digest = $1",
                        &[&digest.as_slice()],
                    )
                    .await
                    .map_err(database)?;
                match owner {
                    Some(row) => locked_visitor(transaction, row.get(0)).await?,
                    None => None,
                }
            }
            None => None,
        };
        let identity_owner = match checked.verified_user_id() {
            Some(user_id) => {
                let owner = transaction
                    .query_opt(
                        "SELECT (record #>> '{}')::bigint FROM visitor_identities WHERE site = $1 AND external_id = $2",
                        &[&site_key, &user_id],
                    )
                    .await
                    .map_err(database)?;
                match owner {
                    Some(row) => {
                        let id: i64 = row.get(0);
                        Some((id as u64, locked_visitor(transaction, id).await?))
                    }
                    None => None,
                }
            }
            None => None,
        };
        Ok(SessionLookup { token_visitor, identity_owner })
    }

    async fn store(
        transaction: &Transaction<'_>,
        site_key: &str,
        resolved: &ResolvedSession,
    ) -> Result<(), StorageError> {
        let id = signed(resolved.visitor.id)?;
        put_record(transaction, "visitors", "id", &id, &resolved.visitor).await?;
        let digest = secrets::token_digest(&resolved.token);
        transaction
            .execute(
                "INSERT INTO visitor_tokens (digest, record) VALUES ($1, to_jsonb($2::bigint))
                 ON CONFLICT (digest) DO UPDATE SET record = EXCLUDED.record",
                &[&digest.as_slice(), &id],
            )
            .await
            .map_err(database)?;
        if let Some(user_id) = &resolved.identity {
            transaction
                .execute(
                    "INSERT INTO visitor_identities (site, external_id, record) VALUES ($1, $2, to_jsonb($3::bigint))
                     ON CONFLICT (site, external_id) DO UPDATE SET record = EXCLUDED.record",
                    &[&site_key, user_id, &id],
                )
                .await
                .map_err(database)?;
        }
        Ok(())
    }
}

impl VisitorStore for PostgresVisitors {
    async fn open_session(&self, site: &Site, request: SessionRequest) -> Result<OpenedSession, VisitorError> {
        let checked = CheckedRequest::new(site, request)?;
        self.writers
            .run(async |transaction| -> Result<_, VisitorError> {
                let lookup = Self::lookup(transaction, &site.key, &checked).await?;
                // The decision is synchronous, so a new visitor's id is taken ahead; when the
                // session finds its visitor, that id is skipped (a sequence has gaps, never repeats).
                let new_id: i64 =
                    transaction.query_one("SELECT nextval('visitor_ids')", &[]).await.map_err(database)?.get(0);
                let resolved = resolve_session(&site.key, checked, lookup, clock::now_millis(), || new_id as u64)?;
                Self::store(transaction, &site.key, &resolved).await?;
                Ok(OpenedSession { visitor: resolved.visitor, token: resolved.token })
            })
            .await
    }

    async fn authenticate(&self, digest: &TokenDigest) -> Result<Option<Visitor>, StorageError> {
        let client = self.readers.client().await?;
        postgres::record_where(
            &*client,
            "visitor",
            "SELECT v.record::text FROM visitor_tokens t JOIN visitors v ON v.id = (t.record #>> '{}')::bigint
                 WHERE t.digest = $1",
            &[&digest.as_slice()],
        )
        .await
    }

    async fn get(&self, id: u64) -> Result<Option<Visitor>, StorageError> {
        let client = self.readers.client().await?;
        postgres::record_where(&*client, "visitor", "SELECT record::text FROM visitors WHERE id = $1", &[&signed(id)?])
            .await
    }

    async fn update_attributes(
        &self,
        visitor_id: u64,
        changes: BTreeMap<String, serde_json::Value>,
    ) -> Result<Visitor, VisitorError> {
        crate::people::visitors::check_attribute_changes(&changes)?;
        let id = i64::try_from(visitor_id).map_err(|_| VisitorError::NotFound)?;
        self.writers
            .run(async |transaction| -> Result<_, VisitorError> {
                let mut visitor: Visitor = postgres::record_where(
                    transaction,
                    "visitor",
                    "SELECT record::text FROM visitors WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await?
                .ok_or(VisitorError::NotFound)?;
                visitor.change_attributes(changes)?;
                put_record(transaction, "visitors", "id", &id, &visitor).await?;
                Ok(visitor)
            })
            .await
    }
}

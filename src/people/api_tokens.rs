//! API tokens: bearer tokens for integrations, created and revoked by admins, each scoped to one
//! site and optionally read-only.
//!
//! A token is shown once, when it is created; redb keeps only its SHA-256 digest
//! (`api_token_digests_v1`, digest → id) next to the token's record (`api_tokens_v1`). Revoking
//! removes the digest row, so a revoked token no longer authenticates, and keeps the record for
//! the admin list. Tokens start with [`TOKEN_PREFIX`] so `authenticate` knows where to look.
//!
//! Each token has its own request budget ([`RequestBudgets`], a token bucket per token), and the
//! time of its last use is recorded at most once per [`LAST_USED_INTERVAL`].
//!
//! [`ApiTokenStore`] is the tokens' storage boundary: [`Store`] implements it here, the cluster's
//! PostgreSQL in `cluster::api_tokens`; both check a name with [`check_name`] and decide a
//! revocation with [`ApiToken::revoke_at`].

use std::future::Future;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::base::field_error::FieldError;
use crate::base::rate_limit::RateLimiter;
use crate::base::secrets::{self, TokenDigest};
use crate::chat::delivery::CommittedEvent;
use crate::chat::writes::ChatWrites;
use crate::storage::{StorageError, Store, WriteContext, decode_json, encode_json, tables};

/// The prefix of API tokens, so a token says which table it belongs to.
pub const TOKEN_PREFIX: &str = "k1.";

/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// How often a token's `last_used_at` is written at most; a busy integration costs one small
/// write a minute, not one per request.
pub const LAST_USED_INTERVAL: Duration = Duration::from_secs(60);

/// An API token as stored (without the token itself).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: u64,
    /// What the admin called it ("CRM sync").
    pub name: String,
    /// The one site it may see and change.
    pub site: String,
    /// Only GET requests are allowed.
    pub read_only: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The email of the admin who created it.
    pub created_by: String,
    /// Unix milliseconds, to within [`LAST_USED_INTERVAL`]; `None` if never used.
    #[serde(default)]
    pub last_used_at: Option<i64>,
    /// Unix milliseconds; a revoked token no longer authenticates.
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

impl ApiToken {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Revokes the token at `now`, unless it already is.
    pub fn revoke_at(&mut self, now: i64) -> Result<(), ApiTokenError> {
        if self.is_revoked() {
            return Err(ApiTokenError::AlreadyRevoked);
        }
        self.revoked_at = Some(now);
        Ok(())
    }
}

/// A token's name, trimmed: 1 to [`MAX_NAME_CHARS`] characters.
pub fn check_name(name: &str) -> Result<String, ApiTokenError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiTokenError::Invalid(FieldError::new(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        )));
    }
    Ok(name.to_owned())
}

/// The refusal of a token for a site that does not exist.
pub fn no_such_site(site: &str) -> ApiTokenError {
    ApiTokenError::Invalid(FieldError::new("site", format!("no such site {site:?}")))
}

/// The API tokens' storage boundary.
pub trait ApiTokenStore: Send + Sync {
    /// Creates a token for an existing site.
    fn create_token(&self, request: NewApiToken)
    -> impl Future<Output = Result<CreatedApiToken, ApiTokenError>> + Send;

    /// Revokes a token: it stops authenticating at once and stays listed as revoked.
    fn revoke_token(&self, id: u64) -> impl Future<Output = Result<ApiToken, ApiTokenError>> + Send;

    /// Records that a token was used just now (no-op for a token revoked meanwhile).
    fn record_use(&self, id: u64) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The live token with this digest.
    fn authenticate_token(
        &self,
        digest: &TokenDigest,
    ) -> impl Future<Output = Result<Option<ApiToken>, StorageError>> + Send;

    /// One token, revoked or not.
    fn token(&self, id: u64) -> impl Future<Output = Result<Option<ApiToken>, StorageError>> + Send;

    /// Every token, revoked ones included, oldest first.
    fn tokens(&self) -> impl Future<Output = Result<Vec<ApiToken>, StorageError>> + Send;
}

impl ApiTokenStore for Store {
    async fn create_token(&self, request: NewApiToken) -> Result<CreatedApiToken, ApiTokenError> {
        create(self, request).await
    }

    async fn revoke_token(&self, id: u64) -> Result<ApiToken, ApiTokenError> {
        revoke(self, id).await
    }

    async fn record_use(&self, id: u64) -> Result<(), StorageError> {
        record_use(self, id).await
    }

    async fn authenticate_token(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StorageError> {
        let digest = *digest;
        self.read(move |transaction| authenticate(transaction, &digest)).await
    }

    async fn token(&self, id: u64) -> Result<Option<ApiToken>, StorageError> {
        self.read(move |transaction| get(transaction, id)).await
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>, StorageError> {
        self.read(list).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiTokenError {
    #[error("no such API token")]
    NotFound,
    #[error("the API token is already revoked")]
    AlreadyRevoked,
    #[error(transparent)]
    Invalid(FieldError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What an admin asks for.
pub struct NewApiToken {
    pub name: String,
    pub site: String,
    pub read_only: bool,
    pub created_by: String,
}

/// A token just created: its record and the token text, shown this once.
pub struct CreatedApiToken {
    pub token: ApiToken,
    pub secret: String,
}

async fn create(store: &Store, request: NewApiToken) -> Result<CreatedApiToken, ApiTokenError> {
    let name = check_name(&request.name)?;
    let secret = secrets::new_token(TOKEN_PREFIX);
    let digest = secrets::token_digest(&secret);
    store
        .write(move |context| {
            if context.transaction.open_table(tables::SITES)?.get(request.site.as_str())?.is_none() {
                return Ok(Err(no_such_site(&request.site)));
            }
            let mut table = context.transaction.open_table(tables::API_TOKENS)?;
            // Only the writer allocates ids, so the next after the largest is free.
            let id = table.last()?.map(|(key, _)| key.value() + 1).unwrap_or(1);
            let token = ApiToken {
                id,
                name,
                site: request.site,
                read_only: request.read_only,
                created_at: context.now,
                created_by: request.created_by,
                last_used_at: None,
                revoked_at: None,
            };
            table.insert(id, encode_json(&token).as_slice())?;
            context.transaction.open_table(tables::API_TOKEN_DIGESTS)?.insert(&digest, id)?;
            Ok(Ok(CreatedApiToken { token, secret }))
        })
        .await
}

async fn revoke(store: &Store, id: u64) -> Result<ApiToken, ApiTokenError> {
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::API_TOKENS)?;
            let Some(mut token) = table.get(id)?.map(|value| decode_json::<ApiToken>(value.value())).transpose()?
            else {
                return Ok(Err(ApiTokenError::NotFound));
            };
            if let Err(error) = token.revoke_at(context.now) {
                return Ok(Err(error));
            }
            table.insert(id, encode_json(&token).as_slice())?;
            drop(table);
            context.transaction.open_table(tables::API_TOKEN_DIGESTS)?.retain(|_, token_id| token_id != id)?;
            context.publish(CommittedEvent::ApiTokensRevoked(vec![id]));
            Ok(Ok(token))
        })
        .await
}

/// Revokes every live token of a site (inside the site's deletion): they stay listed as revoked.
pub fn revoke_of_site(context: &mut WriteContext<'_>, site: &str) -> Result<usize, StorageError> {
    let mut table = context.transaction.open_table(tables::API_TOKENS)?;
    let mut revoked = Vec::new();
    for entry in table.iter()? {
        let token: ApiToken = decode_json(entry?.1.value())?;
        if token.site == site && !token.is_revoked() {
            revoked.push(token);
        }
    }
    for token in &mut revoked {
        token.revoked_at = Some(context.now);
        table.insert(token.id, encode_json(token).as_slice())?;
    }
    let ids: std::collections::HashSet<u64> = revoked.iter().map(|token| token.id).collect();
    context.transaction.open_table(tables::API_TOKEN_DIGESTS)?.retain(|_, token_id| !ids.contains(&token_id))?;
    if !ids.is_empty() {
        context.publish(CommittedEvent::ApiTokensRevoked(ids.iter().copied().collect()));
    }
    Ok(ids.len())
}

async fn record_use(store: &Store, id: u64) -> Result<(), StorageError> {
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::API_TOKENS)?;
            let Some(mut token) = table.get(id)?.map(|value| decode_json::<ApiToken>(value.value())).transpose()?
            else {
                return Ok(Ok::<_, StorageError>(()));
            };
            if !token.is_revoked() {
                token.last_used_at = Some(context.now);
                table.insert(id, encode_json(&token).as_slice())?;
            }
            Ok(Ok(()))
        })
        .await
}

/// The live token with this digest (in a read transaction).
pub fn authenticate(transaction: &ReadTransaction, digest: &TokenDigest) -> Result<Option<ApiToken>, StorageError> {
    let Some(id) = transaction.open_table(tables::API_TOKEN_DIGESTS)?.get(digest)?.map(|value| value.value()) else {
        return Ok(None);
    };
    Ok(get(transaction, id)?.filter(|token| !token.is_revoked()))
}

pub fn get(transaction: &ReadTransaction, id: u64) -> Result<Option<ApiToken>, StorageError> {
    transaction.open_table(tables::API_TOKENS)?.get(id)?.map(|value| decode_json(value.value())).transpose()
}

/// Every token, revoked ones included, oldest first.
pub fn list(transaction: &ReadTransaction) -> Result<Vec<ApiToken>, StorageError> {
    let table = transaction.open_table(tables::API_TOKENS)?;
    table.iter()?.map(|entry| decode_json(entry?.1.value())).collect()
}

/// Per-token request budgets (a token bucket each) and when each token's use was last recorded.
///
/// In memory only: a restart gives every token a full bucket, which is harmless.
pub struct RequestBudgets {
    per_second: u32,
    burst: u32,
    tokens: DashMap<u64, TokenUse>,
}

struct TokenUse {
    bucket: RateLimiter,
    last_recorded: Option<Instant>,
}

/// What a request of a token may do.
pub struct Admission {
    /// `Some(wait)` when the bucket is empty: answer 429 with `Retry-After`.
    pub retry_after: Option<Duration>,
    /// Whether this request should record the token's use (see [`LAST_USED_INTERVAL`]).
    pub record_use: bool,
}

impl RequestBudgets {
    pub fn new(per_second: u32, burst: u32) -> RequestBudgets {
        RequestBudgets { per_second, burst, tokens: DashMap::new() }
    }

    /// Takes one request from the token's bucket.
    pub fn admit(&self, token_id: u64) -> Admission {
        let mut entry = self
            .tokens
            .entry(token_id)
            .or_insert_with(|| TokenUse { bucket: RateLimiter::new(self.per_second, self.burst), last_recorded: None });
        if let Err(wait) = entry.bucket.check() {
            return Admission { retry_after: Some(wait), record_use: false };
        }
        let now = Instant::now();
        let record_use = entry.last_recorded.is_none_or(|at| now.duration_since(at) >= LAST_USED_INTERVAL);
        if record_use {
            entry.last_recorded = Some(now);
        }
        Admission { retry_after: None, record_use }
    }

    /// Forgets a revoked token's bucket.
    pub fn forget(&self, token_id: u64) {
        self.tokens.remove(&token_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_says_how_long_to_wait_and_use_is_recorded_once_per_interval() {
        let budgets = RequestBudgets::new(1, 2);
        let first = budgets.admit(7);
        assert!(first.retry_after.is_none() && first.record_use);
        let second = budgets.admit(7);
        assert!(second.retry_after.is_none() && !second.record_use);
        let refused = budgets.admit(7).retry_after.expect("a burst of two allows two requests");
        assert!(refused > Duration::ZERO && refused <= Duration::from_secs(1));
        // Another token has its own bucket.
        assert!(budgets.admit(8).retry_after.is_none());
        budgets.forget(7);
        assert!(budgets.admit(7).retry_after.is_none());
    }
}

//! API tokens on the cluster's PostgreSQL: the [`ApiTokenStore`] boundary over the `api_tokens`
//! and `api_token_digests` record tables (migration 7), so a token created through one node
//! authenticates on every other and a revocation through one is refused by all at once. Checked
//! and decided as on the appliance (`check_name`, `ApiToken::revoke_at`); new ids come from
//! `api_token_ids` (migration 11), times from the database's clock.
//!
//! Not yet: ending a revoked token's gRPC event streams on the other nodes (the appliance's
//! `ApiTokensRevoked`); the node that revokes ends its own.

use crate::base::secrets::{self, TokenDigest};
use crate::cluster::postgres::{self, PostgresError, Readers, Writers, database, record_of, record_text};
use crate::people::api_tokens::{self, ApiToken, ApiTokenError, ApiTokenStore, CreatedApiToken, NewApiToken};
use crate::storage::StorageError;

pub struct PostgresApiTokens {
    readers: Readers,
    writers: Writers,
}

impl PostgresApiTokens {
    /// Connects and applies the migrations the database lacks.
    pub async fn open(url: &str) -> Result<PostgresApiTokens, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresApiTokens { readers: Readers::new(url, 2), writers: Writers::new(url, 1) })
    }

    /// The token's record, locked until the transaction ends.
    async fn locked(transaction: &tokio_postgres::Transaction<'_>, id: i64) -> Result<Option<ApiToken>, StorageError> {
        postgres::record_where(
            transaction,
            "API token",
            "SELECT record::text FROM api_tokens WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
    }

    async fn save(
        transaction: &tokio_postgres::Transaction<'_>,
        id: i64,
        token: &ApiToken,
    ) -> Result<(), StorageError> {
        transaction
            .execute("UPDATE api_tokens SET record = $2::text::jsonb WHERE id = $1", &[&id, &record_text(token)])
            .await
            .map_err(database)?;
        Ok(())
    }

    /// The database's clock, which every node's times are read from.
    async fn now(transaction: &tokio_postgres::Transaction<'_>) -> Result<i64, StorageError> {
        Ok(transaction.query_one("SELECT kefu_now_ms()", &[]).await.map_err(database)?.get(0))
    }
}

impl ApiTokenStore for PostgresApiTokens {
    async fn create_token(&self, request: NewApiToken) -> Result<CreatedApiToken, ApiTokenError> {
        let name = api_tokens::check_name(&request.name)?;
        let secret = secrets::new_token(api_tokens::TOKEN_PREFIX);
        let digest = secrets::token_digest(&secret);
        self.writers
            .run(async |transaction| -> Result<_, ApiTokenError> {
                let site = transaction
                    .query_opt("SELECT 1 FROM sites WHERE key = $1 FOR KEY SHARE", &[&request.site])
                    .await
                    .map_err(database)?;
                if site.is_none() {
                    return Err(api_tokens::no_such_site(&request.site));
                }
                let row = transaction
                    .query_one("SELECT nextval('api_token_ids'), kefu_now_ms()", &[])
                    .await
                    .map_err(database)?;
                let (id, now): (i64, i64) = (row.get(0), row.get(1));
                let token = ApiToken {
                    id: id as u64,
                    name,
                    site: request.site,
                    read_only: request.read_only,
                    created_at: now,
                    created_by: request.created_by,
                    last_used_at: None,
                    revoked_at: None,
                };
                transaction
                    .execute(
                        "INSERT INTO api_tokens (id, record) VALUES ($1, $2::text::jsonb)",
                        &[&id, &record_text(&token)],
                    )
                    .await
                    .map_err(database)?;
                transaction
                    .execute(
                        "INSERT INTO api_token_digests (digest, record) VALUES ($1, to_jsonb($2::bigint))",
                        &[&digest.as_slice(), &id],
                    )
                    .await
                    .map_err(database)?;
                Ok(CreatedApiToken { token, secret })
            })
            .await
    }

    async fn revoke_token(&self, id: u64) -> Result<ApiToken, ApiTokenError> {
        let key = i64::try_from(id).map_err(|_| ApiTokenError::NotFound)?;
        self.writers
            .run(async |transaction| -> Result<_, ApiTokenError> {
                let mut token = Self::locked(transaction, key).await?.ok_or(ApiTokenError::NotFound)?;
                let now = Self::now(transaction).await?;
                token.revoke_at(now)?;
                Self::save(transaction, key, &token).await?;
                transaction
                    .execute("DELETE FROM api_token_digests WHERE (record #>> '{}')::bigint = $1", &[&key])
                    .await
                    .map_err(database)?;
                Ok(token)
            })
            .await
    }

    async fn record_use(&self, id: u64) -> Result<(), StorageError> {
        let Ok(key) = i64::try_from(id) else { return Ok(()) };
        self.writers
            .run(async |transaction| -> Result<_, StorageError> {
                let Some(mut token) = Self::locked(transaction, key).await? else { return Ok(()) };
                if token.is_revoked() {
                    return Ok(());
                }
                let now = Self::now(transaction).await?;
                token.last_used_at = Some(now);
                Self::save(transaction, key, &token).await?;
                Ok(())
            })
            .await
    }

    async fn authenticate_token(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StorageError> {
        let client = self.readers.client().await?;
        let row = client
            .query_opt(
                "SELECT t.record::text FROM api_token_digests d JOIN api_tokens t ON t.id = (d.record #>> '{}')::bigint
                 WHERE d.digest = $1",
                &[&digest.as_slice()],
            )
            .await
            .map_err(database)?;
        let token: Option<ApiToken> = row.map(|row| record_of("API token", row.get(0))).transpose()?;
        Ok(token.filter(|token| !token.is_revoked()))
    }

    async fn token(&self, id: u64) -> Result<Option<ApiToken>, StorageError> {
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        let client = self.readers.client().await?;
        postgres::record_where(&*client, "API token", "SELECT record::text FROM api_tokens WHERE id = $1", &[&id]).await
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>, StorageError> {
        let client = self.readers.client().await?;
        postgres::records_where(&*client, "API token", "SELECT record::text FROM api_tokens ORDER BY id", &[]).await
    }
}

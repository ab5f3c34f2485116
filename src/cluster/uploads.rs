//! Uploads' files on the cluster's PostgreSQL, so a file attached through one node is read
//! through any other: the [`UploadStore`] boundary, which the appliance implements with
//! `DATA_DIR/uploads` and its uploads table, deciding with the same functions (`uploads::new_record`
//! for the size limit, the type sniffed from the bytes, executables refused and names cleaned;
//! `UploadQuota::check`; [`Upload::readable_by`]).
//!
//! The bytes are stored once per content (its SHA-256) as rows of `bytea` chunks of
//! [`CHUNK_BYTES`]: a put reads, hashes and writes one chunk at a time and a get reads one chunk
//! per query, so a node holds one chunk of a 20 MB file in memory, never the file. Chunks are
//! plain rows rather than large objects: they go with the rest of the database in a dump, a
//! deletion is a `DELETE` (large objects need their own `lo_unlink` and are left behind
//! otherwise), and they take part in transactions like every other table.
//! A put is one transaction: a refused or failed upload leaves nothing. Its last step, when a
//! quota applies, takes an advisory lock of the site and sums the site's uploads, so two nodes
//! storing at once keep to the quota.

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_postgres::{GenericClient, Row};

use crate::chat::upload_store::{UploadBytes, UploadContent, UploadStore};
use crate::chat::uploads::{AttachmentKind, Upload, UploadError, UploadQuota, UploadTarget, check_size, new_record};
use crate::cluster::messages::{CONVERSATION_COLUMNS, conversation_of, sender_kind_of, unsigned};
use crate::cluster::postgres::Readers;
use crate::cluster::postgres::{self, PostgresError, Writers, database};
use crate::people::principal::Principal;
use crate::protocol::ParticipantView;
use crate::storage::StorageError;

/// The bytes of one stored chunk: big enough that a 20 MB file is 80 rows, small enough that a
/// node's memory per upload in flight stays a fraction of a megabyte.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Puts running at once on a node, each on a connection of its own for its transaction.
const MAX_CONCURRENT_PUTS: usize = 8;

/// Connections a node's reads take in turn.
const READ_CONNECTIONS: usize = 2;

/// The columns [`upload_of`] reads, in its order.
pub(crate) const UPLOAD_COLUMNS: &str = "id, conversation_id, uploader_kind, uploader_id, name, size, content_type, kind, \
                              created_at, site, attached, content_id";

/// Uploads' files and records on PostgreSQL.
pub struct PostgresUploads {
    readers: Readers,
    writers: Writers,
}

impl PostgresUploads {
    /// Connects and applies the migrations the database lacks (uploads need migration 5).
    pub async fn open(url: &str) -> Result<PostgresUploads, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresUploads {
            readers: Readers::new(url, READ_CONNECTIONS),
            writers: Writers::new(url, MAX_CONCURRENT_PUTS),
        })
    }

    /// Stores the file read from `body` for `target` (whose conversation the caller checked),
    /// counted against its site's `quota`; refused with nothing stored as `uploads::new_record`
    /// and `UploadQuota::check` decide. Bytes already stored under another upload are not stored
    /// again.
    pub async fn put(
        &self,
        quota: &UploadQuota,
        target: UploadTarget,
        name: &str,
        mut body: impl AsyncRead + Unpin,
        max_bytes: usize,
    ) -> Result<Upload, UploadError> {
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        read_chunk(&mut body, &mut chunk).await?;
        let mut upload = new_record(target, name, &chunk, chunk.len(), max_bytes)?;
        let mut writer = self.writers.acquire().await.map_err(StorageError::from)?;
        let transaction = writer.client().transaction().await.map_err(database)?;
        let (content_id, size) = store_content(&transaction, chunk, &mut body, max_bytes).await?;
        upload.size = size;
        if quota.applies() {
            transaction
                .execute("SELECT pg_advisory_xact_lock(hashtext('kefu uploads ' || $1))", &[&upload.site])
                .await
                .map_err(database)?;
            quota.check(bytes_of_site(&transaction, &upload.site).await?, upload.size)?;
        }
        insert_record(&transaction, &upload, Some(content_id)).await?;
        transaction.commit().await.map_err(database)?;
        Ok(upload)
    }

    /// The upload `id` with its content's id (none for a record copied without its file).
    async fn record(&self, id: &str) -> Result<Option<(Upload, Option<i64>)>, StorageError> {
        let client = self.readers.client().await?;
        let row = client
            .query_opt(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1"), &[&id])
            .await
            .map_err(database)?;
        Ok(row.as_ref().map(upload_of).transpose()?)
    }

    /// The chunks of a content in order, one query each when the stream asks for the next.
    fn chunks(&self, content_id: i64) -> UploadBytes {
        let readers = self.readers.clone();
        stream::try_unfold(0i32, move |n| {
            let readers = readers.clone();
            async move {
                let client = readers.client().await?;
                let row = client
                    .query_opt("SELECT bytes FROM upload_chunks WHERE content_id = $1 AND n = $2", &[&content_id, &n])
                    .await
                    .map_err(database)?;
                match row {
                    Some(row) => Ok(Some((Bytes::from(row.try_get::<_, Vec<u8>>(0).map_err(database)?), n + 1))),
                    None if n > 0 => {
                        let n_chunks: Option<i32> = client
                            .query_opt("SELECT n_chunks FROM upload_contents WHERE id = $1", &[&content_id])
                            .await
                            .map_err(database)?
                            .map(|row| row.get(0));
                        if n_chunks == Some(n) {
                            Ok(None)
                        } else {
                            Err(StorageError::Server("the upload was removed while it was being read".into()))
                        }
                    }
                    None => Err(StorageError::Server("the upload was removed while it was being read".into())),
                }
            }
        })
        .boxed()
    }

    /// Removes the uploads no message attached within `grace` of their upload (the appliance's
    /// `uploads::sweep_unattached`); returns how many.
    pub async fn sweep_unattached(&self, grace: std::time::Duration) -> Result<u64, StorageError> {
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let cutoff = crate::base::clock::now_millis().saturating_sub(grace);
        let statement = "NOT attached AND created_at <= $1";
        self.writers
            .run(async |transaction| -> Result<u64, StorageError> {
                Ok(delete_where(transaction, statement, &[&cutoff]).await?)
            })
            .await
    }

    /// Removes the upload `id`, and its bytes when no other upload has the same; false when
    /// there was no such upload.
    pub async fn delete(&self, id: &str) -> Result<bool, StorageError> {
        self.writers.run(async |transaction| delete_in(transaction, id).await).await
    }
}

/// Removes the upload `id` in the caller's transaction, and its bytes when no other upload has
/// them; says whether there was one.
pub(crate) async fn delete_in(transaction: &tokio_postgres::Transaction<'_>, id: &str) -> Result<bool, StorageError> {
    Ok(delete_where(transaction, "id = $1", &[&id]).await? == 1)
}

/// Removes the uploads matching `condition` (SQL over the `uploads` columns, with `params`) in
/// the caller's transaction, and the bytes no other upload has; returns how many went.
pub(crate) async fn delete_where(
    transaction: &tokio_postgres::Transaction<'_>,
    condition: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, PostgresError> {
    let removed =
        transaction.query(&format!("DELETE FROM uploads WHERE {condition} RETURNING content_id"), params).await?;
    let contents: Vec<i64> = removed.iter().filter_map(|row| row.get::<_, Option<i64>>(0)).collect();
    if !contents.is_empty() {
        // A content another upload still refers to, or one a concurrent put holds (FOR KEY
        // SHARE), is kept; its chunks go with it otherwise (ON DELETE CASCADE).
        transaction
            .execute(
                "DELETE FROM upload_contents c WHERE c.id = ANY($1)
                   AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.content_id = c.id)
                   AND c.id IN (SELECT id FROM upload_contents WHERE id = ANY($1) FOR UPDATE SKIP LOCKED)",
                &[&contents],
            )
            .await?;
    }
    Ok(removed.len() as u64)
}

impl UploadStore for PostgresUploads {
    async fn store(
        &self,
        quota: &UploadQuota,
        target: UploadTarget,
        name: String,
        body: Bytes,
        max_bytes: usize,
    ) -> Result<Upload, UploadError> {
        self.put(quota, target, &name, body.as_ref(), max_bytes).await
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>, StorageError> {
        Ok(self.record(id).await?.map(|(upload, _)| upload))
    }

    async fn bytes(&self, id: &str) -> Result<Option<UploadBytes>, StorageError> {
        let content_id = self.record(id).await?.and_then(|(_, content_id)| content_id);
        Ok(content_id.map(|content_id| self.chunks(content_id)))
    }

    async fn readable(&self, id: &str, principal: &Principal) -> Result<Option<UploadContent>, StorageError> {
        let Some((upload, content_id)) = self.record(id).await? else {
            return Ok(None);
        };
        // A record copied from an appliance without its file has no bytes to read.
        let Some(content_id) = content_id else {
            return Ok(None);
        };
        let conversation = match upload.conversation_id.and_then(|id| i64::try_from(id).ok()) {
            Some(conversation_id) => self
                .readers
                .client()
                .await?
                .query_opt(
                    &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1"),
                    &[&conversation_id],
                )
                .await
                .map_err(database)?
                .as_ref()
                .map(conversation_of)
                .transpose()?,
            None => None,
        };
        if !upload.readable_by(principal, conversation.as_ref()) {
            return Ok(None);
        }
        Ok(Some(UploadContent { upload, bytes: self.chunks(content_id) }))
    }

    async fn bytes_of_site(&self, site: &str) -> Result<u64, StorageError> {
        let client = self.readers.client().await?;
        bytes_of_site(&*client, site).await
    }
}

/// The bytes of the uploads stored for `site`.
async fn bytes_of_site(client: &impl GenericClient, site: &str) -> Result<u64, StorageError> {
    let row = client
        .query_one("SELECT coalesce(sum(size), 0)::bigint FROM uploads WHERE site = $1", &[&site])
        .await
        .map_err(database)?;
    Ok(unsigned(row.try_get(0).map_err(database)?)?)
}

/// Stores the bytes of `first_chunk` and the rest of `body` in `transaction` as a content (or
/// finds the same bytes stored before); returns the content's id and the size. A body over
/// `max_bytes` is refused: the caller drops the transaction, which rolls the chunks back.
async fn store_content(
    transaction: &tokio_postgres::Transaction<'_>,
    mut chunk: Vec<u8>,
    body: &mut (impl AsyncRead + Unpin),
    max_bytes: usize,
) -> Result<(i64, u64), UploadError> {
    let content_id: i64 =
        transaction.query_one("SELECT nextval('upload_content_ids')", &[]).await.map_err(database)?.get(0);
    let mut hasher = Sha256::new();
    let mut size = 0usize;
    let mut n_chunks = 0i32;
    while !chunk.is_empty() {
        size += chunk.len();
        check_size(size, max_bytes)?;
        hasher.update(&chunk);
        transaction
            .execute(
                "INSERT INTO upload_chunks (content_id, n, bytes) VALUES ($1, $2, $3)",
                &[&content_id, &n_chunks, &chunk.as_slice()],
            )
            .await
            .map_err(database)?;
        n_chunks += 1;
        read_chunk(body, &mut chunk).await?;
    }
    let sha256 = hasher.finalize().to_vec();
    let size_param = i64::try_from(size).unwrap_or(i64::MAX);

    // A content stored before (or by a node committing the same bytes now, which this waits
    // for) is used instead: these chunks go and the upload refers to it.
    let inserted = transaction
        .query_opt(
            "INSERT INTO upload_contents (id, sha256, size, n_chunks) VALUES ($1, $2, $3, $4)
             ON CONFLICT (sha256) DO NOTHING RETURNING id",
            &[&content_id, &sha256, &size_param, &n_chunks],
        )
        .await
        .map_err(database)?;
    let content_id = match inserted {
        Some(_) => content_id,
        None => {
            transaction
                .execute("DELETE FROM upload_chunks WHERE content_id = $1", &[&content_id])
                .await
                .map_err(database)?;
            // FOR KEY SHARE keeps a concurrent delete of its last upload from removing it
            // before this upload's row commits.
            transaction
                .query_one("SELECT id FROM upload_contents WHERE sha256 = $1 FOR KEY SHARE", &[&sha256])
                .await
                .map_err(database)?
                .get(0)
        }
    };
    Ok((content_id, size as u64))
}

/// Writes an upload's record, referring to its content (none for a record copied from an
/// appliance whose file was gone).
async fn insert_record(
    transaction: &tokio_postgres::Transaction<'_>,
    upload: &Upload,
    content_id: Option<i64>,
) -> Result<(), StorageError> {
    let conversation_id = upload.conversation_id.map(|id| i64::try_from(id).unwrap_or(i64::MAX));
    let uploader_id = i64::try_from(upload.uploader.id).unwrap_or(i64::MAX);
    let size = i64::try_from(upload.size).unwrap_or(i64::MAX);
    transaction
        .execute(
            &format!(
                "INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            &[
                &upload.id,
                &conversation_id,
                &i16::from(upload.uploader.kind.code()),
                &uploader_id,
                &upload.name,
                &size,
                &upload.content_type,
                &kind_name(upload.kind),
                &upload.created_at,
                &upload.site,
                &upload.attached,
                &content_id,
            ],
        )
        .await
        .map_err(database)?;
    Ok(())
}

/// Stores an appliance's upload as it is (its id, names, times and marks kept), with the bytes
/// of `file` (`None` when its file was gone: the record is kept, and reads find no bytes), in
/// `transaction`; for `kefu migrate-to-postgres`.
pub(crate) async fn import(
    transaction: &tokio_postgres::Transaction<'_>,
    upload: &Upload,
    file: Option<&mut (impl AsyncRead + Unpin)>,
) -> Result<(), UploadError> {
    let content_id = match file {
        Some(file) => {
            let mut chunk = Vec::with_capacity(CHUNK_BYTES);
            read_chunk(file, &mut chunk).await?;
            if chunk.is_empty() { None } else { Some(store_content(transaction, chunk, file, usize::MAX).await?.0) }
        }
        None => None,
    };
    insert_record(transaction, upload, content_id).await?;
    Ok(())
}

/// Fills `chunk` (cleared first) with up to [`CHUNK_BYTES`] of `body`; empty at its end.
async fn read_chunk(body: &mut (impl AsyncRead + Unpin), chunk: &mut Vec<u8>) -> Result<(), UploadError> {
    chunk.clear();
    while chunk.len() < CHUNK_BYTES {
        let mut limited = (&mut *body).take((CHUNK_BYTES - chunk.len()) as u64);
        if limited.read_buf(chunk).await.map_err(StorageError::Io)? == 0 {
            break;
        }
    }
    Ok(())
}

fn kind_name(kind: AttachmentKind) -> &'static str {
    match kind {
        AttachmentKind::Image => "image",
        AttachmentKind::File => "file",
    }
}

/// An upload's record and its content's id (none for a record copied without its file), from
/// [`UPLOAD_COLUMNS`].
pub(crate) fn upload_of(row: &Row) -> Result<(Upload, Option<i64>), PostgresError> {
    let kind: String = row.try_get(7)?;
    let kind = match kind.as_str() {
        "image" => AttachmentKind::Image,
        "file" => AttachmentKind::File,
        other => return Err(PostgresError::Corrupt(format!("unknown attachment kind {other:?}"))),
    };
    let upload = Upload {
        id: row.try_get(0)?,
        conversation_id: row.try_get::<_, Option<i64>>(1)?.map(unsigned).transpose()?,
        uploader: ParticipantView { kind: sender_kind_of(row.try_get(2)?)?, id: unsigned(row.try_get(3)?)? },
        name: row.try_get(4)?,
        size: unsigned(row.try_get(5)?)?,
        content_type: row.try_get(6)?,
        kind,
        created_at: row.try_get(8)?,
        site: row.try_get(9)?,
        attached: row.try_get(10)?,
    };
    Ok((upload, row.try_get(11)?))
}

//! The uploads' storage boundary: a file stored within its site's quota, an upload's record, its
//! bytes, and both together for whoever may read them. [`Store`] implements it here with the
//! uploads table and the files of `DATA_DIR/uploads`, the cluster's PostgreSQL in
//! `cluster::uploads` (records and deduplicated chunks). Both decide with `uploads::new_record`
//! (empty, too large, name, sniffed type), `UploadQuota::check` and `Upload::readable_by`.
//!
//! A file goes in whole, as the [`Bytes`] of a request's body (the HTTP limit bounds it), and comes
//! out as [`UploadBytes`], a stream of parts read as it is polled, so a download never holds a
//! whole file in memory on either backend.

use std::future::Future;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::io::AsyncReadExt;

use crate::chat::conversations;
use crate::chat::uploads::{self, Upload, UploadError, UploadQuota, UploadTarget};
use crate::people::principal::Principal;
use crate::storage::{StorageError, Store};

/// An upload's bytes in order, read a part at a time as the stream is polled.
pub type UploadBytes = BoxStream<'static, Result<Bytes, StorageError>>;

/// A readable upload: its record and its bytes.
pub struct UploadContent {
    pub upload: Upload,
    pub bytes: UploadBytes,
}

/// The uploads' storage boundary.
pub trait UploadStore: Send + Sync {
    /// Stores `body` as a file named `name` for `target` (whose conversation the caller checked),
    /// counted against its site's `quota`; refused, with nothing stored, when `uploads::new_record`
    /// refuses it or the quota would be passed.
    fn store(
        &self,
        quota: &UploadQuota,
        target: UploadTarget,
        name: String,
        body: Bytes,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Upload, UploadError>> + Send;

    /// One upload's record.
    fn upload(&self, id: &str) -> impl Future<Output = Result<Option<Upload>, StorageError>> + Send;

    /// One upload's bytes, whoever asks (an agent's public picture); `None` when there is no
    /// such upload or its bytes are gone.
    fn bytes(&self, id: &str) -> impl Future<Output = Result<Option<UploadBytes>, StorageError>> + Send;

    /// An upload with its bytes when `principal` may read it (`Upload::readable_by`); `None` when
    /// there is no such upload, its bytes are gone, or it is not theirs to read, so a caller
    /// cannot tell these apart.
    fn readable(
        &self,
        id: &str,
        principal: &Principal,
    ) -> impl Future<Output = Result<Option<UploadContent>, StorageError>> + Send;

    /// The bytes of the uploads stored for `site`, which its quota counts.
    fn bytes_of_site(&self, site: &str) -> impl Future<Output = Result<u64, StorageError>> + Send;
}

/// The size of the parts a file is read in.
const READ_PART_BYTES: usize = 256 * 1024;

impl UploadStore for Store {
    async fn store(
        &self,
        quota: &UploadQuota,
        target: UploadTarget,
        name: String,
        body: Bytes,
        max_bytes: usize,
    ) -> Result<Upload, UploadError> {
        uploads::store_upload(self, quota, target, &name, body, max_bytes).await
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>, StorageError> {
        let id = id.to_owned();
        self.read(move |transaction| uploads::get(transaction, &id)).await
    }

    async fn bytes(&self, id: &str) -> Result<Option<UploadBytes>, StorageError> {
        if self.upload(id).await?.is_none() {
            return Ok(None);
        }
        file_bytes(self, id).await
    }

    async fn readable(&self, id: &str, principal: &Principal) -> Result<Option<UploadContent>, StorageError> {
        let lookup_id = id.to_owned();
        let found = self
            .read(move |transaction| {
                let Some(upload) = uploads::get(transaction, &lookup_id)? else { return Ok(None) };
                let conversation = match upload.conversation_id {
                    Some(conversation_id) => conversations::get(transaction, conversation_id)?,
                    None => None,
                };
                Ok(Some((upload, conversation)))
            })
            .await?;
        let Some((upload, conversation)) = found else { return Ok(None) };
        if !upload.readable_by(principal, conversation.as_ref()) {
            return Ok(None);
        }
        let Some(bytes) = file_bytes(self, id).await? else { return Ok(None) };
        Ok(Some(UploadContent { upload, bytes }))
    }

    async fn bytes_of_site(&self, site: &str) -> Result<u64, StorageError> {
        let site = site.to_owned();
        self.read(move |transaction| uploads::bytes_of_site(transaction, &site)).await
    }
}

/// The bytes of the file of upload `id` in `DATA_DIR/uploads`, opened now so that a removal
/// afterwards does not cut the read; `None` when the file is gone.
async fn file_bytes(store: &Store, id: &str) -> Result<Option<UploadBytes>, StorageError> {
    let file = match tokio::fs::File::open(uploads::path_of(store.data_dir(), id)).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::Io(error)),
    };
    let parts = stream::try_unfold(file, |file| async move {
        let mut part = Vec::with_capacity(READ_PART_BYTES);
        let mut limited = file.take(READ_PART_BYTES as u64);
        limited.read_to_end(&mut part).await.map_err(StorageError::Io)?;
        let file = limited.into_inner();
        Ok((!part.is_empty()).then(|| (Bytes::from(part), file)))
    });
    Ok(Some(parts.boxed()))
}

//! Uploads: images and files that visitors and agents attach to messages.
//!
//! The type comes from the bytes (never the name or the declared type). Raster images are
//! served inline with their own type; everything else is served as a download
//! (`application/octet-stream`, `Content-Disposition: attachment`), and every file with
//! `nosniff` and a sandboxing CSP, so an uploaded HTML or SVG file never runs script on kefu's
//! origin. Executables are refused. A file is readable by its uploader and, once it is attached
//! to a message, by everyone who can read that conversation.
//!
//! Disk use is bounded: each site has a quota of stored bytes ([`UploadQuota`]), an upload no
//! message attached is removed after a grace period ([`sweep_unattached`]), and an attached one
//! goes when retention removes its day ([`remove_expired`], called by `retention.rs`).
//!
//! [`UploadStore`] (`upload_store.rs`) is its storage boundary, on redb with `DATA_DIR/uploads`
//! and on the cluster's PostgreSQL; both decide with [`new_record`], [`UploadQuota::check`] and
//! [`Upload::readable_by`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::chat::upload_store::UploadStore;
use crate::people::principal::Principal;
use crate::protocol::ParticipantView;
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// The folder under the data directory that holds uploaded bytes.
pub const UPLOADS_DIR: &str = "uploads";

/// Longest file name kept.
const MAX_NAME_CHARS: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    /// A raster image, shown inline.
    Image,
    /// Anything else, offered as a download.
    File,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Upload {
    /// 128 random bits in hex; also the file name on disk.
    pub id: String,
    /// The conversation it belongs to: given at upload, or set when a message attaches it.
    pub conversation_id: Option<u64>,
    pub uploader: ParticipantView,
    pub name: String,
    pub size: u64,
    /// The type sniffed from the bytes.
    pub content_type: String,
    pub kind: AttachmentKind,
    pub created_at: i64,
    /// The site whose quota the bytes count against; empty for uploads stored before quotas.
    #[serde(default)]
    pub site: String,
    /// Whether a message attached it; an unattached upload is swept after a grace period.
    /// Uploads stored before this field existed read as attached, so the sweep never takes them.
    #[serde(default = "attached_when_not_recorded")]
    pub attached: bool,
}

fn attached_when_not_recorded() -> bool {
    true
}

impl Upload {
    /// Whether `principal` may read this file.
    pub fn readable_by(
        &self,
        principal: &Principal,
        conversation: Option<&crate::chat::conversations::Conversation>,
    ) -> bool {
        let sender = principal.sender();
        if sender.kind == self.uploader.kind && sender.id == self.uploader.id {
            return true;
        }
        conversation.is_some_and(|conversation| {
            Some(conversation.id) == self.conversation_id && principal.can_access(conversation)
        })
    }

    /// Where clients fetch the file.
    pub fn url(&self) -> String {
        format!("/api/v1/uploads/{}", self.id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than {0} bytes")]
    TooLarge(usize),
    #[error("executable files are not accepted")]
    Refused,
    #[error("{0}")]
    Invalid(String),
    #[error("no such conversation")]
    NotFound,
    #[error("the site's upload quota of {0} bytes is used up")]
    QuotaExceeded(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The type of a file from its first bytes: raster images by their own type, executables
/// refused, text as `text/plain`, anything else by its sniffed type or as octet-stream.
pub fn sniff(bytes: &[u8]) -> Result<(String, AttachmentKind), UploadError> {
    const IMAGES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
    const EXECUTABLES: [&str; 5] = [
        "application/x-executable",
        "application/vnd.microsoft.portable-executable",
        "application/x-mach-binary",
        "application/x-msdownload",
        "application/x-sharedlib",
    ];
    match infer::get(bytes) {
        Some(found) if IMAGES.contains(&found.mime_type()) => Ok((found.mime_type().to_owned(), AttachmentKind::Image)),
        Some(found) if EXECUTABLES.contains(&found.mime_type()) || found.matcher_type() == infer::MatcherType::App => {
            Err(UploadError::Refused)
        }
        Some(found) => Ok((found.mime_type().to_owned(), AttachmentKind::File)),
        None if std::str::from_utf8(&bytes[..bytes.len().min(4096)]).is_ok() => {
            Ok(("text/plain".to_owned(), AttachmentKind::File))
        }
        None => Ok(("application/octet-stream".to_owned(), AttachmentKind::File)),
    }
}

/// A file name safe to show and to put in a header: no paths, no control characters.
pub fn clean_name(name: &str) -> Result<String, UploadError> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|character| !character.is_control()).take(MAX_NAME_CHARS).collect();
    let cleaned = cleaned.trim().to_owned();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return Err(UploadError::Invalid("name: a file name is required".into()));
    }
    Ok(cleaned)
}

/// Bidi controls: marks, embeddings, overrides and isolates (U+061C, U+200E, U+200F,
/// U+202A to U+202E, U+2066 to U+2069). A right-to-left override in "photo\u{202E}gpj.exe" shows
/// as "photoexe.jpg".
fn is_bidi_control(character: char) -> bool {
    matches!(character, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A stored file name as it is shown and offered for saving (`Content-Disposition`): its bidi
/// controls replaced by U+FFFD, so the extension a person reads is the real one. The stored name
/// keeps them, as the uploader sent it.
pub fn display_name(name: &str) -> String {
    name.chars().map(|character| if is_bidi_control(character) { '\u{FFFD}' } else { character }).collect()
}

pub fn path_of(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join(UPLOADS_DIR).join(id)
}

/// The bytes of uploads stored per site, against `limits.upload_quota_bytes_per_site`.
///
/// A site's total is read from the uploads table the first time it is needed and kept up to date
/// by the uploads stored since; removals (the sweep, retention) call [`UploadQuota::forget`] so
/// the next upload reads it again. Concurrent uploads may pass the quota together by at most
/// their own sizes.
pub struct UploadQuota {
    /// The most bytes a site may store; 0 for no quota.
    max_bytes_per_site: u64,
    /// Site key → bytes stored, for the sites that uploaded since the last [`UploadQuota::forget`].
    used: parking_lot::Mutex<HashMap<String, u64>>,
}

impl UploadQuota {
    pub fn new(max_bytes_per_site: u64) -> UploadQuota {
        UploadQuota { max_bytes_per_site, used: parking_lot::Mutex::new(HashMap::new()) }
    }

    /// Whether the quota limits anything (0 is no quota).
    pub fn applies(&self) -> bool {
        self.max_bytes_per_site != 0
    }

    /// Whether a site storing `used` bytes may store `n_bytes` more: the one decision of the
    /// quota, on every backend.
    pub fn check(&self, used: u64, n_bytes: u64) -> Result<(), UploadError> {
        if self.applies() && used.saturating_add(n_bytes) > self.max_bytes_per_site {
            return Err(UploadError::QuotaExceeded(self.max_bytes_per_site));
        }
        Ok(())
    }

    /// Counts `n_bytes` more for `site`, or refuses them when the quota would be passed; a
    /// site's first total is read from `store`.
    async fn reserve(&self, store: &impl UploadStore, site: &str, n_bytes: u64) -> Result<(), UploadError> {
        if !self.applies() {
            return Ok(());
        }
        let known = self.used.lock().contains_key(site);
        if !known {
            let stored = store.bytes_of_site(site).await?;
            self.used.lock().entry(site.to_owned()).or_insert(stored);
        }
        let mut used = self.used.lock();
        let total = used.entry(site.to_owned()).or_default();
        self.check(*total, n_bytes)?;
        *total += n_bytes;
        Ok(())
    }

    /// Gives back bytes counted for an upload that was not stored.
    fn release(&self, site: &str, n_bytes: u64) {
        if let Some(total) = self.used.lock().get_mut(site) {
            *total = total.saturating_sub(n_bytes);
        }
    }

    /// Drops every kept total, after uploads were removed.
    pub fn forget(&self) {
        self.used.lock().clear();
    }
}

/// The bytes of the uploads stored for `site`.
pub fn bytes_of_site(transaction: &ReadTransaction, site: &str) -> Result<u64, StorageError> {
    let mut total = 0u64;
    for entry in transaction.open_table(tables::UPLOADS)?.iter()? {
        let upload: Upload = decode_json(entry?.1.value())?;
        if upload.site == site {
            total = total.saturating_add(upload.size);
        }
    }
    Ok(total)
}

/// Where an upload goes and who made it.
pub struct UploadTarget {
    pub uploader: ParticipantView,
    /// The site it belongs to (its quota).
    pub site: String,
    /// Checked by the caller: the uploader may access it.
    pub conversation_id: Option<u64>,
}

/// Refuses an empty file or one larger than `max_bytes`.
pub fn check_size(size: usize, max_bytes: usize) -> Result<(), UploadError> {
    if size == 0 {
        return Err(UploadError::Empty);
    }
    if size > max_bytes {
        return Err(UploadError::TooLarge(max_bytes));
    }
    Ok(())
}

/// A new upload's record for `target`, of `size` bytes starting with `first_bytes`: its name
/// cleaned, its type sniffed from those bytes; refused when the file is empty or larger than
/// `max_bytes`, when it is an executable, or when the name holds no file name. A backend that
/// reads the file in parts checks the size of the rest with [`check_size`].
pub fn new_record(
    target: UploadTarget,
    name: &str,
    first_bytes: &[u8],
    size: usize,
    max_bytes: usize,
) -> Result<Upload, UploadError> {
    check_size(size, max_bytes)?;
    let name = clean_name(name)?;
    let (content_type, kind) = sniff(first_bytes)?;
    Ok(Upload {
        id: crate::base::secrets::new_hex_id(16),
        conversation_id: target.conversation_id,
        uploader: target.uploader,
        name,
        size: size as u64,
        content_type,
        kind,
        created_at: crate::base::clock::now_millis(),
        site: target.site,
        attached: false,
    })
}

/// Stores the bytes and their metadata in `DATA_DIR/uploads` and redb, within the site's quota.
pub async fn store_upload(
    store: &Store,
    quota: &UploadQuota,
    target: UploadTarget,
    name: &str,
    bytes: bytes::Bytes,
    max_bytes: usize,
) -> Result<Upload, UploadError> {
    let upload = new_record(target, name, &bytes, bytes.len(), max_bytes)?;
    quota.reserve(store, &upload.site, upload.size).await?;
    let (site, size) = (upload.site.clone(), upload.size);
    let stored = write_upload(store, upload, bytes).await;
    if stored.is_err() {
        quota.release(&site, size);
    }
    stored
}

async fn write_upload(store: &Store, upload: Upload, bytes: bytes::Bytes) -> Result<Upload, UploadError> {
    let directory = store.data_dir().join(UPLOADS_DIR);
    let path = path_of(store.data_dir(), &upload.id);
    // Write and sync the bytes before the metadata commits, so a stored upload always has its file.
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(&directory)?;
        let partial = path.with_extension("partial");
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&partial, &path)
    })
    .await
    .map_err(|error| StorageError::Panicked(error.to_string()))?
    .map_err(StorageError::Io)?;
    store
        .write(move |context| {
            context
                .transaction
                .open_table(tables::UPLOADS)?
                .insert(upload.id.as_str(), encode_json(&upload).as_slice())?;
            Ok(Ok(upload))
        })
        .await
}

/// Uploads read per read transaction while looking for what to remove.
const SCAN_CHUNK: usize = 10_000;

/// Removes the uploads `doomed` picks: the rows first (one writer operation per chunk), then the
/// files, so a crash in between leaves a stray file, never a row without its file. Returns how
/// many went.
async fn remove_where(
    store: &Store,
    doomed: impl Fn(&ReadTransaction, &Upload) -> Result<bool, StorageError> + Clone + Send + 'static,
) -> Result<u64, StorageError> {
    let mut after: Option<String> = None;
    let mut n_removed = 0;
    loop {
        let doomed = doomed.clone();
        let start = after.clone();
        let (ids, scanned, last) = store
            .read(move |transaction| {
                let table = transaction.open_table(tables::UPLOADS)?;
                let range = match &start {
                    Some(key) => {
                        table.range::<&str>((std::ops::Bound::Excluded(key.as_str()), std::ops::Bound::Unbounded))?
                    }
                    None => table.range::<&str>(..)?,
                };
                let mut ids = Vec::new();
                let mut scanned = 0;
                let mut last = None;
                for entry in range.take(SCAN_CHUNK) {
                    let (key, value) = entry?;
                    scanned += 1;
                    last = Some(key.value().to_owned());
                    let upload: Upload = decode_json(value.value())?;
                    if doomed(transaction, &upload)? {
                        ids.push(upload.id);
                    }
                }
                Ok((ids, scanned, last))
            })
            .await?;
        if !ids.is_empty() {
            let removed = ids.clone();
            store
                .write(move |context| {
                    let mut table = context.transaction.open_table(tables::UPLOADS)?;
                    for id in &removed {
                        table.remove(id.as_str())?;
                    }
                    Ok(Ok::<(), StorageError>(()))
                })
                .await?;
            let data_dir = store.data_dir().to_owned();
            let n_files = ids.len() as u64;
            tokio::task::spawn_blocking(move || {
                for id in ids {
                    if let Err(error) = std::fs::remove_file(path_of(&data_dir, &id))
                        && error.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!(%error, upload = %id, "removing an upload's file failed");
                    }
                }
            })
            .await
            .map_err(|error| StorageError::Panicked(error.to_string()))?;
            n_removed += n_files;
        }
        if scanned < SCAN_CHUNK {
            return Ok(n_removed);
        }
        after = last;
    }
}

/// Removes the uploads no message attached that are older than `grace`; returns how many.
pub async fn sweep_unattached(store: &Store, grace: std::time::Duration) -> Result<u64, StorageError> {
    let cutoff = crate::base::clock::now_millis().saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
    let n_removed = remove_where(store, move |_, upload| Ok(!upload.attached && upload.created_at <= cutoff)).await?;
    if n_removed > 0 {
        tracing::info!(uploads = n_removed, "removed uploads that no message attached");
    }
    Ok(n_removed)
}

/// Removes the attached uploads whose conversation's messages of that day retention has removed
/// (or will remove within a day): `expired(site, day)` says whether `site` keeps `day`. An upload
/// counts on the day after the one it was made, since the message attaching it may be that late.
pub async fn remove_expired(
    store: &Store,
    expired: impl Fn(&str, u32) -> bool + Clone + Send + 'static,
) -> Result<u64, StorageError> {
    remove_where(store, move |transaction, upload| {
        let Some(conversation_id) = upload.conversation_id.filter(|_| upload.attached) else {
            return Ok(false);
        };
        let site = if upload.site.is_empty() {
            match crate::chat::conversations::get(transaction, conversation_id)? {
                Some(conversation) => conversation.site,
                None => return Ok(false),
            }
        } else {
            upload.site.clone()
        };
        Ok(expired(&site, crate::base::clock::day_of(upload.created_at).saturating_add(1)))
    })
    .await
}

/// The ids of every stored upload, whose files must be in the uploads directory.
pub fn stored_ids(transaction: &ReadTransaction) -> Result<Vec<String>, StorageError> {
    let table = transaction.open_table(tables::UPLOADS)?;
    let mut ids = Vec::new();
    for entry in table.iter()? {
        ids.push(entry?.0.value().to_owned());
    }
    Ok(ids)
}

/// The stored uploads whose file is missing from `data_dir`'s uploads directory.
pub fn missing_files(transaction: &ReadTransaction, data_dir: &Path) -> Result<Vec<String>, StorageError> {
    Ok(stored_ids(transaction)?.into_iter().filter(|id| !path_of(data_dir, id).exists()).collect())
}

pub fn get(transaction: &ReadTransaction, id: &str) -> Result<Option<Upload>, StorageError> {
    let table = transaction.open_table(tables::UPLOADS)?;
    table.get(id)?.map(|value| decode_json(value.value())).transpose()
}

/// Up to `limit` uploads with an id after `after`, in id order (a database without uploads has
/// none).
pub fn scan(transaction: &ReadTransaction, after: Option<&str>, limit: usize) -> Result<Vec<Upload>, StorageError> {
    let table = match transaction.open_table(tables::UPLOADS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let range = match after {
        Some(after) => table.range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?,
        None => table.range::<&str>(..)?,
    };
    let mut uploads = Vec::with_capacity(limit.min(1024));
    for entry in range.take(limit) {
        uploads.push(decode_json(entry?.1.value())?);
    }
    Ok(uploads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes() {
        let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, b'I', b'H', b'D', b'R'];
        assert_eq!(sniff(&png).unwrap(), ("image/png".to_owned(), AttachmentKind::Image));
        let html = b"<html><script>alert(1)</script></html>";
        assert_eq!(sniff(html).unwrap().1, AttachmentKind::File);
        let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
        assert_eq!(sniff(svg).unwrap().1, AttachmentKind::File);
        let mut elf = vec![0x7F, b'E', b'L', b'F', 2, 1, 1, 0];
        elf.resize(64, 0);
        assert!(matches!(sniff(&elf), Err(UploadError::Refused)));
    }

    #[test]
    fn names_lose_their_paths() {
        assert_eq!(clean_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(clean_name("C:\\Users\\a\\photo.png").unwrap(), "photo.png");
        assert!(clean_name("..").is_err());
        assert!(clean_name("  ").is_err());
    }

    #[test]
    fn shown_names_lose_their_bidi_controls() {
        assert_eq!(display_name("photo\u{202E}gpj.exe"), "photo\u{FFFD}gpj.exe");
        assert_eq!(display_name("\u{2067}a\u{2069}\u{200F}b\u{061C}"), "\u{FFFD}a\u{FFFD}\u{FFFD}b\u{FFFD}");
        assert_eq!(display_name("报价单 2026.pdf"), "报价单 2026.pdf");
    }
}

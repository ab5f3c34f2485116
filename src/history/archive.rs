//! The backup archive: one tar file holding the database snapshot (`kefu.redb`, from one read
//! transaction, see [`super::backup`]) and the file of every upload that snapshot references
//! (`uploads/ID`), so a restore brings back attachments with their messages.
//!
//! Uploads are copied after the snapshot, listed from the snapshot itself: an upload's file is
//! written before its row commits and removed after its row is, so every upload the snapshot
//! holds still has its file unless retention removed it in between, which the summary counts.
//! Restoring extracts into the data directory only the two kinds of entry it knows, by name, so
//! an archive cannot write anywhere else.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase};
use serde::Serialize;

use super::backup::{BackupError, RestoreSummary, restore};
use crate::chat::uploads::{self, UPLOADS_DIR};
use crate::storage::{DATABASE_FILE, StorageError};

/// The database's entry in an archive.
const DATABASE_ENTRY: &str = "kefu.redb";

/// Where `ustar` archives carry their magic.
const TAR_MAGIC_OFFSET: u64 = 257;

/// What an archive holds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArchiveSummary {
    pub n_uploads: usize,
    pub upload_bytes: u64,
    /// Uploads the snapshot references whose file was gone when the archive was written.
    pub missing_uploads: Vec<String>,
}

/// Writes `archive` from the database snapshot file `snapshot` and the uploads of `data_dir`
/// that the snapshot references. `archive` must not exist; on failure nothing is left there.
pub fn write_archive(snapshot: &Path, data_dir: &Path, archive: &Path) -> Result<ArchiveSummary, BackupError> {
    if archive.exists() {
        return Err(BackupError::Exists(archive.to_owned()));
    }
    let ids = {
        let database = Database::open(snapshot)?;
        let transaction = database.begin_read()?;
        uploads::stored_ids(&transaction)?
    };
    let partial = archive.with_extension("partial");
    let written = (|| -> Result<ArchiveSummary, BackupError> {
        let mut builder = tar::Builder::new(BufWriter::new(File::create(&partial).map_err(StorageError::from)?));
        builder.mode(tar::HeaderMode::Deterministic);
        builder.append_path_with_name(snapshot, DATABASE_ENTRY).map_err(StorageError::from)?;
        let mut summary = ArchiveSummary::default();
        for id in ids {
            let path = uploads::path_of(data_dir, &id);
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    summary.missing_uploads.push(id);
                    continue;
                }
                Err(error) => return Err(StorageError::from(error).into()),
            };
            builder.append_file(format!("{UPLOADS_DIR}/{id}"), &mut file).map_err(StorageError::from)?;
            summary.n_uploads += 1;
            summary.upload_bytes += file.metadata().map_err(StorageError::from)?.len();
        }
        let file = builder.into_inner().map_err(StorageError::from)?;
        file.into_inner()
            .map_err(|error| StorageError::from(error.into_error()))?
            .sync_all()
            .map_err(StorageError::from)?;
        Ok(summary)
    })();
    match written {
        Ok(summary) => {
            std::fs::rename(&partial, archive).map_err(StorageError::from)?;
            Ok(summary)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error)
        }
    }
}

/// Whether `path` is a tar archive (a backup made before archives is a bare database file).
pub fn is_archive(path: &Path) -> bool {
    let mut magic = [0u8; 5];
    File::open(path)
        .and_then(|mut file| {
            file.seek(SeekFrom::Start(TAR_MAGIC_OFFSET))?;
            file.read_exact(&mut magic)
        })
        .is_ok_and(|()| &magic == b"ustar")
}

/// Whether `data_dir` is missing or holds nothing.
pub fn is_empty_directory(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir).map_or(true, |mut entries| entries.next().is_none())
}

/// What `kefu restore` of an archive did.
#[derive(Clone, Debug, Serialize)]
pub struct ArchiveRestoreSummary {
    pub database: RestoreSummary,
    pub n_uploads: usize,
}

/// Restores the database and the uploads of `archive` into `data_dir` (the server must be
/// stopped). The archive is read in full into a staging area first, so a damaged one changes
/// nothing; uploads already there with the same id are replaced.
pub fn restore_archive(data_dir: &Path, archive: &Path) -> Result<ArchiveRestoreSummary, BackupError> {
    crate::base::file_modes::create_private_directory(data_dir).map_err(StorageError::from)?;
    let staging = data_dir.join(format!("restoring-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let restored = (|| {
        let (database, upload_ids) = extract(archive, &staging)?;
        let database = database.ok_or_else(|| BackupError::Damaged(format!("it holds no {DATABASE_ENTRY}")))?;
        let summary = restore(data_dir, &database)?;
        let uploads_dir = data_dir.join(UPLOADS_DIR);
        std::fs::create_dir_all(&uploads_dir).map_err(StorageError::from)?;
        for id in &upload_ids {
            std::fs::rename(staging.join(UPLOADS_DIR).join(id), uploads_dir.join(id)).map_err(StorageError::from)?;
        }
        Ok(ArchiveRestoreSummary { database: summary, n_uploads: upload_ids.len() })
    })();
    let _ = std::fs::remove_dir_all(&staging);
    restored
}

/// Extracts the database and the uploads of `archive` under `staging`; refuses any other entry.
fn extract(archive: &Path, staging: &Path) -> Result<(Option<PathBuf>, Vec<String>), BackupError> {
    let damaged = |error: std::io::Error| BackupError::Damaged(error.to_string());
    std::fs::create_dir_all(staging.join(UPLOADS_DIR)).map_err(StorageError::from)?;
    let mut reader = tar::Archive::new(BufReader::new(File::open(archive).map_err(StorageError::from)?));
    let (mut database, mut upload_ids) = (None, Vec::new());
    for entry in reader.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let name = entry.path().map_err(damaged)?.to_string_lossy().into_owned();
        let destination = if name == DATABASE_ENTRY {
            let path = staging.join(DATABASE_FILE);
            database = Some(path.clone());
            path
        } else if let Some(id) = name.strip_prefix(&format!("{UPLOADS_DIR}/")).filter(|id| is_upload_id(id)) {
            upload_ids.push(id.to_owned());
            staging.join(UPLOADS_DIR).join(id)
        } else {
            return Err(BackupError::Damaged(format!("it holds {name:?}, which is not part of a kefu backup")));
        };
        let mut file = File::create(&destination).map_err(StorageError::from)?;
        std::io::copy(&mut entry, &mut file).map_err(damaged)?;
        file.sync_all().map_err(StorageError::from)?;
    }
    Ok((database, upload_ids))
}

/// An upload id as kefu makes them: a plain file name, never a path.
fn is_upload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

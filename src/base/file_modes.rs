//! Private file modes for the data directory: it holds the database (with the sites' identity
//! secrets and the agents' password hashes), the commit log, the search index, uploads, the
//! QUIC key and the control socket, none of which anyone but kefu's own user should read.
//!
//! kefu creates files with umask 077 (directories 0700, files 0600) whatever umask it was
//! started with, since it does not control the modes of files the database and index libraries
//! create; at start it takes group and other permissions away from anything already in the
//! data directory, and `kefu check` warns about them.

use std::path::{Path, PathBuf};

/// Permissions kefu never gives group or others on its data.
const GROUP_AND_OTHER_BITS: u32 = 0o077;

/// A file or directory in the data directory that group or others may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LooseMode {
    pub path: PathBuf,
    /// Its permission bits (such as 0o644).
    pub mode: u32,
}

/// Makes every file this process creates from now on private to its user (umask 077).
pub fn restrict_new_files() {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `data_dir` (mode 0700) if it does not exist.
pub fn create_private_directory(data_dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(data_dir)
}

/// Everything in `data_dir` (and the directory itself) that group or others may use. Symbolic
/// links are not followed.
pub fn find_loose_modes(data_dir: &Path) -> std::io::Result<Vec<LooseMode>> {
    let mut loose = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut pending = vec![data_dir.to_owned()];
        while let Some(path) = pending.pop() {
            let metadata = match std::fs::symlink_metadata(&path) {
                Ok(metadata) => metadata,
                // Removed while we looked (an upload finishing, a log rotated).
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            if metadata.file_type().is_symlink() {
                continue;
            }
            let mode = metadata.permissions().mode() & 0o7777;
            if mode & GROUP_AND_OTHER_BITS != 0 {
                loose.push(LooseMode { path: path.clone(), mode });
            }
            if metadata.is_dir() {
                for entry in std::fs::read_dir(&path)? {
                    pending.push(entry?.path());
                }
            }
        }
        loose.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(loose)
}

/// Takes group and other permissions away from everything in `data_dir`, logging each change
/// (and each file it may not change); returns what was loose.
pub fn tighten(data_dir: &Path) -> std::io::Result<Vec<LooseMode>> {
    let loose = find_loose_modes(data_dir)?;
    #[cfg(unix)]
    for entry in &loose {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.mode & !GROUP_AND_OTHER_BITS;
        // One file kefu may not change (another owner's) does not stop the others.
        if let Err(error) = std::fs::set_permissions(&entry.path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %entry.path.display(), %error, "could not tighten the mode of a file in the data directory");
            continue;
        }
        tracing::warn!(
            path = %entry.path.display(),
            from = %format!("{:04o}", entry.mode),
            to = %format!("{mode:04o}"),
            "tightened the mode of a file in the data directory"
        );
    }
    Ok(loose)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn tightening_takes_away_group_and_other_bits_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("uploads")).unwrap();
        std::fs::write(data.join("kefu.redb"), b"x").unwrap();
        std::fs::write(data.join("uploads/a"), b"x").unwrap();
        std::fs::write(data.join("read-only"), b"x").unwrap();
        for (path, mode) in
            [("", 0o755), ("uploads", 0o775), ("kefu.redb", 0o644), ("uploads/a", 0o666), ("read-only", 0o444)]
        {
            std::fs::set_permissions(data.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        assert_eq!(find_loose_modes(&data).unwrap().len(), 5);
        assert_eq!(tighten(&data).unwrap().len(), 5);
        assert!(find_loose_modes(&data).unwrap().is_empty());
        assert_eq!(mode_of(&data), 0o700);
        assert_eq!(mode_of(&data.join("uploads")), 0o700);
        assert_eq!(mode_of(&data.join("kefu.redb")), 0o600);
        assert_eq!(mode_of(&data.join("uploads/a")), 0o600);
        assert_eq!(mode_of(&data.join("read-only")), 0o400);
    }
}

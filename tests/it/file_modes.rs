//! The data directory is private: 0700, its files 0600, whatever the umask kefu started with;
//! looser modes are tightened at start, and `kefu check` warns about them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::{TestServer, http};

/// Every path under `root` (and `root`) with its permission bits.
fn modes_under(root: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        found.push((path.display().to_string(), metadata.permissions().mode() & 0o7777));
        if metadata.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
        }
    }
    found
}

fn loose(root: &Path) -> Vec<(String, u32)> {
    modes_under(root).into_iter().filter(|(_, mode)| mode & 0o077 != 0).collect()
}

/// The data directory is `data` inside the test's directory, so kefu creates it.
fn data_in_subdirectory(config: &mut kefu::base::config::Config) {
    config.data_dir = config.data_dir.join("data");
}

#[tokio::test]
async fn files_are_private_whatever_the_umask_and_check_warns_about_loose_ones() {
    // SAFETY: umask only swaps the process's file-creation mask; a permissive one is the point.
    unsafe { libc::umask(0o022) };
    let mut server = TestServer::start_with(data_in_subdirectory).await;
    let data = server.dir.path().join("data");
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let uploaded = http()
        .post(server.url("/api/v1/uploads?name=note.txt"))
        .bearer_auth(&token)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    server.stop().await;

    let modes = modes_under(&data);
    assert!(modes.iter().any(|(path, _)| path.ends_with("kefu.redb")), "{modes:?}");
    assert!(modes.iter().any(|(path, _)| path.contains("upload")), "{modes:?}");
    assert!(loose(&data).is_empty(), "group or others may read: {:?}", loose(&data));
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);

    // A file loosened by hand: `kefu check` warns, and the next start tightens it.
    let database = data.join("kefu.redb");
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["check", "--data-dir", data.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{} has mode 0644", database.display())), "{stderr}");
    assert!(stderr.contains(&format!("{} has mode 0755", data.display())), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("loose_modes=2"));

    server.restart().await;
    server.stop().await;
    assert!(loose(&data).is_empty(), "group or others may read: {:?}", loose(&data));
}

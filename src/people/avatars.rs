//! Agents' pictures, shown in the console and beside their messages in the widget.
//!
//! An avatar is stored like an attachment (`chat::uploads`: typed from its bytes, written to the
//! uploads folder, a row in the uploads table), but only raster images are accepted and it is
//! marked attached at once, so the sweep of unattached uploads leaves it alone. The agent record
//! names the upload; setting a new picture or removing it deletes the old file.

use redb::ReadableTable;

use crate::chat::uploads::{self, AttachmentKind, UploadError, UploadQuota, UploadTarget};
use crate::people::agents::Agent;
use crate::protocol::{ParticipantView, SenderKind};
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// The largest avatar accepted: plenty for a 512×512 picture.
pub const MAX_AVATAR_BYTES: usize = 512 * 1024;

/// The quota key avatars count against: they belong to no site.
const AVATAR_QUOTA_KEY: &str = "";

#[derive(Debug, thiserror::Error)]
pub enum AvatarError {
    #[error("an avatar must be a PNG, JPEG, GIF or WebP image")]
    NotAnImage,
    #[error("no such agent")]
    NotFound,
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Stores `bytes` as the agent's picture, replacing the one before.
pub async fn set(store: &Store, quota: &UploadQuota, agent_id: u64, bytes: bytes::Bytes) -> Result<Agent, AvatarError> {
    if bytes.len() > MAX_AVATAR_BYTES {
        return Err(UploadError::TooLarge(MAX_AVATAR_BYTES).into());
    }
    if !bytes.is_empty() && uploads::sniff(&bytes)?.1 != AttachmentKind::Image {
        return Err(AvatarError::NotAnImage);
    }
    let target = UploadTarget {
        uploader: ParticipantView { kind: SenderKind::Agent, id: agent_id },
        site: AVATAR_QUOTA_KEY.to_owned(),
        conversation_id: None,
    };
    let upload = uploads::store_upload(store, quota, target, "avatar", bytes, MAX_AVATAR_BYTES).await?;
    let agent = replace(store, agent_id, Some(upload.id)).await?;
    // The picture before is gone: count the stored bytes afresh next time.
    quota.forget();
    Ok(agent)
}

/// Removes the agent's picture; they get the initial-letter one again.
pub async fn remove(store: &Store, quota: &UploadQuota, agent_id: u64) -> Result<Agent, AvatarError> {
    let agent = replace(store, agent_id, None).await?;
    quota.forget();
    Ok(agent)
}

/// Points the agent at `upload_id` (marking it attached) and deletes the picture before.
async fn replace(store: &Store, agent_id: u64, upload_id: Option<String>) -> Result<Agent, AvatarError> {
    let (agent, previous) = store
        .write(move |context| {
            let mut agents = context.transaction.open_table(tables::AGENTS)?;
            let Some(mut agent) = agents.get(agent_id)?.map(|value| decode_json::<Agent>(value.value())).transpose()?
            else {
                return Ok(Err(AvatarError::NotFound));
            };
            let previous = std::mem::replace(&mut agent.avatar, upload_id.clone());
            agents.insert(agent_id, encode_json(&agent).as_slice())?;
            drop(agents);
            let mut table = context.transaction.open_table(tables::UPLOADS)?;
            if let Some(id) = &upload_id {
                let upload =
                    table.get(id.as_str())?.map(|value| decode_json::<uploads::Upload>(value.value())).transpose()?;
                if let Some(mut upload) = upload {
                    upload.attached = true;
                    table.insert(id.as_str(), encode_json(&upload).as_slice())?;
                }
            }
            if let Some(id) = &previous {
                table.remove(id.as_str())?;
            }
            Ok(Ok((agent, previous)))
        })
        .await?;
    if let Some(id) = previous {
        let path = uploads::path_of(store.data_dir(), &id);
        if let Err(error) = tokio::fs::remove_file(&path).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, upload = %id, "removing an old avatar's file failed");
        }
    }
    Ok(agent)
}

/// The first letter or digit of a name, uppercased, for the picture of an agent without one.
pub fn initial(name: &str) -> String {
    name.chars()
        .find(|character| character.is_alphanumeric())
        .map_or_else(|| "?".to_owned(), |first| first.to_uppercase().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_is_the_first_letter_or_digit() {
        assert_eq!(initial("ann"), "A");
        assert_eq!(initial("  <小王>"), "小");
        assert_eq!(initial("--"), "?");
    }
}

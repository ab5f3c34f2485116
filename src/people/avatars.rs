//! Agents' pictures, shown in the console and beside their messages in the widget.
//!
//! An avatar is stored like an attachment (`chat::uploads`: typed from its bytes, written to the
//! uploads folder, a row in the uploads table), but only raster images are accepted and it is
//! marked attached at once, so the sweep of unattached uploads leaves it alone. The agent record
//! names the upload (`AgentAdministration::replace_avatar`); setting a new picture or removing it
//! deletes the old one.

use crate::chat::upload_store::UploadStore;
use crate::chat::uploads::{self, AttachmentKind, UploadError, UploadQuota, UploadTarget};
use crate::people::agent_administration::AgentAdministration;
use crate::people::agents::Agent;
use crate::protocol::{ParticipantView, SenderKind};
use crate::storage::StorageError;

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

/// Stores `bytes` as the agent's picture, replacing the one before. The bytes go to the
/// appliance's uploads (`chat::uploads`), the agent's record through the boundary.
pub async fn set(
    store: &(impl UploadStore + AgentAdministration),
    quota: &UploadQuota,
    agent_id: u64,
    bytes: bytes::Bytes,
) -> Result<Agent, AvatarError> {
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
    let upload = UploadStore::store(store, quota, target, "avatar".to_owned(), bytes, MAX_AVATAR_BYTES).await?;
    let agent = store.replace_avatar(agent_id, Some(upload.id)).await?;
    // The picture before is gone: count the stored bytes afresh next time.
    quota.forget();
    Ok(agent)
}

/// Removes the agent's picture; they get the initial-letter one again.
pub async fn remove(
    store: &impl AgentAdministration,
    quota: &UploadQuota,
    agent_id: u64,
) -> Result<Agent, AvatarError> {
    let agent = store.replace_avatar(agent_id, None).await?;
    quota.forget();
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

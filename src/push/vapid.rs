//! VAPID (RFC 8292): how kefu identifies itself to push services.
//!
//! One P-256 key pair per installation, made on the first start and kept in redb
//! (`tables::PUSH_KEYS`). The browser subscribes with its public key, and every push request
//! carries `Authorization: vapid t=JWT, k=PUBLIC_KEY`, where the JWT (ES256, signed with the
//! private key) names the push service's origin (`aud`), an expiry within a day (`exp`) and a
//! contact (`sub`). A push service refuses a subscription's messages signed by another key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::SecretKey;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use redb::ReadableTable;

use super::encryption::{public_key_bytes, random_secret_key};
use super::subscriptions::PushSubscriptionStore;
use crate::storage::{StorageError, Store, tables};

/// The key's name in `tables::PUSH_KEYS`.
const KEY_NAME: &str = "vapid";

/// How long a signed token is valid; RFC 8292 allows at most 24 hours.
pub const TOKEN_LIFETIME_SECS: i64 = 12 * 3600;

/// The application server's key pair.
#[derive(Clone)]
pub struct VapidKey {
    signing: SigningKey,
    /// The public key as the browser takes it (`applicationServerKey`) and the `k=` parameter:
    /// uncompressed SEC1, base64url without padding.
    public_key: String,
}

impl VapidKey {
    fn from_secret(secret: &SecretKey) -> VapidKey {
        VapidKey {
            signing: SigningKey::from(secret),
            public_key: URL_SAFE_NO_PAD.encode(public_key_bytes(&secret.public_key())),
        }
    }

    /// The public key in base64url.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header value for a request to `endpoint`, signed now (Unix seconds).
    pub fn authorization(&self, endpoint: &url::Url, subject: &str, now_secs: i64) -> String {
        let audience = endpoint.origin().ascii_serialization();
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": audience, "exp": now_secs + TOKEN_LIFETIME_SECS, "sub": subject });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        // JWS wants the raw r || s form (RFC 7518 section 3.4), which `to_bytes` gives.
        let signature: Signature = self.signing.sign(signed.as_bytes());
        format!("vapid t={signed}.{}, k={}", URL_SAFE_NO_PAD.encode(signature.to_bytes()), self.public_key)
    }
}

/// The installation's key, made and stored on the first call. A key another start (or another
/// cluster node) stored first wins, so every subscription keeps working with the key it was
/// made with.
pub async fn load_or_create(store: &impl PushSubscriptionStore) -> Result<VapidKey, StorageError> {
    let kept = store.vapid_secret(random_secret_key().to_bytes().to_vec()).await?;
    let secret = SecretKey::from_slice(&kept)
        .map_err(|_| StorageError::Corrupt("the stored VAPID key is not a P-256 key".into()))?;
    Ok(VapidKey::from_secret(&secret))
}

/// The stored secret of the appliance's key, or `fresh` stored when there is none.
pub(crate) async fn stored_or(store: &Store, fresh: Vec<u8>) -> Result<Vec<u8>, StorageError> {
    let stored = store
        .read(|transaction| {
            let keys = transaction.open_table(tables::PUSH_KEYS)?;
            Ok(keys.get(KEY_NAME)?.map(|value| value.value().to_vec()))
        })
        .await?;
    if let Some(bytes) = stored {
        return Ok(bytes);
    }
    store
        .write(move |context| {
            let mut keys = context.transaction.open_table(tables::PUSH_KEYS)?;
            let existing = keys.get(KEY_NAME)?.map(|value| value.value().to_vec());
            match existing {
                Some(existing) => Ok(Ok::<_, StorageError>(existing)),
                None => {
                    keys.insert(KEY_NAME, fresh.as_slice())?;
                    Ok(Ok(fresh))
                }
            }
        })
        .await
}

/// The name of the key's row (redb's `push_keys_v1`, the cluster's `push_keys`).
pub const KEY_ROW: &str = KEY_NAME;

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{Signature, VerifyingKey};

    use super::*;

    #[test]
    fn the_token_verifies_with_the_public_key_and_names_the_origin() {
        let key = VapidKey::from_secret(&random_secret_key());
        let endpoint: url::Url = "https://push.example.net:8443/send/abc?x=1".parse().unwrap();
        let header = key.authorization(&endpoint, "mailto:ops@example.com", 1_700_000_000);
        let (token, public) = header.strip_prefix("vapid t=").unwrap().split_once(", k=").unwrap();
        assert_eq!(public, key.public_key());
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let verifying = VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(public).unwrap()).unwrap();
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
        verifying.verify(signed.as_bytes(), &signature).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(signed.split_once('.').unwrap().1).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net:8443");
        assert_eq!(claims["exp"], 1_700_000_000 + TOKEN_LIFETIME_SECS);
        assert_eq!(claims["sub"], "mailto:ops@example.com");
    }
}

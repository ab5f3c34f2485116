//! Agents' push subscriptions: one per browser an agent turned notifications on in.
//!
//! A subscription is what the browser's `PushSubscription.toJSON()` gives (the push service's
//! endpoint and the keys that encrypt for that browser) plus the console's language, so the
//! notification speaks it. Input is checked before anything is stored: the endpoint must be an
//! https URL on a public address (the outbound guard of `base::outbound`), or plain http on a
//! loopback address when `push.allow_loopback_endpoints` is set (tests run their push service
//! there), and both keys must decode to the sizes RFC 8291 gives them.

use std::future::Future;

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::encryption::{AUTH_SECRET_BYTES, PUBLIC_KEY_BYTES};
use crate::base::field_error::FieldError;
use crate::base::language::Lang;
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// The longest endpoint accepted; real ones are a few hundred characters.
const MAX_ENDPOINT_CHARS: usize = 2048;

/// Subscriptions kept per agent (browsers and devices); a new one beyond it replaces the oldest.
pub const MAX_SUBSCRIPTIONS_PER_AGENT: usize = 10;

/// A stored subscription.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Subscription {
    pub agent_id: u64,
    pub endpoint: String,
    /// The browser's P-256 public key, base64url.
    pub p256dh: String,
    /// The browser's auth secret, base64url.
    pub auth: String,
    /// The language notifications are written in: the console's.
    pub language: Lang,
    pub created_at: i64,
}

impl Subscription {
    /// The decoded keys; stored subscriptions were checked when saved.
    pub fn keys(&self) -> Result<(p256::PublicKey, [u8; AUTH_SECRET_BYTES]), FieldError> {
        Ok((decode_public_key(&self.p256dh)?, decode_auth_secret(&self.auth)?))
    }
}

/// A subscription as the console posts it: `PushSubscription.toJSON()` and the language.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    pub endpoint: String,
    pub keys: SubscriptionKeys,
    #[serde(default)]
    /// The language notifications are written in: the console's.
    pub language: Lang,
    /// `PushSubscription.toJSON()` includes it; kefu does not use it.
    #[serde(default, rename = "expirationTime")]
    pub expiration_time: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionKeys {
    pub p256dh: String,
    pub auth: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("no such subscription")]
    NotFound,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Whether an endpoint may be used: https on a public host, or http on loopback when allowed.
pub fn check_endpoint(endpoint: &str, allow_loopback: bool) -> Result<url::Url, FieldError> {
    let bad = |message: &str| FieldError::new("endpoint", message);
    if endpoint.chars().count() > MAX_ENDPOINT_CHARS {
        return Err(bad("is longer than 2048 characters"));
    }
    let url = url::Url::parse(endpoint).map_err(|_| bad("is not a URL"))?;
    if allow_loopback && is_loopback(&url) {
        return Ok(url);
    }
    if url.scheme() != "https" {
        return Err(bad("must be an https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not hold a user name or password"));
    }
    crate::base::outbound::check_url(&url, false).map_err(|error| FieldError::new("endpoint", error.to_string()))?;
    Ok(url)
}

/// Whether a URL's host is this machine (a literal loopback address or `localhost`).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(v4)) => v4.is_loopback(),
        Some(url::Host::Ipv6(v6)) => v6.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Base64url with or without padding (browsers give it without; some libraries add it).
fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok().or_else(|| URL_SAFE.decode(text).ok())
}

fn decode_public_key(text: &str) -> Result<p256::PublicKey, FieldError> {
    let bad = |message: &str| FieldError::new("keys.p256dh", message);
    let bytes = decode_base64url(text).ok_or_else(|| bad("is not base64url"))?;
    if bytes.len() != PUBLIC_KEY_BYTES || bytes[0] != 4 {
        return Err(bad("must be an uncompressed P-256 public key (65 bytes)"));
    }
    p256::PublicKey::from_sec1_bytes(&bytes).map_err(|_| bad("is not a point on the P-256 curve"))
}

fn decode_auth_secret(text: &str) -> Result<[u8; AUTH_SECRET_BYTES], FieldError> {
    let bytes = decode_base64url(text).ok_or_else(|| FieldError::new("keys.auth", "is not base64url"))?;
    bytes.try_into().map_err(|_| FieldError::new("keys.auth", "must be 16 bytes"))
}

/// What keys an agent's subscription to `endpoint`, beside the agent: the first 8 bytes of the
/// endpoint's SHA-256.
pub fn endpoint_hash(endpoint: &str) -> u64 {
    let digest = Sha256::digest(endpoint.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Checks a subscription and stores it for `agent_id`, replacing the same endpoint's (a new
/// language) and, past [`MAX_SUBSCRIPTIONS_PER_AGENT`], the agent's oldest.
pub async fn save(
    store: &impl PushSubscriptionStore,
    push: &super::Push,
    agent_id: u64,
    new: NewSubscription,
) -> Result<Subscription, SubscriptionError> {
    check_endpoint(&new.endpoint, push.allow_loopback_endpoints())?;
    decode_public_key(&new.keys.p256dh)?;
    decode_auth_secret(&new.keys.auth)?;
    // Before the write: a notice committed while it is under way is kept, not dropped.
    push.note_subscribing();
    let subscription = Subscription {
        agent_id,
        endpoint: new.endpoint,
        p256dh: new.keys.p256dh,
        auth: new.keys.auth,
        language: new.language,
        created_at: crate::base::clock::now_millis(),
    };
    Ok(store.keep_subscription(subscription).await?)
}

/// Of an agent's other subscriptions (key, created at), the oldest that must go so that one
/// more stays within [`MAX_SUBSCRIPTIONS_PER_AGENT`].
pub fn beyond_the_most<K>(mut others: Vec<(K, i64)>) -> impl Iterator<Item = K> {
    others.sort_by_key(|(_, created_at)| *created_at);
    let excess = (others.len() + 1).saturating_sub(MAX_SUBSCRIPTIONS_PER_AGENT);
    others.into_iter().take(excess).map(|(key, _)| key)
}

/// The push subscriptions' storage boundary, so the cluster's PostgreSQL
/// (`cluster::push_subscriptions`) implements these calls and not redb's tables; both key a
/// subscription by its agent and [`endpoint_hash`], and evict with [`beyond_the_most`].
pub trait PushSubscriptionStore: Send + Sync {
    /// Stores a checked subscription, replacing the same endpoint's and, past the most per agent,
    /// the agent's oldest.
    fn keep_subscription(
        &self,
        subscription: Subscription,
    ) -> impl Future<Output = Result<Subscription, StorageError>> + Send;

    /// Removes the agent's subscription to `endpoint`; another agent's is never touched.
    fn remove_subscription(
        &self,
        agent_id: u64,
        endpoint: String,
    ) -> impl Future<Output = Result<(), SubscriptionError>> + Send;

    /// The agent's subscriptions, oldest first.
    fn subscriptions_of(&self, agent_id: u64) -> impl Future<Output = Result<Vec<Subscription>, StorageError>> + Send;

    /// Whether any agent has a subscription.
    fn any_subscription(&self) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// The secret of the installation's VAPID key; `fresh` is stored and returned when there is
    /// none yet (atomically: two starts at once keep one).
    fn vapid_secret(&self, fresh: Vec<u8>) -> impl Future<Output = Result<Vec<u8>, StorageError>> + Send;
}

impl PushSubscriptionStore for Store {
    async fn keep_subscription(&self, subscription: Subscription) -> Result<Subscription, StorageError> {
        self.write(move |context| {
            let agent_id = subscription.agent_id;
            let mut table = context.transaction.open_table(tables::PUSH_SUBSCRIPTIONS)?;
            let key = (agent_id, endpoint_hash(&subscription.endpoint));
            let mut others = Vec::new();
            for entry in table.range((agent_id, 0)..=(agent_id, u64::MAX))? {
                let (stored_key, value) = entry?;
                if stored_key.value() != key {
                    others.push((stored_key.value(), decode_json::<Subscription>(value.value())?.created_at));
                }
            }
            for oldest in beyond_the_most(others) {
                table.remove(oldest)?;
            }
            table.insert(key, encode_json(&subscription).as_slice())?;
            Ok(Ok::<_, StorageError>(subscription))
        })
        .await
    }

    async fn remove_subscription(&self, agent_id: u64, endpoint: String) -> Result<(), SubscriptionError> {
        self.write(move |context| {
            let mut table = context.transaction.open_table(tables::PUSH_SUBSCRIPTIONS)?;
            let removed = table.remove((agent_id, endpoint_hash(&endpoint)))?.is_some();
            Ok(if removed { Ok(()) } else { Err(SubscriptionError::NotFound) })
        })
        .await
    }

    async fn subscriptions_of(&self, agent_id: u64) -> Result<Vec<Subscription>, StorageError> {
        self.read(move |transaction| of_agent(transaction, agent_id)).await
    }

    async fn any_subscription(&self) -> Result<bool, StorageError> {
        self.read(|transaction| Ok(transaction.open_table(tables::PUSH_SUBSCRIPTIONS)?.first()?.is_some())).await
    }

    async fn vapid_secret(&self, fresh: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        super::vapid::stored_or(self, fresh).await
    }
}

/// The agent's subscriptions, oldest first.
pub fn of_agent(transaction: &redb::ReadTransaction, agent_id: u64) -> Result<Vec<Subscription>, StorageError> {
    let table = transaction.open_table(tables::PUSH_SUBSCRIPTIONS)?;
    let mut found = Vec::new();
    for entry in table.range((agent_id, 0)..=(agent_id, u64::MAX))? {
        found.push(decode_json::<Subscription>(entry?.1.value())?);
    }
    found.sort_by_key(|subscription| subscription.created_at);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_on_public_hosts_unless_loopback_is_allowed() {
        let allowed = |endpoint: &str, loopback: bool| check_endpoint(endpoint, loopback).is_ok();
        assert!(allowed("https://push.example.net/send/abc", false));
        assert!(!allowed("http://push.example.net/send/abc", false));
        assert!(!allowed("http://127.0.0.1:9/push", false));
        assert!(allowed("http://127.0.0.1:9/push", true));
        assert!(allowed("http://localhost:9/push", true));
        assert!(!allowed("http://10.0.0.1/push", true));
        assert!(!allowed("https://10.0.0.1/push", false));
        assert!(!allowed("https://user:secret@push.example.net/x", false));
        assert!(!allowed("not a url", true));
        assert!(!allowed(&format!("https://push.example.net/{}", "a".repeat(2048)), false));
    }

    #[test]
    fn keys_must_decode_to_their_sizes() {
        let public =
            crate::push::encryption::public_key_bytes(&crate::push::encryption::random_secret_key().public_key());
        assert!(decode_public_key(&URL_SAFE_NO_PAD.encode(public)).is_ok());
        assert!(decode_public_key(&URL_SAFE.encode(public)).is_ok());
        assert!(decode_public_key(&URL_SAFE_NO_PAD.encode(&public[..64])).is_err());
        let mut off_curve = public;
        off_curve[64] ^= 1;
        assert!(decode_public_key(&URL_SAFE_NO_PAD.encode(off_curve)).is_err());
        assert!(decode_auth_secret(&URL_SAFE_NO_PAD.encode([7u8; 16])).is_ok());
        assert!(decode_auth_secret(&URL_SAFE_NO_PAD.encode([7u8; 15])).is_err());
        assert!(decode_auth_secret("*not base64*").is_err());
    }
}

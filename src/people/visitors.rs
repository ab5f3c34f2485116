//! Visitors: people on a site, their tokens, verified identities and profile.
//!
//! A visitor is made on first contact and found again through the token the widget keeps.
//! A visitor can take on the business's user identity (`user.id`) only through
//! [`open_session`], and only with a valid HMAC signature: a verified identity follows the user
//! across devices (the same visitor record, the same history). An unsigned claim, on a site that
//! does not enforce verification, is kept as an unverified label of the caller's own visitor
//! (`unverified_user_id`) and never adopts another visitor's record. Everything later
//! authenticates with the token alone, so the check is enforced everywhere by having exactly one
//! place that binds an identity.

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::base::secrets::{self, TokenDigest};
use crate::protocol::PageView;
use crate::sites::Site;
use crate::storage::writer::{Counter, WriteContext, WriterExtension};
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// The prefix of visitor tokens.
pub const TOKEN_PREFIX: &str = "v1.";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Visitor {
    pub id: u64,
    pub site: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub name: Option<String>,
    pub email: Option<String>,
    /// The business's own user id, bound by a verified (signed) claim.
    pub user_id: Option<String>,
    /// The latest unsigned claim of a user id: shown to agents as unverified, never used to find
    /// or merge visitor records.
    pub unverified_user_id: Option<String>,
    pub attributes: BTreeMap<String, serde_json::Value>,
    pub blocked: bool,
    /// How many sessions were opened; more than one marks a returning visitor.
    pub n_sessions: u64,
    pub last_page: Option<PageView>,
    /// The widget's language when the visitor last told it (an offline message, a transcript
    /// request), for emails to them.
    pub lang: Option<String>,
}

/// A claimed user identity from the widget's `setUser`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct UserClaim {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub signature: Option<String>,
}

/// Profile answers without an identity (the pre-chat form).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Profile {
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SessionRequest {
    pub site: String,
    pub token: Option<String>,
    pub user: Option<UserClaim>,
    pub profile: Option<Profile>,
    pub attributes: Option<BTreeMap<String, serde_json::Value>>,
    pub page: Option<PageView>,
}

#[derive(Debug, thiserror::Error)]
pub enum VisitorError {
    #[error("the user signature does not match (identity verification is enforced for this site)")]
    InvalidSignature,
    #[error("this visitor is blocked")]
    Blocked,
    #[error("no such visitor")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Limits on what a visitor can store about themself.
const MAX_ATTRIBUTES: usize = 50;
const MAX_FIELD_CHARS: usize = 500;

fn check_length(field: &str, value: &str) -> Result<(), VisitorError> {
    if value.chars().count() > MAX_FIELD_CHARS {
        return Err(VisitorError::Invalid(format!("{field}: at most {MAX_FIELD_CHARS} characters")));
    }
    Ok(())
}

fn validate(request: &SessionRequest) -> Result<(), VisitorError> {
    if let Some(user) = &request.user {
        if user.id.trim().is_empty() {
            return Err(VisitorError::Invalid("user.id: must not be empty".into()));
        }
        check_length("user.id", &user.id)?;
        check_length("user.name", user.name.as_deref().unwrap_or_default())?;
        check_length("user.email", user.email.as_deref().unwrap_or_default())?;
    }
    if let Some(profile) = &request.profile {
        check_length("profile.name", profile.name.as_deref().unwrap_or_default())?;
        check_length("profile.email", profile.email.as_deref().unwrap_or_default())?;
    }
    if let Some(attributes) = &request.attributes {
        if attributes.len() > MAX_ATTRIBUTES {
            return Err(VisitorError::Invalid(format!("attributes: at most {MAX_ATTRIBUTES} keys")));
        }
        for (key, value) in attributes {
            check_length("attributes key", key)?;
            check_length("attributes value", &value.to_string())?;
        }
    }
    if let Some(page) = &request.page {
        for (field, value) in [("page.url", &page.url), ("page.title", &page.title), ("page.referrer", &page.referrer)]
        {
            check_length(field, value)?;
        }
    }
    Ok(())
}

/// Changes a visitor's attributes: each key given a value is set, each given `null` removed.
/// The same limits apply as to attributes a visitor's session sends.
pub(crate) async fn update_attributes(
    store: &Store,
    visitor_id: u64,
    changes: BTreeMap<String, serde_json::Value>,
) -> Result<Visitor, VisitorError> {
    check_attribute_changes(&changes)?;
    store
        .write(move |context| {
            let Some(mut visitor) = get_for_update(context, visitor_id)? else {
                return Ok(Err(VisitorError::NotFound));
            };
            if let Err(error) = visitor.change_attributes(changes) {
                return Ok(Err(error));
            }
            put(context, &visitor)?;
            Ok(Ok(visitor))
        })
        .await
}

/// Refuses attribute changes that are too many or too long before anything is read.
pub fn check_attribute_changes(changes: &BTreeMap<String, serde_json::Value>) -> Result<(), VisitorError> {
    if changes.len() > MAX_ATTRIBUTES {
        return Err(VisitorError::Invalid(format!("attributes: at most {MAX_ATTRIBUTES} keys")));
    }
    for (key, value) in changes {
        if key.trim().is_empty() {
            return Err(VisitorError::Invalid("attributes key: must not be empty".into()));
        }
        check_length("attributes key", key)?;
        check_length("attributes value", &value.to_string())?;
    }
    Ok(())
}

impl Visitor {
    /// Sets each attribute of `changes` (a null removes it); refused, changing nothing, when the
    /// visitor would have too many.
    pub fn change_attributes(&mut self, changes: BTreeMap<String, serde_json::Value>) -> Result<(), VisitorError> {
        let mut attributes = self.attributes.clone();
        for (key, value) in changes {
            if value.is_null() {
                attributes.remove(&key);
            } else {
                attributes.insert(key, value);
            }
        }
        if attributes.len() > MAX_ATTRIBUTES {
            return Err(VisitorError::Invalid(format!("attributes: at most {MAX_ATTRIBUTES} keys in all")));
        }
        self.attributes = attributes;
        Ok(())
    }
}

/// A visitor, read inside a writer operation that will change it and [`put`] it back.
pub fn get_for_update(context: &WriteContext<'_>, id: u64) -> Result<Option<Visitor>, StorageError> {
    let table = context.transaction.open_table(tables::VISITORS)?;
    table.get(id)?.map(|value| decode_json(value.value())).transpose()
}

/// Stores a changed visitor inside a writer operation.
pub fn put(context: &mut WriteContext<'_>, visitor: &Visitor) -> Result<(), StorageError> {
    context.transaction.open_table(tables::VISITORS)?.insert(visitor.id, encode_json(visitor).as_slice())?;
    forget_email(context, visitor.id);
    Ok(())
}

/// Removes a visitor record inside a writer operation (the erasure of their data).
pub fn remove(context: &mut WriteContext<'_>, id: u64) -> Result<(), StorageError> {
    context.transaction.open_table(tables::VISITORS)?.remove(id)?;
    forget_email(context, id);
    Ok(())
}

/// Visitors the writer has cached before it forgets them all.
const EMAIL_KNOWN_LIMIT: usize = 100_000;

/// Whether each visitor has an email address, kept by the writer between batches: every agent
/// answer asks ([`has_email`]) and most visitors have none, so the answer costs a map lookup, not
/// a read and decode of the visitor. Every write of a visitor record goes through this module and
/// keeps it right.
#[derive(Default)]
struct EmailKnown(std::collections::HashMap<u64, bool>);

impl WriterExtension for EmailKnown {
    fn trim(&mut self) {
        if self.0.len() > EMAIL_KNOWN_LIMIT {
            self.0.clear();
        }
    }
}

/// Drops what the cache knows of a visitor whose record was just written: the next answer reads
/// it again. Writes do not fill the cache, so visitors nobody answers never take room in it.
fn forget_email(context: &mut WriteContext<'_>, id: u64) {
    context.extension::<EmailKnown>().0.remove(&id);
}

/// Whether the visitor has an email address (a missing visitor has none), inside the writer.
pub fn has_email(context: &mut WriteContext<'_>, id: u64) -> Result<bool, StorageError> {
    if let Some(known) = context.extension::<EmailKnown>().0.get(&id) {
        return Ok(*known);
    }
    let known = get_for_update(context, id)?
        .is_some_and(|visitor| visitor.email.as_deref().is_some_and(|email| !email.is_empty()));
    context.extension::<EmailKnown>().0.insert(id, known);
    Ok(known)
}

/// Longest URL in a page view, in characters.
pub const MAX_URL_CHARS: usize = 2000;

/// Checks a `page_view` frame: a URL is required; URLs up to 2000 characters, a title up to 500.
pub fn validate_page_view(page: &PageView) -> Result<(), String> {
    let n_url = page.url.chars().count();
    if n_url == 0 || n_url > MAX_URL_CHARS {
        return Err(format!("page_view.url: must be 1 to {MAX_URL_CHARS} characters"));
    }
    if page.referrer.chars().count() > MAX_URL_CHARS {
        return Err(format!("page_view.referrer: at most {MAX_URL_CHARS} characters"));
    }
    if page.title.chars().count() > MAX_FIELD_CHARS {
        return Err(format!("page_view.title: at most {MAX_FIELD_CHARS} characters"));
    }
    Ok(())
}

/// A session: the visitor and the token to use from now on.
pub struct OpenedSession {
    pub visitor: Visitor,
    pub token: String,
}

/// A session request checked before anything is read: its fields validated, a user claim's
/// signature verified against the site's secret (or the claim kept as an unverified label), and
/// the token it presents with its digest.
pub struct CheckedRequest {
    request: SessionRequest,
    unverified_claim: Option<UserClaim>,
    presented: Option<(String, TokenDigest)>,
}

impl CheckedRequest {
    pub fn new(site: &Site, request: SessionRequest) -> Result<CheckedRequest, VisitorError> {
        validate(&request)?;
        let mut request = request;
        let mut unverified_claim = None;
        if let Some(user) = &request.user {
            let verified = user.signature.as_deref().is_some_and(|signature| {
                secrets::verify_hmac_sha256_hex(site.secret.as_bytes(), user.id.as_bytes(), signature)
            });
            let signed = user.signature.as_deref().is_some_and(|signature| !signature.is_empty());
            if (site.enforce_identity || signed) && !verified {
                return Err(VisitorError::InvalidSignature);
            }
            if !verified {
                unverified_claim = request.user.take();
            }
        }
        let presented = request
            .token
            .as_deref()
            .filter(|token| token.starts_with(TOKEN_PREFIX))
            .map(|token| (token.to_owned(), secrets::token_digest(token)));
        Ok(CheckedRequest { request, unverified_claim, presented })
    }

    /// The digest of the token presented, to find its visitor.
    pub fn presented_digest(&self) -> Option<&TokenDigest> {
        self.presented.as_ref().map(|(_, digest)| digest)
    }

    /// The verified user id, to find the visitor holding that identity.
    pub fn verified_user_id(&self) -> Option<&str> {
        self.request.user.as_ref().map(|user| user.id.as_str())
    }
}

/// What a backend read for a session: the visitor the presented token belongs to (any site's:
/// another site's is not used), and when a verified identity is claimed, the id of the visitor
/// holding it with that visitor's record.
pub struct SessionLookup {
    pub token_visitor: Option<Visitor>,
    pub identity_owner: Option<(u64, Option<Visitor>)>,
}

/// A resolved session, for the backend to store: the visitor (new or changed), its token, and the
/// verified identity to bind to it.
pub struct ResolvedSession {
    pub visitor: Visitor,
    pub token: String,
    pub identity: Option<String>,
}

/// Decides a session from what the backend read: the one place that binds an identity to a
/// visitor. `new_id` gives a new visitor's id; `now` is the session's time.
pub fn resolve_session(
    site_key: &str,
    checked: CheckedRequest,
    lookup: SessionLookup,
    now: i64,
    new_id: impl FnOnce() -> u64,
) -> Result<ResolvedSession, VisitorError> {
    let CheckedRequest { request, unverified_claim, presented } = checked;
    let mut current: Option<Visitor> = None;
    let mut token = secrets::new_token(TOKEN_PREFIX);
    if let (Some((presented_token, _)), Some(visitor)) = (presented, lookup.token_visitor)
        && visitor.site == site_key
    {
        token = presented_token;
        current = Some(visitor);
    }
    if let Some(user) = &request.user {
        match (lookup.identity_owner, &current) {
            // The identity belongs to another visitor record: continue as that visitor on this device.
            (Some((owner, owner_visitor)), Some(visitor)) if owner != visitor.id => {
                current = owner_visitor;
                token = secrets::new_token(TOKEN_PREFIX);
            }
            (Some((_, owner_visitor)), None) => current = owner_visitor,
            // This visitor carries another identity already: a different user on a shared device.
            (None, Some(visitor)) if visitor.user_id.as_deref().is_some_and(|id| id != user.id) => {
                current = None;
                token = secrets::new_token(TOKEN_PREFIX);
            }
            _ => {}
        }
    }
    let mut visitor = current.unwrap_or_else(|| Visitor {
        id: new_id(),
        site: site_key.to_owned(),
        created_at: now,
        ..Visitor::default()
    });
    if visitor.blocked {
        return Err(VisitorError::Blocked);
    }
    visitor.last_seen_at = now;
    visitor.n_sessions += 1;
    let mut identity = None;
    if let Some(user) = request.user {
        visitor.name = user.name.or(visitor.name);
        visitor.email = user.email.or(visitor.email);
        visitor.user_id = Some(user.id.clone());
        identity = Some(user.id);
    }
    if let Some(claim) = unverified_claim {
        visitor.name = claim.name.or(visitor.name);
        visitor.email = claim.email.or(visitor.email);
        visitor.unverified_user_id = Some(claim.id);
    }
    if let Some(profile) = request.profile {
        visitor.name = profile.name.or(visitor.name);
        visitor.email = profile.email.or(visitor.email);
    }
    if let Some(attributes) = request.attributes {
        visitor.attributes.extend(attributes);
        if visitor.attributes.len() > MAX_ATTRIBUTES {
            return Err(VisitorError::Invalid(format!("attributes: at most {MAX_ATTRIBUTES} keys in all")));
        }
    }
    if request.page.is_some() {
        visitor.last_page = request.page;
    }
    Ok(ResolvedSession { visitor, token, identity })
}

/// Finds or makes the visitor for a session request (see docs/protocol.md).
pub async fn open_session(store: &Store, site: &Site, request: SessionRequest) -> Result<OpenedSession, VisitorError> {
    let checked = CheckedRequest::new(site, request)?;
    let site_key = site.key.clone();
    store
        .write(move |context| {
            let mut tokens = context.transaction.open_table(tables::VISITOR_TOKENS)?;
            let mut visitors = context.transaction.open_table(tables::VISITORS)?;
            let mut identities = context.transaction.open_table(tables::VISITOR_IDENTITIES)?;
            let read_visitor = |id: u64| -> Result<Option<Visitor>, StorageError> {
                visitors.get(id)?.map(|value| decode_json(value.value())).transpose()
            };
            let token_visitor = match checked.presented_digest() {
                Some(digest) => tokens.get(digest)?.map(|value| value.value()).map(read_visitor).transpose()?.flatten(),
                None => None,
            };
            let identity_owner = match checked.verified_user_id() {
                Some(user_id) => match identities.get((site_key.as_str(), user_id))?.map(|value| value.value()) {
                    Some(owner) => Some((owner, read_visitor(owner)?)),
                    None => None,
                },
                None => None,
            };
            let lookup = SessionLookup { token_visitor, identity_owner };
            let now = context.now;
            let resolved = match resolve_session(&site_key, checked, lookup, now, || context.next_id(Counter::Visitor))
            {
                Ok(resolved) => resolved,
                Err(error) => return Ok(Err(error)),
            };
            let ResolvedSession { visitor, token, identity } = resolved;
            if let Some(user_id) = &identity {
                identities.insert((site_key.as_str(), user_id.as_str()), visitor.id)?;
            }
            tokens.insert(&secrets::token_digest(&token), visitor.id)?;
            visitors.insert(visitor.id, encode_json(&visitor).as_slice())?;
            drop((tokens, visitors, identities));
            forget_email(context, visitor.id);
            Ok(Ok(OpenedSession { visitor, token }))
        })
        .await
}

/// The visitor a token belongs to.
pub fn authenticate(transaction: &ReadTransaction, digest: &TokenDigest) -> Result<Option<Visitor>, StorageError> {
    let Some(id) = transaction.open_table(tables::VISITOR_TOKENS)?.get(digest)?.map(|value| value.value()) else {
        return Ok(None);
    };
    get(transaction, id)
}

pub fn get(transaction: &ReadTransaction, id: u64) -> Result<Option<Visitor>, StorageError> {
    let table = transaction.open_table(tables::VISITORS)?;
    table.get(id)?.map(|value| decode_json(value.value())).transpose()
}

/// The display name of a visitor: their name, or `Visitor #id`.
pub fn display_name(visitor: &Visitor) -> String {
    visitor.name.clone().filter(|name| !name.trim().is_empty()).unwrap_or_else(|| format!("Visitor #{}", visitor.id))
}

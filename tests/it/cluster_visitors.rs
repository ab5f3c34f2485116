//! Visitors behind their storage boundary (`VisitorStore`) on both backends, the appliance's
//! redb and the cluster's PostgreSQL 15 (support/postgres.rs): the same session requests give
//! the same visitors (a token found again, another site's token not used, a signed identity
//! followed across devices, an unsigned claim kept as a label, bad signatures and too many
//! attributes refused with nothing stored); a session opened through one node is found through
//! another; two nodes opening sessions for one new identity at once make one visitor.
//!
//! The PostgreSQL tests print one line and pass when PostgreSQL is not installed.

use std::collections::BTreeMap;

use kefu::base::secrets;
use kefu::cluster::sites::PostgresSites;
use kefu::cluster::visitors::PostgresVisitors;
use kefu::people::visitor_store::VisitorStore;
use kefu::people::visitors::{SessionRequest, UserClaim, VisitorError};
use kefu::sites::store::SiteStore;
use kefu::sites::{NewSite, Site};
use serde_json::json;

use crate::support::TestServer;
use crate::support::postgres::{connect, count, database};

fn request(site: &Site, token: Option<&str>) -> SessionRequest {
    SessionRequest { site: site.key.clone(), token: token.map(str::to_owned), ..SessionRequest::default() }
}

fn signed_user(site: &Site, id: &str) -> UserClaim {
    UserClaim {
        id: id.into(),
        name: Some("王小明".into()),
        email: None,
        signature: Some(secrets::hmac_sha256_hex(site.secret.as_bytes(), id.as_bytes())),
    }
}

async fn sites_of(store: &impl SiteStore) -> (Site, Site) {
    let new_site = |name: &str, enforce_identity| NewSite { name: name.into(), enforce_identity, ..NewSite::default() };
    (store.create(new_site("店", false)).await.unwrap(), store.create(new_site("Enforcing", true)).await.unwrap())
}

/// The calls every backend answers alike.
async fn behaves_as_a_visitor_store(visitors: &impl VisitorStore, sites: &impl SiteStore) {
    let (site, enforcing) = sites_of(sites).await;
    let first = visitors.open_session(&site, request(&site, None)).await.expect("a new visitor");
    assert_eq!((first.visitor.site.as_str(), first.visitor.n_sessions), (site.key.as_str(), 1));
    let digest = secrets::token_digest(&first.token);
    assert_eq!(visitors.authenticate(&digest).await.unwrap().map(|visitor| visitor.id), Some(first.visitor.id));
    assert!(visitors.token_is_live(&site.key, Some(&first.token)).await.unwrap());
    assert!(!visitors.token_is_live(&enforcing.key, Some(&first.token)).await.unwrap(), "another site's");
    assert!(!visitors.token_is_live(&site.key, Some("v1.unknown")).await.unwrap());

    // The token finds the visitor again; on another site it is not used.
    let again = visitors.open_session(&site, request(&site, Some(&first.token))).await.unwrap();
    assert_eq!((again.visitor.id, again.visitor.n_sessions, &again.token), (first.visitor.id, 2, &first.token));
    let elsewhere = visitors.open_session(&enforcing, request(&enforcing, Some(&first.token))).await.unwrap();
    assert_ne!(elsewhere.visitor.id, first.visitor.id);
    assert_eq!(elsewhere.visitor.site, enforcing.key);
    let mut unsigned_there = request(&enforcing, None);
    unsigned_there.user = Some(UserClaim { id: "customer-7".into(), ..UserClaim::default() });
    let refused = visitors.open_session(&enforcing, unsigned_there).await;
    assert!(matches!(refused, Err(VisitorError::InvalidSignature)), "an enforcing site wants a signed user");

    // A signed identity binds to the visitor, and follows the user to another device.
    let mut signed = request(&site, Some(&first.token));
    signed.user = Some(signed_user(&site, "customer-7"));
    let bound = visitors.open_session(&site, signed).await.unwrap();
    assert_eq!((bound.visitor.id, bound.visitor.user_id.as_deref()), (first.visitor.id, Some("customer-7")));
    let mut other_device = request(&site, None);
    other_device.user = Some(signed_user(&site, "customer-7"));
    let followed = visitors.open_session(&site, other_device).await.unwrap();
    assert_eq!(followed.visitor.id, first.visitor.id);
    assert_ne!(followed.token, first.token, "its own token on the new device");

    // An unsigned claim is a label on the caller's own visitor, never another's record.
    let mut unsigned = request(&site, None);
    unsigned.user = Some(UserClaim { id: "customer-7".into(), ..UserClaim::default() });
    let labelled = visitors.open_session(&site, unsigned).await.unwrap();
    assert_ne!(labelled.visitor.id, first.visitor.id);
    assert_eq!(
        (labelled.visitor.unverified_user_id.as_deref(), labelled.visitor.user_id.as_deref()),
        (Some("customer-7"), None)
    );

    // Refusals store nothing: a forged signature, too many attributes.
    let mut forged = request(&site, Some(&first.token));
    forged.user = Some(UserClaim { signature: Some("00".repeat(32)), ..signed_user(&site, "customer-8") });
    assert!(matches!(visitors.open_session(&site, forged).await, Err(VisitorError::InvalidSignature)));
    let mut crowded = request(&site, Some(&first.token));
    crowded.attributes = Some((0..51).map(|n| (format!("k{n}"), serde_json::json!(n))).collect::<BTreeMap<_, _>>());
    assert!(matches!(visitors.open_session(&site, crowded).await, Err(VisitorError::Invalid(_))));
    let unchanged = visitors.get(first.visitor.id).await.unwrap().unwrap();
    assert_eq!((unchanged.n_sessions, unchanged.attributes.len()), (4, 0), "the refused sessions changed nothing");

    // Attributes set, changed and removed; too many, an empty key or an unknown visitor refused
    // with nothing changed.
    let set = BTreeMap::from([("plan".to_owned(), json!("金卡 gold")), ("orders".to_owned(), json!(3))]);
    let changed = visitors.update_attributes(first.visitor.id, set).await.unwrap();
    assert_eq!(
        (changed.attributes["plan"].clone(), changed.attributes["orders"].clone()),
        (json!("金卡 gold"), json!(3))
    );
    let unset = BTreeMap::from([("orders".to_owned(), serde_json::Value::Null)]);
    let changed = visitors.update_attributes(first.visitor.id, unset).await.unwrap();
    assert_eq!(changed.attributes.keys().collect::<Vec<_>>(), ["plan"]);
    let crowded: BTreeMap<String, serde_json::Value> = (0..50).map(|n| (format!("k{n}"), json!(n))).collect();
    let refused = visitors.update_attributes(first.visitor.id, crowded).await;
    assert!(matches!(refused, Err(VisitorError::Invalid(_))), "51 in all");
    let empty_key = BTreeMap::from([(" ".to_owned(), json!(1))]);
    assert!(matches!(visitors.update_attributes(first.visitor.id, empty_key).await, Err(VisitorError::Invalid(_))));
    let unknown = visitors.update_attributes(u64::MAX, BTreeMap::new()).await;
    assert!(matches!(unknown, Err(VisitorError::NotFound)));
    let stored = visitors.get(first.visitor.id).await.unwrap().unwrap();
    assert_eq!(stored.attributes, changed.attributes, "the refusals changed nothing");
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    behaves_as_a_visitor_store(&store, &store).await;

    let Some(url) = database("visitors_alike").await else { return };
    let (sites, visitors) = (PostgresSites::open(&url).await.unwrap(), PostgresVisitors::open(&url).await.unwrap());
    behaves_as_a_visitor_store(&visitors, &sites).await;
}

#[tokio::test]
async fn a_session_through_one_node_is_found_through_another_and_one_identity_makes_one_visitor() {
    let Some(url) = database("visitors_nodes").await else { return };
    let sites = PostgresSites::open(&url).await.unwrap();
    let (a, b) = (PostgresVisitors::open(&url).await.unwrap(), PostgresVisitors::open(&url).await.unwrap());
    let (site, _) = sites_of(&sites).await;
    let opened = a.open_session(&site, request(&site, None)).await.unwrap();
    let resumed = b.open_session(&site, request(&site, Some(&opened.token))).await.unwrap();
    assert_eq!((resumed.visitor.id, resumed.visitor.n_sessions), (opened.visitor.id, 2));

    // Sixteen devices of one new user, through two nodes at once: one visitor holds the identity.
    let mut sessions = Vec::new();
    for n in 0..16 {
        let mut signed = request(&site, None);
        signed.user = Some(signed_user(&site, "customer-9"));
        let node = if n % 2 == 0 { &a } else { &b };
        sessions.push(node.open_session(&site, signed));
    }
    let opened: Vec<_> =
        futures_util::future::join_all(sessions).await.into_iter().map(|opened| opened.unwrap()).collect();
    assert!(opened.iter().all(|session| session.visitor.id == opened[0].visitor.id), "one visitor");
    assert_eq!(opened.iter().map(|session| session.visitor.n_sessions).max(), Some(16));
    let client = connect(&url).await;
    assert_eq!(count(&client, "visitors WHERE record->>'user_id' = 'customer-9'").await, 1);
}

//! Canned replies behind their storage boundary (`CannedReplyStore`) on both backends, the
//! appliance's redb and the cluster's PostgreSQL 15 (support/postgres.rs): the same calls give
//! the same answers (checked shortcuts and texts, a shortcut used once per site, another site's
//! reply neither changed nor deleted, unknown ids), and on PostgreSQL two nodes saving one
//! shortcut at once store it once.
//!
//! The PostgreSQL tests print one line and pass when PostgreSQL is not installed.

use kefu::chat::canned_replies::{CannedReplyError, CannedReplyStore};
use kefu::cluster::canned_replies::PostgresCannedReplies;

use crate::support::TestServer;
use crate::support::postgres::database;

async fn behaves_as_a_canned_reply_store(store: &impl CannedReplyStore) {
    let (site, other) = (format!("s{}", rand::random::<u32>()), format!("o{}", rand::random::<u32>()));
    let bad = store.save(None, site.clone(), "has space", "text").await;
    assert!(matches!(bad, Err(CannedReplyError::Invalid(ref error)) if error.contains("shortcut")), "{bad:?}");
    assert!(matches!(store.save(None, site.clone(), "hi", "   ").await, Err(CannedReplyError::Invalid(_))));
    let hello = store.save(None, site.clone(), " /hello ", " 您好，请问有什么可以帮您？ ").await.expect("save");
    assert_eq!((hello.shortcut.as_str(), hello.text.as_str()), ("hello", "您好，请问有什么可以帮您？"));
    let bye = store.save(None, site.clone(), "bye", "再见").await.expect("another");
    assert_ne!(hello.id, bye.id);
    let taken = store.save(None, site.clone(), "hello", "again").await;
    assert!(
        matches!(taken, Err(CannedReplyError::DuplicateShortcut(ref shortcut)) if shortcut == "hello"),
        "{taken:?}"
    );
    let renamed_onto = store.save(Some(bye.id), site.clone(), "hello", "x").await;
    assert!(matches!(renamed_onto, Err(CannedReplyError::DuplicateShortcut(_))), "{renamed_onto:?}");
    // The same shortcut on another site is another reply.
    let elsewhere = store.save(None, other.clone(), "hello", "Hello!").await.expect("another site");
    // A reply changed or deleted only as its own site's.
    assert!(matches!(store.save(Some(elsewhere.id), site.clone(), "x", "y").await, Err(CannedReplyError::NotFound)));
    assert!(matches!(store.save(Some(u64::MAX), site.clone(), "x", "y").await, Err(CannedReplyError::NotFound)));
    assert!(matches!(store.delete(elsewhere.id, site.clone()).await, Err(CannedReplyError::NotFound)));
    let changed = store.save(Some(hello.id), site.clone(), "hello", "您好！").await.expect("change the text");
    assert_eq!((changed.id, changed.text.as_str()), (hello.id, "您好！"));
    let listed: Vec<String> = store.of_site(&site).await.unwrap().into_iter().map(|reply| reply.shortcut).collect();
    assert_eq!(listed, ["bye", "hello"], "by shortcut");
    assert_eq!(store.canned_reply(hello.id).await.unwrap().map(|reply| reply.text), Some("您好！".into()));
    store.delete(bye.id, site.clone()).await.expect("delete");
    assert!(matches!(store.delete(bye.id, site.clone()).await, Err(CannedReplyError::NotFound)));
    assert!(store.canned_reply(bye.id).await.unwrap().is_none());
    assert_eq!(store.of_site(&other).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    behaves_as_a_canned_reply_store(server.store()).await;

    let Some(url) = database("canned_alike").await else { return };
    behaves_as_a_canned_reply_store(&PostgresCannedReplies::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn two_nodes_saving_one_shortcut_at_once_store_it_once() {
    let Some(url) = database("canned_race").await else { return };
    let (a, b) = (PostgresCannedReplies::open(&url).await.unwrap(), PostgresCannedReplies::open(&url).await.unwrap());
    for round in 0..10 {
        let site = format!("race{round}");
        let (first, second) =
            tokio::join!(a.save(None, site.clone(), "hi", "from a"), b.save(None, site.clone(), "hi", "from b"));
        assert_eq!(usize::from(first.is_ok()) + usize::from(second.is_ok()), 1, "{first:?} {second:?}");
        assert_eq!(a.of_site(&site).await.unwrap().len(), 1);
    }
}

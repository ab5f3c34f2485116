//! Agents' push subscriptions behind their storage boundary (`PushSubscriptionStore`) on both
//! backends, the appliance's redb and the cluster's PostgreSQL 15 (support/postgres.rs): kept
//! oldest first per agent, the same endpoint replaced (a new language), the oldest evicted past
//! the most per agent, and a removal of an unknown or another agent's endpoint refused with
//! nothing changed. On PostgreSQL two nodes saving at once keep to the most per agent.
//!
//! The PostgreSQL tests print one line and pass when PostgreSQL is not installed.

use kefu::base::language::Lang;
use kefu::cluster::push_subscriptions::PostgresPushSubscriptions;
use kefu::push::subscriptions::{MAX_SUBSCRIPTIONS_PER_AGENT, PushSubscriptionStore, Subscription, SubscriptionError};

use crate::support::TestServer;
use crate::support::postgres::database;

fn subscription(agent_id: u64, n: usize, language: Lang, created_at: i64) -> Subscription {
    Subscription {
        agent_id,
        endpoint: format!("https://push.example.net/send/{n}"),
        p256dh: "BPublicKey".into(),
        auth: "AuthSecret".into(),
        language,
        created_at,
    }
}

async fn behaves_as_a_push_subscription_store(store: &impl PushSubscriptionStore) {
    assert!(!store.any_subscription().await.unwrap());
    store.keep_subscription(subscription(7, 0, Lang::Zh, 1_000)).await.unwrap();
    store.keep_subscription(subscription(8, 0, Lang::En, 1_001)).await.unwrap();
    assert!(store.any_subscription().await.unwrap());
    // The same endpoint again: replaced, in the new language.
    store.keep_subscription(subscription(7, 0, Lang::En, 1_002)).await.unwrap();
    let kept = store.subscriptions_of(7).await.unwrap();
    assert_eq!((kept.len(), kept[0].language), (1, Lang::En));

    for n in 1..=MAX_SUBSCRIPTIONS_PER_AGENT {
        store.keep_subscription(subscription(7, n, Lang::Zh, 2_000 + n as i64)).await.unwrap();
    }
    let kept: Vec<String> = store.subscriptions_of(7).await.unwrap().into_iter().map(|kept| kept.endpoint).collect();
    assert_eq!(kept.len(), MAX_SUBSCRIPTIONS_PER_AGENT);
    assert_eq!(kept[0], "https://push.example.net/send/1", "the oldest went, oldest first");
    assert_eq!(store.subscriptions_of(8).await.unwrap().len(), 1, "another agent's are untouched");

    let other_agents = store.remove_subscription(8, "https://push.example.net/send/1".into()).await;
    assert!(matches!(other_agents, Err(SubscriptionError::NotFound)), "{other_agents:?}");
    let unknown = store.remove_subscription(7, "https://push.example.net/never".into()).await;
    assert!(matches!(unknown, Err(SubscriptionError::NotFound)), "{unknown:?}");
    assert_eq!(store.subscriptions_of(7).await.unwrap().len(), MAX_SUBSCRIPTIONS_PER_AGENT);
    store.remove_subscription(7, "https://push.example.net/send/1".into()).await.expect("removed");
    assert_eq!(store.subscriptions_of(7).await.unwrap().len(), MAX_SUBSCRIPTIONS_PER_AGENT - 1);
    assert!(store.subscriptions_of(u64::MAX).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    behaves_as_a_push_subscription_store(server.store()).await;

    let Some(url) = database("push_subscriptions_alike").await else { return };
    behaves_as_a_push_subscription_store(&PostgresPushSubscriptions::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn two_nodes_saving_at_once_keep_to_the_most_per_agent() {
    let Some(url) = database("push_subscriptions_nodes").await else { return };
    let nodes =
        [PostgresPushSubscriptions::open(&url).await.unwrap(), PostgresPushSubscriptions::open(&url).await.unwrap()];
    let saves = (0..2 * MAX_SUBSCRIPTIONS_PER_AGENT)
        .map(|n| nodes[n % 2].keep_subscription(subscription(3, n, Lang::Zh, n as i64)));
    for saved in futures_util::future::join_all(saves).await {
        saved.expect("saved");
    }
    assert_eq!(nodes[0].subscriptions_of(3).await.unwrap().len(), MAX_SUBSCRIPTIONS_PER_AGENT);
}

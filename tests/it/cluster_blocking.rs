//! Blocks behind their storage boundary (`BlockStore`) on both backends, the appliance's redb
//! and the cluster's PostgreSQL 15 (support/postgres.rs): a visitor blocked with their address,
//! an address blocked on its own, the lists newest first, unblocking (the address stays blocked),
//! and unknown visitors or addresses refused with nothing changed.
//!
//! The PostgreSQL test prints one line and passes when PostgreSQL is not installed.

use std::time::Duration;

use kefu::cluster::blocking::PostgresBlocks;
use kefu::people::blocking::{BlockError, BlockStore};

use crate::support::TestServer;
use crate::support::postgres::{connect, database};

async fn behaves_as_a_block_store(blocks: &impl BlockStore, site: &str, visitor_id: u64) {
    assert!(matches!(blocks.set_visitor_blocked(u64::MAX, true, None).await, Err(BlockError::NotFound)));
    let visitor = blocks.set_visitor_blocked(visitor_id, true, Some("203.0.113.7".into())).await.expect("block");
    assert!(visitor.blocked);
    let blocked: Vec<u64> = blocks.blocked_visitors().await.unwrap().iter().map(|(visitor, _)| visitor.id).collect();
    assert_eq!(blocked, [visitor_id]);
    assert!(blocks.is_ip_blocked(site, "203.0.113.7").await.unwrap());
    assert!(!blocks.is_ip_blocked("another-site", "203.0.113.7").await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    blocks.block_address(site.to_owned(), "198.51.100.1".into()).await.unwrap();
    let addresses: Vec<String> =
        blocks.blocked_addresses().await.unwrap().into_iter().map(|(_, address, _)| address).collect();
    assert_eq!(addresses, ["198.51.100.1", "203.0.113.7"], "newest first");
    assert!(matches!(blocks.unblock_address(site.to_owned(), "192.0.2.1".into()).await, Err(BlockError::NotFound)));
    blocks.unblock_address(site.to_owned(), "198.51.100.1".into()).await.expect("unblock the address");
    assert!(!blocks.is_ip_blocked(site, "198.51.100.1").await.unwrap());

    let visitor = blocks.set_visitor_blocked(visitor_id, false, None).await.expect("unblock");
    assert!(!visitor.blocked);
    assert!(blocks.blocked_visitors().await.unwrap().is_empty());
    assert!(blocks.is_ip_blocked(site, "203.0.113.7").await.unwrap(), "the address stays blocked");
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let site = server.create_site("店").await;
    let (visitor_id, _) = server.visitor_session(&site, None).await;
    behaves_as_a_block_store(server.store(), &site.key, visitor_id).await;

    let Some(url) = database("blocking_alike").await else { return };
    let client = connect(&url).await;
    let blocks = PostgresBlocks::open(&url).await.unwrap();
    let visitor = serde_json::json!({"id": 77, "site": "shop", "created_at": 0, "last_seen_at": 0});
    client
        .execute("INSERT INTO visitors (id, record) VALUES (77, $1::text::jsonb)", &[&visitor.to_string()])
        .await
        .unwrap();
    behaves_as_a_block_store(&blocks, "shop", 77).await;
}

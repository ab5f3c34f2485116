//! The audit log behind its storage boundary (`AuditLog`) on both backends, the appliance's redb
//! and the cluster's PostgreSQL 15 (support/postgres.rs): entries appended through
//! `audit::record` are found alike (newest first, by part of the actor, action or target in any
//! case, by time, a page of 100 at a time with a cursor).
//!
//! The PostgreSQL test prints one line and passes when PostgreSQL is not installed.

use kefu::cluster::audit::PostgresAuditLog;
use kefu::history::audit::{self, Actor, AuditFilter, AuditLog, PAGE_SIZE};

use crate::support::TestServer;
use crate::support::postgres::database;

async fn behaves_as_an_audit_log(log: &impl AuditLog) {
    let admin = || Actor { id: 1, email: "Admin@Shop.example".into() };
    audit::record(log, admin(), "site.create", "shop", "名称：小店".into()).await;
    audit::record(log, Actor::command_line(), "agent.password", "ann@shop.example", String::new()).await;
    for n in 0..PAGE_SIZE + 4 {
        audit::record(log, admin(), "canned_reply.create", &format!("shop /r{n}"), "您好".into()).await;
    }
    let all = log.search(AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), PAGE_SIZE);
    assert_eq!(all[0].target, format!("shop /r{}", PAGE_SIZE + 3), "newest first");
    assert!(all.windows(2).all(|pair| pair[0].id > pair[1].id && pair[0].at >= pair[1].at));
    let rest =
        log.search(AuditFilter { before: all.last().map(|entry| entry.id), ..AuditFilter::default() }).await.unwrap();
    assert_eq!(rest.len(), 6);
    assert_eq!((rest[5].action.as_str(), rest[5].detail.as_str()), ("site.create", "名称：小店"));

    let by = |filter: AuditFilter| async move { log.search(filter).await.unwrap() };
    let actions = |entries: Vec<audit::AuditEntry>| entries.into_iter().map(|entry| entry.action).collect::<Vec<_>>();
    assert_eq!(
        actions(by(AuditFilter { action: Some("SITE".into()), ..AuditFilter::default() }).await),
        ["site.create"]
    );
    assert_eq!(
        actions(by(AuditFilter { actor: Some("command line".into()), ..AuditFilter::default() }).await),
        ["agent.password"]
    );
    assert_eq!(
        by(AuditFilter { target: Some("/r1".into()), ..AuditFilter::default() }).await.len(),
        1 + 10 + 4,
        "r1, r10 to r19, r100 to r103"
    );
    let now = kefu::base::clock::now_millis();
    assert!(by(AuditFilter { from: Some(now + 60_000), ..AuditFilter::default() }).await.is_empty());
    assert!(by(AuditFilter { until: Some(now - 3_600_000), ..AuditFilter::default() }).await.is_empty());
    assert_eq!(
        by(AuditFilter { from: Some(now - 3_600_000), action: Some("agent".into()), ..AuditFilter::default() })
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    behaves_as_an_audit_log(server.store()).await;

    let Some(url) = database("audit_alike").await else { return };
    behaves_as_an_audit_log(&PostgresAuditLog::open(&url).await.unwrap()).await;
}

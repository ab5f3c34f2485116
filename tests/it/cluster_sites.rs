//! Sites behind their storage boundary (`SiteStore`) on both backends: the appliance's redb and
//! the cluster's PostgreSQL 15 (support/postgres.rs) behave the same for the same calls (checks,
//! unknown keys, the kept secret, teams of another site refused); a site changed through one
//! node is read through another; and deleting a site on PostgreSQL removes what is only its own
//! and nothing of another site's; with NATS, a change through one node reaches another node's
//! cached sites (`SiteDirectory`) within a second.
//!
//! The PostgreSQL tests print one line and pass when PostgreSQL is not installed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kefu::cluster::events;
use kefu::cluster::sites::PostgresSites;
use kefu::sites::store::SiteStore;
use kefu::sites::{NewSite, SiteDirectory, SiteError};
use serde_json::json;

use crate::support::TestServer;
use crate::support::nats::NatsServer;
use crate::support::postgres::{connect, count, database};

fn new_site(name: &str) -> NewSite {
    NewSite { name: name.into(), allowed_origins: vec!["*".into()], ..NewSite::default() }
}

/// The calls every backend answers alike; `team_of` makes a team of the given site and returns
/// its id.
async fn behaves_as_a_site_store(store: &impl SiteStore, team_of: impl AsyncFn(&str) -> u64) {
    let before = store.list().await.expect("list").len();
    let refused = store.create(new_site("   ")).await;
    assert!(matches!(refused, Err(SiteError::Invalid(ref error)) if error.to_string().contains("name")), "{refused:?}");
    assert_eq!(store.list().await.unwrap().len(), before, "a refused site is not stored");

    let site = store.create(new_site("小店 Shop")).await.expect("create");
    let other = store.create(new_site("Other")).await.expect("create another");
    let read = store.get(&site.key).await.unwrap().expect("read back");
    assert_eq!((read.name.as_str(), &read.secret, read.created_at), ("小店 Shop", &site.secret, site.created_at));
    assert!(store.list().await.unwrap().iter().any(|listed| listed.key == site.key));
    assert!(store.get("no-such-site").await.unwrap().is_none());

    // A save keeps the stored secret and creation time whatever it is given.
    let mut changed = read.clone();
    changed.name = "小店".into();
    changed.secret = "guessed".into();
    changed.created_at = 1;
    let saved = store.save(changed).await.expect("save");
    assert_eq!((saved.name.as_str(), &saved.secret, saved.created_at), ("小店", &site.secret, site.created_at));
    assert_eq!(store.get(&site.key).await.unwrap().unwrap().name, "小店");

    // Unknown keys, invalid settings and another site's team are refused, changing nothing.
    let mut unknown = saved.clone();
    unknown.key = "no-such-site".into();
    assert!(matches!(store.save(unknown).await, Err(SiteError::NotFound(_))));
    let mut invalid = saved.clone();
    invalid.name = String::new();
    assert!(matches!(store.save(invalid).await, Err(SiteError::Invalid(_))));
    let foreign = team_of(&other.key).await;
    let mut routed = saved.clone();
    routed.default_team = Some(foreign);
    let refused = store.save(routed.clone()).await;
    assert!(
        matches!(refused, Err(SiteError::Invalid(ref error)) if error.to_string().contains(&format!("team {foreign} is not a team of this site"))),
        "{refused:?}"
    );
    assert_eq!(store.get(&site.key).await.unwrap().unwrap().default_team, None);
    routed.default_team = Some(team_of(&site.key).await);
    assert_eq!(store.save(routed.clone()).await.expect("its own team").default_team, routed.default_team);

    let rotated = store.rotate_secret(&site.key).await.expect("rotate");
    assert_ne!(rotated.secret, site.secret);
    assert_eq!(store.get(&site.key).await.unwrap().unwrap().secret, rotated.secret);
    assert!(matches!(store.rotate_secret("no-such-site").await, Err(SiteError::NotFound(_))));

    assert_eq!(store.delete(&site.key).await.expect("delete").key, site.key);
    assert!(store.get(&site.key).await.unwrap().is_none());
    assert!(matches!(store.delete(&site.key).await, Err(SiteError::NotFound(_))));
    assert!(store.get(&other.key).await.unwrap().is_some(), "the other site stays");
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    behaves_as_a_site_store(&store, async |site: &str| {
        kefu::people::teams::create(&store, site.to_owned(), "售前", Vec::new()).await.expect("team").id
    })
    .await;

    let Some(url) = database("sites_alike").await else { return };
    let sites = PostgresSites::open(&url).await.expect("open");
    let client = connect(&url).await;
    let next_team = std::sync::atomic::AtomicI64::new(1);
    behaves_as_a_site_store(&sites, async |site: &str| {
        let id = next_team.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let team = json!({"id": id, "site": site, "name": "售前", "members": []});
        client
            .execute("INSERT INTO teams (id, record) VALUES ($1, $2::text::jsonb)", &[&id, &team.to_string()])
            .await
            .expect("a team");
        id as u64
    })
    .await;
}

#[tokio::test]
async fn a_site_changed_through_one_node_is_read_through_another() {
    let Some(url) = database("sites_nodes").await else { return };
    let (a, b) = (PostgresSites::open(&url).await.unwrap(), PostgresSites::open(&url).await.unwrap());
    let site = a.create(new_site("两个节点")).await.unwrap();
    assert_eq!(b.get(&site.key).await.unwrap().map(|site| site.name), Some("两个节点".to_owned()));
    let rotated = b.rotate_secret(&site.key).await.unwrap();
    assert_eq!(a.get(&site.key).await.unwrap().unwrap().secret, rotated.secret);
    b.delete(&site.key).await.unwrap();
    assert!(a.get(&site.key).await.unwrap().is_none());
}

#[tokio::test]
async fn deleting_a_site_removes_only_what_is_its_own() {
    let Some(url) = database("sites_delete").await else { return };
    let sites = PostgresSites::open(&url).await.unwrap();
    let client = connect(&url).await;
    let (doomed, kept) =
        (sites.create(new_site("Doomed")).await.unwrap(), sites.create(new_site("Kept")).await.unwrap());
    let insert = async |table: &str, key: serde_json::Value, record: serde_json::Value| {
        let (columns, values) = match table {
            "bot_settings" | "refused_origins" => ("site", format!("{key}")),
            "blocked_ips" => ("site, address", format!("{}, '127.0.0.1'", key)),
            "api_token_digests" => ("digest", format!("decode(md5({key}), 'hex')")),
            _ => ("id", format!("{key}")),
        };
        let values = values.replace('"', "'");
        client
            .execute(
                &format!("INSERT INTO {table} ({columns}, record) VALUES ({values}, $1::text::jsonb)"),
                &[&record.to_string()],
            )
            .await
            .unwrap_or_else(|error| panic!("{table}: {error}"));
    };
    for (n, site) in [(1, &doomed.key), (2, &kept.key)] {
        for table in ["teams", "canned_replies", "kb_entries"] {
            insert(table, json!(n), json!({"id": n, "site": site})).await;
        }
        insert("webhooks", json!(format!("hook-{n}")), json!({"id": format!("hook-{n}"), "site": site})).await;
        insert("bot_settings", json!(site), json!({"enabled": true})).await;
        insert("refused_origins", json!(site), json!([])).await;
        insert("blocked_ips", json!(site), json!(1_700_000_000_000i64)).await;
        insert("api_tokens", json!(n), json!({"id": n, "site": site, "revoked_at": null})).await;
        insert("api_token_digests", json!(format!("token-{n}")), json!(n)).await;
    }
    insert("agents", json!(1), json!({"id": 1, "sites": [doomed.key, kept.key]})).await;
    insert("agents", json!(2), json!({"id": 2, "sites": [doomed.key]})).await;

    sites.delete(&doomed.key).await.expect("delete");
    for table in ["teams", "canned_replies", "kb_entries", "webhooks"] {
        assert_eq!(count(&client, &format!("{table} WHERE record->>'site' = '{}'", doomed.key)).await, 0, "{table}");
        assert_eq!(count(&client, &format!("{table} WHERE record->>'site' = '{}'", kept.key)).await, 1, "{table}");
    }
    for table in ["bot_settings", "refused_origins", "blocked_ips"] {
        assert_eq!(count(&client, &format!("{table} WHERE site = '{}'", doomed.key)).await, 0, "{table}");
        assert_eq!(count(&client, &format!("{table} WHERE site = '{}'", kept.key)).await, 1, "{table}");
    }
    // Its token is revoked, kept with the time, and no longer found by its digest.
    assert_eq!(count(&client, "api_tokens WHERE id = 1 AND (record->>'revoked_at')::bigint > 0").await, 1);
    assert_eq!(count(&client, "api_tokens WHERE id = 2 AND record->'revoked_at' = 'null'").await, 1);
    assert_eq!(count(&client, "api_token_digests").await, 1);
    assert_eq!(count(&client, "api_token_digests WHERE (record #>> '{}')::bigint = 2").await, 1);
    // Its key leaves the agents' sites.
    let agents: Vec<String> = client
        .query("SELECT record->>'sites' FROM agents ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(agents, [json!([kept.key]).to_string(), "[]".to_owned()]);
    assert!(sites.get(&kept.key).await.unwrap().is_some());
}

#[tokio::test]
async fn a_change_through_one_node_reaches_another_nodes_cached_sites_within_a_second() {
    let Some(url) = database("sites_directory").await else { return };
    let Some(nats) = NatsServer::start("sites_directory") else { return };
    let node_a = PostgresSites::open(&url).await.unwrap().with_events(events::connect(&nats.url()).await.unwrap());
    let node_b = Arc::new(PostgresSites::open(&url).await.unwrap());
    let directory = SiteDirectory::of(node_b);
    let following = events::follow_site_changes(&events::connect(&nats.url()).await.unwrap(), directory.clone())
        .await
        .expect("follow");

    let site = node_a.create(new_site("旧名")).await.unwrap();
    assert_eq!(directory.get(&site.key).await.unwrap().map(|cached| cached.site.name.clone()), Some("旧名".into()));
    let mut renamed = site.clone();
    renamed.name = "新名".into();
    node_a.save(renamed).await.unwrap();
    let seen = |expected: Option<&'static str>| {
        let directory = directory.clone();
        let key = site.key.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                let name = directory.get(&key).await.unwrap().map(|cached| cached.site.name.clone());
                if name.as_deref() == expected {
                    return;
                }
                assert!(Instant::now() < deadline, "node b still has {name:?}, not {expected:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    seen(Some("新名")).await;
    node_a.delete(&site.key).await.unwrap();
    seen(None).await;
    following.abort();
}

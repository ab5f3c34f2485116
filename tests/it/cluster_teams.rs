//! Teams behind their storage boundary (`TeamStore`) on both backends, the appliance's redb and
//! the cluster's PostgreSQL 15 (support/postgres.rs): the same calls give the same answers (bad
//! names and members who do not serve the site refused with nothing stored, unknown ids, a
//! rename with new members), and a deleted team leaves its site's routing on both; on
//! PostgreSQL a conversation waiting for a deleted team waits for any agent of the site.
//!
//! The PostgreSQL test prints one line and passes when PostgreSQL is not installed.

use kefu::chat::message_store::MessageStore;
use kefu::chat::messages::{NewMessage, Target};
use kefu::cluster::messages::{PostgresMessages, PostgresOptions};
use kefu::cluster::sites::PostgresSites;
use kefu::cluster::teams::PostgresTeams;
use kefu::people::team_store::TeamStore;
use kefu::people::teams::TeamError;
use kefu::protocol::{SenderKind, SenderView};
use kefu::sites::NewSite;
use kefu::sites::store::SiteStore;

use crate::support::TestServer;
use crate::support::postgres::{connect, database};

/// The calls every backend answers alike; `agent_of` makes an agent serving the given site and
/// returns its id.
async fn behaves_as_a_team_store(teams: &impl TeamStore, sites: &impl SiteStore, agent_of: impl AsyncFn(&str) -> u64) {
    let site = sites.create(NewSite { name: "店".into(), ..NewSite::default() }).await.unwrap();
    let other = sites.create(NewSite { name: "Other".into(), ..NewSite::default() }).await.unwrap();
    let (ann, outsider) = (agent_of(&site.key).await, agent_of(&other.key).await);
    let before = teams.list().await.unwrap().len();

    let bad_name = teams.create(site.key.clone(), "  ", vec![ann]).await;
    assert!(
        matches!(bad_name, Err(TeamError::Invalid(ref error)) if error.to_string().contains("name")),
        "{bad_name:?}"
    );
    let foreign = teams.create(site.key.clone(), "售前", vec![ann, outsider]).await;
    assert!(
        matches!(foreign, Err(TeamError::Invalid(ref error)) if error.to_string().contains(&format!("agent {outsider} does not serve this site"))),
        "{foreign:?}"
    );
    let unknown = teams.create(site.key.clone(), "售前", vec![u64::MAX]).await;
    assert!(matches!(unknown, Err(TeamError::Invalid(_))), "{unknown:?}");
    assert_eq!(teams.list().await.unwrap().len(), before, "refused teams are not stored");

    let team = teams.create(site.key.clone(), " 售前 ", vec![ann, ann]).await.expect("create");
    assert_eq!(
        (team.name.as_str(), team.members.as_slice(), team.site.as_str()),
        ("售前", [ann].as_slice(), site.key.as_str())
    );
    assert_eq!(teams.get(team.id).await.unwrap().map(|found| found.name), Some("售前".into()));
    let renamed = teams.update(team.id, "售后", Vec::new()).await.expect("update");
    assert_eq!((renamed.name.as_str(), renamed.members.len()), ("售后", 0));
    assert!(matches!(teams.update(team.id, "售后", vec![outsider]).await, Err(TeamError::Invalid(_))));
    assert!(matches!(teams.update(u64::MAX, "x", Vec::new()).await, Err(TeamError::NotFound)));

    // The site routes to it; deleting it leaves the site's routing.
    let mut routed = sites.get(&site.key).await.unwrap().unwrap();
    routed.default_team = Some(team.id);
    sites.save(routed).await.expect("route to the team");
    assert_eq!(teams.delete(team.id).await.expect("delete").id, team.id);
    assert_eq!(sites.get(&site.key).await.unwrap().unwrap().default_team, None);
    assert!(teams.get(team.id).await.unwrap().is_none());
    assert!(matches!(teams.delete(team.id).await, Err(TeamError::NotFound)));
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    let next = std::sync::atomic::AtomicU64::new(0);
    behaves_as_a_team_store(&store, &store, async |site: &str| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let new_agent = kefu::people::agents::NewAgent {
            email: format!("agent{n}@shop.example"),
            name: format!("客服 {n}"),
            password: "correct horse battery".into(),
            role: kefu::people::agents::Role::Agent,
            sites: vec![site.to_owned()],
            capacity: 5,
        };
        kefu::people::agents::create(&store, new_agent).await.expect("an agent").id
    })
    .await;

    let Some(url) = database("teams_alike").await else { return };
    let (sites, teams) = (PostgresSites::open(&url).await.unwrap(), PostgresTeams::open(&url).await.unwrap());
    let client = connect(&url).await;
    let next = std::sync::atomic::AtomicI64::new(1);
    behaves_as_a_team_store(&teams, &sites, async |site: &str| {
        let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let agent = serde_json::json!({
            "id": id, "email": format!("agent{id}@shop.example"), "name": "客服", "password_hash": "",
            "role": "agent", "sites": [site], "capacity": 5, "created_at": 0
        });
        client
            .execute("INSERT INTO agents (id, record) VALUES ($1, $2::text::jsonb)", &[&id, &agent.to_string()])
            .await
            .expect("an agent");
        id as u64
    })
    .await;
}

#[tokio::test]
async fn a_conversation_waiting_for_a_deleted_team_waits_for_any_agent_of_the_site() {
    let Some(url) = database("teams_waiting").await else { return };
    let (sites, teams) = (PostgresSites::open(&url).await.unwrap(), PostgresTeams::open(&url).await.unwrap());
    let site = sites.create(NewSite { name: "店".into(), ..NewSite::default() }).await.unwrap();
    let team = teams.create(site.key.clone(), "售前", Vec::new()).await.unwrap();
    let messages = PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap();
    let sender = SenderView { kind: SenderKind::Visitor, id: 5, name: "访客".into() };
    let inbox = Target::VisitorInbox { site: site.key.clone(), visitor_id: 5 };
    let waiting = messages.append(NewMessage::text(inbox, sender, "c-1".into(), "你好".into())).await.unwrap();
    let client = connect(&url).await;
    client
        .execute(
            "UPDATE conversations SET team = $2 WHERE id = $1",
            &[&(waiting.conversation_id as i64), &(team.id as i64)],
        )
        .await
        .unwrap();

    teams.delete(team.id).await.unwrap();
    let conversation = messages.conversation(waiting.conversation_id).await.unwrap().unwrap();
    assert_eq!(conversation.team, None);
}

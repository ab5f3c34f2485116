//! Agents' logins behind their storage boundary (`AgentStore`) on both backends, the
//! appliance's redb and the cluster's PostgreSQL 15 (support/postgres.rs): the same logins give
//! the same answers (a wrong password or unknown email refused alike, the email's case ignored,
//! a session authenticated until it ends or expires); on PostgreSQL a session opened through one
//! node is accepted by another, and the two-factor stages follow the agent and the switch.
//!
//! The PostgreSQL tests print one line and pass when PostgreSQL is not installed.

use std::time::Duration;

use kefu::base::secrets;
use kefu::cluster::agents::PostgresAgents;
use kefu::people::agent_store::AgentStore;
use kefu::people::agents::{
    self, Agent, AgentError, AgentSession, LoginStep, NewAgent, PasswordChecks, Role, SessionStage,
};

use crate::support::TestServer;
use crate::support::postgres::{connect, database};

const PASSWORD: &str = "correct horse 电池";

fn checks() -> PasswordChecks {
    PasswordChecks::new(1, Duration::from_secs(30))
}

/// The calls every backend answers alike, for an agent `ann@shop.example` with [`PASSWORD`].
async fn behaves_as_an_agent_store(store: &impl AgentStore, ann: &Agent) {
    let checks = checks();
    let wrong = agents::login(store, &checks, "ann@shop.example", "wrong password").await;
    assert!(matches!(wrong, Err(AgentError::InvalidCredentials)), "{wrong:?}");
    let unknown = agents::login(store, &checks, "nobody@shop.example", PASSWORD).await;
    assert!(matches!(unknown, Err(AgentError::InvalidCredentials)), "{unknown:?}");
    let not_an_email = agents::login(store, &checks, "not an email", PASSWORD).await;
    assert!(matches!(not_an_email, Err(AgentError::InvalidCredentials)), "{not_an_email:?}");

    let (token, agent, step) = agents::login(store, &checks, "  ANN@Shop.Example ", PASSWORD).await.expect("login");
    assert_eq!((agent.id, step), (ann.id, LoginStep::Done));
    let digest = secrets::token_digest(&token);
    let now = kefu::base::clock::now_millis();
    assert_eq!(store.authenticate(&digest, now).await.unwrap().map(|agent| agent.id), Some(ann.id));
    assert_eq!(store.session_of(&digest, now).await.unwrap().map(|(_, stage)| stage), Some(SessionStage::Full));
    assert_eq!(store.get(ann.id).await.unwrap().map(|agent| agent.email), Some("ann@shop.example".to_owned()));
    assert!(store.get(u64::MAX).await.unwrap().is_none());

    // Expired, then ended: no longer accepted.
    let later = now + agents::SESSION_LIFETIME_MILLIS + 1;
    assert!(store.authenticate(&digest, later).await.unwrap().is_none(), "expired");
    agents::logout(store, &token).await.expect("logout");
    assert!(store.authenticate(&digest, now).await.unwrap().is_none(), "ended");
    assert!(store.authenticate(&secrets::token_digest("a1.unknown"), now).await.unwrap().is_none());

    // A session waiting for its code is not a full one.
    let waiting = secrets::token_digest("a1.waiting");
    let session =
        AgentSession { agent_id: ann.id, created_at: now, expires_at: now + 60_000, stage: SessionStage::AwaitingCode };
    store.insert_session(&waiting, session).await.unwrap();
    assert!(store.authenticate(&waiting, now).await.unwrap().is_none());
    assert_eq!(
        store.session_of(&waiting, now).await.unwrap().map(|(_, stage)| stage),
        Some(SessionStage::AwaitingCode)
    );
}

fn ann_of(id: u64, two_factor: bool) -> Agent {
    Agent {
        id,
        email: "ann@shop.example".into(),
        name: "安".into(),
        password_hash: secrets::hash_password(PASSWORD),
        role: Role::Agent,
        sites: vec!["shop".into()],
        capacity: 5,
        disabled: false,
        created_at: 0,
        two_factor,
        avatar: None,
        email_notifications_off: false,
    }
}

/// Stores an agent on PostgreSQL as `kefu migrate-to-postgres` copies one.
async fn insert_agent(client: &tokio_postgres::Client, agent: &Agent) {
    let record = serde_json::to_string(agent).unwrap();
    client
        .execute(
            "INSERT INTO agents (id, record) VALUES ($1, $2::text::jsonb)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&(agent.id as i64), &record],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO agent_emails (email, record) VALUES ($1, to_jsonb($2::bigint)) ON CONFLICT DO NOTHING",
            &[&agent.email, &(agent.id as i64)],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    let new_agent = NewAgent {
        email: "Ann@Shop.example".into(),
        name: "安".into(),
        password: PASSWORD.into(),
        role: Role::Agent,
        sites: Vec::new(),
        capacity: 5,
    };
    let ann = agents::create(&store, new_agent).await.expect("an agent");
    behaves_as_an_agent_store(&store, &ann).await;

    let Some(url) = database("agents_alike").await else { return };
    let postgres = PostgresAgents::open(&url).await.unwrap();
    let ann = ann_of(7, false);
    insert_agent(&connect(&url).await, &ann).await;
    behaves_as_an_agent_store(&postgres, &ann).await;
}

#[tokio::test]
async fn a_login_through_one_node_is_accepted_by_another_and_two_factor_stages_hold() {
    let Some(url) = database("agents_nodes").await else { return };
    let (a, b) = (PostgresAgents::open(&url).await.unwrap(), PostgresAgents::open(&url).await.unwrap());
    let client = connect(&url).await;
    insert_agent(&client, &ann_of(7, false)).await;
    let checks = checks();
    let (token, _, _) = agents::login(&a, &checks, "ann@shop.example", PASSWORD).await.unwrap();
    let digest = secrets::token_digest(&token);
    let now = kefu::base::clock::now_millis();
    assert_eq!(b.authenticate(&digest, now).await.unwrap().map(|agent| agent.id), Some(7));
    agents::logout(&b, &token).await.unwrap();
    assert!(a.authenticate(&digest, now).await.unwrap().is_none(), "ended through the other node");

    // The installation's switch: an agent without two-factor login may only enrol.
    client.execute("INSERT INTO appliance_meta (name, record) VALUES ('require_two_factor', '1')", &[]).await.unwrap();
    let (_, _, step) = agents::login(&a, &checks, "ann@shop.example", PASSWORD).await.unwrap();
    assert_eq!(step, LoginStep::Enrol);
    // An agent with two-factor login waits for the code.
    insert_agent(&client, &ann_of(7, true)).await;
    let (ticket, _, step) = agents::login(&b, &checks, "ann@shop.example", PASSWORD).await.unwrap();
    assert_eq!(step, LoginStep::Code);
    assert!(a.authenticate(&secrets::token_digest(&ticket), now).await.unwrap().is_none());

    // A disabled agent cannot log in, and its sessions stop being accepted.
    let (token, _, _) = {
        let mut ann = ann_of(7, false);
        client.execute("DELETE FROM appliance_meta WHERE name = 'require_two_factor'", &[]).await.unwrap();
        insert_agent(&client, &ann).await;
        let opened = agents::login(&a, &checks, "ann@shop.example", PASSWORD).await.unwrap();
        ann.disabled = true;
        insert_agent(&client, &ann).await;
        opened
    };
    assert!(b.authenticate(&secrets::token_digest(&token), now).await.unwrap().is_none());
    assert!(matches!(
        agents::login(&b, &checks, "ann@shop.example", PASSWORD).await,
        Err(AgentError::InvalidCredentials)
    ));
}

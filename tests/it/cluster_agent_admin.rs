//! The agents' administration and an agent's own account behind their storage boundaries
//! (`AgentAdministration`, `PasswordResetStore`, `TeamStore::set_agent_teams`) on both backends,
//! the appliance's redb and the cluster's PostgreSQL 15 (support/postgres.rs): the same calls
//! give the same answers (agents made, changed, listed; passwords reset and changed; an agent's
//! teams; two-factor enrolment, removal and the installation's switch; a picture; a reset link
//! asked for by email and used once), and bad input (unknown ids, invalid values, a wrong
//! password or code) is refused with nothing changed. On PostgreSQL, the connections a change
//! ends close on every node (NATS), two nodes cannot demote the last two admins at once, and a
//! picture replaced takes its old upload's bytes with it.
//!
//! The PostgreSQL tests print one line and pass when PostgreSQL or nats-server is not installed.

use std::sync::Arc;
use std::time::Duration;

use kefu::base::secrets;
use kefu::chat::uploads::UploadTarget;
use kefu::cluster::agents::PostgresAgents;
use kefu::cluster::events;
use kefu::cluster::sites::PostgresSites;
use kefu::cluster::teams::PostgresTeams;
use kefu::cluster::uploads::PostgresUploads;
use kefu::email::password_reset::{self, PasswordReset, PasswordResetStore, ResetError};
use kefu::people::agent_administration::AgentAdministration;
use kefu::people::agent_store::AgentStore;
use kefu::people::agents::{
    self, Agent, AgentChanges, AgentError, AgentSession, LoginStep, NewAgent, PasswordChecks, Role, SessionStage,
};
use kefu::people::avatars::AvatarError;
use kefu::people::team_store::TeamStore;
use kefu::people::teams::TeamError;
use kefu::people::two_factor::{self, TwoFactorError};
use kefu::protocol::{ParticipantView, SenderKind};
use kefu::sites::NewSite;
use kefu::sites::store::SiteStore;

use crate::support::TestServer;
use crate::support::nats::NatsServer;
use crate::support::postgres::{connect, database};

const PASSWORD: &str = "correct horse 电池";
const NEW_PASSWORD: &str = "新的密码 battery staple";

fn checks() -> PasswordChecks {
    PasswordChecks::new(1, Duration::from_secs(30))
}

fn new_agent(email: &str, name: &str, role: Role, sites: Vec<String>) -> NewAgent {
    NewAgent { email: email.into(), name: name.into(), password: PASSWORD.into(), role, sites, capacity: 5 }
}

fn changes_of(agent: &Agent) -> AgentChanges {
    AgentChanges {
        name: agent.name.clone(),
        role: agent.role,
        capacity: agent.capacity,
        sites: agent.sites.clone(),
        disabled: agent.disabled,
        email_notifications_off: agent.email_notifications_off,
    }
}

fn invalid_field(outcome: &Result<Agent, AgentError>, field: &str) -> bool {
    matches!(outcome, Err(AgentError::Invalid(error)) if error.field == field)
}

/// Logs in with `password`; the session's token.
async fn login(store: &impl AgentStore, email: &str, password: &str) -> Result<(String, LoginStep), AgentError> {
    agents::login(store, &checks(), email, password).await.map(|(token, _, step)| (token, step))
}

async fn is_live(store: &impl AgentStore, token: &str) -> bool {
    let now = kefu::base::clock::now_millis();
    store.authenticate(&secrets::token_digest(token), now).await.unwrap().is_some()
}

/// Turns `agent_id`'s two-factor login on; returns the secret.
async fn enrol(store: &impl AgentAdministration, agent_id: u64, email: &str, session: &str) -> String {
    let setup = two_factor::begin_setup(store, agent_id, email).await.expect("a setup");
    let code = two_factor::code_for(&setup.secret, kefu::base::clock::now_millis()).unwrap();
    let codes =
        agents::confirm_two_factor(store, agent_id, secrets::token_digest(session), &code).await.expect("confirmed");
    assert_eq!(codes.len(), two_factor::N_RECOVERY_CODES);
    setup.secret
}

/// The calls every backend answers alike. `last_email` is the text of the newest email queued.
async fn behaves_as_agent_administration(
    store: &impl PasswordResetStore,
    teams: &impl TeamStore,
    sites: &impl SiteStore,
    last_email: impl AsyncFn() -> Option<String>,
) {
    let site = sites.create(NewSite { name: "店".into(), ..NewSite::default() }).await.unwrap().key;
    let other_site = sites.create(NewSite { name: "Other shop".into(), ..NewSite::default() }).await.unwrap().key;
    let before = store.list().await.unwrap();

    // New agents: bad input is refused and nothing is stored.
    let ann_of = |email: &str| new_agent(email, " 安 ", Role::Agent, vec![site.clone()]);
    assert!(invalid_field(&agents::create(store, ann_of("not an email")).await, "email"));
    let short = NewAgent { password: "短".into(), ..ann_of("ann@shop.example") };
    assert!(invalid_field(&agents::create(store, short).await, "password"));
    let no_capacity = NewAgent { capacity: 0, ..ann_of("ann@shop.example") };
    assert!(invalid_field(&agents::create(store, no_capacity).await, "capacity"));
    let unknown_site = new_agent("ann@shop.example", "安", Role::Agent, vec![site.clone(), "nope".into()]);
    assert!(invalid_field(&agents::create(store, unknown_site).await, "sites"));
    assert_eq!(store.list().await.unwrap().len(), before.len(), "nothing stored");

    let boss = agents::create(store, new_agent("boss@shop.example", "王经理", Role::Admin, Vec::new())).await.unwrap();
    let ann = agents::create(store, ann_of("  Ann@Shop.Example ")).await.expect("ann");
    assert_eq!((ann.email.as_str(), ann.name.as_str(), ann.role), ("ann@shop.example", "安", Role::Agent));
    assert!(!ann.disabled && !ann.two_factor && ann.avatar.is_none());
    let unnamed = agents::create(store, new_agent("bob@shop.example", " ", Role::Agent, Vec::new())).await.unwrap();
    assert_eq!(unnamed.name, "bob", "the email's user names an agent without a name");
    let duplicate = agents::create(store, ann_of("ANN@shop.example")).await;
    assert!(matches!(duplicate, Err(AgentError::DuplicateEmail(ref email)) if email == "ann@shop.example"));
    let listed: Vec<u64> = store.list().await.unwrap().iter().map(|agent| agent.id).collect();
    assert!(listed.windows(2).all(|pair| pair[0] < pair[1]), "by id: {listed:?}");
    assert!([boss.id, ann.id, unnamed.id].iter().all(|id| listed.contains(id)));
    assert_eq!(listed.len(), before.len() + 3);
    assert_eq!(store.get_by_email("ann@shop.example").await.unwrap().map(|agent| agent.id), Some(ann.id));
    let (ann_token, step) = login(store, "ann@shop.example", PASSWORD).await.expect("ann logs in");
    assert_eq!(step, LoginStep::Done);

    // Changes: invalid ones change nothing.
    let rename = |name: &str| AgentChanges { name: name.into(), ..changes_of(&ann) };
    assert!(matches!(agents::update(store, u64::MAX, rename("x")).await, Err(AgentError::NotFound(_))));
    assert!(invalid_field(&agents::update(store, ann.id, rename("   ")).await, "name"));
    let too_many = AgentChanges { capacity: agents::MAX_CAPACITY + 1, ..rename("安") };
    assert!(invalid_field(&agents::update(store, ann.id, too_many).await, "capacity"));
    let unknown_site = AgentChanges { sites: vec!["nope".into()], ..rename("安") };
    assert!(invalid_field(&agents::update(store, ann.id, unknown_site).await, "sites"));
    let unchanged = store.get(ann.id).await.unwrap().unwrap();
    assert_eq!((unchanged.name.as_str(), unchanged.sites.clone()), ("安", vec![site.clone()]));
    let both_sites =
        AgentChanges { sites: vec![site.clone(), other_site.clone(), site.clone()], ..rename(" Ann 安 ") };
    let changed = agents::update(store, ann.id, both_sites).await.expect("changed");
    let mut expected_sites = vec![site.clone(), other_site.clone()];
    expected_sites.sort();
    assert_eq!((changed.name.as_str(), changed.sites.clone()), ("Ann 安", expected_sites.clone()));
    assert_eq!(store.get(ann.id).await.unwrap().unwrap().sites, expected_sites);
    assert!(is_live(store, &ann_token).await, "new rights end connections, not sessions");

    // The last enabled admin stays one.
    for other in store.list().await.unwrap() {
        if other.id != boss.id && other.is_enabled_admin() {
            agents::update(store, other.id, AgentChanges { disabled: true, ..changes_of(&other) }).await.unwrap();
        }
    }
    let demoted = agents::update(store, boss.id, AgentChanges { role: Role::Agent, ..changes_of(&boss) }).await;
    assert!(invalid_field(&demoted, "role"), "{demoted:?}");
    let disabled = agents::update(store, boss.id, AgentChanges { disabled: true, ..changes_of(&boss) }).await;
    assert!(invalid_field(&disabled, "role"), "{disabled:?}");
    assert!(store.get(boss.id).await.unwrap().unwrap().is_enabled_admin());

    // An admin's reset: every session ends; bad input changes nothing.
    let reset = agents::reset_password(store, "nobody@shop.example", NEW_PASSWORD).await;
    assert!(matches!(reset, Err(AgentError::NotFound(_))), "{reset:?}");
    assert!(matches!(agents::reset_password(store, "ann@shop.example", "short").await, Err(AgentError::Invalid(_))));
    assert!(is_live(store, &ann_token).await);
    agents::reset_password(store, " ANN@shop.example", NEW_PASSWORD).await.expect("reset");
    assert!(!is_live(store, &ann_token).await, "the reset ended the session");
    assert!(matches!(login(store, "ann@shop.example", PASSWORD).await, Err(AgentError::InvalidCredentials)));

    // The agent's own change: the current password is checked; the asking session stays.
    let (kept, _) = login(store, "ann@shop.example", NEW_PASSWORD).await.unwrap();
    let (other, _) = login(store, "ann@shop.example", NEW_PASSWORD).await.unwrap();
    let current = store.get(ann.id).await.unwrap().unwrap();
    let kept_digest = secrets::token_digest(&kept);
    let wrong = agents::change_password(store, &checks(), &current, kept_digest, PASSWORD, "another password").await;
    assert!(matches!(wrong, Err(AgentError::InvalidCredentials)), "{wrong:?}");
    let short = agents::change_password(store, &checks(), &current, kept_digest, NEW_PASSWORD, "short").await;
    assert!(matches!(short, Err(AgentError::Invalid(_))), "{short:?}");
    assert!(is_live(store, &other).await, "refused changes end nothing");
    agents::change_password(store, &checks(), &current, kept_digest, NEW_PASSWORD, PASSWORD).await.expect("changed");
    assert!(is_live(store, &kept).await && !is_live(store, &other).await);
    assert!(login(store, "ann@shop.example", PASSWORD).await.is_ok());

    // An agent's teams: only teams of the sites they serve.
    let presale = teams.create(site.clone(), "售前", Vec::new()).await.unwrap();
    let support = teams.create(other_site.clone(), "Support", Vec::new()).await.unwrap();
    let unknown_team = teams.set_agent_teams(ann.id, vec![presale.id, u64::MAX]).await;
    assert!(matches!(unknown_team, Err(TeamError::Invalid(_))), "{unknown_team:?}");
    let unknown_agent = teams.set_agent_teams(u64::MAX, vec![presale.id]).await;
    assert!(matches!(unknown_agent, Err(TeamError::Invalid(_))), "{unknown_agent:?}");
    let not_served = teams.set_agent_teams(unnamed.id, vec![presale.id]).await;
    assert!(matches!(not_served, Err(TeamError::Invalid(_))), "{not_served:?}");
    assert!(teams.get(presale.id).await.unwrap().unwrap().members.is_empty(), "nothing changed");
    let joined = teams.set_agent_teams(ann.id, vec![presale.id, support.id]).await.expect("joined");
    assert_eq!(joined.iter().map(|team| team.id).collect::<Vec<_>>(), vec![presale.id, support.id]);
    assert_eq!(teams.get(presale.id).await.unwrap().unwrap().members, vec![ann.id]);
    assert!(teams.set_agent_teams(ann.id, vec![presale.id, support.id]).await.unwrap().is_empty(), "as they were");
    let left = teams.set_agent_teams(ann.id, vec![support.id]).await.expect("left");
    assert_eq!((left.len(), left[0].members.is_empty()), (1, true));

    // Two-factor enrolment: a wrong code changes nothing; the session that could only enrol
    // becomes full.
    assert!(matches!(
        two_factor::begin_setup(store, u64::MAX, "nobody@shop.example").await,
        Err(TwoFactorError::NotFound)
    ));
    let setup = two_factor::begin_setup(store, ann.id, "ann@shop.example").await.expect("a setup");
    assert!(setup.uri.starts_with("otpauth://totp/kefu%3Aann%40shop.example?secret="), "{}", setup.uri);
    let enrolling = secrets::token_digest("a1.enrolling");
    let now = kefu::base::clock::now_millis();
    let session =
        AgentSession { agent_id: ann.id, created_at: now, expires_at: now + 60_000, stage: SessionStage::MustEnrol };
    store.insert_session(&enrolling, session).await.unwrap();
    let wrong = agents::confirm_two_factor(store, ann.id, enrolling, "abc def").await;
    assert!(matches!(wrong, Err(AgentError::WrongCode)), "{wrong:?}");
    assert!(!store.get(ann.id).await.unwrap().unwrap().two_factor);
    let code = two_factor::code_for(&setup.secret, kefu::base::clock::now_millis()).unwrap();
    let recovery = agents::confirm_two_factor(store, ann.id, enrolling, &code).await.expect("confirmed");
    assert_eq!(recovery.len(), two_factor::N_RECOVERY_CODES);
    assert!(store.get(ann.id).await.unwrap().unwrap().two_factor);
    let stage = store.session_of(&enrolling, kefu::base::clock::now_millis()).await.unwrap().map(|(_, stage)| stage);
    assert_eq!(stage, Some(SessionStage::Full));
    assert!(matches!(two_factor::begin_setup(store, ann.id, "ann@shop.example").await, Err(TwoFactorError::AlreadyOn)));
    assert!(matches!(
        agents::confirm_two_factor(store, ann.id, enrolling, &code).await,
        Err(AgentError::TwoFactor(TwoFactorError::AlreadyOn))
    ));
    assert_eq!(login(store, "ann@shop.example", PASSWORD).await.unwrap().1, LoginStep::Code);

    // Turning it off: the agent's own password is checked, the asking session stays.
    let ann_now = store.get(ann.id).await.unwrap().unwrap();
    let wrong = agents::disable_own_two_factor(store, &checks(), &ann_now, enrolling, "wrong password").await;
    assert!(matches!(wrong, Err(AgentError::InvalidCredentials)), "{wrong:?}");
    assert!(store.get(ann.id).await.unwrap().unwrap().two_factor, "still on");

    // The installation's switch: only an admin with two-factor login turns it on, which ends
    // the sessions of agents without it; then the agent cannot turn theirs off.
    let (unnamed_token, _) = login(store, "bob@shop.example", PASSWORD).await.unwrap();
    let refused = agents::require_two_factor(store, &boss, true).await;
    assert!(matches!(refused, Err(AgentError::Invalid(ref error)) if error.field == "require_two_factor"));
    assert!(!store.two_factor_required().await.unwrap() && is_live(store, &unnamed_token).await);
    let (boss_token, _) = login(store, "boss@shop.example", PASSWORD).await.unwrap();
    enrol(store, boss.id, "boss@shop.example", &boss_token).await;
    agents::require_two_factor(store, &boss, true).await.expect("required");
    assert!(store.two_factor_required().await.unwrap());
    assert!(!is_live(store, &unnamed_token).await, "an agent without two-factor login enrols again");
    assert!(is_live(store, &boss_token).await);
    let own = agents::disable_own_two_factor(store, &checks(), &ann_now, enrolling, PASSWORD).await;
    assert!(matches!(own, Err(AgentError::TwoFactor(TwoFactorError::Required))), "{own:?}");
    assert!(matches!(agents::remove_two_factor(store, u64::MAX, None, true).await, Err(AgentError::NotFound(_))));
    let reset = agents::remove_two_factor(store, ann.id, None, true).await.expect("an admin's reset");
    assert!(!reset.two_factor && !store.get(ann.id).await.unwrap().unwrap().two_factor);
    let now = kefu::base::clock::now_millis();
    assert!(store.authenticate(&enrolling, now).await.unwrap().is_none(), "an admin's reset ends every session");
    assert_eq!(login(store, "ann@shop.example", PASSWORD).await.unwrap().1, LoginStep::Enrol);
    agents::require_two_factor(store, &boss, false).await.expect("not required");
    assert!(!store.two_factor_required().await.unwrap());
    let (boss_session, _) = login(store, "boss@shop.example", PASSWORD).await.unwrap();
    let boss_now = store.get(boss.id).await.unwrap().unwrap();
    let (checks, keep) = (checks(), secrets::token_digest(&boss_session));
    let off = agents::disable_own_two_factor(store, &checks, &boss_now, keep, PASSWORD).await.expect("turned off");
    assert!(!off.two_factor);
    let again = agents::disable_own_two_factor(store, &checks, &boss_now, keep, PASSWORD).await;
    assert!(matches!(again, Err(AgentError::TwoFactor(TwoFactorError::Off))), "{again:?}");

    // A picture: the agent's record names its upload.
    assert!(matches!(store.replace_avatar(u64::MAX, None).await, Err(AvatarError::NotFound)));
    let pictured = store.replace_avatar(ann.id, Some("no-such-upload".into())).await.expect("a picture");
    assert_eq!(pictured.avatar.as_deref(), Some("no-such-upload"));
    assert_eq!(store.get(ann.id).await.unwrap().unwrap().avatar.as_deref(), Some("no-such-upload"));
    assert!(store.replace_avatar(ann.id, None).await.expect("removed").avatar.is_none());

    // A reset link by email: asked for an unknown address, nothing is sent; used once.
    let reset_url = "https://kefu.example/admin/reset-password";
    let emails_before = last_email().await;
    password_reset::request(store, "nobody@shop.example", reset_url, kefu::email::Lang::Zh).await.unwrap();
    password_reset::request(store, "not an email", reset_url, kefu::email::Lang::En).await.unwrap();
    assert_eq!(last_email().await, emails_before, "no email for an unknown address");
    password_reset::request(store, " Ann@shop.example", reset_url, kefu::email::Lang::En).await.unwrap();
    let text = last_email().await.expect("the reset's email");
    let token = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{reset_url}?token=")))
        .expect("the link")
        .to_owned();
    assert!(password_reset::is_live(store, &token).await.unwrap());
    assert!(!password_reset::is_live(store, "r1.unknown").await.unwrap());
    let (session, _) = login(store, "ann@shop.example", PASSWORD).await.unwrap();
    let short = password_reset::complete(store, &token, "short").await;
    assert!(matches!(short, Err(ResetError::Agent(AgentError::Invalid(_)))), "{short:?}");
    assert!(password_reset::is_live(store, &token).await.unwrap(), "a password too short keeps the link");
    password_reset::complete(store, &token, NEW_PASSWORD).await.expect("reset by link");
    assert!(!is_live(store, &session).await, "the reset ended the session");
    assert!(login(store, "ann@shop.example", NEW_PASSWORD).await.is_ok());
    assert!(!password_reset::is_live(store, &token).await.unwrap());
    let again = password_reset::complete(store, &token, PASSWORD).await;
    assert!(matches!(again, Err(ResetError::InvalidLink)), "{again:?}");
    assert!(login(store, "ann@shop.example", NEW_PASSWORD).await.is_ok(), "a used link changes nothing");

    // An expired link does not work; a disabled agent gets no link.
    let expired = "r1.expired";
    let long_ago = kefu::base::clock::now_millis() - password_reset::RESET_LIFETIME_MILLIS - 1;
    let email = kefu::email::OutgoingEmail {
        kind: kefu::email::EmailKind::PasswordReset,
        site: None,
        to_address: "ann@shop.example".into(),
        to_name: "安".into(),
        message: kefu::email::content::password_reset(kefu::email::Lang::Zh, "https://kefu.example/x", 30),
        unless_read: None,
        transcript_of: None,
    };
    store.insert_reset(secrets::token_digest(expired), PasswordReset::new(ann.id, long_ago), email).await.unwrap();
    assert!(!password_reset::is_live(store, expired).await.unwrap());
    assert!(matches!(password_reset::complete(store, expired, PASSWORD).await, Err(ResetError::InvalidLink)));
    let ann_now = store.get(ann.id).await.unwrap().unwrap();
    let (session, _) = login(store, "ann@shop.example", NEW_PASSWORD).await.unwrap();
    let off = agents::update(store, ann.id, AgentChanges { disabled: true, ..changes_of(&ann_now) }).await.unwrap();
    assert!(off.disabled && !is_live(store, &session).await, "disabling ends the sessions");
    assert!(matches!(login(store, "ann@shop.example", NEW_PASSWORD).await, Err(AgentError::InvalidCredentials)));
    let emails_before = last_email().await;
    password_reset::request(store, "ann@shop.example", reset_url, kefu::email::Lang::En).await.unwrap();
    assert_eq!(last_email().await, emails_before, "no email for a disabled agent");
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    behaves_as_agent_administration(&store, &store, &store, async || {
        let newest = store.read(|transaction| kefu::email::recent(transaction, 1)).await.unwrap();
        newest.into_iter().next().map(|email| email.text)
    })
    .await;

    let Some(url) = database("agent_admin_alike").await else { return };
    let agents = PostgresAgents::open(&url).await.unwrap();
    let (sites, teams) = (PostgresSites::open(&url).await.unwrap(), PostgresTeams::open(&url).await.unwrap());
    let client = connect(&url).await;
    behaves_as_agent_administration(&agents, &teams, &sites, async || {
        let row = client
            .query_opt("SELECT content->>'text' FROM outbox WHERE kind = 'email' ORDER BY id DESC LIMIT 1", &[])
            .await
            .unwrap();
        row.map(|row| row.get(0))
    })
    .await;
}

#[tokio::test]
async fn two_nodes_cannot_demote_the_last_two_admins_at_once() {
    let Some(url) = database("agent_admin_admins").await else { return };
    let (a, b) = (PostgresAgents::open(&url).await.unwrap(), PostgresAgents::open(&url).await.unwrap());
    for round in 0..4 {
        let new_admin = |name: &str| new_agent(&format!("{name}{round}@shop.example"), name, Role::Admin, Vec::new());
        let first = agents::create(&a, new_admin("王")).await.unwrap();
        let second = agents::create(&b, new_admin("Li")).await.unwrap();
        let demote = |agent: &Agent| AgentChanges { role: Role::Agent, ..changes_of(agent) };
        let (one, two) =
            tokio::join!(agents::update(&a, first.id, demote(&first)), agents::update(&b, second.id, demote(&second)));
        assert_eq!(u8::from(one.is_ok()) + u8::from(two.is_ok()), 1, "round {round}: {one:?} {two:?}");
        let admins = a.list().await.unwrap().iter().filter(|agent| agent.is_enabled_admin()).count();
        assert_eq!(admins, 1, "round {round}");
        // The next round starts with no enabled admin left over.
        let left = a.list().await.unwrap().into_iter().find(|agent| agent.is_enabled_admin()).unwrap();
        let stored = serde_json::to_string(&Agent { disabled: true, ..left.clone() }).unwrap();
        connect(&url)
            .await
            .execute("UPDATE agents SET record = $2::text::jsonb WHERE id = $1", &[&(left.id as i64), &stored])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_replaced_picture_takes_its_old_upload_with_it() {
    let Some(url) = database("agent_admin_avatars").await else { return };
    let agents = PostgresAgents::open(&url).await.unwrap();
    let uploads = PostgresUploads::open(&url).await.unwrap();
    let ann = agents::create(&agents, new_agent("ann@shop.example", "安", Role::Agent, Vec::new())).await.unwrap();
    let png = |shade: u8| {
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.extend(std::iter::repeat_n(shade, 64));
        bytes
    };
    let target = || UploadTarget {
        uploader: ParticipantView { kind: SenderKind::Agent, id: ann.id },
        site: String::new(),
        conversation_id: None,
    };
    let no_quota = kefu::chat::uploads::UploadQuota::new(0);
    let first = uploads.put(&no_quota, target(), "avatar", png(1).as_slice(), 1024).await.unwrap();
    let second = uploads.put(&no_quota, target(), "avatar", png(2).as_slice(), 1024).await.unwrap();
    let client = connect(&url).await;
    let attached = async |id: &str| -> Option<bool> {
        client.query_opt("SELECT attached FROM uploads WHERE id = $1", &[&id]).await.unwrap().map(|row| row.get(0))
    };
    assert_eq!(attached(&first.id).await, Some(false));
    agents.replace_avatar(ann.id, Some(first.id.clone())).await.unwrap();
    assert_eq!(attached(&first.id).await, Some(true));
    agents.replace_avatar(ann.id, Some(second.id.clone())).await.unwrap();
    assert_eq!((attached(&first.id).await, attached(&second.id).await), (None, Some(true)));
    let contents: i64 = client.query_one("SELECT count(*) FROM upload_contents", &[]).await.unwrap().get(0);
    assert_eq!(contents, 1, "the old picture's bytes went with it");
    kefu::people::avatars::remove(&agents, &kefu::chat::uploads::UploadQuota::new(0), ann.id).await.unwrap();
    assert_eq!(attached(&second.id).await, None);
}

#[tokio::test]
async fn connections_a_change_ends_close_on_every_node() {
    let Some(url) = database("agent_admin_access").await else { return };
    let Some(nats) = NatsServer::start("agent_admin_access") else { return };
    let server = TestServer::start().await;
    let site = server.create_site("店").await;
    let agent_id = server.create_agent("ann@shop.example", &site, 5).await;
    let node = events::connect(&nats.url()).await.expect("this node's NATS connection");
    let relaying = server
        .running()
        .relay_cluster_events(&node, tokio::sync::mpsc::channel(1).1, Arc::new(server.store().clone()))
        .await
        .expect("relay");
    node.flush().await.unwrap();

    // Another node holds the same agents in PostgreSQL.
    let other_node = events::connect(&nats.url()).await.expect("another node's NATS connection");
    let agents = PostgresAgents::open(&url).await.unwrap().with_events(other_node);
    let ann = AgentStore::get(server.store(), agent_id).await.unwrap().unwrap();
    let client = connect(&url).await;
    client.execute("SELECT setval('agent_ids', $1)", &[&(agent_id as i64)]).await.expect("ids after ann's");
    let stored = serde_json::to_string(&ann).unwrap();
    client
        .execute("INSERT INTO agents (id, record) VALUES ($1, $2::text::jsonb)", &[&(agent_id as i64), &stored])
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO agent_emails (email, record) VALUES ($1, to_jsonb($2::bigint))",
            &[&ann.email, &(agent_id as i64)],
        )
        .await
        .unwrap();
    agents::create(&agents, new_agent("boss@shop.example", "王经理", Role::Admin, Vec::new())).await.unwrap();

    // A password reset through the other node closes every connection of the agent here.
    let mut first = server.agent(&server.login("ann@shop.example").await).await;
    agents::reset_password(&agents, "ann@shop.example", NEW_PASSWORD).await.unwrap();
    assert_eq!(first.expect_close().await, kefu::protocol::close_code::UNAUTHENTICATED);

    // New rights (no site, which PostgreSQL does not hold either): the connection reconnects
    // with them.
    let mut second = server.agent(&server.login("ann@shop.example").await).await;
    let no_site = AgentChanges { sites: Vec::new(), ..changes_of(&ann) };
    agents::update(&agents, agent_id, no_site.clone()).await.unwrap();
    assert_eq!(second.expect_close().await, kefu::protocol::close_code::RESTARTING);

    // Disabled: closed for good.
    let mut third = server.agent(&server.login("ann@shop.example").await).await;
    agents::update(&agents, agent_id, AgentChanges { disabled: true, ..no_site }).await.unwrap();
    assert_eq!(third.expect_close().await, kefu::protocol::close_code::FORBIDDEN);
    relaying.abort();
}

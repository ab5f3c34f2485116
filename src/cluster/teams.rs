//! Teams on the cluster's PostgreSQL: the [`TeamStore`] boundary over the `teams` record table
//! (migration 7), with the appliance's checks (`teams::validate`, `teams::check_member` against
//! the agents' records) and its deletion: the site stops routing to the team
//! (`teams::forget_team`) and conversations waiting for it wait for any agent of the site, in one
//! transaction. An agent's teams are set with `teams::memberships`, every team's row locked. With NATS, the site a deletion changed is announced like any site change.

use std::collections::HashMap;

use tokio_postgres::Transaction;

use crate::cluster::events;
use crate::cluster::postgres::Readers;
use crate::cluster::postgres::{self, PostgresError, Writers, database, record_of, record_text};
use crate::people::agents::Agent;
use crate::people::team_store::TeamStore;
use crate::people::teams::{self, Team, TeamError};
use crate::sites::Site;
use crate::storage::StorageError;

/// Connections a node's reads take in turn.
const READ_CONNECTIONS: usize = 2;

pub struct PostgresTeams {
    readers: Readers,
    writers: Writers,
    nats: Option<async_nats::Client>,
}

fn key_of(id: u64) -> Result<i64, TeamError> {
    i64::try_from(id).map_err(|_| TeamError::NotFound)
}

/// Checks every member against the agents' records, in member order (the first refused is the
/// error).
async fn check_members(transaction: &Transaction<'_>, site: &str, members: &[u64]) -> Result<(), TeamError> {
    let ids: Vec<i64> = members.iter().filter_map(|id| i64::try_from(*id).ok()).collect();
    let rows =
        transaction.query("SELECT id, record::text FROM agents WHERE id = ANY($1)", &[&ids]).await.map_err(database)?;
    let mut agents = HashMap::new();
    for row in &rows {
        agents.insert(row.get::<_, i64>(0) as u64, record_of::<Agent>("agent", row.get(1))?);
    }
    for member in members {
        teams::check_member(site, *member, agents.get(member))?;
    }
    Ok(())
}

impl PostgresTeams {
    /// Connects and applies the migrations the database lacks (teams need migration 7).
    pub async fn open(url: &str) -> Result<PostgresTeams, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresTeams { readers: Readers::new(url, READ_CONNECTIONS), writers: Writers::new(url, 1), nats: None })
    }

    /// Announces each team's change on NATS (`events::publish_teams_changed`), and the site a
    /// team's deletion changed (`events::publish_site_changed`).
    pub fn with_events(self, nats: async_nats::Client) -> PostgresTeams {
        PostgresTeams { nats: Some(nats), ..self }
    }
}

impl PostgresTeams {
    /// Tells the other nodes' routers that these teams changed (in the background: a caller
    /// does not wait on NATS).
    fn announce<'a>(&self, teams: impl IntoIterator<Item = &'a Team>) {
        let Some(nats) = self.nats.clone() else { return };
        let mut sites: Vec<String> = teams.into_iter().map(|team| team.site.clone()).collect();
        sites.dedup();
        tokio::spawn(async move {
            for site in sites {
                events::publish_teams_changed(&nats, &site).await;
            }
        });
    }
}

impl TeamStore for PostgresTeams {
    async fn get(&self, id: u64) -> Result<Option<Team>, StorageError> {
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        let client = self.readers.client().await?;
        postgres::record_where(&*client, "team", "SELECT record::text FROM teams WHERE id = $1", &[&id]).await
    }

    async fn list(&self) -> Result<Vec<Team>, StorageError> {
        let client = self.readers.client().await?;
        postgres::records_where(&*client, "team", "SELECT record::text FROM teams ORDER BY id", &[]).await
    }

    async fn create(&self, site: String, name: &str, members: Vec<u64>) -> Result<Team, TeamError> {
        let (name, members) = teams::validate(name, members)?;
        self.writers
            .run(async |transaction| -> Result<_, TeamError> {
                check_members(transaction, &site, &members).await?;
                let id: i64 = transaction.query_one("SELECT nextval('team_ids')", &[]).await.map_err(database)?.get(0);
                let team = Team { id: id as u64, site, name, members };
                transaction
                    .execute("INSERT INTO teams (id, record) VALUES ($1, $2::text::jsonb)", &[&id, &record_text(&team)])
                    .await
                    .map_err(database)?;
                Ok(team)
            })
            .await
            .inspect(|team| self.announce([team]))
    }

    async fn update(&self, id: u64, name: &str, members: Vec<u64>) -> Result<Team, TeamError> {
        let (name, members) = teams::validate(name, members)?;
        let key = key_of(id)?;
        self.writers
            .run(async |transaction| -> Result<_, TeamError> {
                let row = transaction
                    .query_opt("SELECT record::text FROM teams WHERE id = $1 FOR UPDATE", &[&key])
                    .await
                    .map_err(database)?;
                let Some(row) = row else {
                    return Err(TeamError::NotFound);
                };
                let mut team: Team = record_of("team", row.get(0))?;
                check_members(transaction, &team.site, &members).await?;
                team.name = name;
                team.members = members;
                transaction
                    .execute("UPDATE teams SET record = $2::text::jsonb WHERE id = $1", &[&key, &record_text(&team)])
                    .await
                    .map_err(database)?;
                Ok(team)
            })
            .await
            .inspect(|team| self.announce([team]))
    }

    async fn delete(&self, id: u64) -> Result<Team, TeamError> {
        let key = key_of(id)?;
        let team = self
            .writers
            .run(async |transaction| -> Result<_, TeamError> {
                let row = transaction
                    .query_opt("DELETE FROM teams WHERE id = $1 RETURNING record::text", &[&key])
                    .await
                    .map_err(database)?;
                let Some(row) = row else {
                    return Err(TeamError::NotFound);
                };
                let team: Team = record_of("team", row.get(0))?;
                let site = transaction
                    .query_opt("SELECT record::text FROM sites WHERE key = $1 FOR UPDATE", &[&team.site])
                    .await
                    .map_err(database)?;
                if let Some(site) = site {
                    let mut site: Site = record_of("site", site.get(0))?;
                    teams::forget_team(&mut site, id);
                    transaction
                        .execute(
                            "UPDATE sites SET record = $2::text::jsonb WHERE key = $1",
                            &[&site.key, &record_text(&site)],
                        )
                        .await
                        .map_err(database)?;
                }
                transaction
                    .execute(
                        "UPDATE conversations SET team = NULL WHERE site = $1 AND team = $2 AND status <> 'closed'",
                        &[&team.site, &key],
                    )
                    .await
                    .map_err(database)?;
                Ok(team)
            })
            .await?;
        if let Some(nats) = &self.nats {
            events::publish_site_changed(nats, &team.site).await;
        }
        self.announce([&team]);
        Ok(team)
    }

    async fn set_agent_teams(&self, agent_id: u64, team_ids: Vec<u64>) -> Result<Vec<Team>, TeamError> {
        self.writers
            .run(async |transaction| -> Result<_, TeamError> {
                let agent: Option<Agent> = match i64::try_from(agent_id) {
                    Ok(key) => {
                        let statement = "SELECT record::text FROM agents WHERE id = $1 FOR SHARE";
                        postgres::record_where(transaction, "agent", statement, &[&key]).await?
                    }
                    Err(_) => None,
                };
                let statement = "SELECT record::text FROM teams ORDER BY id FOR UPDATE";
                let every: Vec<Team> = postgres::records_where(transaction, "team", statement, &[]).await?;
                let changed = teams::memberships(agent_id, agent.as_ref(), every, &team_ids)?;
                for team in &changed {
                    transaction
                        .execute(
                            "UPDATE teams SET record = $2::text::jsonb WHERE id = $1",
                            &[&(team.id as i64), &record_text(team)],
                        )
                        .await
                        .map_err(database)?;
                }
                Ok(changed)
            })
            .await
            .inspect(|changed| self.announce(changed))
    }
}

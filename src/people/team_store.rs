//! The teams' storage boundary: what the admin's team pages need, in domain terms, so a second
//! backend (the cluster's PostgreSQL, `cluster::teams`) implements these calls and not redb's
//! tables. Both check teams with `teams::validate` and `teams::check_member`, a deleted team
//! leaves its site's routing through `teams::forget_team`, and an agent's teams are set with
//! `teams::memberships`. [`Store`] implements it with `people::teams`.

use std::future::Future;

use crate::people::teams::{self, Team, TeamError};
use crate::storage::{StorageError, Store};

pub trait TeamStore: Send + Sync {
    /// One team.
    fn get(&self, id: u64) -> impl Future<Output = Result<Option<Team>, StorageError>> + Send;

    /// Every team, by id.
    fn list(&self) -> impl Future<Output = Result<Vec<Team>, StorageError>> + Send;

    /// Creates a team of `site`; every member must be an agent serving the site.
    fn create(
        &self,
        site: String,
        name: &str,
        members: Vec<u64>,
    ) -> impl Future<Output = Result<Team, TeamError>> + Send;

    /// Renames a team and replaces its members.
    fn update(&self, id: u64, name: &str, members: Vec<u64>) -> impl Future<Output = Result<Team, TeamError>> + Send;

    /// Deletes a team; its site stops routing to it and conversations waiting for it wait for
    /// any agent of the site.
    fn delete(&self, id: u64) -> impl Future<Output = Result<Team, TeamError>> + Send;

    /// Makes an agent a member of exactly `team_ids` among the teams of the sites they serve
    /// (`teams::memberships`); returns the teams whose members changed.
    fn set_agent_teams(
        &self,
        agent_id: u64,
        team_ids: Vec<u64>,
    ) -> impl Future<Output = Result<Vec<Team>, TeamError>> + Send;
}

impl TeamStore for Store {
    async fn get(&self, id: u64) -> Result<Option<Team>, StorageError> {
        self.read(move |transaction| teams::get(transaction, id)).await
    }

    async fn list(&self) -> Result<Vec<Team>, StorageError> {
        self.read(teams::list).await
    }

    async fn create(&self, site: String, name: &str, members: Vec<u64>) -> Result<Team, TeamError> {
        teams::create(self, site, name, members).await
    }

    async fn update(&self, id: u64, name: &str, members: Vec<u64>) -> Result<Team, TeamError> {
        teams::update(self, id, name, members).await
    }

    async fn delete(&self, id: u64) -> Result<Team, TeamError> {
        teams::delete(self, id).await
    }

    async fn set_agent_teams(&self, agent_id: u64, team_ids: Vec<u64>) -> Result<Vec<Team>, TeamError> {
        teams::set_agent_teams(self, agent_id, team_ids).await
    }
}

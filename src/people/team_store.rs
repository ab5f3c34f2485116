//! The teams' storage boundary: what the admin's team pages need, in domain terms, so a second
//! backend (the cluster's PostgreSQL, `cluster::teams`) implements these calls and not redb's
//! tables. Both check teams with `teams::validate` and `teams::check_member`, and a deleted
//! team leaves its site's routing through `teams::forget_team`. [`Store`] implements it with
//! `people::teams`.

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
}

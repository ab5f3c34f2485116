//! Teams: named groups of a site's agents. A conversation transferred to a team waits in the
//! queue for that team's members only (see `routing.rs`). Admins create teams; agents list them
//! for the transfer picker.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::agents::Agent;
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// Longest team name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Most members of one team.
pub const MAX_MEMBERS: usize = 1000;

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Team {
    pub id: u64,
    pub site: String,
    pub name: String,
    /// Agent ids.
    pub members: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    #[error("no such team")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Creates a team of `site`; every member must be an agent serving the site.
pub async fn create(store: &Store, site: String, name: &str, members: Vec<u64>) -> Result<Team, TeamError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(TeamError::Invalid(format!("name: must be 1 to {MAX_NAME_CHARS} characters")));
    }
    if members.len() > MAX_MEMBERS {
        return Err(TeamError::Invalid(format!("members: at most {MAX_MEMBERS}")));
    }
    let mut members = members;
    members.sort_unstable();
    members.dedup();
    store
        .write(move |context| {
            let agents = context.transaction.open_table(tables::AGENTS)?;
            for member in &members {
                let agent: Option<Agent> = agents.get(*member)?.map(|value| decode_json(value.value())).transpose()?;
                if !agent.is_some_and(|agent| agent.serves_site(&site)) {
                    return Ok(Err(TeamError::Invalid(format!("members: agent {member} does not serve this site"))));
                }
            }
            drop(agents);
            let mut table = context.transaction.open_table(tables::TEAMS)?;
            // Only the writer allocates ids, so the next after the largest is free.
            let id = table.last()?.map(|(key, _)| key.value() + 1).unwrap_or(1);
            let team = Team { id, site, name, members };
            table.insert(id, encode_json(&team).as_slice())?;
            Ok(Ok(team))
        })
        .await
}

pub fn get(transaction: &ReadTransaction, id: u64) -> Result<Option<Team>, StorageError> {
    match transaction.open_table(tables::TEAMS) {
        Ok(table) => table.get(id)?.map(|value| decode_json(value.value())).transpose(),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Every team, by id.
pub fn list(transaction: &ReadTransaction) -> Result<Vec<Team>, StorageError> {
    let table = match transaction.open_table(tables::TEAMS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    table.iter()?.map(|entry| decode_json(entry?.1.value())).collect()
}

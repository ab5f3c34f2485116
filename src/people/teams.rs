//! Teams: named groups of a site's agents. A conversation transferred to a team waits in the
//! queue for that team's members only (see `routing.rs`). Admins create teams; agents list them
//! for the transfer picker.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::base::field_error::FieldError;
use crate::chat::writes::ChatWrites;
use crate::people::agents::Agent;
use crate::sites::Site;
use crate::storage::{StorageError, Store, WriteContext, decode_json, encode_json, tables};

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
    #[error(transparent)]
    Invalid(FieldError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A team's name trimmed and checked, its members sorted without repeats and counted.
pub fn validate(name: &str, mut members: Vec<u64>) -> Result<(String, Vec<u64>), TeamError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(TeamError::Invalid(FieldError::new("name", format!("must be 1 to {MAX_NAME_CHARS} characters"))));
    }
    if members.len() > MAX_MEMBERS {
        return Err(TeamError::Invalid(FieldError::new("members", format!("at most {MAX_MEMBERS}"))));
    }
    members.sort_unstable();
    members.dedup();
    Ok((name, members))
}

/// `Ok(Err(..))` naming the first member who is not an agent serving `site`.
fn check_members(
    context: &WriteContext<'_>,
    site: &str,
    members: &[u64],
) -> Result<Result<(), TeamError>, StorageError> {
    let agents = context.transaction.open_table(tables::AGENTS)?;
    for member in members {
        let agent: Option<Agent> = agents.get(*member)?.map(|value| decode_json(value.value())).transpose()?;
        if let Err(error) = check_member(site, *member, agent.as_ref()) {
            return Ok(Err(error));
        }
    }
    Ok(Ok(()))
}

/// A member (the agent with that id, if there is one) must be an agent serving the team's site.
pub fn check_member(site: &str, member: u64, agent: Option<&Agent>) -> Result<(), TeamError> {
    if agent.is_some_and(|agent| agent.serves_site(site)) {
        Ok(())
    } else {
        Err(TeamError::Invalid(FieldError::new("members", format!("agent {member} does not serve this site"))))
    }
}

/// Stops `site` routing to the team `id`: rules naming it and a default team of it go.
pub fn forget_team(site: &mut Site, id: u64) {
    site.routing_rules.retain(|rule| rule.team != id);
    site.default_team = site.default_team.filter(|team| *team != id);
}

/// Creates a team of `site`; every member must be an agent serving the site.
pub async fn create(store: &Store, site: String, name: &str, members: Vec<u64>) -> Result<Team, TeamError> {
    let (name, members) = validate(name, members)?;
    store
        .write(move |context| {
            if let Err(error) = check_members(context, &site, &members)? {
                return Ok(Err(error));
            }
            let mut table = context.transaction.open_table(tables::TEAMS)?;
            // Only the writer allocates ids, so the next after the largest is free.
            let id = table.last()?.map(|(key, _)| key.value() + 1).unwrap_or(1);
            let team = Team { id, site, name, members };
            table.insert(id, encode_json(&team).as_slice())?;
            Ok(Ok(team))
        })
        .await
}

/// Renames a team and replaces its members.
pub async fn update(store: &Store, id: u64, name: &str, members: Vec<u64>) -> Result<Team, TeamError> {
    let (name, members) = validate(name, members)?;
    store
        .write(move |context| {
            let table = context.transaction.open_table(tables::TEAMS)?;
            let Some(mut team) = table.get(id)?.map(|value| decode_json::<Team>(value.value())).transpose()? else {
                return Ok(Err(TeamError::NotFound));
            };
            drop(table);
            if let Err(error) = check_members(context, &team.site, &members)? {
                return Ok(Err(error));
            }
            team.name = name;
            team.members = members;
            context.transaction.open_table(tables::TEAMS)?.insert(id, encode_json(&team).as_slice())?;
            Ok(Ok(team))
        })
        .await
}

/// Deletes a team. Its site stops routing to it (rules naming it and the default team are
/// removed) and conversations waiting for it wait for any agent of the site.
pub async fn delete(store: &Store, id: u64) -> Result<Team, TeamError> {
    store
        .write(move |context| {
            let Some(team) = context
                .transaction
                .open_table(tables::TEAMS)?
                .remove(id)?
                .map(|value| decode_json::<Team>(value.value()))
                .transpose()?
            else {
                return Ok(Err(TeamError::NotFound));
            };
            let mut sites = context.transaction.open_table(tables::SITES)?;
            let stored = sites.get(team.site.as_str())?.map(|value| decode_json::<Site>(value.value())).transpose()?;
            if let Some(mut site) = stored {
                forget_team(&mut site, id);
                sites.insert(site.key.as_str(), encode_json(&site).as_slice())?;
            }
            drop(sites);
            let mut waiting = Vec::new();
            for entry in context.transaction.open_table(tables::OPEN_CONVERSATIONS)?.iter()? {
                let (conversation_id, site) = entry?;
                if site.value() == team.site {
                    waiting.push(conversation_id.value());
                }
            }
            for conversation_id in waiting {
                if let Some(conversation) = context.conversation_mut(conversation_id)?
                    && conversation.team == Some(id)
                {
                    conversation.team = None;
                }
            }
            Ok(Ok(team))
        })
        .await
}

/// The teams among `teams` whose members change when the agent `agent_id` (as stored, if at all)
/// becomes a member of exactly `team_ids`, changed. Refused for an unknown agent or team, and
/// for a team of a site the agent does not serve.
pub fn memberships(
    agent_id: u64,
    agent: Option<&Agent>,
    teams: Vec<Team>,
    team_ids: &[u64],
) -> Result<Vec<Team>, TeamError> {
    let Some(agent) = agent else {
        return Err(TeamError::Invalid(FieldError::new("agent", format!("no agent {agent_id}"))));
    };
    if let Some(unknown) = team_ids.iter().find(|id| !teams.iter().any(|team| team.id == **id)) {
        return Err(TeamError::Invalid(FieldError::new("teams", format!("no team {unknown}"))));
    }
    let mut changed = Vec::new();
    for mut team in teams {
        let wanted = team_ids.contains(&team.id);
        if wanted && !agent.serves_site(&team.site) {
            return Err(TeamError::Invalid(FieldError::new(
                "teams",
                format!("{} belongs to a site the agent does not serve", team.name),
            )));
        }
        if wanted == team.members.contains(&agent_id) {
            continue;
        }
        if wanted {
            team.members.push(agent_id);
            team.members.sort_unstable();
        } else {
            team.members.retain(|member| *member != agent_id);
        }
        changed.push(team);
    }
    Ok(changed)
}

/// Makes `agent_id` a member of exactly `team_ids` among the teams of the sites they serve
/// ([`memberships`]); returns the teams whose members changed.
pub async fn set_agent_teams(store: &Store, agent_id: u64, team_ids: Vec<u64>) -> Result<Vec<Team>, TeamError> {
    store
        .write(move |context| {
            let agent: Option<Agent> = context
                .transaction
                .open_table(tables::AGENTS)?
                .get(agent_id)?
                .map(|value| decode_json(value.value()))
                .transpose()?;
            let mut table = context.transaction.open_table(tables::TEAMS)?;
            let teams: Vec<Team> =
                table.iter()?.map(|entry| decode_json(entry?.1.value())).collect::<Result<_, _>>()?;
            let changed = match memberships(agent_id, agent.as_ref(), teams, &team_ids) {
                Ok(changed) => changed,
                Err(error) => return Ok(Err(error)),
            };
            for team in &changed {
                table.insert(team.id, encode_json(team).as_slice())?;
            }
            Ok(Ok(changed))
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

//! Who takes part: visitors (identity, presence, budgets, blocking), agents and teams, API
//! tokens, two-factor login, avatars, and the one access rule ([`principal`]).

pub mod agent_administration;
pub mod agent_store;
pub mod agents;
pub mod api_tokens;
pub mod avatars;
pub mod blocking;
pub mod principal;
pub mod team_store;
pub mod teams;
pub mod two_factor;
pub mod visitor_limits;
pub mod visitor_presence;
pub mod visitor_store;
pub mod visitors;

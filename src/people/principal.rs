//! Who is asking: the authenticated party behind a connection or an HTTP request.
//!
//! Sockets are only ever opened by visitors and agents; API tokens exist only over HTTP.

use crate::chat::conversations::Conversation;
use crate::people::agents::{Agent, Role};
use crate::people::api_tokens::ApiToken;
use crate::people::visitors::{self, Visitor};
use crate::protocol::{SenderKind, SenderView};

#[derive(Clone, Debug)]
pub enum Principal {
    Visitor(Visitor),
    Agent(Agent),
    /// An integration's API token: one site, possibly read-only.
    ApiToken(ApiToken),
}

impl Principal {
    /// Whether this principal may read and write `conversation`: a visitor only their own,
    /// an agent only conversations of the sites they serve, a token only its site's.
    pub fn can_access(&self, conversation: &Conversation) -> bool {
        match self {
            Principal::Visitor(visitor) => conversation.visitor_id == visitor.id && conversation.site == visitor.site,
            Principal::Agent(_) | Principal::ApiToken(_) => self.serves_site(&conversation.site),
        }
    }

    /// Whether this principal acts for `site`'s staff: an agent serving it (admins serve every
    /// site) or a token of that site. Never a visitor.
    pub fn serves_site(&self, site: &str) -> bool {
        match self {
            Principal::Visitor(_) => false,
            Principal::Agent(agent) => agent.serves_site(site),
            Principal::ApiToken(token) => token.site == site,
        }
    }

    /// The sites this principal may see, `None` for all (admins).
    pub fn visible_sites(&self) -> Option<Vec<String>> {
        match self {
            Principal::Visitor(visitor) => Some(vec![visitor.site.clone()]),
            Principal::Agent(agent) if agent.role == Role::Admin => None,
            Principal::Agent(agent) => Some(agent.sites.clone()),
            Principal::ApiToken(token) => Some(vec![token.site.clone()]),
        }
    }

    /// Who a message or note written by this principal is from. A token writes as the system
    /// under its own name (transfer notes); it sends chat messages as a named agent or the bot.
    pub fn sender(&self) -> SenderView {
        match self {
            Principal::Visitor(visitor) => {
                SenderView { kind: SenderKind::Visitor, id: visitor.id, name: visitors::display_name(visitor) }
            }
            Principal::Agent(agent) => SenderView { kind: SenderKind::Agent, id: agent.id, name: agent.name.clone() },
            Principal::ApiToken(token) => {
                SenderView { kind: SenderKind::System, id: token.id, name: token.name.clone() }
            }
        }
    }

    pub fn is_visitor(&self) -> bool {
        matches!(self, Principal::Visitor(_))
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Agent(agent) if agent.role == Role::Admin)
    }
}

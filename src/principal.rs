//! Who is asking: the authenticated party behind a connection or an HTTP request.

use crate::agents::Agent;
use crate::conversations::Conversation;
use crate::protocol::{SenderKind, SenderView};
use crate::visitors::{self, Visitor};

#[derive(Clone, Debug)]
pub enum Principal {
    Visitor(Visitor),
    Agent(Agent),
}

impl Principal {
    /// Whether this principal may read and write `conversation`: a visitor only their own,
    /// an agent only conversations of the sites they serve.
    pub fn can_access(&self, conversation: &Conversation) -> bool {
        match self {
            Principal::Visitor(visitor) => conversation.visitor_id == visitor.id && conversation.site == visitor.site,
            Principal::Agent(agent) => agent.serves_site(&conversation.site),
        }
    }

    pub fn sender(&self) -> SenderView {
        match self {
            Principal::Visitor(visitor) => {
                SenderView { kind: SenderKind::Visitor, id: visitor.id, name: visitors::display_name(visitor) }
            }
            Principal::Agent(agent) => SenderView { kind: SenderKind::Agent, id: agent.id, name: agent.name.clone() },
        }
    }

    pub fn is_visitor(&self) -> bool {
        matches!(self, Principal::Visitor(_))
    }
}

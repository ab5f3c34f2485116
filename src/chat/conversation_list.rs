//! The console's conversation lists (queued, mine, open, closed) and their counts: which
//! conversations a caller sees, in which order, a page at a time. Decided here once
//! ([`ListRequest::open_page`], [`closed_page`]) over what a backend reads
//! (`ConversationStore::list_page`: the open conversations, the closed ones newest first, the
//! caller's read positions and the visitors' names), so the appliance and a cluster node list
//! alike.

use serde::Serialize;

use crate::chat::conversations::{Conversation, ConversationStatus};
use crate::storage::StorageError;

/// Closed conversations one page looks at, at most: a page of a site with few closed
/// conversations in a long history ends early, with a cursor to go on from.
pub const MAX_CLOSED_SCAN: usize = 20_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListState {
    Queued,
    /// Assigned to the calling agent.
    Mine,
    /// Queued and assigned.
    Open,
    Closed,
}

/// What a list asks for.
#[derive(Clone, Debug)]
pub struct ListRequest {
    pub state: ListState,
    /// Only this site's conversations.
    pub site: Option<String>,
    /// Only conversations assigned to this agent.
    pub agent_id: Option<u64>,
    /// Only ids below this (the previous page's `next_cursor`; `u64::MAX` for the first page).
    pub cursor: u64,
    pub limit: usize,
    /// The calling agent, whose read positions and `mine` the list shows; `None` for a token.
    pub caller_agent_id: Option<u64>,
}

/// Open conversations of the caller's sites (of `site` when given), by list.
#[derive(Clone, Copy, Debug, Serialize, Default, PartialEq, Eq, utoipa::ToSchema)]
pub struct ListCounts {
    pub queued: usize,
    pub mine: usize,
    pub open: usize,
}

/// A conversation in a list, with what the list draws.
#[derive(Clone, Debug)]
pub struct Listed {
    pub conversation: Conversation,
    /// How far the calling agent has read (0 when not yet); `None` for a token.
    pub read_seq: Option<u64>,
    /// The visitor's name as lists show it, if the visitor is known.
    pub visitor_name: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub listed: Vec<Listed>,
    pub next_cursor: Option<u64>,
    pub counts: ListCounts,
}

impl ListRequest {
    /// Whether a conversation of a site the caller serves (`serves`) belongs in this list's
    /// filters (its state and cursor aside).
    pub fn in_scope(&self, conversation: &Conversation, serves: &dyn Fn(&str) -> bool) -> bool {
        serves(&conversation.site)
            && self.site.as_deref().is_none_or(|site| site == conversation.site)
            && self.agent_id.is_none_or(|agent_id| conversation.assigned_agent == Some(agent_id))
    }

    fn is_mine(&self, conversation: &Conversation) -> bool {
        self.caller_agent_id.is_some() && conversation.assigned_agent == self.caller_agent_id
    }

    /// The counts of the open conversations in scope and, for every state but `Closed`, the
    /// page of them: newest first, below the cursor, with the next cursor when there are more.
    pub fn open_page(
        &self,
        open: Vec<Conversation>,
        serves: &dyn Fn(&str) -> bool,
    ) -> (ListCounts, Vec<Conversation>, Option<u64>) {
        let open: Vec<Conversation> = open.into_iter().filter(|c| self.in_scope(c, serves)).collect();
        let counts = ListCounts {
            queued: open.iter().filter(|c| c.status == ConversationStatus::Queued).count(),
            mine: open.iter().filter(|c| self.is_mine(c)).count(),
            open: open.len(),
        };
        if self.state == ListState::Closed {
            return (counts, Vec::new(), None);
        }
        let mut chosen: Vec<Conversation> = open
            .into_iter()
            .filter(|c| c.id < self.cursor)
            .filter(|c| match self.state {
                ListState::Queued => c.status == ConversationStatus::Queued,
                ListState::Mine => self.is_mine(c),
                _ => true,
            })
            .collect();
        chosen.sort_by_key(|conversation| std::cmp::Reverse(conversation.id));
        let more = chosen.len() > self.limit;
        chosen.truncate(self.limit);
        let next = if more { chosen.last().map(|c| c.id) } else { None };
        (counts, chosen, next)
    }
}

/// A page of closed conversations in scope from `newest_first` (every conversation with an id
/// below the cursor, newest first), looking at [`MAX_CLOSED_SCAN`] of them at most; the cursor
/// goes on from the last one found, or from the last one looked at when the scan stopped.
pub fn closed_page(
    newest_first: impl Iterator<Item = Result<Conversation, StorageError>>,
    in_scope: &dyn Fn(&Conversation) -> bool,
    limit: usize,
) -> Result<(Vec<Conversation>, Option<u64>), StorageError> {
    let mut found = Vec::new();
    let mut n_scanned = 0;
    let mut last_scanned = None;
    for conversation in newest_first {
        let conversation = conversation?;
        n_scanned += 1;
        last_scanned = Some(conversation.id);
        if conversation.status == ConversationStatus::Closed && in_scope(&conversation) {
            found.push(conversation);
            if found.len() > limit {
                break;
            }
        }
        if n_scanned >= MAX_CLOSED_SCAN {
            break;
        }
    }
    if found.len() > limit {
        found.truncate(limit);
        let next = found.last().map(|c| c.id);
        return Ok((found, next));
    }
    // Stopped by the scan limit with more rows below: continue from the last row looked at.
    let more_below = n_scanned >= MAX_CLOSED_SCAN && last_scanned.is_some_and(|id| id > 1);
    Ok((found, if more_below { last_scanned } else { None }))
}

/// A list's page from the appliance's tables, in one read transaction.
pub fn read_page(
    transaction: &redb::ReadTransaction,
    request: &ListRequest,
    serves: &dyn Fn(&str) -> bool,
) -> Result<ListPage, StorageError> {
    use crate::storage::{decode_json, tables};
    let (counts, open_page, open_next) = request.open_page(crate::chat::conversations::list_open(transaction)?, serves);
    let (page, next_cursor) = match request.state {
        ListState::Closed => {
            let table = transaction.open_table(tables::CONVERSATIONS)?;
            let newest_first = table.range(..request.cursor)?.rev().map(|entry| decode_json(entry?.1.value()));
            closed_page(newest_first, &|c| request.in_scope(c, serves), request.limit)?
        }
        _ => (open_page, open_next),
    };
    let positions = transaction.open_table(tables::READ_POSITIONS)?;
    let mut listed = Vec::with_capacity(page.len());
    for conversation in page {
        let read_seq = match request.caller_agent_id {
            Some(agent_id) => Some(
                positions
                    .get((conversation.id, crate::protocol::SenderKind::Agent.code(), agent_id))?
                    .map(|value| value.value())
                    .unwrap_or(0),
            ),
            None => None,
        };
        let visitor = crate::people::visitors::get(transaction, conversation.visitor_id)?;
        let visitor_name = visitor.map(|visitor| crate::people::visitors::display_name(&visitor));
        listed.push(Listed { conversation, read_seq, visitor_name });
    }
    Ok(ListPage { listed, next_cursor, counts })
}

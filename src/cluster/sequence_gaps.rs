//! Each conversation's messages in sequence order on a node's relay. NATS (core) may lose an
//! event between nodes, and two nodes' events reach a third in either order, while a connection
//! drops any message at or below the last seq it wrote. So the relay remembers, per
//! conversation, the last seq it handed to the dispatcher ([`SequenceGaps`]); a message beyond
//! the next one, or a conversation's change whose `last_seq` is beyond it, reveals a gap, which
//! the relay reads from PostgreSQL and hands over first. A message at or below the last seq is
//! dropped: it was handed over already. A closed conversation is forgotten. A lost event that
//! no later one reveals (a conversation's last message) is found by a periodic sweep that
//! compares the open conversations' positions in PostgreSQL with what was handed over
//! ([`SequenceGaps::sweep`]).
//!
//! A conversation's row lock orders its appends, so a committed seq `n` means every seq below
//! it is committed too: the read finds the whole gap.

use std::collections::HashMap;

use crate::chat::conversations::ConversationStatus;
use crate::chat::delivery::CommittedEvent;
use crate::chat::message_store::ConversationPosition;

/// The conversations a node remembers at most; past it, it forgets them all and learns each
/// one's position again from its next event (an unknown conversation has no gap).
pub const MAX_TRACKED_CONVERSATIONS: usize = 100_000;

/// What the relay does with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Hand it over.
    Deliver,
    /// Read the messages with `after < seq < before` from PostgreSQL, hand them over, then it.
    FillThenDeliver { conversation_id: u64, after: u64, before: u64 },
    /// A message handed over already: drop it.
    Drop,
}

/// The last seq handed over, per conversation.
#[derive(Debug, Default)]
pub struct SequenceGaps {
    last: HashMap<u64, u64>,
    /// The conversations the last [`SequenceGaps::sweep`] found behind the database, with the
    /// last seq it saw there.
    behind: HashMap<u64, u64>,
}

/// Messages a sweep found missing: those with `after < seq < before` of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub conversation_id: u64,
    pub after: u64,
    pub before: u64,
    pub site: String,
}

impl SequenceGaps {
    /// Decides what to do with `event`, and remembers it as handed over.
    pub fn next(&mut self, event: &CommittedEvent) -> Next {
        match event {
            CommittedEvent::Message { conversation_id, seq, .. } => self.message(*conversation_id, *seq),
            CommittedEvent::Conversation { conversation, .. } | CommittedEvent::Rated { conversation } => {
                let next = self.change(conversation.id, conversation.last_seq);
                // A closed conversation is forgotten (a rating comes after the close): it gets no
                // message until it is reopened, whose event sets its position again.
                if conversation.status == ConversationStatus::Closed {
                    self.last.remove(&conversation.id);
                }
                next
            }
            _ => Next::Deliver,
        }
    }

    /// Compares the database's `positions` with what was handed over. The messages of a
    /// conversation it was behind at the previous sweep too, and still is, are missing: an event
    /// NATS lost that no later event revealed. One found behind for the first time is only noted,
    /// since its event may still be crossing NATS. Read and handed over through
    /// [`SequenceGaps::next`], the missing messages move its position on.
    pub fn sweep(&mut self, positions: Vec<ConversationPosition>) -> Vec<Missing> {
        let mut missing = Vec::new();
        let mut behind = HashMap::new();
        for position in positions {
            let Some(&last) = self.last.get(&position.conversation_id) else { continue };
            if position.last_seq <= last {
                continue;
            }
            match self.behind.get(&position.conversation_id) {
                Some(&seen) if last < seen => missing.push(Missing {
                    conversation_id: position.conversation_id,
                    after: last,
                    before: position.last_seq + 1,
                    site: position.site,
                }),
                _ => {
                    behind.insert(position.conversation_id, position.last_seq);
                }
            }
        }
        self.behind = behind;
        missing
    }

    /// How many conversations it remembers.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    fn message(&mut self, conversation_id: u64, seq: u64) -> Next {
        match self.last.get(&conversation_id).copied() {
            Some(last) if seq <= last => Next::Drop,
            Some(last) if seq > last + 1 => {
                self.remember(conversation_id, seq);
                Next::FillThenDeliver { conversation_id, after: last, before: seq }
            }
            _ => {
                self.remember(conversation_id, seq);
                Next::Deliver
            }
        }
    }

    /// A change carrying the conversation's `last_seq`: messages up to it are committed.
    fn change(&mut self, conversation_id: u64, last_seq: u64) -> Next {
        match self.last.get(&conversation_id).copied() {
            Some(last) if last_seq > last => {
                self.remember(conversation_id, last_seq);
                Next::FillThenDeliver { conversation_id, after: last, before: last_seq + 1 }
            }
            Some(_) => Next::Deliver,
            None => {
                self.remember(conversation_id, last_seq);
                Next::Deliver
            }
        }
    }

    fn remember(&mut self, conversation_id: u64, seq: u64) {
        if self.last.len() >= MAX_TRACKED_CONVERSATIONS && !self.last.contains_key(&conversation_id) {
            self.last.clear();
        }
        self.last.insert(conversation_id, seq);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chat::conversations::Conversation;
    use crate::chat::delivery::ConversationEvent;
    use crate::chat::messages::{MessageKind, MessageRecord};
    use crate::protocol::SenderKind;

    /// A visitor's message `seq` of `conversation_id`, as a relay receives it.
    pub(crate) fn message(conversation_id: u64, seq: u64) -> CommittedEvent {
        let record = MessageRecord {
            lsn: seq,
            trace_id: 0,
            created_at: 0,
            sender_kind: SenderKind::Visitor,
            sender_id: 1,
            sender_name: String::new(),
            kind: MessageKind::Text,
            internal: false,
            client_id: None,
            text: format!("m{seq}"),
            attachment: None,
            bot_source: None,
            offline_message_id: None,
        };
        CommittedEvent::Message {
            conversation_id,
            seq,
            site: "shop".into(),
            day: 0,
            record: Arc::new(record),
            origin: None,
            bot_active: false,
        }
    }

    fn change(event: ConversationEvent, conversation_id: u64, last_seq: u64) -> CommittedEvent {
        let status = match event {
            ConversationEvent::Closed { .. } => ConversationStatus::Closed,
            _ => ConversationStatus::Queued,
        };
        let conversation = Conversation {
            id: conversation_id,
            site: "shop".into(),
            visitor_id: 1,
            status,
            assigned_agent: None,
            last_seq,
            created_at: 0,
            updated_at: 0,
            closed_at: None,
            last_day: 0,
            first_response_at: None,
            rating: None,
            team: None,
            bot_active: false,
        };
        CommittedEvent::Conversation { event, conversation }
    }

    #[test]
    fn messages_in_order_are_delivered_and_a_repeat_is_dropped() {
        let mut gaps = SequenceGaps::default();
        assert_eq!(gaps.next(&message(7, 4)), Next::Deliver, "an unknown conversation has no gap");
        assert_eq!(gaps.next(&message(7, 5)), Next::Deliver);
        assert_eq!(gaps.next(&message(7, 5)), Next::Drop);
        assert_eq!(gaps.next(&message(7, 3)), Next::Drop, "late, after its gap was read");
        assert_eq!(gaps.next(&message(8, 1)), Next::Deliver, "conversations are apart");
    }

    #[test]
    fn a_message_past_the_next_reads_the_gap_first() {
        let mut gaps = SequenceGaps::default();
        gaps.next(&message(7, 1));
        assert_eq!(gaps.next(&message(7, 4)), Next::FillThenDeliver { conversation_id: 7, after: 1, before: 4 });
        assert_eq!(gaps.next(&message(7, 2)), Next::Drop, "the gap's own event, arriving late");
        assert_eq!(gaps.next(&message(7, 5)), Next::Deliver);
    }

    #[test]
    fn a_change_reveals_lost_last_messages_and_a_created_one_sets_the_start() {
        let mut gaps = SequenceGaps::default();
        assert_eq!(gaps.next(&change(ConversationEvent::Created, 9, 0)), Next::Deliver);
        assert_eq!(gaps.next(&message(9, 2)), Next::FillThenDeliver { conversation_id: 9, after: 0, before: 2 });
        let assigned = change(ConversationEvent::Assigned { previous: None }, 9, 4);
        assert_eq!(gaps.next(&assigned), Next::FillThenDeliver { conversation_id: 9, after: 2, before: 5 });
        assert_eq!(gaps.next(&message(9, 4)), Next::Drop);
        let closed = change(ConversationEvent::Closed { previous: None }, 9, 4);
        assert_eq!(gaps.next(&closed), Next::Deliver);
        assert!(gaps.is_empty(), "a closed conversation is forgotten");
        let CommittedEvent::Conversation { conversation, .. } = closed else { unreachable!() };
        assert_eq!(gaps.next(&CommittedEvent::Rated { conversation }), Next::Deliver);
        assert!(gaps.is_empty(), "its rating does not bring it back");
    }

    #[test]
    fn it_forgets_everything_at_its_limit_rather_than_grow() {
        let mut gaps = SequenceGaps::default();
        for conversation_id in 0..MAX_TRACKED_CONVERSATIONS as u64 {
            gaps.next(&message(conversation_id, 1));
        }
        assert_eq!(gaps.len(), MAX_TRACKED_CONVERSATIONS);
        assert_eq!(gaps.next(&message(u64::MAX, 3)), Next::Deliver);
        assert_eq!(gaps.len(), 1);
    }

    fn at(conversation_id: u64, last_seq: u64) -> ConversationPosition {
        ConversationPosition { conversation_id, last_seq, site: "shop".into() }
    }

    #[test]
    fn a_sweep_reads_only_what_stayed_missing_since_the_previous_sweep() {
        let mut gaps = SequenceGaps::default();
        assert_eq!(gaps.next(&message(1, 1)), Next::Deliver);
        assert_eq!(gaps.next(&message(2, 1)), Next::Deliver);
        // Conversation 1's seq 2 and 2's seq 2 are committed; neither event came yet.
        assert!(gaps.sweep(vec![at(1, 2), at(2, 2), at(3, 9)]).is_empty(), "first seen behind: only noted");
        // Conversation 2's event arrives in between; conversation 1's never does; 3 is unknown.
        assert_eq!(gaps.next(&message(2, 2)), Next::Deliver);
        let missing = gaps.sweep(vec![at(1, 3), at(2, 2), at(3, 9)]);
        assert_eq!(missing, [Missing { conversation_id: 1, after: 1, before: 4, site: "shop".into() }]);
        // Handed over, the missing messages move the position on; nothing is read again.
        assert_eq!(gaps.next(&message(1, 2)), Next::Deliver);
        assert_eq!(gaps.next(&message(1, 3)), Next::Deliver);
        assert!(gaps.sweep(vec![at(1, 3)]).is_empty());
        assert!(gaps.sweep(vec![at(1, 3)]).is_empty());
    }
}

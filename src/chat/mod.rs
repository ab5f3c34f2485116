//! Conversations and their messages: storing them, the actions on them, offline messages and
//! leads, uploads, moderation words, canned replies, and delivery of what was committed to the
//! connections that should see it.

pub mod canned_replies;
pub mod conversation_actions;
pub mod conversation_list;
pub mod conversation_store;
pub mod conversations;
pub mod delivery;
pub mod lead_store;
pub mod leads;
pub mod message_store;
pub mod messages;
pub mod offline_messages;
pub mod sensitive_words;
pub mod upload_store;
pub mod uploads;
pub mod writes;

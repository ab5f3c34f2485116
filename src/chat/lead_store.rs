//! The leads' storage boundary: what the console's leads page and the API do with leads (read,
//! list, change the status or assignee, answer one), in domain terms, so the cluster's
//! PostgreSQL (`cluster::leads`) implements these calls and not redb's tables. Both decide with
//! the same `Lead` methods (`assign_to`, `answered_by`), list with `leads::page_of`, and send a
//! reply with `LeadReply::into_message`. [`Store`] implements it with `chat::leads`.

use std::future::Future;

use crate::chat::leads::{self, Lead, LeadError, LeadFilter, LeadPage, LeadReply, LeadStatus};
use crate::chat::messages::Appended;
use crate::storage::{StorageError, Store};

pub trait LeadStore: Send + Sync {
    /// One lead.
    fn lead(&self, lead_id: u64) -> impl Future<Output = Result<Option<Lead>, StorageError>> + Send;

    /// One page of the leads of the sites `visible` accepts, newest first, with the counts per
    /// status of everything the filter (but its status and cursor) matches.
    fn list_leads(
        &self,
        filter: LeadFilter,
        visible: impl Fn(&str) -> bool + Send + 'static,
    ) -> impl Future<Output = Result<LeadPage, StorageError>> + Send;

    /// Changes a lead's status.
    fn set_lead_status(&self, lead_id: u64, status: LeadStatus)
    -> impl Future<Output = Result<Lead, LeadError>> + Send;

    /// Gives a lead to an agent (the caller has checked that they serve its site), or to nobody.
    fn assign_lead(&self, lead_id: u64, agent_id: Option<u64>) -> impl Future<Output = Result<Lead, LeadError>> + Send;

    /// Answers a lead in the visitor's conversation (their open one, taken by the agent if
    /// nobody holds it, or else the lead's, reopened for the agent); the reply and the lead's
    /// change are stored together.
    fn reply_to_lead(
        &self,
        lead_id: u64,
        reply: LeadReply,
    ) -> impl Future<Output = Result<(Lead, Appended), LeadError>> + Send;
}

impl LeadStore for Store {
    async fn lead(&self, lead_id: u64) -> Result<Option<Lead>, StorageError> {
        self.read(move |transaction| leads::get(transaction, lead_id)).await
    }

    async fn list_leads(
        &self,
        filter: LeadFilter,
        visible: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<LeadPage, StorageError> {
        self.read(move |transaction| leads::list(transaction, &filter, visible)).await
    }

    async fn set_lead_status(&self, lead_id: u64, status: LeadStatus) -> Result<Lead, LeadError> {
        leads::set_status(self, lead_id, status).await
    }

    async fn assign_lead(&self, lead_id: u64, agent_id: Option<u64>) -> Result<Lead, LeadError> {
        leads::assign(self, lead_id, agent_id).await
    }

    async fn reply_to_lead(&self, lead_id: u64, reply: LeadReply) -> Result<(Lead, Appended), LeadError> {
        leads::reply(self, lead_id, reply).await
    }
}

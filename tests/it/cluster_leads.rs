//! Leads behind their storage boundary (`LeadStore`) on both backends, the appliance's redb and
//! the cluster's PostgreSQL 15 (support/postgres.rs): the same calls give the same answers (a
//! conversation closed unanswered listed as a new lead, the filters, counts and pages of the
//! list, status and assignee changes, a reply that reopens the visitor's conversation for the
//! agent or goes to the one they have open; unknown ids and a reply that is not an agent's
//! refused with nothing changed).
//!
//! The PostgreSQL test prints one line and passes when PostgreSQL is not installed.

use kefu::chat::conversation_store::ConversationStore;
use kefu::chat::conversations::ConversationStatus;
use kefu::chat::lead_store::LeadStore;
use kefu::chat::leads::{LeadError, LeadFilter, LeadReply, LeadSource, LeadStatus};
use kefu::chat::messages::{NewMessage, Target};
use kefu::cluster::messages::{PostgresMessages, PostgresOptions};
use kefu::cluster::sites::PostgresSites;
use kefu::protocol::{SenderKind, SenderView};
use kefu::sites::NewSite;
use kefu::sites::store::SiteStore;

use crate::support::TestServer;
use crate::support::postgres::database;

const ANN: u64 = 21;
const BOB: u64 = 22;

fn reply(agent_id: u64, text: &str) -> LeadReply {
    LeadReply {
        sender: SenderView { kind: SenderKind::Agent, id: agent_id, name: format!("客服 {agent_id}") },
        client_id: format!("lead-reply-{}", rand::random::<u32>()),
        text: text.into(),
        trace_id: 7,
    }
}

/// A visitor writes on `site` and the conversation closes unanswered: a new lead. Returns the
/// visitor and the conversation.
async fn missed_conversation(store: &impl ConversationStore, site: &str, text: &str) -> (u64, u64) {
    let visitor_id = 50_000 + u64::from(rand::random::<u16>());
    let sender = SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "访客".into() };
    let inbox = Target::VisitorInbox { site: site.to_owned(), visitor_id };
    let message = NewMessage::text(inbox, sender, format!("v-{visitor_id}"), text.into());
    let conversation_id = store.append(message).await.expect("the visitor writes").conversation_id;
    store.close(conversation_id).await.expect("closed unanswered");
    (visitor_id, conversation_id)
}

fn filter(limit: usize) -> LeadFilter {
    LeadFilter { limit, ..LeadFilter::default() }
}

async fn behaves_as_a_lead_store(store: &(impl ConversationStore + LeadStore), sites: &impl SiteStore) {
    let site = sites.create(NewSite { name: "店".into(), ..NewSite::default() }).await.unwrap().key;
    let mine = {
        let site = site.clone();
        move |other: &str| other == site
    };
    let (_, first_conversation) = missed_conversation(store, &site, "能开发票吗？").await;
    let (second_visitor, second_conversation) = missed_conversation(store, &site, "什么时候发货").await;

    let listed = store.list_leads(filter(10), mine.clone()).await.unwrap();
    let ids: Vec<u64> = listed.leads.iter().map(|lead| lead.conversation_id).collect();
    assert_eq!(ids, [second_conversation, first_conversation], "newest first");
    assert_eq!((listed.counts.new, listed.counts.open, listed.counts.done), (2, 0, 0));
    let (first, second) = (listed.leads[1].clone(), listed.leads[0].clone());
    assert_eq!(
        (first.source, first.status, first.preview.as_str()),
        (LeadSource::MissedConversation, LeadStatus::New, "能开发票吗？")
    );
    assert!(store.list_leads(filter(10), |_| false).await.unwrap().leads.is_empty(), "another site's caller sees none");
    let page = store.list_leads(filter(1), mine.clone()).await.unwrap();
    assert_eq!((page.leads.len(), page.next_cursor), (1, Some(second.id)));
    let next = store.list_leads(LeadFilter { before: page.next_cursor, ..filter(1) }, mine.clone()).await.unwrap();
    assert_eq!((next.leads[0].id, next.next_cursor), (first.id, None));
    assert_eq!(store.lead(first.id).await.unwrap().map(|lead| lead.id), Some(first.id));
    assert!(store.lead(u64::MAX).await.unwrap().is_none());

    // Status and assignee.
    assert!(matches!(store.set_lead_status(u64::MAX, LeadStatus::Done).await, Err(LeadError::NotFound)));
    assert!(matches!(store.assign_lead(u64::MAX, Some(ANN)).await, Err(LeadError::NotFound)));
    assert_eq!(store.set_lead_status(first.id, LeadStatus::Done).await.unwrap().status, LeadStatus::Done);
    let taken = store.assign_lead(first.id, Some(ANN)).await.unwrap();
    assert_eq!((taken.assigned_agent, taken.status), (Some(ANN), LeadStatus::Done), "a done lead stays done");
    assert_eq!(store.assign_lead(first.id, None).await.unwrap().assigned_agent, None);
    let done =
        store.list_leads(LeadFilter { status: Some(LeadStatus::Done), ..filter(10) }, mine.clone()).await.unwrap();
    assert_eq!(done.leads.iter().map(|lead| lead.id).collect::<Vec<_>>(), [first.id]);
    assert_eq!((done.counts.new, done.counts.done), (1, 1), "counts ignore the status filter");

    // A reply: only an agent's; the closed conversation reopens for the agent.
    let not_agent =
        LeadReply { sender: SenderView { kind: SenderKind::Visitor, id: 1, name: "v".into() }, ..reply(BOB, "x") };
    assert!(matches!(store.reply_to_lead(second.id, not_agent).await, Err(LeadError::Invalid(_))));
    assert!(matches!(store.reply_to_lead(u64::MAX, reply(BOB, "x")).await, Err(LeadError::NotFound)));
    let before = store.conversation(second_conversation).await.unwrap().unwrap().last_seq;
    let (lead, appended) = store.reply_to_lead(second.id, reply(BOB, "明天发货")).await.expect("reply");
    assert_eq!((lead.status, lead.assigned_agent), (LeadStatus::Open, Some(BOB)));
    assert_eq!((appended.conversation_id, appended.seq), (second_conversation, before + 1));
    let reopened = store.conversation(second_conversation).await.unwrap().unwrap();
    assert_eq!((reopened.status, reopened.assigned_agent), (ConversationStatus::Assigned, Some(BOB)));
    assert_eq!(store.of_visitor(second_visitor).await.unwrap().len(), 1);
    // Again, with the conversation open and held: it stays with its holder.
    let (lead, appended) = store.reply_to_lead(second.id, reply(ANN, "补充一下")).await.expect("second reply");
    assert_eq!((lead.assigned_agent, appended.seq), (Some(BOB), before + 2));
    assert_eq!(store.conversation(second_conversation).await.unwrap().unwrap().assigned_agent, Some(BOB));
    let by_bob = store.list_leads(LeadFilter { assigned_agent: Some(BOB), ..filter(10) }, mine).await.unwrap();
    assert_eq!(by_bob.leads.iter().map(|lead| lead.id).collect::<Vec<_>>(), [second.id]);
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    behaves_as_a_lead_store(&store, &store).await;

    let Some(url) = database("leads_alike").await else { return };
    let sites = PostgresSites::open(&url).await.unwrap();
    let store = PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap();
    behaves_as_a_lead_store(&store, &sites).await;
}

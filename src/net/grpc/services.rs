//! The gRPC services: each operation admits the caller and calls the REST handler of the same
//! operation (`net::http::*_api`), converting between Protobuf and the handler's types.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::api::{self, conversations_server, events_server, knowledge_base_server, messages_server, visitors_server};
use super::{Access, caller, status};
use crate::bot::knowledge_base::{EntryInput, KbEntry};
use crate::net::AppState;
use crate::net::http::conversations_api::{
    self, AssignRequest, ListQuery, PageQuery, ReopenRequest, SendAs, SendMessageRequest,
};
use crate::net::http::extract::{Caller, Json, OptionalJson};
use crate::net::http::knowledge_base_api::{self, SiteQuery};
use crate::net::http::visitors_api::{self, VisitorProfile};
use crate::people::api_tokens::ApiToken;
use crate::people::api_tokens::ApiTokenStore;
use crate::people::principal::Principal;
use crate::protocol::{ConversationView, MessageView};
use crate::webhooks::feed;
use kefu_wire::protobuf::messages as wire;

/// Events read from storage at a time by a subscriber catching up.
const EVENT_PAGE: usize = 200;
/// Events waiting for a slow subscriber before its task waits too.
const SUBSCRIBER_QUEUE: usize = 64;

/// Every service of the API, each on the shared state.
#[derive(Clone)]
pub(super) struct Api {
    app: AppState,
}

/// The API's services, with the request size limit of REST bodies, marked serving in `health`.
pub(super) async fn routes(app: &AppState, health: &tonic_health::server::HealthReporter) -> tonic::service::Routes {
    let api = Api { app: app.clone() };
    let limit = app.config.limits.max_body_bytes;
    health.set_serving::<conversations_server::ConversationsServer<Api>>().await;
    health.set_serving::<messages_server::MessagesServer<Api>>().await;
    health.set_serving::<visitors_server::VisitorsServer<Api>>().await;
    health.set_serving::<knowledge_base_server::KnowledgeBaseServer<Api>>().await;
    health.set_serving::<events_server::EventsServer<Api>>().await;
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(conversations_server::ConversationsServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(messages_server::MessagesServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(visitors_server::VisitorsServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(knowledge_base_server::KnowledgeBaseServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(events_server::EventsServer::new(api).max_decoding_message_size(limit));
    routes.routes()
}

impl Api {
    async fn caller<T>(&self, request: &Request<T>, access: Access) -> Result<Caller, Status> {
        caller(&self.app, request.metadata(), access).await
    }

    fn state(&self) -> State<AppState> {
        State(self.app.clone())
    }
}

fn conversation(view: ConversationView) -> wire::Conversation {
    wire::Conversation {
        id: view.id,
        site: view.site,
        visitor_id: view.visitor_id,
        status: view.status,
        assigned_agent: view.assigned_agent,
        epoch: view.epoch,
        last_seq: view.last_seq,
        created_at: view.created_at,
        updated_at: view.updated_at,
        bot_active: view.bot_active,
    }
}

/// A message in its Protobuf form: the frames' serde shape is shared by both encodings.
fn message(view: &MessageView) -> Result<wire::Message, Status> {
    serde_json::to_value(view)
        .and_then(serde_json::from_value)
        .map_err(|error| status(crate::net::http::error::ApiError::Internal(format!("converting a message: {error}"))))
}

fn entry(entry: KbEntry) -> api::Entry {
    api::Entry {
        id: entry.id,
        site: entry.site,
        questions: entry.questions,
        answer: entry.answer,
        category: entry.category,
        lang: entry.lang,
        created_at: entry.created_at,
        updated_at: entry.updated_at,
    }
}

fn entry_input(fields: Option<api::EntryFields>) -> EntryInput {
    let fields = fields.unwrap_or_default();
    EntryInput { questions: fields.questions, answer: fields.answer, category: fields.category, lang: fields.lang }
}

fn visitor(profile: VisitorProfile) -> api::Visitor {
    let attributes: HashMap<String, String> =
        profile.attributes.into_iter().map(|(key, value)| (key, value.to_string())).collect();
    api::Visitor {
        id: profile.id,
        site: profile.site,
        name: profile.name,
        email: profile.email,
        user_id: profile.user_id,
        unverified_user_id: profile.unverified_user_id,
        attributes,
        blocked: profile.blocked,
        n_sessions: profile.n_sessions,
        returning: profile.returning,
        created_at: profile.created_at,
        last_seen_at: profile.last_seen_at,
        online: profile.online.is_some(),
    }
}

/// The token a caller holds (every gRPC caller holds one).
fn api_token(caller: &Caller) -> Result<&ApiToken, Status> {
    match &caller.0 {
        Principal::ApiToken(token) => Ok(token),
        _ => Err(Status::unauthenticated("API tokens only")),
    }
}

/// The site of the token a caller holds.
fn token_site(caller: &Caller) -> Result<String, Status> {
    api_token(caller).map(|token| token.site.clone())
}

#[tonic::async_trait]
impl conversations_server::Conversations for Api {
    async fn list(
        &self,
        request: Request<api::ListConversationsRequest>,
    ) -> Result<Response<api::ConversationList>, Status> {
        let Caller(principal) = self.caller(&request, Access::Read).await?;
        let request = request.into_inner();
        let query = ListQuery {
            state: Some(request.state).filter(|state| !state.is_empty()),
            site: None,
            agent_id: request.agent_id,
            cursor: request.cursor,
            limit: (request.limit > 0).then_some(request.limit as usize),
        };
        let list = conversations_api::list_by_state(self.app.clone(), principal, query).await.map_err(status)?;
        Ok(Response::new(api::ConversationList {
            conversations: list
                .conversations
                .into_iter()
                .map(|listed| api::ListedConversation {
                    conversation: Some(conversation(listed.conversation)),
                    team: listed.team,
                    visitor_name: listed.visitor_name,
                })
                .collect(),
            next_cursor: list.next_cursor,
            counts: Some(api::ConversationCounts { queued: list.counts.queued as u64, open: list.counts.open as u64 }),
        }))
    }

    async fn get(&self, request: Request<api::ConversationRequest>) -> Result<Response<wire::Conversation>, Status> {
        let caller = self.caller(&request, Access::Read).await?;
        let id = request.get_ref().conversation_id;
        let axum::Json(view) = conversations_api::get(self.state(), caller, Path(id)).await.map_err(status)?;
        Ok(Response::new(conversation(view)))
    }

    async fn assign(&self, request: Request<api::AssignRequest>) -> Result<Response<wire::Conversation>, Status> {
        let caller = self.caller(&request, Access::Write).await?;
        let request = request.into_inner();
        let body = Json(AssignRequest { agent_id: request.agent_id });
        let axum::Json(view) = conversations_api::assign(self.state(), caller, Path(request.conversation_id), body)
            .await
            .map_err(status)?;
        Ok(Response::new(conversation(view)))
    }

    async fn close(&self, request: Request<api::ConversationRequest>) -> Result<Response<wire::Conversation>, Status> {
        let caller = self.caller(&request, Access::Write).await?;
        let id = request.get_ref().conversation_id;
        let axum::Json(view) = conversations_api::close(self.state(), caller, Path(id)).await.map_err(status)?;
        Ok(Response::new(conversation(view)))
    }

    async fn reopen(&self, request: Request<api::ReopenRequest>) -> Result<Response<wire::Conversation>, Status> {
        let caller = self.caller(&request, Access::Write).await?;
        let request = request.into_inner();
        let body = OptionalJson(Some(ReopenRequest { agent_id: Some(request.agent_id).filter(|id| *id != 0) }));
        let axum::Json(view) = conversations_api::reopen(self.state(), caller, Path(request.conversation_id), body)
            .await
            .map_err(status)?;
        Ok(Response::new(conversation(view)))
    }
}

#[tonic::async_trait]
impl messages_server::Messages for Api {
    async fn list(&self, request: Request<api::ListMessagesRequest>) -> Result<Response<api::MessagePage>, Status> {
        let caller = self.caller(&request, Access::Read).await?;
        let request = request.into_inner();
        let query =
            PageQuery { before: request.before, limit: (request.limit > 0).then_some(i64::from(request.limit)) };
        let axum::Json(page) =
            conversations_api::messages(self.state(), caller, Path(request.conversation_id), Query(query))
                .await
                .map_err(status)?;
        Ok(Response::new(api::MessagePage {
            conversation_id: page.conversation_id,
            epoch: page.epoch,
            last_seq: page.last_seq,
            messages: page.messages.iter().map(message).collect::<Result<_, _>>()?,
            next_before: page.next_before,
        }))
    }

    async fn send(&self, request: Request<api::SendMessageRequest>) -> Result<Response<api::SentMessage>, Status> {
        let caller = self.caller(&request, Access::Write).await?;
        let request = request.into_inner();
        let send_as = match api::SendAs::try_from(request.send_as) {
            Ok(api::SendAs::Agent) => SendAs::Agent,
            Ok(api::SendAs::Bot) => SendAs::Bot,
            Err(_) => return Err(Status::invalid_argument("send_as: must be SEND_AS_AGENT or SEND_AS_BOT")),
        };
        let body = Json(SendMessageRequest {
            text: request.text,
            client_id: Some(request.client_id).filter(|client_id| !client_id.is_empty()),
            send_as,
            agent_id: request.agent_id,
            internal: request.internal,
        });
        let (code, axum::Json(view)) =
            conversations_api::send_message(self.state(), caller, Path(request.conversation_id), body)
                .await
                .map_err(status)?;
        Ok(Response::new(api::SentMessage { message: Some(message(&view)?), duplicate: code == StatusCode::OK }))
    }
}

#[tonic::async_trait]
impl visitors_server::Visitors for Api {
    async fn get(&self, request: Request<api::VisitorRequest>) -> Result<Response<api::Visitor>, Status> {
        let caller = self.caller(&request, Access::Read).await?;
        let id = request.get_ref().visitor_id;
        let axum::Json(profile) =
            visitors_api::visitor_profile(self.state(), caller, Path(id)).await.map_err(status)?;
        Ok(Response::new(visitor(profile)))
    }

    async fn update_attributes(
        &self,
        request: Request<api::UpdateAttributesRequest>,
    ) -> Result<Response<api::Visitor>, Status> {
        let caller = self.caller(&request, Access::Write).await?;
        let request = request.into_inner();
        let mut changes = BTreeMap::new();
        for (key, text) in request.set {
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|error| Status::invalid_argument(format!("set[{key:?}]: not JSON text: {error}")))?;
            changes.insert(key, value);
        }
        for key in request.remove {
            changes.insert(key, serde_json::Value::Null);
        }
        let axum::Json(profile) =
            visitors_api::update_visitor_attributes(self.state(), caller, Path(request.visitor_id), Json(changes))
                .await
                .map_err(status)?;
        Ok(Response::new(visitor(profile)))
    }
}

#[tonic::async_trait]
impl knowledge_base_server::KnowledgeBase for Api {
    async fn list(&self, request: Request<api::ListEntriesRequest>) -> Result<Response<api::EntryList>, Status> {
        let caller = self.caller(&request, Access::Read).await?;
        let query = SiteQuery { site: Some(token_site(&caller)?), format: None };
        let axum::Json(entries) = knowledge_base_api::list(self.state(), caller, Query(query)).await.map_err(status)?;
        Ok(Response::new(api::EntryList { entries: entries.into_iter().map(entry).collect() }))
    }

    async fn create(&self, request: Request<api::CreateEntryRequest>) -> Result<Response<api::Entry>, Status> {
        let caller = self.caller(&request, Access::Write).await?;
        let query = SiteQuery { site: Some(token_site(&caller)?), format: None };
        let input = Json(entry_input(request.into_inner().entry));
        let (_, axum::Json(created)) =
            knowledge_base_api::create(self.state(), caller, Query(query), input).await.map_err(status)?;
        Ok(Response::new(entry(created)))
    }

    async fn update(&self, request: Request<api::UpdateEntryRequest>) -> Result<Response<api::Entry>, Status> {
        let caller = self.caller(&request, Access::Write).await?;
        let request = request.into_inner();
        let input = Json(entry_input(request.entry));
        let axum::Json(updated) = knowledge_base_api::update(self.state(), caller, Path(request.id.to_string()), input)
            .await
            .map_err(status)?;
        Ok(Response::new(entry(updated)))
    }

    async fn delete(&self, request: Request<api::EntryRequest>) -> Result<Response<wire::Empty>, Status> {
        let caller = self.caller(&request, Access::Write).await?;
        let id = request.get_ref().id.to_string();
        knowledge_base_api::delete(self.state(), caller, Path(id)).await.map_err(status)?;
        Ok(Response::new(wire::Empty {}))
    }
}

#[tonic::async_trait]
impl events_server::Events for Api {
    type SubscribeStream = ReceiverStream<Result<api::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<api::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.caller(&request, Access::Read).await?;
        let (site, token_id) = api_token(&caller).map(|token| (token.site.clone(), token.id))?;
        let after = match request.get_ref().after {
            Some(after) => after,
            None => {
                let site = site.clone();
                let store = self.app.store.appliance("gRPC Subscribe").map_err(storage)?;
                store.read(move |transaction| feed::latest(transaction, &site)).await.map_err(storage)?
            }
        };
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_QUEUE);
        self.app.tasks.spawn(follow(self.app.clone(), site, token_id, after, sender));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

fn storage(error: crate::storage::StorageError) -> Status {
    status(error.into())
}

/// Sends `site`'s events after `cursor` to a subscriber, then each new one as it is committed,
/// until the subscriber goes away, the server shuts down, or its API token (`token_id`) is
/// revoked (by an admin, or with its site): the dispatcher then drops its listener, and the
/// subscriber ends with UNAUTHENTICATED.
///
/// It listens to the dispatcher's events first and reads storage after the cursor second, so
/// nothing falls between; live events at or before the cursor were read already and are skipped.
/// An idle subscriber only waits: storage is read again only when it fell so far behind that
/// the listeners dropped it.
async fn follow(
    app: AppState,
    site: String,
    token_id: u64,
    mut cursor: u64,
    sender: mpsc::Sender<Result<api::Event, Status>>,
) {
    let send = |event: &feed::SiteEvent| {
        let event =
            api::Event { cursor: event.id, r#type: event.event_type.clone(), payload_json: event.payload.clone() };
        sender.send(Ok(event))
    };
    loop {
        let mut listening = app.feed.listen(&site, token_id);
        // After listening, so that a revocation either is seen here or drops the listener.
        let live = app.store.token(token_id).await;
        match live {
            Ok(Some(token)) if !token.is_revoked() => {}
            Ok(_) => {
                let _ = sender.send(Err(Status::unauthenticated("the API token was revoked"))).await;
                return;
            }
            Err(error) => {
                let _ = sender.send(Err(storage(error))).await;
                return;
            }
        }
        loop {
            let (page_site, after) = (site.clone(), cursor);
            let page = async {
                let store = app.store.appliance("gRPC Subscribe")?;
                store.read(move |transaction| feed::after(transaction, &page_site, after, EVENT_PAGE)).await
            };
            let events = match page.await {
                Ok(events) => events,
                Err(error) => {
                    let _ = sender.send(Err(storage(error))).await;
                    return;
                }
            };
            let n_read = events.len();
            for event in events {
                cursor = event.id;
                if send(&event).await.is_err() {
                    return;
                }
            }
            if n_read < EVENT_PAGE {
                break;
            }
        }
        loop {
            let event = tokio::select! {
                _ = app.shutdown.cancelled() => {
                    let _ = sender.send(Err(Status::unavailable("the server is shutting down; resume from your cursor"))).await;
                    return;
                }
                _ = sender.closed() => return,
                event = listening.events.recv() => event,
            };
            // None: dropped for falling behind, or its token was revoked: look at the token,
            // read storage from the cursor and listen again.
            let Some(event) = event else { break };
            if event.id <= cursor {
                continue;
            }
            cursor = event.id;
            if send(&event).await.is_err() {
                return;
            }
        }
    }
}

//! Routing: which agent gets a new conversation.
//!
//! One task owns the routing state and handles events one at a time, so decisions never race.
//! A queued conversation goes to the online agent of its site with the fewest open
//! conversations, among those below their capacity; ties go to whoever was assigned least
//! recently (round robin). With nobody free it stays queued, in arrival order, and is assigned
//! as soon as an agent comes online or frees capacity. Assignments are writer operations: the
//! router learns its decisions took effect from the committed `assigned` event.
//!
//! On a cluster node the router decides only for the sites whose routing lease the node holds
//! (`cluster::routing_lease`), among every node's agents: its own, and those the nodes' presence
//! says take conversations elsewhere, with the loads every node's committed assignments give.
//!
//! An agent whose last connection closed stays online for a grace period (a console reload must
//! not flip their status), but gets nothing new in it; when it ends, their open conversations go
//! back to the queue for whoever is online.

pub mod rules;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::chat::conversation_store::ConversationStore;
use crate::chat::conversations::{AssignWhen, Conversation, ConversationError, ConversationStatus};
use crate::chat::delivery::{ConversationEvent, Hub};
use crate::cluster::backend::Backend;
use crate::people::agents::{Agent, Role};
use crate::people::team_store::TeamStore;
use crate::protocol::{Presence, ServerFrame};
use crate::storage::StorageError;

/// Routing events waiting to be handled. Events are small and handled in microseconds; when
/// the queue is full the sender waits (connections) or the event is dropped with a log
/// (message notifications, which carry no routing decision).
const ROUTING_QUEUE_CAPACITY: usize = 4096;

/// How long a conversation whose assignment failed in storage waits before it is routed again.
const ASSIGN_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// When an agent whose grace ended here is online on another node of a cluster, how long until
/// this node looks again: two rounds of the nodes' presence (`cluster::presence_sync`).
const ONLINE_ELSEWHERE_RECHECK: Duration = Duration::from_secs(2);

pub enum RoutingEvent {
    AgentConnected {
        agent: Agent,
    },
    AgentDisconnected {
        agent_id: u64,
    },
    Presence {
        agent_id: u64,
        status: Presence,
    },
    Conversation {
        event: ConversationEvent,
        conversation: Conversation,
    },
    AssignFailed {
        conversation_id: u64,
        agent_id: u64,
        /// The site whose queue takes it back: the assignment failed in storage or for want of
        /// the site's lease (not because the conversation changed), so it is routed again.
        requeue: Option<String>,
        /// The node turned out not to hold the site's routing lease any more.
        lease_lost: bool,
    },
    /// The sites whose routing leases this node holds now (a cluster node's lease keeper).
    LeasesHeld {
        sites: HashSet<String>,
    },
    /// The agents taking conversations through other nodes changed.
    AcceptingElsewhereChanged,
    /// Agents' presence through other nodes changed: (agent, status now, their sites).
    PresenceElsewhere {
        changes: Vec<(u64, Presence, Vec<String>)>,
    },
    GraceExpired {
        agent_id: u64,
        generation: u64,
    },
    /// A team was created or changed its members.
    TeamChanged {
        team: crate::people::teams::Team,
    },
    /// A team was deleted; conversations waiting for it wait for any agent of the site.
    TeamDeleted {
        team_id: u64,
    },
    /// Every team as stored now (a cluster node, after a team changed on another node).
    TeamsReplaced {
        teams: Vec<crate::people::teams::Team>,
    },
    /// An admin changed an agent (capacity, sites, role, or disabled them).
    AgentChanged {
        agent: Agent,
    },
}

/// The handle connections and the dispatcher use to reach the router.
#[derive(Clone)]
pub struct Router {
    queue: mpsc::Sender<RoutingEvent>,
    /// Each known agent's presence, written by the router task, read by the agent list.
    presence: Arc<DashMap<u64, Presence>>,
    /// The agents online or away here (in their grace period too), with their status: the
    /// online ones make their sites' status, all of them the cluster's presence.
    present_agents: Arc<DashMap<u64, (Agent, Presence, bool)>>,
    /// Notified when an agent goes online or stops being online, or changes sites.
    availability: Arc<tokio::sync::Notify>,
    /// The sites concerned by the changes notified on `availability` since the status watcher
    /// last took them, so it looks at those sites alone.
    availability_changes: Arc<parking_lot::Mutex<AvailabilityChanges>>,
    /// The sites with an agent online on another node of a cluster (`cluster::presence_sync`).
    online_elsewhere: Arc<parking_lot::RwLock<OnlineElsewhere>>,
    /// The sites with conversations waiting for an agent, for a cluster node's lease keeper.
    waiting_sites: Arc<tokio::sync::watch::Sender<BTreeSet<String>>>,
}

/// Which sites a router assigns conversations of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutingScope {
    /// Every site (the appliance).
    EverySite,
    /// The sites whose routing leases the node holds, as its lease keeper says (a cluster node).
    UnderLeases,
}

/// The sites with an agent online on another node of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OnlineElsewhere {
    /// An admin (who serves every site) is online elsewhere.
    pub every_site: bool,
    pub sites: std::collections::HashSet<String>,
    /// The agents online or away elsewhere (online if any node says so): one whose grace ends
    /// here keeps their conversations, and the agent list shows them so.
    pub agents: HashMap<u64, Presence>,
    /// The agents taking new conversations elsewhere (online, connected), by id.
    pub accepting: Vec<AcceptingAgent>,
    /// The sites of each agent present elsewhere (`*` for an admin's every site): where a
    /// change of their presence is shown.
    pub agent_sites: HashMap<u64, Vec<String>>,
}

/// An agent who takes new conversations through another node of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptingAgent {
    pub agent_id: u64,
    pub role: Role,
    pub sites: Vec<String>,
    pub capacity: u32,
}

impl AcceptingAgent {
    pub fn of(agent: &Agent) -> AcceptingAgent {
        AcceptingAgent { agent_id: agent.id, role: agent.role, sites: agent.sites.clone(), capacity: agent.capacity }
    }
}

/// The sites for which [`Router::site_has_online_agent`] may have changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AvailabilityChanges {
    /// An admin (who serves every site) changed: every site may have.
    pub every_site: bool,
    pub sites: std::collections::HashSet<String>,
}

impl AvailabilityChanges {
    /// Notes the sites `agent` serves.
    fn add(&mut self, agent: &Agent) {
        match agent.role {
            Role::Admin => self.every_site = true,
            Role::Agent => self.sites.extend(agent.sites.iter().cloned()),
        }
    }
}

impl Router {
    /// An agent's presence as routing sees it (offline when never connected), here or, on a
    /// cluster node, through another node.
    pub fn presence_of(&self, agent_id: u64) -> Presence {
        match self.presence.get(&agent_id).map(|status| *status) {
            Some(status @ (Presence::Online | Presence::Away)) => status,
            _ => self.online_elsewhere.read().agents.get(&agent_id).copied().unwrap_or(Presence::Offline),
        }
    }

    /// Whether an agent serving `site` is online (a site's visitors then see it online).
    pub fn site_has_online_agent(&self, site: &str) -> bool {
        self.site_online_elsewhere(site)
            || self.present_agents.iter().any(|entry| {
                let (agent, status, _) = entry.value();
                *status == Presence::Online && agent.serves_site(site)
            })
    }

    /// Whether an agent serving `site` is online on another node of a cluster (never on the
    /// appliance).
    pub fn site_online_elsewhere(&self, site: &str) -> bool {
        let elsewhere = self.online_elsewhere.read();
        elsewhere.every_site || elsewhere.sites.contains(site)
    }

    /// Whether an agent is online or away through another node of a cluster (their console is
    /// connected there, or was within its grace period).
    pub fn present_elsewhere(&self, agent_id: u64) -> bool {
        self.online_elsewhere.read().agents.contains_key(&agent_id)
    }

    /// The agents online or away on this node (in their grace period too), with their status
    /// and whether they take new conversations (online with a connection open).
    pub fn present_here(&self) -> Vec<(Agent, Presence, bool)> {
        self.present_agents.iter().map(|entry| entry.value().clone()).collect()
    }

    /// The sites with conversations waiting for an agent, as they change.
    pub fn waiting_sites(&self) -> tokio::sync::watch::Receiver<BTreeSet<String>> {
        self.waiting_sites.subscribe()
    }

    /// Takes the sites with an agent online on other nodes; a change is signalled like an
    /// agent's own, and one of the agents taking conversations there is routed to.
    pub async fn set_online_elsewhere(&self, now: OnlineElsewhere) {
        let before = std::mem::replace(&mut *self.online_elsewhere.write(), now.clone());
        if before == now {
            return;
        }
        if before.accepting != now.accepting {
            self.send(RoutingEvent::AcceptingElsewhereChanged).await;
        }
        let changes: Vec<(u64, Presence, Vec<String>)> = before
            .agents
            .keys()
            .chain(now.agents.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|agent_id| before.agents.get(agent_id) != now.agents.get(agent_id))
            .map(|agent_id| {
                let status = now.agents.get(agent_id).copied().unwrap_or(Presence::Offline);
                let sites = now.agent_sites.get(agent_id).or_else(|| before.agent_sites.get(agent_id));
                (*agent_id, status, sites.cloned().unwrap_or_default())
            })
            .collect();
        if !changes.is_empty() {
            self.send(RoutingEvent::PresenceElsewhere { changes }).await;
        }
        {
            let mut changes = self.availability_changes.lock();
            changes.every_site |= before.every_site || now.every_site;
            changes.sites.extend(before.sites.symmetric_difference(&now.sites).cloned());
        }
        self.availability.notify_one();
    }

    /// Notified whenever [`Router::site_has_online_agent`] may have changed for some site; which
    /// sites, [`Router::take_availability_changes`] tells.
    pub fn availability_signal(&self) -> Arc<tokio::sync::Notify> {
        self.availability.clone()
    }

    /// The sites whose online agents may have changed since the last call.
    pub fn take_availability_changes(&self) -> AvailabilityChanges {
        std::mem::take(&mut *self.availability_changes.lock())
    }

    /// Notes that the online agents of the sites `agents` serve changed, and signals it.
    fn availability_changed(&self, agents: &[&Agent]) {
        {
            let mut changes = self.availability_changes.lock();
            for agent in agents {
                changes.add(agent);
            }
        }
        self.availability.notify_one();
    }

    /// Queues an event, waiting for room: routing never loses an event, and a burst slows its
    /// senders instead.
    pub async fn send(&self, event: RoutingEvent) {
        let _ = self.queue.send(event).await;
    }
}

struct AgentState {
    agent: Agent,
    n_connections: u32,
    status: Presence,
    /// Bumped on every connect, so a grace timer from an earlier disconnect is ignored.
    generation: u64,
}

impl AgentState {
    /// Whether the agent takes new conversations here: online with a connection (not in the
    /// grace period after the last one closed).
    fn accepting(&self) -> bool {
        self.status == Presence::Online && self.n_connections > 0
    }
}

struct RouterState {
    store: Backend,
    hub: Arc<Hub>,
    router: Router,
    offline_grace: Duration,
    agents: HashMap<u64, AgentState>,
    /// The sites this node assigns conversations of: every site, or those whose lease it holds.
    routes: Routes,
    /// Queued conversations per site, oldest first.
    queues: HashMap<String, VecDeque<u64>>,
    /// Open conversation → the agent holding it (or being given it).
    holders: HashMap<u64, u64>,
    /// Agent → how many open conversations they hold (or are being given), on any node.
    loads: HashMap<u64, u32>,
    /// Agent → the router's tick at their last assignment here; lower means longer ago.
    last_assigned: HashMap<u64, u64>,
    /// Queued conversation → the team it waits for (after a transfer to a team).
    waiting_for_team: HashMap<u64, u64>,
    /// Team → its member agent ids.
    teams: HashMap<u64, Vec<u64>>,
    tick: u64,
    shutdown: CancellationToken,
}

/// Starts the router task; its state starts from the open conversations in storage.
pub async fn start(
    store: Backend,
    hub: Arc<Hub>,
    offline_grace: Duration,
    scope: RoutingScope,
    shutdown: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<Router, StorageError> {
    let (queue, mut events) = mpsc::channel(ROUTING_QUEUE_CAPACITY);
    let router = Router {
        queue,
        presence: Arc::new(DashMap::new()),
        present_agents: Arc::new(DashMap::new()),
        availability: Arc::new(tokio::sync::Notify::new()),
        availability_changes: Default::default(),
        online_elsewhere: Default::default(),
        waiting_sites: Arc::new(tokio::sync::watch::Sender::new(BTreeSet::new())),
    };
    let open = ConversationStore::list_open(&store).await?;
    let teams = TeamStore::list(&store).await?;
    let mut state = RouterState {
        store,
        hub,
        router: router.clone(),
        offline_grace,
        agents: HashMap::new(),
        routes: match scope {
            RoutingScope::EverySite => Routes::EverySite,
            RoutingScope::UnderLeases => Routes::Leased(HashSet::new()),
        },
        queues: HashMap::new(),
        holders: HashMap::new(),
        loads: HashMap::new(),
        last_assigned: HashMap::new(),
        waiting_for_team: HashMap::new(),
        teams: teams.into_iter().map(|team| (team.id, team.members)).collect(),
        tick: 0,
        shutdown: shutdown.clone(),
    };
    let mut open = open;
    open.sort_by_key(|conversation| conversation.id);
    for conversation in open {
        match (conversation.status, conversation.assigned_agent) {
            (ConversationStatus::Assigned, Some(agent_id)) => state.hold(conversation.id, agent_id),
            _ if conversation.bot_active => {}
            _ => {
                if let Some(team) = conversation.team {
                    state.waiting_for_team.insert(conversation.id, team);
                }
                state.queues.entry(conversation.site.clone()).or_default().push_back(conversation.id)
            }
        }
    }
    state.announce_waiting_sites();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => {
                        state.handle(event);
                        state.announce_waiting_sites();
                    }
                    None => break,
                },
            }
        }
    });
    Ok(router)
}

/// The sites a router assigns conversations of.
enum Routes {
    EverySite,
    /// Those whose routing lease this node holds.
    Leased(HashSet<String>),
}

impl Routes {
    fn includes(&self, site: &str) -> bool {
        match self {
            Routes::EverySite => true,
            Routes::Leased(sites) => sites.contains(site),
        }
    }
}

/// One candidate for a conversation: an agent taking conversations here or on another node.
struct Candidate<'a> {
    agent_id: u64,
    role: Role,
    sites: &'a [String],
    capacity: u32,
}

impl RouterState {
    fn handle(&mut self, event: RoutingEvent) {
        match event {
            RoutingEvent::AgentConnected { agent } => {
                let agent_id = agent.id;
                let entry = self.agents.entry(agent_id).or_insert_with(|| AgentState {
                    agent: agent.clone(),
                    n_connections: 0,
                    status: Presence::Offline,
                    generation: 0,
                });
                entry.agent = agent;
                entry.n_connections += 1;
                entry.generation += 1;
                if entry.status == Presence::Offline {
                    self.set_status(agent_id, Presence::Online);
                } else {
                    self.show_present(agent_id);
                }
                self.assign_waiting();
            }
            RoutingEvent::AgentDisconnected { agent_id } => {
                let Some(state) = self.agents.get_mut(&agent_id) else {
                    return;
                };
                state.n_connections = state.n_connections.saturating_sub(1);
                if state.n_connections == 0 {
                    let generation = state.generation;
                    if self.offline_grace.is_zero() {
                        self.set_status(agent_id, Presence::Offline);
                    } else {
                        self.show_present(agent_id);
                        self.after(self.offline_grace, RoutingEvent::GraceExpired { agent_id, generation });
                    }
                }
            }
            RoutingEvent::GraceExpired { agent_id, generation } => {
                let expired = self
                    .agents
                    .get(&agent_id)
                    .is_some_and(|state| state.generation == generation && state.n_connections == 0);
                if expired {
                    self.set_status(agent_id, Presence::Offline);
                    if self.router.online_elsewhere.read().agents.contains_key(&agent_id) {
                        // Online through another node of a cluster, or in its grace there too:
                        // looked at again once the nodes have shared their presence twice.
                        self.after(ONLINE_ELSEWHERE_RECHECK, RoutingEvent::GraceExpired { agent_id, generation });
                    } else {
                        self.release_conversations_of(agent_id);
                    }
                }
            }
            RoutingEvent::Presence { agent_id, status } => {
                if self.agents.get(&agent_id).is_some_and(|state| state.n_connections > 0) {
                    self.set_status(agent_id, status);
                    self.assign_waiting();
                }
            }
            RoutingEvent::Conversation { event, conversation } => self.on_conversation(event, conversation),
            RoutingEvent::TeamChanged { team } => {
                self.teams.insert(team.id, team.members);
                self.assign_waiting();
            }
            RoutingEvent::TeamDeleted { team_id } => {
                self.teams.remove(&team_id);
                self.waiting_for_team.retain(|_, team| *team != team_id);
                self.assign_waiting();
            }
            RoutingEvent::TeamsReplaced { teams } => {
                self.teams = teams.into_iter().map(|team| (team.id, team.members)).collect();
                let teams = &self.teams;
                self.waiting_for_team.retain(|_, team| teams.contains_key(team));
                self.assign_waiting();
            }
            RoutingEvent::AgentChanged { agent } => {
                if let Some(mut present) = self.router.present_agents.get_mut(&agent.id) {
                    // The sites it served and the sites it serves now.
                    let before = std::mem::replace(&mut present.0, agent.clone());
                    let online = present.1 == Presence::Online;
                    drop(present);
                    if online {
                        self.router.availability_changed(&[&before, &agent]);
                    }
                }
                if let Some(state) = self.agents.get_mut(&agent.id) {
                    state.agent = agent;
                }
                self.assign_waiting();
            }
            RoutingEvent::AssignFailed { conversation_id, agent_id, requeue, lease_lost } => {
                if let (true, Some(site), Routes::Leased(held)) = (lease_lost, &requeue, &mut self.routes) {
                    // Until the lease keeper takes it again.
                    held.remove(site);
                }
                if self.holders.get(&conversation_id) == Some(&agent_id) {
                    self.unhold(conversation_id);
                    if let Some(site) = requeue {
                        self.queues.entry(site).or_default().push_front(conversation_id);
                    }
                }
                self.assign_waiting();
            }
            RoutingEvent::LeasesHeld { sites } => {
                if let Routes::Leased(held) = &mut self.routes {
                    if *held != sites {
                        *held = sites;
                        self.assign_waiting();
                    }
                }
            }
            RoutingEvent::AcceptingElsewhereChanged => self.assign_waiting(),
            RoutingEvent::PresenceElsewhere { changes } => {
                for (agent_id, status, sites) in changes {
                    // Present here: this node's own status is what its consoles were shown.
                    if self.agents.get(&agent_id).is_some_and(|state| state.status != Presence::Offline) {
                        continue;
                    }
                    let every_site = sites.iter().any(|site| site == crate::cluster::presence_sync::EVERY_SITE);
                    self.show_presence(agent_id, status, every_site, &sites);
                }
            }
        }
    }

    fn on_conversation(&mut self, event: ConversationEvent, conversation: Conversation) {
        match event {
            ConversationEvent::Created if conversation.bot_active => {}
            ConversationEvent::Created | ConversationEvent::Queued { .. } | ConversationEvent::HandedOff
                if conversation.assigned_agent.is_none() =>
            {
                self.unhold(conversation.id);
                match conversation.team {
                    Some(team) => self.waiting_for_team.insert(conversation.id, team),
                    None => self.waiting_for_team.remove(&conversation.id),
                };
                let queue = self.queues.entry(conversation.site.clone()).or_default();
                if !queue.contains(&conversation.id) {
                    queue.push_back(conversation.id);
                }
                self.assign_waiting();
            }
            ConversationEvent::Created
            | ConversationEvent::Queued { .. }
            | ConversationEvent::HandedOff
            | ConversationEvent::Assigned { .. }
            | ConversationEvent::Reopened => {
                self.waiting_for_team.remove(&conversation.id);
                let Some(agent_id) = conversation.assigned_agent else {
                    return;
                };
                for queue in self.queues.values_mut() {
                    queue.retain(|id| *id != conversation.id);
                }
                self.hold(conversation.id, agent_id);
            }
            ConversationEvent::Closed { .. } => {
                self.waiting_for_team.remove(&conversation.id);
                if let Some(queue) = self.queues.get_mut(&conversation.site) {
                    queue.retain(|id| *id != conversation.id);
                }
                self.unhold(conversation.id);
                self.assign_waiting();
            }
        }
    }

    /// Sends the router `event` after `delay`, unless the server stops first.
    fn after(&self, delay: Duration, event: RoutingEvent) {
        let (router, shutdown) = (self.router.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => router.send(event).await,
                _ = shutdown.cancelled() => {}
            }
        });
    }

    fn set_status(&mut self, agent_id: u64, status: Presence) {
        let Some(state) = self.agents.get_mut(&agent_id) else {
            return;
        };
        if state.status == status {
            return;
        }
        state.status = status;
        self.router.presence.insert(agent_id, status);
        if status == Presence::Offline {
            self.router.present_agents.remove(&agent_id);
        } else {
            self.router.present_agents.insert(agent_id, (state.agent.clone(), status, state.accepting()));
        }
        self.router.availability_changed(&[&state.agent]);
        tracing::info!(agent_id, ?status, "agent presence changed");
        let (every_site, sites) = (state.agent.role == Role::Admin, state.agent.sites.clone());
        self.show_presence(agent_id, status, every_site, &sites);
    }

    /// Shows an agent's presence to the consoles of their sites (every site for an admin).
    fn show_presence(&self, agent_id: u64, status: Presence, every_site: bool, sites: &[String]) {
        let frame = ServerFrame::Presence { agent_id, status }.encode();
        let sites: Vec<&String> = match every_site {
            true => self.queues.keys().collect(),
            false => sites.iter().collect(),
        };
        for site in sites {
            self.hub.broadcast_to_site_agents(site, || frame.clone());
        }
    }

    /// Brings the agent's entry among the present ones up to date after their connections changed.
    fn show_present(&self, agent_id: u64) {
        let (Some(state), Some(mut present)) =
            (self.agents.get(&agent_id), self.router.present_agents.get_mut(&agent_id))
        else {
            return;
        };
        present.2 = state.accepting();
    }

    /// Notes that `agent_id` holds (or is being given) a conversation.
    fn hold(&mut self, conversation_id: u64, agent_id: u64) {
        let previous = self.holders.insert(conversation_id, agent_id);
        if previous == Some(agent_id) {
            return;
        }
        if let Some(previous) = previous {
            self.lighten(previous);
        }
        *self.loads.entry(agent_id).or_default() += 1;
    }

    /// Notes that nobody holds a conversation any more.
    fn unhold(&mut self, conversation_id: u64) {
        if let Some(holder) = self.holders.remove(&conversation_id) {
            self.lighten(holder);
        }
    }

    fn lighten(&mut self, agent_id: u64) {
        if let Some(load) = self.loads.get_mut(&agent_id) {
            *load = load.saturating_sub(1);
            if *load == 0 {
                self.loads.remove(&agent_id);
            }
        }
    }

    /// Tells a cluster node's lease keeper the sites with conversations waiting, when they change
    /// (the appliance has no keeper: nothing to work out).
    fn announce_waiting_sites(&self) {
        if matches!(self.routes, Routes::EverySite) {
            return;
        }
        self.router.waiting_sites.send_if_modified(|waiting| {
            let now: BTreeSet<String> =
                self.queues.iter().filter(|(_, queue)| !queue.is_empty()).map(|(site, _)| site.clone()).collect();
            if *waiting == now {
                return false;
            }
            *waiting = now;
            true
        });
    }

    /// Returns the open conversations an agent holds to the queue (their grace period ended);
    /// the committed `queued` events bring each back here to be assigned again.
    fn release_conversations_of(&mut self, agent_id: u64) {
        let held: Vec<u64> = self
            .holders
            .iter()
            .filter(|(_, holder)| **holder == agent_id)
            .map(|(conversation_id, _)| *conversation_id)
            .collect();
        for conversation_id in held {
            tracing::info!(conversation_id, agent_id, "the agent went offline: conversation back to the queue");
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(error) = ConversationStore::release(&store, conversation_id, agent_id).await {
                    tracing::info!(conversation_id, agent_id, %error, "the conversation stays where it is");
                }
            });
        }
    }

    /// Assigns queued conversations (of the sites this node routes) while some agent has room.
    fn assign_waiting(&mut self) {
        let sites: Vec<String> = self
            .queues
            .iter()
            .filter(|(site, queue)| !queue.is_empty() && self.routes.includes(site))
            .map(|(site, _)| site.clone())
            .collect();
        for site in sites {
            // Oldest first; a conversation waiting for a team nobody of which is free does not
            // hold up the ones behind it.
            let mut position = 0;
            while let Some(&conversation_id) = self.queues.get(&site).and_then(|queue| queue.get(position)) {
                let team = self.waiting_for_team.get(&conversation_id).copied();
                let Some(agent_id) = self.pick_agent(&site, team) else {
                    if team.is_none() {
                        break;
                    }
                    position += 1;
                    continue;
                };
                self.queues.get_mut(&site).expect("the site's queue was just read").remove(position);
                self.tick += 1;
                self.last_assigned.insert(agent_id, self.tick);
                self.hold(conversation_id, agent_id);
                tracing::info!(conversation_id, agent_id, "conversation routed");
                let store = self.store.clone();
                let router = self.router.clone();
                let site = site.clone();
                tokio::spawn(async move {
                    let failed = match ConversationStore::assign(&store, conversation_id, agent_id, AssignWhen::Queued)
                        .await
                    {
                        Ok(_) => return,
                        Err(ConversationError::Storage(error)) => {
                            // Routed again after a pause, rather than in a tight loop while the
                            // storage fails.
                            tracing::warn!(conversation_id, agent_id, %error, "assignment failed; trying again");
                            tokio::time::sleep(ASSIGN_RETRY_PAUSE).await;
                            RoutingEvent::AssignFailed {
                                conversation_id,
                                agent_id,
                                requeue: Some(site),
                                lease_lost: false,
                            }
                        }
                        Err(ConversationError::LeaseNotHeld) => {
                            tracing::info!(conversation_id, %site, "the site's routing lease was lost; back to its queue");
                            RoutingEvent::AssignFailed {
                                conversation_id,
                                agent_id,
                                requeue: Some(site),
                                lease_lost: true,
                            }
                        }
                        Err(error) => {
                            // Another node (or an agent's take) changed it first: its event says how.
                            tracing::info!(conversation_id, agent_id, %error, "assignment did not take effect");
                            RoutingEvent::AssignFailed { conversation_id, agent_id, requeue: None, lease_lost: false }
                        }
                    };
                    router.send(failed).await;
                });
            }
        }
    }

    /// The agent a conversation of `site` (waiting for `team`, if any) goes to: among those
    /// taking conversations here or on other nodes, serving the site, below capacity, the least
    /// busy, then whoever was assigned least recently.
    fn pick_agent(&self, site: &str, team: Option<u64>) -> Option<u64> {
        let members = team.map(|team| self.teams.get(&team).map(Vec::as_slice).unwrap_or_default());
        let here = self.agents.values().filter(|state| state.accepting()).map(|state| Candidate {
            agent_id: state.agent.id,
            role: state.agent.role,
            sites: &state.agent.sites,
            capacity: state.agent.capacity,
        });
        let elsewhere = self.router.online_elsewhere.read();
        let there = elsewhere.accepting.iter().map(|agent| Candidate {
            agent_id: agent.agent_id,
            role: agent.role,
            sites: &agent.sites,
            capacity: agent.capacity,
        });
        here.chain(there)
            .filter(|candidate| crate::people::agents::serves(candidate.role, candidate.sites, site))
            .filter(|candidate| self.load_of(candidate.agent_id) < candidate.capacity)
            .filter(|candidate| members.is_none_or(|members| members.contains(&candidate.agent_id)))
            .min_by_key(|candidate| {
                let last_assigned = self.last_assigned.get(&candidate.agent_id).copied().unwrap_or(0);
                (self.load_of(candidate.agent_id), last_assigned, candidate.agent_id)
            })
            .map(|candidate| candidate.agent_id)
    }

    fn load_of(&self, agent_id: u64) -> u32 {
        self.loads.get(&agent_id).copied().unwrap_or(0)
    }
}

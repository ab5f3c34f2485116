//! What every transport is handed: the shared state of a running server, built by
//! [`crate::server::start`].

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::base::config::Config;
use crate::chat::delivery::Hub;
use crate::cluster::backend::Backend;
use crate::net::http::agent_api::LoginLimiter;
use crate::routing::Router;
use crate::sites::SiteDirectory;

/// Everything request handlers and connections share.
pub struct App {
    pub config: Config,
    /// The URL links in emails point to: `public_url`, else the address the server is bound at
    /// (never a request's `Host`, which a caller chooses).
    pub public_url: String,
    /// The storage: the appliance's redb, or a cluster node's PostgreSQL.
    pub store: Backend,
    /// Live connections and their subscriptions.
    pub hub: Arc<Hub>,
    pub router: Router,
    pub sites: SiteDirectory,
    /// The full-text index of every message (derived from redb).
    pub search: crate::cluster::backend::MessageSearch,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Owns every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// One permit per WebSocket connection (`limits.max_connections`).
    pub connection_slots: Arc<Semaphore>,
    pub login_limiter: LoginLimiter,
    /// The request budget of each API token (`limits.api_requests_per_second`).
    pub api_budgets: crate::people::api_tokens::RequestBudgets,
    /// Visitors connected right now, for the console's live visitor list.
    pub online_visitors: crate::people::visitor_presence::OnlineVisitors,
    /// The knowledge-base bot: settings, match indexes, and its reply task.
    pub bot: crate::bot::Bot,
    /// Anonymous visitors' budgets: new sessions, uploads, offline messages.
    pub visitor_limits: crate::people::visitor_limits::VisitorLimits,
    /// Bytes of uploads stored per site (`limits.upload_quota_bytes_per_site`).
    pub upload_quota: crate::chat::uploads::UploadQuota,
    /// Web Push: the VAPID public key browsers subscribe with, and the endpoint rule.
    pub push: crate::push::Push,
    /// Origins refused per site, for the log and the site's admin page.
    pub refused_origins: crate::sites::refused_origins::RefusedOrigins,
    /// The subscribers of gRPC `Subscribe`, fed each site's events by the dispatcher.
    pub feed: crate::webhooks::feed::Listeners,
}

pub type AppState = Arc<App>;

//! The server: wires storage, delivery, routing and HTTP together, runs until told to stop, and
//! shuts down in order (stop accepting, close connections with a resume hint, flush the writer).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::base::config::{Config, StorageBackend};
use crate::chat::delivery::{self, Hub};
use crate::cluster::backend::{Backend, ClusterStores, MessageSearch};
use crate::net::http::agent_api::LoginLimiter;
use crate::net::http::connections::ConnectionSettings;
use crate::net::{App, AppState};
use crate::people::agent_administration::AgentAdministration;
use crate::people::agents::{self, NewAgent, Role};
use crate::routing;
use crate::search::Search;
use crate::sites::store::SiteStore;
use crate::sites::{self, NewSite, SiteDirectory};
use crate::storage::Store;
use crate::storage::writer::{Published, WriterHooks};

/// How often waiting conversations are checked for missed-chat emails; a report is at most this
/// late.
const MISSED_CHAT_SWEEP: Duration = Duration::from_secs(5);

/// How long shutdown waits for connections to close before flushing storage anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A started server: its shared state and the task serving it.
pub struct Running {
    pub app: AppState,
    pub local_addr: SocketAddr,
    /// Where `/metrics` listens, when it does.
    pub metrics_addr: Option<SocketAddr>,
    /// The QUIC (UDP) address, when QUIC is on.
    pub quic_addr: Option<SocketAddr>,
    /// The SHA-256 fingerprint (hex) of the QUIC certificate, for clients that pin it.
    pub quic_fingerprint: Option<String>,
    /// The gRPC address, when gRPC is on.
    pub grpc_addr: Option<SocketAddr>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The dispatcher's queue, for events relayed from other nodes (weak: it does not keep the
    /// dispatcher from stopping).
    dispatcher: mpsc::WeakSender<Published>,
}

impl Running {
    /// Delivers the events every node of a cluster publishes on NATS to this server's
    /// connections (`cluster::events::relay`), with this node's own from `local` (its
    /// `events::Outlet`'s queue), a gap in a conversation's messages read from `messages`; ends
    /// with the NATS connection or the server.
    pub async fn relay_cluster_events<M: crate::chat::message_store::MessageStore + 'static>(
        &self,
        nats: &async_nats::Client,
        local: mpsc::Receiver<Vec<crate::chat::delivery::CommittedEvent>>,
        messages: Arc<M>,
    ) -> Result<tokio::task::JoinHandle<()>, crate::cluster::events::EventsError> {
        crate::cluster::events::relay(nats, local, self.dispatcher.clone(), messages).await
    }

    /// Waits until the server has shut down completely (storage flushed and closed).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.serving.await.context("the server task failed")?
    }
}

/// Runs kefu on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    start(config, listener, shutdown).await?.wait().await
}

/// The storage a server was started on, with what only one of the two backends has.
struct OpenedStorage {
    backend: Backend,
    search: MessageSearch,
    /// The appliance's redb store and tantivy index (the appliance only).
    appliance: Option<(Store, Search)>,
    /// This node's NATS connection and its own commits, for its relay (a cluster node only).
    cluster: Option<(async_nats::Client, mpsc::Receiver<Vec<delivery::CommittedEvent>>)>,
}

impl OpenedStorage {
    /// The appliance: the redb file in the data directory, whose writer publishes each committed
    /// batch on `committed`, and its search index.
    async fn appliance(config: &Config, committed: mpsc::Sender<Published>) -> anyhow::Result<OpenedStorage> {
        let (data_dir, storage_config) = (config.data_dir.clone(), config.storage.clone());
        let mut hooks = writer_hooks(Some(committed));
        if config.grpc.listen.is_some() {
            // Subscribe's events are kept only while someone can subscribe.
            hooks.before_commit.push(crate::webhooks::feed::record);
        }
        let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, &storage_config, hooks))
            .await?
            .with_context(|| format!("opening the database in {}", config.data_dir.display()))?;
        crate::history::daily_figures::migrate(&store).await.context("counting the daily report figures")?;
        let search = {
            let (store, data_dir) = (store.clone(), config.data_dir.clone());
            tokio::task::spawn_blocking(move || Search::open(store, &data_dir))
                .await?
                .context("opening the search index")?
        };
        Ok(OpenedStorage {
            backend: Backend::Appliance(store.clone()),
            search: MessageSearch::Index(search.clone()),
            appliance: Some((store, search)),
            cluster: None,
        })
    }

    /// A cluster node: PostgreSQL at `storage.postgres_url` (migrated as needed) and NATS at
    /// `cluster.nats_url`.
    async fn cluster(config: &Config) -> anyhow::Result<OpenedStorage> {
        let nats = crate::cluster::events::connect(&config.cluster.nats_url)
            .await
            .with_context(|| format!("connecting to NATS at {}", config.cluster.nats_url))?;
        let (local, local_events) = mpsc::channel(crate::cluster::events::LOCAL_EVENTS_CAPACITY);
        let stores = ClusterStores::open(&config.storage.postgres_url, nats.clone(), local)
            .await
            .context("opening the cluster's PostgreSQL (storage.postgres_url)")?;
        let stores = Arc::new(stores);
        Ok(OpenedStorage {
            backend: Backend::Cluster(stores.clone()),
            search: MessageSearch::Postgres(stores),
            appliance: None,
            cluster: Some((nats, local_events)),
        })
    }
}

/// Opens storage, starts every part, and serves `listener` in the background until `shutdown`
/// completes. Prints `listening http=ADDR` on stdout once it accepts connections.
pub async fn start(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let local_addr = listener.local_addr()?;
    let mut config = config;
    crate::net::http::connections::fit_limits_to_file_descriptors(&mut config.limits);
    let (committed_sender, committed) = mpsc::channel(delivery::COMMITTED_QUEUE_CAPACITY);
    make_data_directory_private(&config.data_dir)?;
    let relayed = committed_sender.downgrade();
    // The dispatcher runs until its queue's last sender is gone: the appliance's writer holds
    // one; a cluster node's relay holds a weak one, so the node keeps this one until it stops.
    let (storage, dispatcher_queue) = match config.storage.backend {
        StorageBackend::Redb => (OpenedStorage::appliance(&config, committed_sender).await?, None),
        StorageBackend::Postgres => (OpenedStorage::cluster(&config).await?, Some(committed_sender)),
    };
    let OpenedStorage { backend, search, appliance, cluster } = storage;
    bootstrap(&backend, &config, local_addr).await?;
    let certificates = crate::net::tls::open(&config.tls, &config.data_dir).context("loading the TLS certificate")?;
    let quic = match config.quic {
        Some(address) => Some(crate::net::quic::bind(&config, address, certificates.clone())?),
        None => None,
    };
    let tls_acceptor = match &certificates {
        Some(certificates) => {
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(crate::net::tls::http_server_config(certificates.clone())?)))
        }
        None => None,
    };
    let redirect = match config.tls.redirect_http {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("listening for plain HTTP on {address} (tls.redirect_http)"))?,
        ),
        None => None,
    };
    let grpc = match config.grpc.listen {
        Some(address) => {
            Some(TcpListener::bind(address).await.with_context(|| format!("listening for gRPC on {address}"))?)
        }
        None => None,
    };

    let shutdown_token = CancellationToken::new();
    let tasks = TaskTracker::new();
    let hub = Arc::new(Hub::new());
    let routing_scope = match &backend {
        Backend::Appliance(_) => routing::RoutingScope::EverySite,
        Backend::Cluster(_) => routing::RoutingScope::UnderLeases,
    };
    let router = routing::start(
        backend.clone(),
        hub.clone(),
        Duration::from_secs(config.routing.offline_grace_secs),
        routing_scope,
        shutdown_token.clone(),
        &tasks,
    )
    .await?;
    let (bot, bot_inbox) = crate::bot::Bot::start(
        backend.clone(),
        hub.clone(),
        router.clone(),
        config.limits.max_text_chars,
        config.llm.allow_private_addresses,
        shutdown_token.clone(),
        &tasks,
    );
    let push_settings = crate::push::PushSettings {
        allow_loopback_endpoints: config.push.allow_loopback_endpoints,
        retry_base: Duration::from_millis(config.push.retry_base_ms),
        timeout: Duration::from_secs(config.push.timeout_secs),
        subject: match config.push.contact.trim() {
            "" => config.public_url(),
            contact => contact.to_owned(),
        },
    };
    let (push, push_inbox) = crate::push::start(
        backend.clone(),
        hub.clone(),
        router.clone(),
        push_settings,
        shutdown_token.clone(),
        &tasks,
        backend.cluster().is_some(),
    )
    .await
    .context("loading the push notification key")?;
    let refused_origins = match &appliance {
        Some((store, _)) => {
            crate::sites::refused_origins::RefusedOrigins::load(store).await.context("reading the refused origins")?
        }
        None => crate::sites::refused_origins::RefusedOrigins::new(),
    };
    let feed = crate::webhooks::feed::Listeners::new();
    let dispatcher = tokio::spawn(delivery::run_dispatcher(
        committed,
        hub.clone(),
        router.clone(),
        bot_inbox,
        push_inbox,
        crate::chat::message_store::MessageStore::epoch(&backend),
        appliance.as_ref().map(|(_, index)| index.clone()),
        feed.clone(),
        cluster.is_some(),
    ));
    let app: AppState = Arc::new(App {
        store: backend.clone(),
        hub,
        router,
        sites: SiteDirectory::of(Arc::new(backend.clone())),
        search,
        shutdown: shutdown_token.clone(),
        tasks: tasks.clone(),
        connection_slots: Arc::new(Semaphore::new(config.limits.max_connections)),
        login_limiter: LoginLimiter::new(&config.limits),
        api_budgets: crate::people::api_tokens::RequestBudgets::new(
            config.limits.api_requests_per_second,
            config.limits.api_request_burst,
        ),
        online_visitors: crate::people::visitor_presence::OnlineVisitors::new(),
        bot,
        visitor_limits: crate::people::visitor_limits::VisitorLimits::new(&config.limits),
        upload_quota: crate::chat::uploads::UploadQuota::new(config.limits.upload_quota_bytes_per_site),
        push,
        refused_origins: refused_origins.clone(),
        feed,
        public_url: config.public_url_at(local_addr),
        config,
    });
    let control = crate::net::control::listen(app.clone()).context("starting the control socket")?;
    if let Some((store, index)) = &appliance {
        start_appliance_work(&app, store, index, refused_origins).await?;
    }
    let followers = match cluster {
        Some((nats, local_events)) => {
            start_cluster_work(&app, &nats, local_events, relayed.clone(), local_addr).await?
        }
        None => Vec::new(),
    };
    tasks.spawn(crate::sites::status::run_watcher(
        app.hub.clone(),
        app.sites.clone(),
        app.router.clone(),
        shutdown_token.clone(),
    ));
    let tls = app.config.tls.clone();
    tasks.spawn(crate::net::tls::reload_on_hangup(tls.clone(), certificates.clone(), shutdown_token.clone()));
    if let Some(certificates) = &certificates {
        if let Some(acme) = tls.acme {
            let data_dir = app.config.data_dir.clone();
            tasks.spawn(crate::net::tls::acme::run(acme, data_dir, certificates.clone(), shutdown_token.clone()));
        }
    }

    let trigger = shutdown_token.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let metrics_addr = match app.config.metrics_addr() {
        Some(address) => crate::net::metrics_endpoint::serve(app.clone(), address).await,
        None => None,
    };
    if let Some(metrics_addr) = metrics_addr {
        tracing::info!(metrics = %metrics_addr, "metrics are listening");
        println!("metrics http={metrics_addr}");
    }
    let (quic_addr, quic_fingerprint) = match quic {
        Some(listener) => {
            let address = listener.endpoint.local_addr().context("reading the QUIC address")?;
            tracing::info!(quic = %address, sha256 = %listener.fingerprint, "QUIC is listening");
            println!("quic={address} certificate sha256={}", listener.fingerprint);
            app.tasks.spawn(crate::net::quic::serve(listener.endpoint, app.clone()));
            (Some(address), Some(listener.fingerprint))
        }
        None => (None, None),
    };
    let grpc_addr = match grpc {
        Some(listener) => {
            let address = listener.local_addr().context("reading the gRPC address")?;
            tracing::info!(grpc = %address, "gRPC is listening");
            println!("grpc={address}");
            app.tasks.spawn(crate::net::grpc::serve(listener, app.clone(), certificates.clone()));
            if let Some((store, _)) = &appliance {
                spawn_event_pruning(&app, store);
            }
            Some(address)
        }
        None => None,
    };
    if let Some(listener) = redirect {
        let address = listener.local_addr().context("reading the redirect address")?;
        let target = crate::net::tls::redirect::RedirectTarget::from_config(&app.config)
            .context("tls.redirect_http needs public_url or tls.acme")?;
        tracing::info!(redirect = %address, "plain HTTP is listening, redirecting to HTTPS");
        println!("redirect http={address}");
        let settings = ConnectionSettings::from_config(&app.config.limits, &app.config.trusted_proxies);
        let router = crate::net::tls::redirect::router(target);
        app.tasks.spawn(crate::net::http::connections::serve(listener, router, settings, None, app.shutdown.clone()));
    }
    tracing::info!(http = %local_addr, "kefu is listening");
    println!("listening http={local_addr}");
    crate::base::systemd::notify("READY=1\nSTATUS=serving");
    if let Some(interval) = crate::base::systemd::watchdog_interval() {
        let backend = backend.clone();
        tasks.spawn(crate::base::systemd::run_watchdog(interval, shutdown_token.clone(), move || {
            let backend = backend.clone();
            async move { backend.check_ready().await }
        }));
    }
    let serving_app = app.clone();
    let serving = tokio::spawn(async move {
        let app = serving_app;
        let serve_token = app.shutdown.clone();
        let settings = ConnectionSettings::from_config(&app.config.limits, &app.config.trusted_proxies);
        let router = crate::net::http::router(app.clone());
        crate::net::http::connections::serve(listener, router, settings, tls_acceptor, serve_token).await;
        // Whatever ended serving, shut down in order.
        app.shutdown.cancel();
        crate::base::systemd::notify("STOPPING=1");
        tracing::info!("shutting down: closing connections");
        tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait()).await.is_err() {
            tracing::warn!("connections did not close in time");
        }
        control.abort();
        for follower in followers {
            follower.abort();
        }
        tracing::info!("shutting down: flushing storage");
        if let Some((store, _)) = &appliance {
            store.shutdown().await;
        }
        drop(dispatcher_queue);
        let data_dir = app.config.data_dir.clone();
        drop(app);
        drop(backend);
        let _ = dispatcher.await;
        if let Some((_, index)) = &appliance {
            index.shutdown().await;
        }
        if let Some(path) = crate::net::control::socket_path_of(&data_dir) {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("stopped");
        Ok(())
    });
    Ok(Running { app, local_addr, metrics_addr, quic_addr, quic_fingerprint, grpc_addr, serving, dispatcher: relayed })
}

/// What only the appliance runs: its webhook and email senders, the saver of refused origins,
/// and its periodic jobs (retention, missed-chat emails, idle bot conversations).
async fn start_appliance_work(
    app: &AppState,
    store: &Store,
    index: &Search,
    refused_origins: crate::sites::refused_origins::RefusedOrigins,
) -> anyhow::Result<()> {
    let shutdown = app.shutdown.clone();
    app.tasks.spawn(crate::webhooks::sender::run(store.clone(), webhook_sender_settings(app), shutdown.clone()));
    app.tasks.spawn(crate::sites::refused_origins::run_saver(refused_origins, store.clone(), shutdown.clone()));
    crate::email::notifications::remember_runtime(store, email_runtime(app))
        .await
        .context("recording the URL emails link to")?;
    app.tasks.spawn(crate::email::sender::run(store.clone(), app.config.email.clone(), shutdown));
    spawn_missed_chat_emails(app, store);
    spawn_retention_schedule(app, store, index);
    spawn_bot_idle_close(app);
    Ok(())
}

/// What a cluster node runs beside serving: the relay of every node's committed events to its
/// own connections (its own commits from `local_events`, the others' from NATS), the followers
/// that drop its copies of what other nodes changed (returned: they run until the node's
/// connections have closed), its part in the agents' presence, the webhook and email senders of
/// the cluster's outbox, and its turns at the periodic work (missed-chat emails, retention's
/// partition drop, idle bot conversations).
async fn start_cluster_work(
    app: &AppState,
    nats: &async_nats::Client,
    local_events: mpsc::Receiver<Vec<delivery::CommittedEvent>>,
    dispatcher: mpsc::WeakSender<Published>,
    local_addr: SocketAddr,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use crate::cluster::events;
    let node = match app.config.cluster.node.trim() {
        "" => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{local_addr}", host.trim())
        }
        name => name.to_owned(),
    };
    let node = crate::cluster::node::NodeName::new(&node).context("cluster.node")?;
    tracing::info!(node = %node, "this node joined the cluster");
    let relay = events::relay(nats, local_events, dispatcher, Arc::new(app.store.clone()))
        .await
        .context("following the cluster's events on NATS")?;
    let sites = events::follow_site_changes(nats, app.sites.clone()).await.context("following site changes")?;
    let knowledge = events::follow_knowledge_base_changes(nats, app.bot.knowledge().clone())
        .await
        .context("following knowledge-base changes")?;
    let settings = events::follow_bot_settings_changes(nats, app.bot.site_settings().clone())
        .await
        .context("following bot settings changes")?;
    let teams = events::follow_team_changes(nats, app.store.clone(), app.router.clone())
        .await
        .context("following team changes")?;
    app.tasks.spawn(crate::cluster::presence_sync::run(
        app.config.storage.postgres_url.clone(),
        node.clone(),
        app.router.clone(),
        app.shutdown.clone(),
    ));
    if let Backend::Cluster(stores) = &app.store {
        stores.messages.route_as(node.clone());
        app.tasks.spawn(crate::cluster::routing_lease::keep(
            app.config.storage.postgres_url.clone(),
            node.clone(),
            app.router.clone(),
            app.shutdown.clone(),
        ));
        stores
            .email_settings
            .remember_runtime(&email_runtime(app))
            .await
            .context("recording the URL emails link to")?;
        app.tasks.spawn(crate::cluster::outbox_sender::run_webhooks(
            stores.clone(),
            node.clone(),
            webhook_sender_settings(app),
            app.shutdown.clone(),
        ));
        app.tasks.spawn(crate::cluster::outbox_sender::run_emails(
            stores.clone(),
            node.clone(),
            app.config.email.clone(),
            app.shutdown.clone(),
        ));
    }
    app.tasks.spawn(crate::cluster::email_notifications::run_missed_chats(
        app.config.storage.postgres_url.clone(),
        node.clone(),
        Duration::from_secs(app.config.email.missed_chat_after_secs).as_millis() as i64,
        MISSED_CHAT_SWEEP,
        app.shutdown.clone(),
    ));
    spawn_cluster_retention(app, node);
    spawn_bot_idle_close(app);
    Ok(vec![relay, sites, knowledge, settings, teams])
}

/// What emails queued inside storage's transactions need from the configuration.
fn email_runtime(app: &AppState) -> crate::email::notifications::EmailRuntime {
    crate::email::notifications::EmailRuntime {
        public_url: app.public_url.clone(),
        reply_delay_millis: Duration::from_secs(app.config.email.reply_delay_secs).as_millis() as i64,
    }
}

fn webhook_sender_settings(app: &AppState) -> crate::webhooks::sender::SenderSettings {
    crate::webhooks::sender::SenderSettings {
        retry_base: Duration::from_millis(app.config.webhooks.retry_base_ms),
        give_up_after: Duration::from_secs(app.config.webhooks.give_up_after_secs),
        timeout: Duration::from_secs(app.config.webhooks.timeout_secs),
    }
}

/// Retention on a cluster: every node looks every
/// [`RETENTION_INTERVAL`](crate::history::retention::RETENTION_INTERVAL), and one of them drops
/// the message partitions of the days every site's retention has passed, and one deletes from
/// the partitions kept the messages of the sites whose own retention is shorter, each once a day.
fn spawn_cluster_retention(app: &AppState, node: crate::cluster::node::NodeName) {
    use crate::history::retention;
    spawn_every(app, retention::RETENTION_INTERVAL, move |app| {
        let node = node.clone();
        async move {
            let sites = match SiteStore::list(&app.store).await {
                Ok(sites) => sites,
                Err(error) => return tracing::error!(%error, "retention could not read the sites"),
            };
            let today = crate::base::clock::day_of(crate::base::clock::now_millis());
            let mut client = match crate::cluster::postgres::connect(&app.config.storage.postgres_url).await {
                Ok(client) => client,
                Err(error) => return tracing::error!(%error, "retention on the cluster failed"),
            };
            if let Some(first_kept) = retention::first_day_kept_by_all(&sites, today) {
                match crate::cluster::jobs::drop_message_partitions_once(&mut client, &node, first_kept).await {
                    Ok(run) => tracing::info!(?run, first_kept, "retention on the cluster"),
                    Err(error) => tracing::error!(%error, "retention on the cluster failed"),
                }
            }
            if let Backend::Cluster(stores) = &app.store {
                let grace = Duration::from_secs(app.config.limits.unattached_upload_grace_secs);
                if let Err(error) = stores.uploads.sweep_unattached(grace).await {
                    tracing::error!(%error, "sweeping unattached uploads failed");
                }
            }
            let by_site = retention::first_days_kept_by_site(&sites, today);
            if !by_site.is_empty() {
                match crate::cluster::jobs::expire_site_messages_once(&mut client, &node, &by_site, today).await {
                    Ok(run) => tracing::info!(?run, "sites' retention on the cluster"),
                    Err(error) => tracing::error!(%error, "sites' retention on the cluster failed"),
                }
            }
        }
    });
}

/// Creates the data directory (0700) and makes everything kefu writes private (files 0600)
/// whatever the umask it was started with; looser modes already there are tightened.
fn make_data_directory_private(data_dir: &std::path::Path) -> anyhow::Result<()> {
    crate::base::file_modes::restrict_new_files();
    crate::base::file_modes::create_private_directory(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    if let Err(error) = crate::base::file_modes::tighten(data_dir) {
        tracing::warn!(%error, data_dir = %data_dir.display(), "could not tighten the modes in the data directory");
    }
    Ok(())
}

/// On the first start: an admin account and a default site, printed once.
/// A cluster's nodes take turns, so only one of them does it.
async fn bootstrap(store: &Backend, config: &Config, local_addr: SocketAddr) -> anyhow::Result<()> {
    let _turn = match store.cluster() {
        Some(cluster) => Some(cluster.lock("kefu.first_start").await.context("waiting for the first start's lock")?),
        None => None,
    };
    let n_agents = AgentAdministration::list(store).await?.len();
    let existing_sites = SiteStore::list(store).await?;
    let mut site_key = existing_sites.first().map(|site| site.key.clone());
    if existing_sites.is_empty() {
        let site = SiteStore::create(
            store,
            NewSite { name: "My website".into(), allowed_origins: vec!["*".into()], ..NewSite::default() },
        )
        .await?;
        site_key = Some(site.key);
    }
    if n_agents == 0 {
        let password = crate::base::secrets::new_password();
        let email = "admin@kefu.local";
        agents::create(
            store,
            NewAgent {
                email: email.into(),
                name: "Admin".into(),
                password: password.clone(),
                role: Role::Admin,
                sites: Vec::new(),
                capacity: config.routing.default_capacity,
            },
        )
        .await?;
        let base = config.public_url_at(local_addr);
        println!("first start: an admin account was created");
        println!("  email:    {email}");
        println!("  password: {password}");
        match store {
            Backend::Appliance(_) => {
                println!("  change it with: kefu admin reset-password --email {email} --password NEW_PASSWORD")
            }
            Backend::Cluster(_) => println!("  change it on the console's account page after logging in"),
        }
        if let Some(site_key) = site_key {
            println!("  default site key: {site_key}");
            println!("  embed: {}", sites::embed_snippet(&base, &site_key));
        }
    }
    Ok(())
}

/// Resolves when the process gets SIGTERM or ctrl-c.
pub fn termination_signal() -> impl Future<Output = ()> + Send + 'static {
    // Register the handlers now, not when the future is first polled: a SIGTERM that arrives
    // between start-up and that first poll would otherwise kill the process without a shutdown.
    #[cfg(unix)]
    let (terminate, interrupt) = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |stream: Option<tokio::signal::unix::Signal>| async move {
                match stream {
                    Some(mut stream) => {
                        stream.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(terminate) => {}
                _ = wait(interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// What the domain adds to the storage writer: the webhook and email outboxes and the daily report
/// figures, written in each batch's commit, and the channel committed events reach the dispatcher on.
pub fn writer_hooks(committed: Option<mpsc::Sender<Published>>) -> WriterHooks {
    let mut hooks = writer_hooks_without_daily_figures(committed);
    hooks.before_commit.push(crate::history::daily_figures::record);
    hooks
}

/// The hooks without the daily report figures, which are then out of date until counted again
/// (`daily_figures::rebuild`): only `kefu bench storage --without-daily-figures` uses this, to
/// measure what keeping them costs the writer.
pub fn writer_hooks_without_daily_figures(committed: Option<mpsc::Sender<Published>>) -> WriterHooks {
    let before_commit = vec![crate::webhooks::record_deliveries, crate::email::record_notifications];
    WriterHooks { before_commit, committed }
}

/// Runs `work` every `period` until the server shuts down (the first run at once; a late tick
/// waits for the previous run instead of bunching up).
fn spawn_every<F>(app: &AppState, period: Duration, work: impl Fn(AppState) -> F + Send + 'static)
where
    F: Future<Output = ()> + Send + 'static,
{
    let app = app.clone();
    let shutdown = app.shutdown.clone();
    app.tasks.clone().spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => work(app.clone()).await,
            }
        }
    });
}

/// Runs retention, the sweep of unattached uploads and the cleanup of idle visitor budgets every
/// [`RETENTION_INTERVAL`](crate::history::retention::RETENTION_INTERVAL).
fn spawn_retention_schedule(app: &AppState, store: &Store, search: &Search) {
    let (store, search) = (store.clone(), search.clone());
    spawn_every(app, crate::history::retention::RETENTION_INTERVAL, move |app| {
        let (store, search) = (store.clone(), search.clone());
        async move {
            if let Err(error) = crate::history::retention::run(&store, &search, false).await {
                tracing::error!(%error, "retention failed");
            }
            let grace = Duration::from_secs(app.config.limits.unattached_upload_grace_secs);
            if let Err(error) = crate::chat::uploads::sweep_unattached(&store, grace).await {
                tracing::error!(%error, "sweeping unattached uploads failed");
            }
            app.upload_quota.forget();
            app.visitor_limits.forget_idle();
        }
    });
}

/// Drops the events of `Subscribe` older than `grpc.event_retention_hours`, every
/// [`RETENTION_INTERVAL`](crate::history::retention::RETENTION_INTERVAL).
fn spawn_event_pruning(app: &AppState, store: &Store) {
    let retention_ms =
        i64::try_from(app.config.grpc.event_retention_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
    let store = store.clone();
    spawn_every(app, crate::history::retention::RETENTION_INTERVAL, move |_| {
        let store = store.clone();
        async move {
            let cutoff = crate::base::clock::now_millis().saturating_sub(retention_ms);
            if let Err(error) = crate::webhooks::feed::prune(&store, cutoff).await {
                tracing::error!(%error, "pruning the events of Subscribe failed");
            }
        }
    });
}

/// Closes idle bot-only conversations every [`SWEEP_INTERVAL`](crate::bot::lifecycle::SWEEP_INTERVAL).
fn spawn_bot_idle_close(app: &AppState) {
    spawn_every(app, crate::bot::lifecycle::SWEEP_INTERVAL, move |app| async move {
        let now = crate::base::clock::now_millis();
        if let Err(error) = crate::bot::lifecycle::close_idle(&app.store, &app.bot, now).await {
            tracing::error!(%error, "closing idle bot conversations failed");
        }
    });
}

/// Emails agents about visitors who waited `email.missed_chat_after_secs` with no answer, every
/// [`MISSED_CHAT_SWEEP`].
fn spawn_missed_chat_emails(app: &AppState, store: &Store) {
    let wait_millis = Duration::from_secs(app.config.email.missed_chat_after_secs).as_millis() as i64;
    let store = store.clone();
    spawn_every(app, MISSED_CHAT_SWEEP, move |_| {
        let store = store.clone();
        async move {
            if let Err(error) = crate::email::notifications::email_missed_chats(&store, wait_millis).await {
                tracing::error!(%error, "emailing about missed chats failed");
            }
        }
    });
}

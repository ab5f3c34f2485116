//! Webhooks and the SMTP settings behind their storage boundaries (`WebhookStore`,
//! `EmailSettingsStore`) on both backends, the appliance's redb and the cluster's PostgreSQL 15
//! (support/postgres.rs): the same calls give the same answers (webhooks made, checked, limited
//! per site, changed, listed oldest first and deleted; a delivered delivery read, listed and sent
//! again; settings changed field by field), and bad input (unknown ids, invalid values) is
//! refused with nothing changed. On PostgreSQL, where deliveries are rows of `outbox`, a resend
//! takes a delivery from the node holding it, an email's row is no delivery, and two nodes
//! adding webhooks or saving settings at once behave as one writer.
//!
//! The PostgreSQL tests print one line and pass when PostgreSQL is not installed.

use std::time::Duration;

use kefu::base::config::EmailConfig;
use kefu::cluster::email_settings::PostgresEmailSettings;
use kefu::cluster::outbox::{self, NewOutboxRow, OutboxContent, OutboxError, OutboxKind, OutboxSettings, OutboxWorker};
use kefu::cluster::webhooks::PostgresWebhooks;
use kefu::email::EmailError;
use kefu::email::settings::{EmailSettingsStore, Security, SettingsChange};
use kefu::webhooks::{DeliveryStatus, NewWebhook, Webhook, WebhookError, WebhookStore};

use crate::support::TestServer;
use crate::support::postgres::{connect, database, node_name};

fn hook(url: &str, events: &[&str]) -> NewWebhook {
    NewWebhook {
        url: url.to_owned(),
        events: events.iter().map(|event| event.to_string()).collect(),
        allow_private: true,
    }
}

/// The same calls on `store`, for webhooks of `site`; `delivered` makes a delivery of the
/// webhook it is given, subscribed to `conversation.created` at `receiver_url`, and returns its
/// id once it is recorded as delivered.
async fn behaves_as_a_webhook_store(
    store: &impl WebhookStore,
    site: &str,
    receiver_url: &str,
    delivered: impl AsyncFnOnce(&Webhook) -> u64,
) {
    let site = site.to_owned();
    let private_refused =
        NewWebhook { allow_private: false, ..hook("http://127.0.0.1/hook", &["conversation.created"]) };
    for (bad, field) in [
        (hook("not a url", &["conversation.created"]), "url"),
        (private_refused, "url"),
        (hook("https://crm.example/hook", &[]), "events"),
        (hook("https://crm.example/hook", &["message.deleted"]), "events"),
    ] {
        let refused = store.create(site.clone(), bad).await;
        assert!(
            matches!(refused, Err(WebhookError::Invalid(ref message)) if message.starts_with(field)),
            "{refused:?}"
        );
    }
    assert!(store.of_site(&site).await.unwrap().is_empty(), "nothing made");

    let first = store.create(site.clone(), hook(receiver_url, &["conversation.created"])).await.expect("create");
    assert_eq!((first.site.as_str(), first.url.as_str()), (site.as_str(), receiver_url));
    assert!(first.secret.starts_with("whsec_") && first.key().len() == 32, "{}", first.secret);
    let mut made = vec![first.id.clone()];
    for n in 1..10 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let url = format!("https://crm.example/hook/{n}");
        made.push(store.create(site.clone(), hook(&url, &["conversation.rated"])).await.expect("create").id);
    }
    let full = store.create(site.clone(), hook("https://crm.example/11", &["conversation.rated"])).await;
    assert!(matches!(full, Err(WebhookError::Invalid(ref message)) if message.contains("at most 10")), "{full:?}");
    let listed: Vec<String> = store.of_site(&site).await.unwrap().into_iter().map(|webhook| webhook.id).collect();
    assert_eq!(listed, made, "oldest first, the eleventh not made");
    assert!(store.of_site("another-site").await.unwrap().is_empty());

    // Changes: unknown ids and invalid values change nothing.
    let change = hook("https://erp.example/hook", &["conversation.closed", "conversation.rated"]);
    assert!(matches!(store.update("nope".into(), change.clone()).await, Err(WebhookError::NotFound)));
    let invalid = store.update(first.id.clone(), hook("https://erp.example/hook", &["nope"])).await;
    assert!(matches!(invalid, Err(WebhookError::Invalid(_))), "{invalid:?}");
    let unchanged = store.webhook(&first.id).await.unwrap().expect("still there");
    assert_eq!((unchanged.url.as_str(), unchanged.events.clone()), (receiver_url, first.events.clone()));
    let changed = store.update(made[1].clone(), change).await.expect("update");
    assert_eq!((changed.url.as_str(), changed.events.len()), ("https://erp.example/hook", 2));
    let stored = store.webhook(&made[1]).await.unwrap().expect("the changed one");
    assert_eq!((stored.url, stored.events, stored.secret), (changed.url, changed.events, changed.secret.clone()));
    assert_ne!(changed.secret, first.secret);

    assert!(matches!(store.delete("nope".into()).await, Err(WebhookError::NotFound)));
    let last = made.pop().unwrap();
    store.delete(last.clone()).await.expect("delete");
    assert!(matches!(store.delete(last.clone()).await, Err(WebhookError::NotFound)));
    assert!(store.webhook(&last).await.unwrap().is_none());
    assert_eq!(store.of_site(&site).await.unwrap().len(), 9);

    // Deliveries: read, listed newest first, sent again.
    let delivery_id = delivered(&first).await;
    let delivery = store.delivery(delivery_id).await.unwrap().expect("the delivery");
    assert_eq!(
        (delivery.webhook_id.as_str(), delivery.site.as_str(), delivery.event_type.as_str()),
        (first.id.as_str(), site.as_str(), "conversation.created")
    );
    assert_eq!((delivery.status, delivery.attempts, delivery.last_status), (DeliveryStatus::Delivered, 1, Some(204)));
    assert!(delivery.delivered_at.is_some() && delivery.next_attempt_at.is_none(), "{delivery:?}");
    let listed: Vec<u64> = store.deliveries(&first.id, 50).await.unwrap().iter().map(|delivery| delivery.id).collect();
    assert_eq!(listed, [delivery_id]);
    assert!(store.deliveries(&made[1], 50).await.unwrap().is_empty());
    assert!(store.deliveries("nope", 50).await.unwrap().is_empty());
    assert!(store.delivery(u64::MAX).await.unwrap().is_none());
    assert!(matches!(store.resend(u64::MAX).await, Err(WebhookError::NotFound)));

    let resent = store.resend(delivery_id).await.expect("resend");
    assert_eq!((resent.id, resent.status, resent.attempts), (delivery_id, DeliveryStatus::Pending, 1));
    assert_eq!((&resent.payload, resent.delivered_at), (&delivery.payload, None));
    assert!(resent.created_at >= delivery.created_at, "{resent:?}");
    assert_eq!(resent.next_attempt_at, Some(resent.created_at), "due at once");
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let site = server.create_site("网店").await;
    let mut receiver = crate::webhooks::receiver(0).await;
    let store = server.store();
    behaves_as_a_webhook_store(store, &site.key, &receiver.url.clone(), async |_| {
        let (_, token) = server.visitor_session(&site, None).await;
        let mut visitor = server.visitor(&site, &token).await;
        visitor.say(None, "c-1", "您好").await;
        let (headers, _) = receiver.next().await;
        let webhook_id = headers["webhook-id"].to_str().unwrap();
        let id: u64 = webhook_id.trim_start_matches("msg_").parse().unwrap();
        // The receiver answers a moment before the outcome is recorded.
        for _ in 0..500 {
            let recorded = WebhookStore::delivery(store, id).await.unwrap();
            if recorded.is_some_and(|delivery| delivery.status == DeliveryStatus::Delivered) {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("delivery {id} was not recorded as delivered");
    })
    .await;

    let Some(url) = database("webhooks_alike").await else { return };
    let webhooks = PostgresWebhooks::open(&url).await.unwrap();
    behaves_as_a_webhook_store(&webhooks, "shop", "http://127.0.0.1:9/hook", async |webhook| {
        let mut client = connect(&url).await;
        let id = enqueue(&mut client, webhook_row(&webhook.id)).await;
        let node = worker("node-a");
        assert_eq!(node.claim(&client, 10).await.unwrap().iter().map(|row| row.id).collect::<Vec<_>>(), [id]);
        node.complete(&client, id, Some(204)).await.unwrap();
        id
    })
    .await;
}

fn webhook_row(webhook_id: &str) -> NewOutboxRow {
    NewOutboxRow {
        site: Some("shop".to_owned()),
        content: OutboxContent::Webhook {
            webhook_id: webhook_id.to_owned(),
            event_type: "conversation.created".to_owned(),
            payload: r#"{"type":"conversation.created"}"#.to_owned(),
            trace_id: None,
            about: None,
        },
        delay: Duration::ZERO,
    }
}

/// Writes `row` in a transaction of its own, as an event's commit would; returns its id.
async fn enqueue(client: &mut tokio_postgres::Client, row: NewOutboxRow) -> u64 {
    let transaction = client.transaction().await.unwrap();
    let id = outbox::enqueue(&transaction, &row).await.unwrap();
    transaction.commit().await.unwrap();
    id
}

fn worker(node: &str) -> OutboxWorker {
    let settings = OutboxSettings {
        claim_for: Duration::from_secs(60),
        retry_base: Duration::from_secs(1),
        give_up_after: Duration::from_secs(3600),
    };
    OutboxWorker::new(node_name(node), OutboxKind::Webhook, &settings).expect("a worker")
}

#[tokio::test]
async fn on_postgresql_a_resend_takes_a_delivery_from_the_node_holding_it() {
    let Some(url) = database("webhooks_resend").await else { return };
    let webhooks = PostgresWebhooks::open(&url).await.unwrap();
    let mut client = connect(&url).await;
    let id = enqueue(&mut client, webhook_row("wh_1")).await;
    let (a, b) = (worker("node-a"), worker("node-b"));
    assert_eq!(a.claim(&client, 10).await.unwrap().len(), 1);
    assert!(b.claim(&client, 10).await.unwrap().is_empty(), "held by node-a");

    let resent = webhooks.resend(id).await.expect("resend");
    assert_eq!((resent.status, resent.attempts), (DeliveryStatus::Pending, 0));
    let row = outbox::get(&client, id).await.unwrap().unwrap();
    assert_eq!((row.claimed_by, row.next_attempt_at), (None, resent.next_attempt_at));
    let taken: Vec<u64> = b.claim(&client, 10).await.unwrap().iter().map(|row| row.id).collect();
    assert_eq!(taken, [id], "the next claim of any node sends it");
    assert!(matches!(a.complete(&client, id, Some(200)).await, Err(OutboxError::NotClaimed { .. })));
    b.complete(&client, id, Some(200)).await.unwrap();
    let delivered = webhooks.delivery(id).await.unwrap().unwrap();
    assert_eq!((delivered.status, delivered.attempts), (DeliveryStatus::Delivered, 1));

    // An email's row is not a webhook's delivery: not read, not sent again, not changed.
    let email = NewOutboxRow {
        site: None,
        content: OutboxContent::Email {
            email_kind: kefu::email::EmailKind::Test,
            to_address: "agent@example.com".to_owned(),
            to_name: String::new(),
            subject: "test".to_owned(),
            text: "test".to_owned(),
            html: String::new(),
            unless_read: None,
            transcript_of: None,
            about: None,
        },
        delay: Duration::from_secs(60),
    };
    let email_id = enqueue(&mut client, email).await;
    let before = outbox::get(&client, email_id).await.unwrap().unwrap();
    assert!(webhooks.delivery(email_id).await.unwrap().is_none());
    assert!(matches!(webhooks.resend(email_id).await, Err(WebhookError::NotFound)));
    let after = outbox::get(&client, email_id).await.unwrap().unwrap();
    assert_eq!((after.status, after.next_attempt_at), (before.status, before.next_attempt_at));
}

#[tokio::test]
async fn on_postgresql_two_nodes_adding_webhooks_at_once_keep_to_the_limit() {
    let Some(url) = database("webhooks_race").await else { return };
    let (a, b) = (PostgresWebhooks::open(&url).await.unwrap(), PostgresWebhooks::open(&url).await.unwrap());
    let mut made = 0;
    for _ in 0..8 {
        let (first, second) = tokio::join!(
            a.create("race".into(), hook("https://crm.example/a", &["conversation.created"])),
            b.create("race".into(), hook("https://crm.example/b", &["conversation.created"]))
        );
        made += usize::from(first.is_ok()) + usize::from(second.is_ok());
    }
    assert_eq!(made, 10);
    assert_eq!(a.of_site("race").await.unwrap().len(), 10);
}

/// The same calls on `store`: settings changed field by field, bad input refused whole.
async fn behaves_as_an_email_settings_store(store: &impl EmailSettingsStore) {
    let config = EmailConfig {
        host: "smtp.example.com".into(),
        password: "secret".into(),
        from_address: "help@example.com".into(),
        ..EmailConfig::default()
    };
    let from_file = store.load(&config).await.unwrap();
    assert_eq!((from_file.host.as_str(), from_file.security), ("smtp.example.com", Security::Starttls));

    let change = SettingsChange { port: Some("2525".into()), from_name: Some(" 客服 ".into()), ..Default::default() };
    let saved = store.save(&config, change).await.expect("save");
    assert_eq!((saved.port, saved.from_name.as_str(), saved.password.as_str()), (2525, "客服", "secret"));
    assert_eq!(store.load(&config).await.unwrap(), saved);
    let other_file = EmailConfig { host: "ignored.example.com".into(), ..config.clone() };
    assert_eq!(store.load(&other_file).await.unwrap(), saved, "the saved settings override the file");

    for (bad, field) in [
        (SettingsChange { host: Some("a b".into()), ..Default::default() }, "host"),
        (SettingsChange { port: Some("0".into()), ..Default::default() }, "port"),
        (
            SettingsChange { host: Some("b.example.com".into()), security: Some("ssl".into()), ..Default::default() },
            "security",
        ),
        (SettingsChange { from_address: Some("nobody".into()), ..Default::default() }, "from_address"),
    ] {
        let refused = store.save(&config, bad).await;
        assert!(matches!(refused, Err(EmailError::Invalid(ref error)) if error.field == field), "{refused:?}");
    }
    assert_eq!(store.load(&config).await.unwrap(), saved, "nothing half-saved");

    let cleared = SettingsChange { clear_password: true, security: Some("tls".into()), ..Default::default() };
    let saved = store.save(&config, cleared).await.expect("clear the password");
    assert_eq!((saved.password.as_str(), saved.security, saved.port), ("", Security::Tls, 2525));
}

#[tokio::test]
async fn the_smtp_settings_behave_alike_on_both_backends() {
    let server = TestServer::start().await;
    behaves_as_an_email_settings_store(server.store()).await;

    let Some(url) = database("email_settings_alike").await else { return };
    behaves_as_an_email_settings_store(&PostgresEmailSettings::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn on_postgresql_two_nodes_saving_settings_at_once_keep_both_changes() {
    let Some(url) = database("email_settings_race").await else { return };
    let (a, b) = (PostgresEmailSettings::open(&url).await.unwrap(), PostgresEmailSettings::open(&url).await.unwrap());
    let config = EmailConfig::default();
    for round in 0..10u16 {
        let port = SettingsChange { port: Some((2000 + round).to_string()), ..Default::default() };
        let name = SettingsChange { from_name: Some(format!("round {round}")), ..Default::default() };
        let (first, second) = tokio::join!(a.save(&config, port), b.save(&config, name));
        first.unwrap();
        second.unwrap();
        let settings = a.load(&config).await.unwrap();
        assert_eq!((settings.port, settings.from_name), (2000 + round, format!("round {round}")));
    }
}

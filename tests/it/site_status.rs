//! The site's one status for its visitors (online / away / closed with the next opening), pushed
//! live as `site_status` frames when agents come and go and when business hours open or close;
//! and routing around an agent in their offline grace period.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jiff::tz::TimeZone;
use kefu::sites::business_hours::{BusinessHours, DayHours};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestServer, http};

/// Changes a site's business hours the way the admin page does (save, then tell the directory).
async fn set_hours(server: &TestServer, key: &str, hours: BusinessHours) {
    let app = server.app();
    let mut site = app.sites.get(key).await.unwrap().unwrap().site.clone();
    site.business_hours = hours;
    kefu::sites::save(server.store(), site).await.unwrap();
    app.sites.invalidate(key);
}

async fn widget_status(server: &TestServer, key: &str) -> Value {
    let settings: Value =
        http().get(server.url(&format!("/api/v1/sites/{key}/widget"))).send().await.unwrap().json().await.unwrap();
    settings["status"].clone()
}

#[tokio::test]
async fn visitors_see_an_agent_come_online_and_go_away_after_the_grace_period() {
    let server = TestServer::start_with(|config| config.routing.offline_grace_secs = 1).await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let (mut visitor, status) = server.visitor_with_status(&site, &token).await;
    assert_eq!(status["status"], "away");
    assert_eq!(widget_status(&server, &site.key).await["status"], "away");

    let agent_token = server.login("ann@shop.example").await;
    let agent = server.agent(&agent_token).await;
    let online = visitor.expect_site_status().await;
    assert_eq!(online["status"], "online");
    assert!(online.get("next_open").is_none(), "{online}");
    assert_eq!(widget_status(&server, &site.key).await["status"], "online");

    // The console closes: the agent stays online for the grace period, then visitors see away.
    drop(agent);
    let closed_at = Instant::now();
    assert_eq!(visitor.expect_site_status().await["status"], "away");
    let waited = closed_at.elapsed();
    assert!(waited >= Duration::from_millis(900), "away after {waited:?}, before the 1 s grace ended");
    assert!(waited < Duration::from_secs(3), "away only after {waited:?}");

    // Away (the console's presence) is not online either.
    let mut agent = server.agent(&agent_token).await;
    assert_eq!(visitor.expect_site_status().await["status"], "online");
    agent.send(serde_json::json!({"type": "presence", "status": "away"})).await;
    assert_eq!(visitor.expect_site_status().await["status"], "away");
}

#[tokio::test]
async fn a_presence_change_is_pushed_to_the_sites_of_that_agent_only() {
    let server = TestServer::start().await;
    let shop = server.create_site("Shop").await;
    let other = server.create_site("Other").await;
    server.create_agent("ann@shop.example", &shop, 5).await;
    server.create_admin("root@kefu.example").await;
    let (_, token) = server.visitor_session(&shop, None).await;
    let (mut shop_visitor, status) = server.visitor_with_status(&shop, &token).await;
    assert_eq!(status["status"], "away");
    let (_, token) = server.visitor_session(&other, None).await;
    let (mut other_visitor, status) = server.visitor_with_status(&other, &token).await;
    assert_eq!(status["status"], "away");

    // Ann serves Shop alone.
    let _ann = server.agent(&server.login("ann@shop.example").await).await;
    assert_eq!(shop_visitor.expect_site_status().await["status"], "online");
    let told = tokio::time::timeout(Duration::from_millis(300), other_visitor.expect_site_status()).await;
    assert!(told.is_err(), "Other's visitors were told {told:?}");

    // An admin serves every site: Other comes online; Shop was already.
    let _root = server.agent(&server.login("root@kefu.example").await).await;
    assert_eq!(other_visitor.expect_site_status().await["status"], "online");
    let told = tokio::time::timeout(Duration::from_millis(300), shop_visitor.expect_site_status()).await;
    assert!(told.is_err(), "Shop's visitors were told {told:?}");
}

#[tokio::test]
async fn closing_the_hours_tells_visitors_closed_with_the_next_opening_and_reopening_online() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let _agent = server.agent(&server.login("ann@shop.example").await).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let (mut visitor, status) = server.visitor_with_status(&site, &token).await;
    assert_eq!(status["status"], "online");

    // Open all day every day, but today is a holiday in Shanghai: closed until tomorrow 00:00 there.
    let zone = TimeZone::get("Asia/Shanghai").unwrap();
    let today = jiff::Timestamp::now().to_zoned(zone.clone()).date();
    let tomorrow = today.tomorrow().unwrap();
    let all_day = DayHours { open: 0, close: 24 * 60 };
    let holiday = BusinessHours {
        enabled: true,
        time_zone: "Asia/Shanghai".into(),
        weekly: [Some(all_day); 7],
        holidays: vec![today],
    };
    set_hours(&server, &site.key, holiday.clone()).await;
    let closed = visitor.expect_site_status().await;
    assert_eq!(closed["status"], "closed", "{closed}");
    let next = &closed["next_open"];
    assert_eq!(next["local_time"], "00:00");
    assert_eq!(next["local_date"], tomorrow.to_string());
    assert_eq!(next["time_zone"], "Asia/Shanghai");
    let expected = tomorrow.at(0, 0, 0, 0).to_zoned(zone).unwrap().timestamp().as_millisecond();
    assert_eq!(next["at"], expected);
    let settings = widget_status(&server, &site.key).await;
    assert_eq!((&settings["status"], &settings["next_open"]), (&closed["status"], &closed["next_open"]));

    // A visitor arriving now is told closed right after welcome.
    let (_, second_token) = server.visitor_session(&site, None).await;
    let (mut second, status) = server.visitor_with_status(&site, &second_token).await;
    assert_eq!(status["status"], "closed");

    // The holiday is taken back: open again, and an agent is online.
    set_hours(&server, &site.key, BusinessHours { holidays: Vec::new(), ..holiday }).await;
    for client in [&mut visitor, &mut second] {
        let status = client.expect_site_status().await;
        assert_eq!(status["status"], "online", "{status}");
    }
}

#[tokio::test]
async fn the_hours_closing_on_the_clock_are_pushed_without_any_other_change() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let (mut visitor, status) = server.visitor_with_status(&site, &token).await;
    assert_eq!(status["status"], "away");

    // Open every day from midnight until the next whole minute (UTC).
    let now = jiff::Timestamp::now().to_zoned(TimeZone::UTC);
    let close = (now.hour() as u16) * 60 + now.minute() as u16 + 1;
    let hours = BusinessHours {
        enabled: true,
        time_zone: "UTC".into(),
        weekly: [Some(DayHours { open: 0, close }); 7],
        holidays: Vec::new(),
    };
    set_hours(&server, &site.key, hours).await;
    let started = Instant::now();
    let status = loop {
        let message = tokio::time::timeout(Duration::from_secs(75), visitor.socket.next())
            .await
            .expect("the closing is pushed within a minute");
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            other => panic!("the socket ended: {other:?}"),
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["status"] == "closed" {
            break frame;
        }
        assert_eq!(frame["status"], "away", "{frame}");
    };
    assert!(started.elapsed() < Duration::from_secs(62), "closed only after {:?}", started.elapsed());
    // Tomorrow at midnight (or today's, just past) in UTC.
    assert_eq!(status["next_open"]["local_time"], "00:00", "{status}");
}

/// Waits for the `assigned` event of `conversation_id` on an agent's connection.
async fn assigned(agent: &mut Client, conversation_id: u64) -> Value {
    loop {
        let event = agent.expect("conversation").await;
        if event["event"] == "assigned" && event["conversation"]["id"] == conversation_id {
            return event;
        }
    }
}

#[tokio::test]
async fn nothing_new_goes_to_an_agent_in_grace_and_their_conversations_move_on_when_it_ends() {
    let server = TestServer::start_with(|config| config.routing.offline_grace_secs = 2).await;
    let site = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 5).await;
    let bob_id = server.create_agent("bob@shop.example", &site, 5).await;
    let mut ann = server.agent(&server.login("ann@shop.example").await).await;

    // Ann gets the first conversation, then her console closes.
    let (_, token) = server.visitor_session(&site, None).await;
    let mut first = server.visitor(&site, &token).await;
    let first_id = first.say(None, "v-1", "hello").await["conversation_id"].as_u64().unwrap();
    assert_eq!(assigned(&mut ann, first_id).await["conversation"]["assigned_agent"], ann_id);
    drop(ann);
    let closed_at = Instant::now();

    // In her grace period a new conversation waits rather than going to her; Bob, online
    // later, gets it, and Ann's own conversation once her grace ends.
    let (_, token) = server.visitor_session(&site, None).await;
    let mut second = server.visitor(&site, &token).await;
    let second_id = second.say(None, "v-2", "anyone?").await["conversation_id"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read = move |transaction: &redb::ReadTransaction| kefu::chat::conversations::get(transaction, second_id);
    let holder = server.store().read(read).await.unwrap().unwrap().assigned_agent;
    assert_eq!(holder, None, "a conversation went to an agent in their grace period");

    let mut bob = server.agent(&server.login("bob@shop.example").await).await;
    assert_eq!(assigned(&mut bob, second_id).await["conversation"]["assigned_agent"], bob_id);
    let moved = assigned(&mut bob, first_id).await;
    assert_eq!(moved["conversation"]["assigned_agent"], bob_id);
    assert!(closed_at.elapsed() >= Duration::from_millis(1900), "moved after {:?}", closed_at.elapsed());
    // Bob gets what was said so far, and the visitor's next words.
    assert!(!bob.expect_replayed(first_id).await.is_empty());
    first.say(Some(first_id), "v-3", "still there?").await;
    assert_eq!(bob.expect("message").await["text"], "still there?");
}

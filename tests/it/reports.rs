//! The admin reports: exact figures of a known set of conversations on the CSV downloads (all
//! sites, one site, one team, a past day), days in the site's time zone (a Shanghai day starts at
//! 16:00 UTC), the daily figures against a recount from the raw data after random changes, the
//! today card, the page with its three charts, and who may see it.

use kefu::base::clock::{self, MILLIS_PER_DAY};
use kefu::chat::conversations::{self, Conversation};
use kefu::chat::messages::{self, NewMessage, Target};
use kefu::history::reports::{median, percentile};
use kefu::people::agents::{self, NewAgent, Role};
use kefu::protocol::{SenderKind, SenderView};
use kefu::sites::Site;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Client, PASSWORD, TestServer, http};

/// Ann's display name: Chinese, and markup that must come out as text.
const ANN_NAME: &str = "安娜 <Ann>";

async fn create_agent(server: &TestServer, email: &str, name: &str, role: Role, site: &Site, capacity: u32) -> u64 {
    let sites = if role == Role::Agent { vec![site.key.clone()] } else { Vec::new() };
    let new_agent =
        NewAgent { email: email.into(), name: name.into(), password: PASSWORD.into(), role, sites, capacity };
    agents::create(server.store(), new_agent).await.expect("creating an agent").id
}

/// A downloaded table: (status, content type, content disposition, rows after the header).
struct Download {
    status: StatusCode,
    content_type: String,
    disposition: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

async fn download(server: &TestServer, token: &str, path: &str) -> Download {
    let response = http().get(server.url(path)).bearer_auth(token).send().await.unwrap();
    let status = response.status();
    let header_text =
        |name: &str| response.headers().get(name).map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default();
    let (content_type, disposition) = (header_text("content-type"), header_text("content-disposition"));
    let bytes = response.bytes().await.unwrap();
    let mut download = Download { status, content_type, disposition, header: Vec::new(), rows: Vec::new() };
    if status != StatusCode::OK {
        return download;
    }
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF".as_slice()).expect("the CSV starts with a UTF-8 byte order mark");
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(body);
    let mut records = reader.records().map(|record| record.unwrap().iter().map(str::to_owned).collect::<Vec<_>>());
    download.header = records.next().expect("a header row");
    download.rows = records.collect();
    download
}

async fn conversation_event(agent: &mut Client, conversation_id: u64, event: &str) {
    loop {
        let frame = agent.expect("conversation").await;
        if frame["event"] == event && frame["conversation"]["id"] == conversation_id {
            return;
        }
    }
}

/// A visitor of `site` who has written once: (token, client, conversation id).
async fn visitor_writes(server: &TestServer, site: &Site, text: &str) -> (String, Client, u64) {
    let (visitor_id, token) = server.visitor_session(site, None).await;
    let mut visitor = server.visitor(site, &token).await;
    let conversation_id =
        visitor.say(None, &format!("v-{visitor_id}"), text).await["conversation_id"].as_u64().unwrap();
    (token, visitor, conversation_id)
}

async fn reply(agent: &mut Client, conversation_id: u64, client_id: &str, internal: bool) {
    let frame = json!({"type": "send", "client_id": client_id, "conversation_id": conversation_id, "text": "on it", "internal": internal});
    agent.send(frame).await;
    loop {
        let ack = agent.expect("ack").await;
        if ack["client_id"] == client_id {
            return;
        }
    }
}

async fn close(agent: &mut Client, conversation_id: u64) {
    agent.send(json!({"type": "close", "conversation_id": conversation_id})).await;
    conversation_event(agent, conversation_id, "closed").await;
}

async fn rate(server: &TestServer, visitor_token: &str, conversation_id: u64, score: u8) {
    let url = server.url(&format!("/api/v1/conversations/{conversation_id}/rating"));
    let response = http().post(url).bearer_auth(visitor_token).json(&json!({"score": score})).send().await.unwrap();
    assert_eq!(response.status(), 204);
}

/// Seconds as the CSV writes them.
fn seconds(millis: Option<i64>) -> String {
    millis.map(|millis| format!("{:.1}", millis as f64 / 1000.0)).unwrap_or_default()
}

fn sorted(mut values: Vec<i64>) -> Vec<i64> {
    values.sort_unstable();
    values
}

fn column(download: &Download, name: &str) -> usize {
    download.header.iter().position(|column| column == name).unwrap_or_else(|| panic!("no column {name}"))
}

/// The sum of a numeric column over every row.
fn total(download: &Download, name: &str) -> u64 {
    let index = column(download, name);
    download.rows.iter().map(|row| row[index].parse::<u64>().unwrap()).sum()
}

#[tokio::test]
async fn csv_downloads_carry_the_exact_figures_per_day_agent_score_site_and_team() {
    let server = TestServer::start().await;
    let shop = server.create_site("Shop").await;
    let other = server.create_site("Other").await;
    // Ann takes one conversation at a time, so while she holds one the next goes to Bob.
    let ann_id = create_agent(&server, "ann@shop.example", ANN_NAME, Role::Agent, &shop, 1).await;
    let bob_id = create_agent(&server, "bob@shop.example", "Bob", Role::Agent, &shop, 5).await;
    create_agent(&server, "boss@shop.example", "Boss", Role::Admin, &shop, 5).await;
    let refunds = kefu::people::teams::create(server.store(), shop.key.clone(), "Refunds", vec![bob_id]).await.unwrap();
    let admin = server.login("boss@shop.example").await;
    let mut ann = server.agent(&server.login("ann@shop.example").await).await;

    // Two conversations Ann answers, closes and gets rated 5 and 3; a third she holds unanswered.
    let (first_token, _first, first) = visitor_writes(&server, &shop, "where is my parcel?").await;
    conversation_event(&mut ann, first, "assigned").await;
    reply(&mut ann, first, "a-1", false).await;
    reply(&mut ann, first, "a-2", false).await;
    reply(&mut ann, first, "a-note", true).await;
    close(&mut ann, first).await;
    rate(&server, &first_token, first, 5).await;
    let (second_token, _second, second) = visitor_writes(&server, &shop, "我想退货").await;
    conversation_event(&mut ann, second, "assigned").await;
    reply(&mut ann, second, "a-3", false).await;
    close(&mut ann, second).await;
    rate(&server, &second_token, second, 3).await;
    let (_, _third_visitor, third) = visitor_writes(&server, &shop, "hello?").await;
    conversation_event(&mut ann, third, "assigned").await;
    // Bob (of the Refunds team) answers, closes and gets a 5.
    let mut bob = server.agent(&server.login("bob@shop.example").await).await;
    let (fourth_token, _fourth_visitor, fourth) = visitor_writes(&server, &shop, "refund please").await;
    conversation_event(&mut bob, fourth, "assigned").await;
    reply(&mut bob, fourth, "b-1", false).await;
    close(&mut bob, fourth).await;
    rate(&server, &fourth_token, fourth, 5).await;
    // Nobody serves the other site: its conversation waits.
    let (_, _fifth_visitor, _fifth) = visitor_writes(&server, &other, "anyone?").await;

    let ids = [first, second, third, fourth];
    let stored: Vec<Conversation> = server
        .store()
        .read(move |transaction| {
            ids.iter().map(|id| Ok(conversations::get(transaction, *id)?.expect("stored"))).collect()
        })
        .await
        .unwrap();
    let first_response =
        |conversation: &Conversation| conversation.first_response_at.map(|at| at - conversation.created_at);
    let resolution = |conversation: &Conversation| conversation.closed_at.map(|at| at - conversation.created_at);

    // Per day: the default range is the last 30 UTC days, every day listed.
    let daily = download(&server, &admin, "/admin/reports/daily.csv").await;
    assert_eq!(daily.status, 200);
    assert_eq!(daily.content_type, "text/csv; charset=utf-8");
    let today = clock::day_to_date(clock::day_of(clock::now_millis()));
    let from = clock::day_to_date(clock::day_of(clock::now_millis()) - 29);
    assert_eq!(daily.disposition, format!("attachment; filename=\"kefu-daily-{from}-to-{today}.csv\""));
    assert_eq!(
        daily.header,
        [
            "date",
            "conversations",
            "closed",
            "median_first_response_seconds",
            "p90_first_response_seconds",
            "median_resolution_seconds",
            "ratings",
            "average_rating",
            "missed",
            "messages"
        ]
    );
    assert_eq!(daily.rows.len(), 30);
    assert_eq!((daily.rows[0][0].as_str(), daily.rows[29][0].as_str()), (from.as_str(), today.as_str()));
    assert_eq!(total(&daily, "conversations"), 5);
    assert_eq!(total(&daily, "closed"), 3);
    assert_eq!(total(&daily, "ratings"), 3);
    let days: Vec<u32> = stored.iter().map(|conversation| clock::day_of(conversation.created_at)).collect();
    // Everything happened within seconds; only a run across midnight UTC splits it over two days.
    if days.iter().all(|day| *day == days[0]) && clock::day_of(stored[3].closed_at.unwrap()) == days[0] {
        let row = daily.rows.iter().find(|row| row[0] == clock::day_to_date(days[0])).unwrap();
        let responses = sorted(stored.iter().filter_map(first_response).collect());
        let resolutions = sorted(stored.iter().filter_map(resolution).collect());
        assert_eq!(responses.len(), 3, "the third conversation was never answered");
        assert_eq!(row[8], "0", "nobody was left unanswered at close");
        assert_eq!(row[9], "9", "five visitors' messages and four answers; the note is not one");
        assert_eq!(
            row[1..8],
            [
                "5".to_owned(),
                "3".to_owned(),
                seconds(median(&responses)),
                seconds(percentile(&responses, 90.0)),
                seconds(median(&resolutions)),
                "3".to_owned(),
                "4.33".to_owned()
            ]
        );
    }

    // Per agent: conversations held, messages sent to visitors (the note is not one), first responses.
    let agents = download(&server, &admin, "/admin/reports/agents.csv").await;
    assert_eq!(
        agents.header,
        ["agent_id", "name", "email", "conversations", "messages", "median_first_response_seconds"]
    );
    let ann_median = median(&sorted(vec![first_response(&stored[0]).unwrap(), first_response(&stored[1]).unwrap()]));
    assert_eq!(
        agents.rows,
        [
            vec![
                ann_id.to_string(),
                ANN_NAME.to_owned(),
                "ann@shop.example".to_owned(),
                "3".to_owned(),
                "3".to_owned(),
                seconds(ann_median)
            ],
            vec![
                bob_id.to_string(),
                "Bob".to_owned(),
                "bob@shop.example".to_owned(),
                "1".to_owned(),
                "1".to_owned(),
                seconds(first_response(&stored[3]))
            ],
        ]
    );

    // Satisfaction, best score first.
    let satisfaction = download(&server, &admin, "/admin/reports/satisfaction.csv").await;
    assert_eq!(satisfaction.header, ["score", "ratings", "percent"]);
    assert_eq!(
        satisfaction.rows,
        [["5", "2", "66.7"], ["4", "0", "0.0"], ["3", "1", "33.3"], ["2", "0", "0.0"], ["1", "0", "0.0"]]
    );

    // One site; one team (the conversations held by its members).
    let other_site = download(&server, &admin, &format!("/admin/reports/daily.csv?site={}", other.key)).await;
    assert_eq!((total(&other_site, "conversations"), total(&other_site, "closed")), (1, 0));
    let shop_agents = download(&server, &admin, &format!("/admin/reports/agents.csv?site={}", shop.key)).await;
    assert_eq!(shop_agents.rows.len(), 2);
    let team = download(&server, &admin, &format!("/admin/reports/daily.csv?team={}", refunds.id)).await;
    assert_eq!((total(&team, "conversations"), total(&team, "closed"), total(&team, "ratings")), (1, 1, 1));
    let team_agents = download(&server, &admin, &format!("/admin/reports/agents.csv?team={}", refunds.id)).await;
    assert_eq!(team_agents.rows.len(), 1);
    assert_eq!(
        team_agents.rows[0][..5],
        [bob_id.to_string(), "Bob".into(), "bob@shop.example".into(), "1".into(), "1".into()]
    );
    let team_satisfaction =
        download(&server, &admin, &format!("/admin/reports/satisfaction.csv?team={}", refunds.id)).await;
    assert_eq!(team_satisfaction.rows[0], ["5", "1", "100.0"]);
}

/// Stores a conversation on a past day through the writer: a visitor message at `at` and an
/// agent's answer `after` milliseconds later. Returns the conversation id.
async fn backdated_conversation(server: &TestServer, site: &Site, agent_id: u64, at: i64, after: i64) -> u64 {
    let site = site.key.clone();
    server
        .store()
        .write(move |context| {
            let message = |target, kind, id, client_id: &str| {
                NewMessage::text(
                    target,
                    SenderView { kind, id, name: "someone".into() },
                    client_id.to_owned(),
                    "hello".into(),
                )
            };
            let inbox = Target::VisitorInbox { site: site.clone(), visitor_id: 9_999 };
            let asked = messages::append_at(context, message(inbox, SenderKind::Visitor, 9_999, "old-v"), at)?
                .expect("the visitor's message is stored");
            let target = Target::Conversation(asked.conversation_id);
            messages::append_at(context, message(target, SenderKind::Agent, agent_id, "old-a"), at + after)?
                .expect("the agent's answer is stored");
            Ok(Ok::<u64, kefu::storage::StorageError>(asked.conversation_id))
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_past_range_reads_its_own_days_only() {
    let server = TestServer::start().await;
    let shop = server.create_site("Shop").await;
    let ann_id = create_agent(&server, "ann@shop.example", ANN_NAME, Role::Agent, &shop, 5).await;
    create_agent(&server, "boss@shop.example", "Boss", Role::Admin, &shop, 5).await;
    let admin = server.login("boss@shop.example").await;
    let past_day = clock::day_of(clock::now_millis()) - 40;
    let noon = i64::from(past_day) * MILLIS_PER_DAY + MILLIS_PER_DAY / 2;
    backdated_conversation(&server, &shop, ann_id, noon, 90_000).await;

    let date = clock::day_to_date(past_day);
    let range = format!("from={date}&to={date}");
    let daily = download(&server, &admin, &format!("/admin/reports/daily.csv?{range}")).await;
    assert_eq!(daily.rows, [[date.as_str(), "1", "0", "90.0", "90.0", "", "0", "", "0", "2"]]);
    let agents = download(&server, &admin, &format!("/admin/reports/agents.csv?{range}")).await;
    assert_eq!(
        agents.rows,
        [[ann_id.to_string().as_str(), ANN_NAME, "ann@shop.example", "0", "1", ""]],
        "the answer is counted on its day; nobody was assigned"
    );
    let recent = download(&server, &admin, "/admin/reports/daily.csv").await;
    assert_eq!(total(&recent, "conversations"), 0, "40 days ago is outside the default 30");
    assert!(download(&server, &admin, "/admin/reports/agents.csv").await.rows.is_empty());
}

async fn get_page(server: &TestServer, token: Option<&str>, path: &str) -> (StatusCode, String, String) {
    let mut request = http().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let final_url = response.url().path().to_owned();
    (status, final_url, response.text().await.unwrap())
}

#[tokio::test]
async fn the_page_draws_three_charts_for_admins_and_explains_wrong_values() {
    let server = TestServer::start().await;
    let shop = server.create_site("Shop").await;
    create_agent(&server, "ann@shop.example", ANN_NAME, Role::Agent, &shop, 5).await;
    create_agent(&server, "boss@shop.example", "Boss", Role::Admin, &shop, 5).await;
    let admin = server.login("boss@shop.example").await;
    let agent = server.login("ann@shop.example").await;
    let mut ann = server.agent(&agent).await;
    let (_, _visitor, conversation_id) = visitor_writes(&server, &shop, "hi").await;
    conversation_event(&mut ann, conversation_id, "assigned").await;
    reply(&mut ann, conversation_id, "a-1", false).await;

    let (status, _, html) = get_page(&server, Some(&admin), "/admin/reports").await;
    assert_eq!(status, 200);
    assert_eq!(html.matches("<svg").count(), 3, "conversations, times and satisfaction");
    assert_eq!(html.matches("<rect class=\"bar\"").count(), 30 + 5, "a bar per day and per score");
    assert!(html.contains("<title>"), "bars and points explain themselves on hover");
    assert!(html.contains("安娜 &#60;Ann&#62;"), "names are escaped text");
    assert!(!html.contains("<Ann>"));
    for table in ["daily", "agents", "satisfaction"] {
        assert!(html.contains(&format!("href=\"/admin/reports/{table}.csv?from=")), "{table} link");
    }
    let zone = kefu::sites::server_time_zone();
    assert!(html.contains(&format!("Days are counted in {zone}.")), "the page names the zone");
    assert!(html.contains("id=\"today\""), "the today card");
    assert!(html.contains("aria-current=\"page\">Reports</a>"));

    // Wrong values: a clear message, the typed values kept, status 422, nothing computed.
    let (status, _, html) = get_page(&server, Some(&admin), "/admin/reports?from=2026-02-30&to=2026-03-10").await;
    assert_eq!(status, 422);
    assert!(html.contains("is not a date"), "{html}");
    assert!(html.contains("value=\"2026-02-30\""));
    assert!(!html.contains("<svg"));
    let (status, _, html) = get_page(&server, Some(&admin), "/admin/reports?from=2024-01-01&to=2026-01-01").await;
    assert_eq!(status, 422);
    assert!(html.contains("at most 366 days"), "{html}");
    let (status, _, html) = get_page(&server, Some(&admin), "/admin/reports?site=nope").await;
    assert_eq!(status, 422);
    assert!(html.contains("no site with the key"), "{html}");
    assert_eq!(download(&server, &admin, "/admin/reports/daily.csv?to=yesterday").await.status, 422);

    // Only admins: an agent gets 403, nobody the login page.
    for path in
        ["/admin/reports", "/admin/reports/daily.csv", "/admin/reports/agents.csv", "/admin/reports/satisfaction.csv"]
    {
        let (status, _, _) = get_page(&server, Some(&agent), path).await;
        assert_eq!(status, 403, "{path}");
        let (_, landed_on, html) = get_page(&server, None, path).await;
        assert_eq!(landed_on, "/admin/login", "{path}");
        assert!(!html.contains("<svg"));
    }
}

/// A site with its time zone set to `zone` (through the domain, as the admin form does).
async fn set_zone(server: &TestServer, site: &Site, zone: &str) -> Site {
    let mut changed = site.clone();
    changed.business_hours.time_zone = zone.to_owned();
    kefu::sites::save(server.store(), changed).await.expect("a valid time zone")
}

#[tokio::test]
async fn days_start_at_midnight_in_the_sites_time_zone() {
    let server = TestServer::start().await;
    let shop = set_zone(&server, &server.create_site("Shop").await, "UTC").await;
    let ann_id = create_agent(&server, "ann@shop.example", ANN_NAME, Role::Agent, &shop, 5).await;
    create_agent(&server, "boss@shop.example", "Boss", Role::Admin, &shop, 5).await;
    let admin = server.login("boss@shop.example").await;
    let day = clock::day_of(clock::now_millis()) - 5;
    let hour = 3_600_000;
    // 17:00 UTC is 01:00 the next day in Shanghai.
    backdated_conversation(&server, &shop, ann_id, i64::from(day) * MILLIS_PER_DAY + 17 * hour, 60_000).await;
    let range = format!("from={}&to={}&site={}", clock::day_to_date(day), clock::day_to_date(day + 2), shop.key);
    let path = format!("/admin/reports/daily.csv?{range}");
    let conversations_per_day = |download: &Download| -> Vec<String> {
        let index = column(download, "conversations");
        download.rows.iter().map(|row| row[index].clone()).collect()
    };
    assert_eq!(conversations_per_day(&download(&server, &admin, &path).await), ["1", "0", "0"]);

    // The same conversation, counted again in Shanghai's days.
    set_zone(&server, &shop, "Asia/Shanghai").await;
    let shanghai = download(&server, &admin, &path).await;
    assert_eq!(conversations_per_day(&shanghai), ["0", "1", "0"]);
    assert_eq!(shanghai.rows[1][column(&shanghai, "messages")], "2");

    // New conversations are counted in Shanghai's days as they are written: 15:59:59.999 UTC is
    // the last moment of a Shanghai day, 16:00 UTC the first of the next.
    let next = i64::from(day + 1) * MILLIS_PER_DAY;
    let store = server.store().clone();
    let visitor_message = |visitor_id: u64, at: i64| {
        let (site, store) = (shop.key.clone(), store.clone());
        async move {
            store
                .write(move |context| {
                    let inbox = Target::VisitorInbox { site, visitor_id };
                    let sender = SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "v".into() };
                    let message = NewMessage::text(inbox, sender, format!("edge-{visitor_id}"), "hi".into());
                    messages::append_at(context, message, at)?.expect("stored");
                    Ok(Ok::<(), kefu::storage::StorageError>(()))
                })
                .await
                .unwrap()
        }
    };
    visitor_message(8_001, next + 16 * hour - 1).await;
    visitor_message(8_002, next + 16 * hour).await;
    assert_eq!(conversations_per_day(&download(&server, &admin, &path).await), ["0", "2", "1"]);

    // The page says which zone it counts in.
    let (status, _, html) = get_page(&server, Some(&admin), &format!("/admin/reports?{range}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("Days are counted in Asia/Shanghai."), "{html}");
}

#[tokio::test]
async fn the_today_card_counts_what_happened_today() {
    let server = TestServer::start().await;
    let shop = server.create_site("Shop").await;
    create_agent(&server, "ann@shop.example", ANN_NAME, Role::Agent, &shop, 5).await;
    create_agent(&server, "boss@shop.example", "Boss", Role::Admin, &shop, 5).await;
    let admin = server.login("boss@shop.example").await;
    let mut ann = server.agent(&server.login("ann@shop.example").await).await;
    let (_, _visitor, conversation_id) = visitor_writes(&server, &shop, "hello").await;
    conversation_event(&mut ann, conversation_id, "assigned").await;
    reply(&mut ann, conversation_id, "a-1", false).await;
    let (_, _other_visitor, unanswered) = visitor_writes(&server, &shop, "anyone?").await;
    kefu::chat::conversation_store::ConversationStore::close(server.store(), unanswered).await.unwrap();

    let today = |path: String| {
        let admin = admin.clone();
        let server = &server;
        async move {
            let response = http().get(server.url(&path)).bearer_auth(&admin).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let figures = today(format!("/admin/reports/today.json?site={}", shop.key)).await;
    assert_eq!((figures["conversations"].as_u64(), figures["messages"].as_u64()), (Some(2), Some(3)));
    assert_eq!(figures["missed"], 1, "closed without an answer");
    assert!(figures["median_first_response_ms"].as_i64().is_some());
    assert_eq!(today("/admin/reports/today.json".into()).await["conversations"], 2, "all sites");
    let response =
        http().get(server.url("/admin/reports/today.json?site=nope")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let agent = server.login("ann@shop.example").await;
    let response = http().get(server.url("/admin/reports/today.json")).bearer_auth(&agent).send().await.unwrap();
    assert_eq!(response.status(), 403);
}

/// One random change of the daily-figures check.
#[derive(Clone, Debug)]
enum Change {
    /// A visitor writes (starting a conversation if they have none open).
    VisitorWrites {
        site: String,
        visitor_id: u64,
        at: i64,
    },
    /// An agent answers, or writes an internal note.
    AgentWrites {
        pick: usize,
        agent_id: u64,
        at: i64,
        internal: bool,
    },
    Assign {
        pick: usize,
        agent_id: Option<u64>,
    },
    Team {
        pick: usize,
        team: Option<u64>,
    },
    Close {
        pick: usize,
        at: i64,
    },
    Rate {
        pick: usize,
        score: u8,
        at: i64,
    },
    /// Taken back: no close, no rating (as a reopen leaves it).
    Reopen {
        pick: usize,
    },
}

fn random_change(rng: &mut rand::rngs::StdRng, sites: &[String], start: i64) -> Change {
    use rand::Rng;
    // Any moment of 20 days, so days split differently in UTC and in Shanghai.
    let at = start + rng.random_range(0..20 * MILLIS_PER_DAY);
    let pick = rng.random_range(0..1_000);
    match rng.random_range(0..10) {
        0..=2 => Change::VisitorWrites {
            site: sites[rng.random_range(0..sites.len())].clone(),
            visitor_id: rng.random_range(1..12),
            at,
        },
        3 | 4 => Change::AgentWrites { pick, agent_id: rng.random_range(1..4), at, internal: rng.random_bool(0.2) },
        5 => Change::Assign { pick, agent_id: rng.random_bool(0.8).then(|| rng.random_range(1..4)) },
        6 => Change::Team { pick, team: rng.random_bool(0.7).then(|| rng.random_range(1..3)) },
        7 => Change::Close { pick, at },
        8 => Change::Rate { pick, score: rng.random_range(1..=5), at },
        _ => Change::Reopen { pick },
    }
}

fn apply_change(
    context: &mut kefu::storage::WriteContext<'_>,
    conversations: &[u64],
    change: Change,
) -> Result<(), kefu::storage::StorageError> {
    use kefu::chat::writes::ChatWrites;
    let picked = |pick: usize| (!conversations.is_empty()).then(|| conversations[pick % conversations.len()]);
    match change {
        Change::VisitorWrites { site, visitor_id, at } => {
            let sender = SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "v".into() };
            let client_id = format!("v-{at}-{visitor_id}");
            let message = NewMessage::text(Target::VisitorInbox { site, visitor_id }, sender, client_id, "hi".into());
            let _ = messages::append_at(context, message, at)?;
        }
        Change::AgentWrites { pick, agent_id, at, internal } => {
            if let Some(id) = picked(pick) {
                let sender = SenderView { kind: SenderKind::Agent, id: agent_id, name: "a".into() };
                let message = NewMessage {
                    internal,
                    ..NewMessage::text(Target::Conversation(id), sender, format!("a-{at}-{id}"), "ok".into())
                };
                let _ = messages::append_at(context, message, at)?;
            }
        }
        Change::Assign { pick, agent_id } => {
            if let Some(conversation) = picked(pick).map(|id| context.conversation_mut(id)).transpose()?.flatten() {
                conversation.assigned_agent = agent_id;
            }
        }
        Change::Team { pick, team } => {
            if let Some(conversation) = picked(pick).map(|id| context.conversation_mut(id)).transpose()?.flatten() {
                conversation.team = team;
            }
        }
        Change::Close { pick, at } => {
            if let Some(id) = picked(pick) {
                let batch_time = std::mem::replace(&mut context.now, at);
                let _ = conversations::close_in(context, id)?;
                context.now = batch_time;
            }
        }
        Change::Rate { pick, score, at } => {
            if let Some(conversation) = picked(pick).map(|id| context.conversation_mut(id)).transpose()?.flatten()
                && conversation.closed_at.is_some()
            {
                let rating = conversations::Rating { score, comment: String::new(), rated_at: at };
                conversation.rating = Some(rating);
            }
        }
        Change::Reopen { pick } => {
            if let Some(conversation) = picked(pick).map(|id| context.conversation_mut(id)).transpose()?.flatten() {
                conversation.closed_at = None;
                conversation.rating = None;
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn daily_figures_equal_a_recount_from_the_raw_data_after_random_changes() {
    use kefu::history::daily_figures::Tally;
    use kefu::history::reports::{ReportFilter, compute, compute_from_raw};
    use rand::SeedableRng;

    let server = TestServer::start().await;
    let store = server.store().clone();
    let shop = set_zone(&server, &server.create_site("Shop").await, "Asia/Shanghai").await;
    let other = server.create_site("Other").await;
    let sites = vec![shop.key.clone(), other.key.clone()];
    let start = (clock::now_millis() / MILLIS_PER_DAY - 25) * MILLIS_PER_DAY;
    for seed in [26, 7, 2026] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for round in 0..40 {
            use rand::Rng;
            let changes: Vec<Change> =
                (0..rng.random_range(1..6)).map(|_| random_change(&mut rng, &sites, start)).collect();
            let conversations: Vec<u64> = store
                .read(|transaction| {
                    let mut ids = Vec::new();
                    conversations::visit_all(transaction, |conversation| ids.push(conversation.id))?;
                    Ok(ids)
                })
                .await
                .unwrap();
            store
                .write(move |context| {
                    for change in changes {
                        apply_change(context, &conversations, change)?;
                    }
                    Ok(Ok::<(), kefu::storage::StorageError>(()))
                })
                .await
                .unwrap();
            if round == 20 {
                // A change of zone counts the site's figures again.
                let zone = if seed == 7 { "America/New_York" } else { "Asia/Kolkata" };
                let key = other.key.clone();
                let current = store.read(move |transaction| kefu::sites::get(transaction, &key)).await.unwrap();
                set_zone(&server, &current.expect("the site exists"), zone).await;
            }
        }
        let (stored, recounted) = store
            .read(|transaction| Ok((Tally::stored(transaction, None)?, Tally::from_raw(transaction, None)?)))
            .await
            .unwrap();
        assert!(!stored.cells.is_empty() && !stored.messages.is_empty(), "seed {seed}: something was counted");
        assert_eq!(stored, recounted, "seed {seed}: the daily figures drifted from the raw data");

        let today = clock::day_of(clock::now_millis()) + 1;
        let team = kefu::people::teams::Team { id: 1, site: shop.key.clone(), name: "t".into(), members: vec![2] };
        for filter in [
            ReportFilter { from_day: today - 30, to_day: today, site: None, team: None },
            ReportFilter { from_day: today - 12, to_day: today - 3, site: Some(shop.key.clone()), team: None },
            ReportFilter { from_day: today - 30, to_day: today, site: None, team: Some(team) },
        ] {
            let (fast, slow) = store
                .read(move |transaction| Ok((compute(transaction, &filter)?, compute_from_raw(transaction, &filter)?)))
                .await
                .unwrap();
            assert_eq!(fast, slow, "seed {seed}");
        }
    }
}

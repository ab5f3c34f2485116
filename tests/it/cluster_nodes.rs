//! `kefu serve` as cluster nodes (`storage.backend = "postgres"`): two servers in this process
//! on one PostgreSQL database and one nats-server, each with its own connections. A visitor on
//! one node and an agent on the other chat both ways; a conversation started through one node
//! reaches the agent's console on the other; the first start's admin and site are made once; the
//! node holding a site's routing lease spreads its conversations over every node's agents and
//! never gives an agent connected through two nodes more than their capacity, and knows of teams
//! made through the other node.
//!
//! The tests print one line and pass when nats-server or PostgreSQL is not installed.

use std::time::Duration;

use crate::support::nats::NatsServer;
use crate::support::{TestServer, call, history};

#[tokio::test]
async fn a_visitor_on_one_node_and_an_agent_on_another_chat_both_ways() {
    let Some(url) = crate::support::postgres::database("nodes_chat").await else { return };
    let Some(nats) = NatsServer::start("nodes_chat") else { return };
    let visitors_node = TestServer::start_cluster_node(&url, &nats.url()).await;
    let agents_node = TestServer::start_cluster_node(&url, &nats.url()).await;
    let site = visitors_node.create_site("小店 Shop").await;
    agents_node.create_agent("wang@shop.example", &site, 5).await;
    let agent_token = agents_node.login("wang@shop.example").await;
    let mut agent = agents_node.agent(&agent_token).await;

    // The visitor's site shows online: the agent is online on the other node (each node writes
    // its agents to PostgreSQL and reads the others' every second).
    let (_, visitor_token) = visitors_node.visitor_session(&site, None).await;
    let (mut visitor, status) = visitors_node.visitor_with_status(&site, &visitor_token).await;
    if status["status"] != "online" {
        let status = visitor.expect_site_status().await;
        assert_eq!(status["status"], "online", "{status}");
    }
    let ack = visitor.say(None, "v-1", "你好，请问有人吗？").await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();

    // Routing on the agent's node gives it the conversation; the first message comes with it.
    let assigned = agent.expect_conversation_event(conversation_id, "assigned").await;
    assert_eq!(assigned["conversation"]["last_seq"], 1);
    let first = agent.expect("message").await;
    assert_eq!(first["text"], "你好，请问有人吗？");

    let reply = agent.say(Some(conversation_id), "a-1", "您好！Hello, how can I help?").await;
    assert_eq!(reply["seq"], 2);
    let message = visitor.expect("message").await;
    assert_eq!((message["seq"].as_u64(), message["text"].as_str()), (Some(2), Some("您好！Hello, how can I help?")));
    assert_eq!(message["sender"]["kind"], "agent");

    let again = visitor.say(Some(conversation_id), "v-2", "I'd like to change my order").await;
    assert_eq!(again["seq"], 3);
    assert_eq!(agent.expect("message").await["text"], "I'd like to change my order");

    // Each node answers the history from the same database.
    for (node, token) in [(&visitors_node, &visitor_token), (&agents_node, &agent_token)] {
        let page = history(node, token, conversation_id).await;
        let texts: Vec<&str> =
            page["messages"].as_array().unwrap().iter().map(|message| message["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["你好，请问有人吗？", "您好！Hello, how can I help?", "I'd like to change my order"]);
    }
    // Nothing came twice.
    visitor.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_console_sees_a_conversation_started_through_another_node_within_a_second() {
    let Some(url) = crate::support::postgres::database("nodes_console").await else { return };
    let Some(nats) = NatsServer::start("nodes_console") else { return };
    let one = TestServer::start_cluster_node(&url, &nats.url()).await;
    let two = TestServer::start_cluster_node(&url, &nats.url()).await;
    let site = one.create_site("Shop").await;
    // An admin serving every site, logged in on the second node.
    two.create_admin("boss@shop.example").await;
    let token = two.login("boss@shop.example").await;
    let mut console = two.agent(&token).await;

    let started = std::time::Instant::now();
    let (_visitor, _, conversation_id) = one.visitor_in_conversation(&site, "有人在吗").await;
    let created = console.expect_conversation_event(conversation_id, "created").await;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!(created["conversation"]["site"], site.key);

    let (status, page) = call(&two, "GET", "/api/v1/conversations?state=open", &token, None).await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<u64> =
        page["conversations"].as_array().unwrap().iter().filter_map(|listed| listed["id"].as_u64()).collect();
    assert!(ids.contains(&conversation_id), "{page}");
}

#[tokio::test]
async fn the_first_start_makes_one_admin_and_one_site_however_many_nodes_start_at_once() {
    let Some(url) = crate::support::postgres::database("nodes_first_start").await else { return };
    let Some(nats) = NatsServer::start("nodes_first_start") else { return };
    let nats_url = nats.url();
    let (one, two, three) = tokio::join!(
        TestServer::start_cluster_node(&url, &nats_url),
        TestServer::start_cluster_node(&url, &nats_url),
        TestServer::start_cluster_node(&url, &nats_url),
    );
    let database = crate::support::postgres::connect(&url).await;
    let count = |table: &'static str| {
        let database = &database;
        async move { database.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("agents").await, 1);
    assert_eq!(count("sites").await, 1);
    drop((one, two, three));
}

#[tokio::test]
async fn two_nodes_routing_one_sites_queue_at_once_never_assign_a_conversation_twice() {
    let Some(url) = crate::support::postgres::database("nodes_routing").await else { return };
    let Some(nats) = NatsServer::start("nodes_routing") else { return };
    let nodes = [
        TestServer::start_cluster_node(&url, &nats.url()).await,
        TestServer::start_cluster_node(&url, &nats.url()).await,
    ];
    let site = nodes[0].create_site("Shop").await;
    // One agent on each node; the node holding the site's lease routes to both, and a node that
    // loses it refuses its own assignments.
    nodes[0].create_agent("ann@shop.example", &site, 100).await;
    nodes[1].create_agent("bo@shop.example", &site, 100).await;
    let mut ann = nodes[0].agent(&nodes[0].login("ann@shop.example").await).await;
    let mut bo = nodes[1].agent(&nodes[1].login("bo@shop.example").await).await;
    // Both nodes know both agents are online before the visitors come.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    const VISITORS: usize = 24;
    let mut starts = Vec::new();
    for index in 0..VISITORS {
        let site = site.clone();
        let node = &nodes[index % 2];
        starts.push(async move { node.visitor_in_conversation(&site, &format!("visitor {index} 你好")).await });
    }
    let started = futures_util::future::join_all(starts).await;
    let conversations: std::collections::HashSet<u64> = started.iter().map(|(_, _, id)| *id).collect();
    assert_eq!(conversations.len(), VISITORS);

    // Each console sees every assignment of the site's conversations; each conversation is
    // assigned exactly once, to one agent, whichever node decided.
    let mut assignments = std::collections::HashMap::<u64, Vec<u64>>::new();
    for console in [&mut ann, &mut bo] {
        let mut seen = std::collections::HashMap::<u64, Vec<u64>>::new();
        // Every assignment, and whatever else comes in the half second after the last.
        let mut quiet_from = None;
        loop {
            let deadline = quiet_from.map(|at: tokio::time::Instant| at + Duration::from_millis(500));
            let frame = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, console.next()).await {
                    Ok(frame) => frame,
                    Err(_) => break,
                },
                None => console.next().await,
            };
            if frame["type"] == "conversation" && frame["event"] == "assigned" {
                let id = frame["conversation"]["id"].as_u64().unwrap();
                seen.entry(id).or_default().push(frame["conversation"]["assigned_agent"].as_u64().unwrap());
            }
            if seen.len() == VISITORS && quiet_from.is_none() {
                quiet_from = Some(tokio::time::Instant::now());
            }
        }
        for (id, agents) in &seen {
            assert_eq!(agents.len(), 1, "conversation {id} assigned {} times: {agents:?}", agents.len());
        }
        if assignments.is_empty() {
            assignments = seen;
        } else {
            assert_eq!(assignments, seen, "both consoles saw the same assignments");
        }
    }
    assert_eq!(assignments.keys().copied().collect::<std::collections::HashSet<_>>(), conversations);
    let database = crate::support::postgres::connect(&url).await;
    let row = database
        .query_one("SELECT count(*), count(DISTINCT id) FROM conversations WHERE status = 'assigned'", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (VISITORS as i64, VISITORS as i64));
}

/// The agent `conversation_id` went to, once routing assigned it (at most 10 s).
async fn assigned_agent(database: &tokio_postgres::Client, conversation_id: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = database
            .query_one("SELECT assigned_agent FROM conversations WHERE id = $1", &[&(conversation_id as i64)])
            .await
            .unwrap();
        if let Some(agent) = row.get::<_, Option<i64>>(0) {
            return agent as u64;
        }
        assert!(tokio::time::Instant::now() < deadline, "conversation {conversation_id} was never assigned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two nodes on a fresh database, a site, and an agent of capacity 10 online through each (Ann
/// through the first, Bo through the second), once each node knows of the other's.
struct AgentOnEachNode {
    url: String,
    _nats: NatsServer,
    nodes: [TestServer; 2],
    site: kefu::sites::Site,
    ann: u64,
    bo: u64,
    _consoles: [crate::support::Client; 2],
}

/// [`AgentOnEachNode`]; `None` when PostgreSQL or nats-server is missing.
async fn agent_on_each_node(test: &str) -> Option<AgentOnEachNode> {
    let url = crate::support::postgres::database(test).await?;
    let nats = NatsServer::start(test)?;
    let nodes = [
        TestServer::start_cluster_node(&url, &nats.url()).await,
        TestServer::start_cluster_node(&url, &nats.url()).await,
    ];
    let site = nodes[0].create_site("小店 Shop").await;
    let ann = nodes[0].create_agent("ann@shop.example", &site, 10).await;
    let bo = nodes[1].create_agent("bo@shop.example", &site, 10).await;
    let consoles = [
        nodes[0].agent(&nodes[0].login("ann@shop.example").await).await,
        nodes[1].agent(&nodes[1].login("bo@shop.example").await).await,
    ];
    // Each node's presence reaches the other within two rounds.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    Some(AgentOnEachNode { url, _nats: nats, nodes, site, ann, bo, _consoles: consoles })
}

#[tokio::test]
async fn the_node_routing_a_site_spreads_its_conversations_over_every_nodes_agents() {
    let Some(AgentOnEachNode { url, nodes, site, ann, bo, _nats, _consoles }) =
        agent_on_each_node("nodes_routing_spread").await
    else {
        return;
    };
    let database = crate::support::postgres::connect(&url).await;

    // Every visitor comes through the first node, one after another. The node holding the
    // site's lease gives each to the least busy agent, whichever node the agent is on: the two
    // take turns, rather than the first node's agent getting all of them.
    let mut visitors = Vec::new();
    let mut loads = std::collections::HashMap::<u64, usize>::new();
    for index in 0..6 {
        let (visitor, _, conversation_id) =
            nodes[0].visitor_in_conversation(&site, &format!("第 {index} 位 visitor")).await;
        *loads.entry(assigned_agent(&database, conversation_id).await).or_default() += 1;
        visitors.push(visitor);
    }
    assert_eq!(loads, [(ann, 3), (bo, 3)].into_iter().collect(), "one node routes the site among both nodes' agents");
    let holders: Vec<String> = database
        .query("SELECT holder FROM routing_leases WHERE site = $1", &[&site.key])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(holders.len(), 1, "one node holds the site's routing lease: {holders:?}");
}

#[tokio::test]
async fn an_agent_connected_through_two_nodes_is_never_given_more_than_their_capacity() {
    let Some(url) = crate::support::postgres::database("nodes_routing_capacity").await else { return };
    let Some(nats) = NatsServer::start("nodes_routing_capacity") else { return };
    let nodes = [
        TestServer::start_cluster_node(&url, &nats.url()).await,
        TestServer::start_cluster_node(&url, &nats.url()).await,
    ];
    let site = nodes[0].create_site("Shop").await;
    let ann = nodes[0].create_agent("ann@shop.example", &site, 2).await;
    // The console open on both nodes (a laptop and a phone, through a balancer).
    let token = nodes[0].login("ann@shop.example").await;
    let _consoles = [nodes[0].agent(&token).await, nodes[1].agent(&token).await];
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let mut starts = Vec::new();
    for index in 0..6 {
        let site = site.clone();
        let node = &nodes[index % 2];
        starts.push(async move { node.visitor_in_conversation(&site, &format!("visitor {index}")).await });
    }
    let _visitors = futures_util::future::join_all(starts).await;
    let database = crate::support::postgres::connect(&url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while database
        .query_one("SELECT count(*) FROM conversations WHERE status = 'assigned'", &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        < 2
    {
        assert!(tokio::time::Instant::now() < deadline, "the agent was not given two conversations");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Whatever else routing would do, it has done by now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let rows = database
        .query("SELECT status, assigned_agent, count(*) FROM conversations GROUP BY 1, 2 ORDER BY 1", &[])
        .await
        .unwrap();
    let counts: Vec<(String, Option<i64>, i64)> = rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect();
    assert_eq!(counts, [("assigned".to_owned(), Some(ann as i64), 2), ("queued".to_owned(), None, 4)]);
}

#[tokio::test]
async fn teams_made_through_either_node_route_and_the_agent_list_shows_every_nodes_agents() {
    let Some(AgentOnEachNode { url, nodes, site, ann, bo, _nats, _consoles }) =
        agent_on_each_node("nodes_routing_teams").await
    else {
        return;
    };
    nodes[0].create_admin("boss@shop.example").await;
    let admin = [nodes[0].login("boss@shop.example").await, nodes[1].login("boss@shop.example").await];
    let database = crate::support::postgres::connect(&url).await;

    // Either node's agent list shows both agents online, whichever node they are connected to.
    for (node, token) in nodes.iter().zip(&admin) {
        let (status, agents) = call(node, "GET", "/api/v1/agents", token, None).await;
        assert_eq!(status, 200, "{agents}");
        for id in [ann, bo] {
            let listed = agents.as_array().unwrap().iter().find(|agent| agent["id"] == id).expect("listed");
            assert_eq!(listed["presence"], "online", "{listed}");
        }
    }

    // A team made through each node: a conversation transferred to it goes to its member, from
    // whichever node holds the site's lease (it learnt of the team made through the other).
    for (maker, member) in [(0, bo), (1, ann)] {
        let body = serde_json::json!({"site": site.key, "name": format!("售后 {maker}"), "members": [member]});
        let (status, team) = call(&nodes[maker], "POST", "/api/v1/teams", &admin[maker], Some(body)).await;
        assert_eq!(status, 201, "{team}");
        let (_visitor, _, conversation_id) = nodes[0].visitor_in_conversation(&site, "我要退货").await;
        assigned_agent(&database, conversation_id).await;
        let path = format!("/api/v1/conversations/{conversation_id}/transfer");
        let body = serde_json::json!({"team_id": team["id"]});
        let (status, transferred) = call(&nodes[maker], "POST", &path, &admin[maker], Some(body)).await;
        assert_eq!(status, 200, "{transferred}");
        assert_eq!(transferred["assigned_agent"], serde_json::Value::Null, "{transferred}");
        assert_eq!(assigned_agent(&database, conversation_id).await, member, "the team made through node {maker}");
    }
}

#[tokio::test]
async fn reports_through_any_node_count_every_nodes_conversations() {
    let Some(url) = crate::support::postgres::database("nodes_reports").await else { return };
    let Some(nats) = NatsServer::start("nodes_reports") else { return };
    let one = TestServer::start_cluster_node(&url, &nats.url()).await;
    let two = TestServer::start_cluster_node(&url, &nats.url()).await;
    let shop = one.create_site("小店 Shop").await;
    let other = one.create_site("Other").await;
    let admin = one.admin_token("boss@shop.example").await;
    one.create_agent("ann@shop.example", &shop, 5).await;
    let mut ann = one.agent(&one.login("ann@shop.example").await).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // Through the second node: one conversation answered by the agent on the first node, one
    // closed unanswered; another site's conversation elsewhere.
    let (_visitor, _, answered) = two.visitor_in_conversation(&shop, "你好").await;
    ann.expect_conversation_event(answered, "assigned").await;
    ann.say(Some(answered), "a-1", "您好！").await;
    let (_unanswered_visitor, _, unanswered) = two.visitor_in_conversation(&shop, "anyone?").await;
    let (status, body) = call(&two, "POST", &format!("/api/v1/conversations/{unanswered}/close"), &admin, None).await;
    assert_eq!(status, 200, "{body}");
    let (_elsewhere, _, _) = one.visitor_in_conversation(&other, "another site").await;

    for node in [&one, &two] {
        let today = async |query: &str| {
            let path = format!("/admin/reports/today.json{query}");
            let response = crate::support::http().get(node.url(&path)).bearer_auth(&admin).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.json::<serde_json::Value>().await.unwrap()
        };
        let figures = today(&format!("?site={}", shop.key)).await;
        assert_eq!((figures["conversations"].as_u64(), figures["messages"].as_u64()), (Some(2), Some(3)), "{figures}");
        assert_eq!(figures["missed"], 1, "closed without an answer: {figures}");
        assert!(figures["median_first_response_ms"].as_i64().is_some(), "{figures}");
        assert_eq!(today("").await["conversations"], 3, "every site");

        // The page and the per-day table of the last 30 days, today's row last.
        let response = crate::support::http().get(node.url("/admin/reports")).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let path = format!("/admin/reports/daily.csv?site={}", shop.key);
        let response = crate::support::http().get(node.url(&path)).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let csv = response.text().await.unwrap();
        let last: Vec<&str> = csv.lines().last().unwrap().split(',').collect();
        let header: Vec<&str> = csv.trim_start_matches('\u{feff}').lines().next().unwrap().split(',').collect();
        let column = |name: &str| last[header.iter().position(|column| *column == name).unwrap()];
        assert_eq!(
            (column("conversations"), column("closed"), column("missed"), column("messages")),
            ("2", "1", "1", "3"),
            "{csv}"
        );
    }
}

#[tokio::test]
async fn the_bots_semantic_tier_answers_by_meaning_through_any_node_from_vectors_embedded_once() {
    use crate::bot::{REFUND_ENTRIES_CSV, StandInEmbeddings, bot_message, import_csv, put_bot, wait_up_to};
    let Some(url) = crate::support::postgres::database("nodes_semantic_tier").await else { return };
    let Some(nats) = NatsServer::start("nodes_semantic_tier") else { return };
    let embeddings = StandInEmbeddings::start().await;
    let tune = |config: &mut kefu::base::config::Config| config.llm.allow_private_addresses = true;
    let one = TestServer::start_cluster_node_with(tune, "127.0.0.1", &url, &nats.url()).await;
    let two = TestServer::start_cluster_node_with(tune, "127.0.0.1", &url, &nats.url()).await;
    let site = one.create_site("Shop").await;
    let admin = one.admin_token("boss@shop.example").await;

    // Twelve entries and the embeddings endpoint, set through the first node: it embeds each
    // entry once and stores the vectors in PostgreSQL.
    let fillers: String =
        (1..=10).map(|n| format!("Opening hours of branch {n}?,Branch {n} opens at {n} am.,Branches\n")).collect();
    import_csv(&one, &admin, &site, format!("{REFUND_ENTRIES_CSV}{fillers}")).await;
    let base_url = format!("http://{}/ok", embeddings.addr);
    let settings = serde_json::json!({"enabled": true, "threshold": 0.5, "embeddings": {"base_url": base_url, "model": "topics-1"}});
    assert_eq!(put_bot(&one, &admin, &site, settings).await.0, 200);
    let database = crate::support::postgres::connect(&url).await;
    let stored = async || database.query_one("SELECT count(*) FROM kb_vectors", &[]).await.unwrap().get::<_, i64>(0);
    wait_up_to("twelve stored vectors", Duration::from_secs(10), async || stored().await == 12).await;

    // A visitor on the second node is answered by meaning alone (no word in common with the
    // entry), from the stored vectors: no entry is embedded again.
    let ask = async |client_id: &str| {
        let (_, token) = two.visitor_session(&site, None).await;
        let mut visitor = two.visitor(&site, &token).await;
        visitor.say(None, client_id, "can I have my money back?").await;
        bot_message(&mut visitor).await
    };
    let mut attempt = 0;
    wait_up_to("an answer by meaning through the second node", Duration::from_secs(10), async || {
        attempt += 1;
        ask(&format!("v-{attempt}")).await["bot_source"]["kind"] == "kb"
    })
    .await;
    assert_eq!(ask("v-last").await["text"], "Refunds reach your card within 5 days.");
    let entries_embedded = embeddings.inputs.lock().iter().filter(|text| text.contains('\n')).count();
    assert_eq!(entries_embedded, 12, "each entry embedded once, by one node");

    // Deleting an entry through the second node removes its vector.
    let (status, _) = call(&two, "DELETE", "/api/v1/kb/1", &admin, None).await;
    assert_eq!(status, 204);
    assert_eq!(stored().await, 11);
}

#[tokio::test]
async fn what_a_node_does_not_serve_yet_is_refused_and_says_so() {
    use kefu::net::grpc::api::{self, events_client::EventsClient};
    let Some(url) = crate::support::postgres::database("nodes_refusals").await else { return };
    let Some(nats) = NatsServer::start("nodes_refusals") else { return };
    let with_grpc = |config: &mut kefu::base::config::Config| config.grpc.listen = Some("127.0.0.1:0".parse().unwrap());
    let node = TestServer::start_cluster_node_with(with_grpc, "127.0.0.1", &url, &nats.url()).await;
    let site = node.create_site("Shop").await;
    let new = kefu::people::api_tokens::NewApiToken {
        name: "CRM".into(),
        site: site.key.clone(),
        read_only: true,
        created_by: "root@kefu.example".into(),
    };
    let created = kefu::people::api_tokens::ApiTokenStore::create_token(&node.app().store, new).await.unwrap();
    let channel = tonic::transport::Channel::from_shared(node.grpc_url()).unwrap().connect().await.unwrap();
    let mut request = tonic::Request::new(api::SubscribeRequest { after: None });
    request.metadata_mut().insert("authorization", format!("Bearer {}", created.secret).parse().unwrap());
    let refused = EventsClient::new(channel).subscribe(request).await.expect_err("refused on a node");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("not available in cluster mode yet"), "{refused:?}");
}

#[tokio::test]
async fn admin_commands_through_a_nodes_control_socket_change_what_every_node_serves() {
    use kefu::net::control::{AdminCommand, send_to_server};
    let Some(url) = crate::support::postgres::database("nodes_admin_commands").await else { return };
    let Some(nats) = NatsServer::start("nodes_admin_commands") else { return };
    let one = TestServer::start_cluster_node(&url, &nats.url()).await;
    let two = TestServer::start_cluster_node(&url, &nats.url()).await;
    let socket_of = |node: &TestServer| node.dir.path().to_owned();
    let answer = async |node: &TestServer, command: AdminCommand| {
        send_to_server(&socket_of(node), &command).await.expect("the node's control socket answers")
    };

    // A site and an agent made through the first node's socket; the agent logs in through the
    // second node, and its password reset through the second ends that login everywhere.
    let site = answer(
        &one,
        AdminCommand::CreateSite(kefu::net::control::SiteArgs {
            name: "小店 Shop".into(),
            origins: vec!["*".into()],
            enforce_identity: false,
            sensitive_words: Vec::new(),
            sensitive_mode: kefu::chat::sensitive_words::SensitiveMode::Mask,
            welcome_text: None,
            prechat_form: false,
            satisfaction_rating: false,
        }),
    )
    .await
    .expect("create a site");
    let key = site["site_key"].as_str().unwrap().to_owned();
    let created = answer(
        &one,
        AdminCommand::CreateAgent {
            email: "ann@shop.example".into(),
            password: "first password 1".into(),
            name: "Ann".into(),
            role: kefu::people::agents::Role::Agent,
            sites: vec![key.clone()],
            capacity: 3,
        },
    )
    .await
    .expect("create an agent");
    assert!(created["agent_id"].as_u64().is_some(), "{created}");
    let token = two.login_with("ann@shop.example", "first password 1").await;
    let (status, _) = call(&two, "GET", "/api/v1/agent/me", &token, None).await;
    assert_eq!(status, 200);
    let reset = AdminCommand::ResetPassword { email: "ann@shop.example".into(), password: "second password 2".into() };
    answer(&two, reset).await.expect("reset the password");
    let (status, _) = call(&one, "GET", "/api/v1/agent/me", &token, None).await;
    assert_eq!(status, 401, "the reset ended the session on every node");
    two.login_with("ann@shop.example", "second password 2").await;

    // Lists and retention read and write the shared database; a refusal says why.
    let sites = answer(&two, AdminCommand::ListSites).await.expect("list sites");
    assert!(sites["sites"].as_array().unwrap().iter().any(|line| line.as_str().unwrap().starts_with(&key)), "{sites}");
    let agents = answer(&two, AdminCommand::ListAgents).await.expect("list agents");
    assert!(agents.to_string().contains("ann@shop.example"), "{agents}");
    answer(&two, AdminCommand::SetRetention { site: key.clone(), days: Some(30) }).await.expect("set retention");
    let database = crate::support::postgres::connect(&url).await;
    let row = database.query_one("SELECT record->>'retention_days' FROM sites WHERE key = $1", &[&key]).await.unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("30"));
    let refused = answer(&one, AdminCommand::SetRetention { site: "nope".into(), days: Some(3) }).await;
    assert!(refused.expect_err("an unknown site").contains("no site with key nope"));
    let refused = answer(&one, AdminCommand::Backup { path: one.dir.path().join("backup.redb") }).await;
    assert!(refused.expect_err("no redb backup on a node").contains("PostgreSQL"));
    let refused =
        answer(&one, AdminCommand::ResetPassword { email: "nobody@shop.example".into(), password: "x".repeat(12) })
            .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn the_history_export_through_any_node_holds_every_nodes_messages() {
    let Some(url) = crate::support::postgres::database("nodes_export").await else { return };
    let Some(nats) = NatsServer::start("nodes_export") else { return };
    let one = TestServer::start_cluster_node(&url, &nats.url()).await;
    let two = TestServer::start_cluster_node(&url, &nats.url()).await;
    let shop = one.create_site("小店 Shop").await;
    let other = one.create_site("Other").await;
    let admin = one.admin_token("boss@shop.example").await;
    let (mut visitor, _, conversation_id) = two.visitor_in_conversation(&shop, "你好，发票在哪里？").await;
    visitor.say(Some(conversation_id), "v-2", "=1+1 please").await;
    let (_elsewhere, _, other_conversation) = one.visitor_in_conversation(&other, "another site").await;
    let today = kefu::base::clock::day_to_date(kefu::base::clock::day_of(kefu::base::clock::now_millis()));
    let export = async |node: &TestServer, query: String| {
        let path = format!("/api/v1/export?{query}");
        let response = crate::support::http().get(node.url(&path)).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.text().await.unwrap()
    };

    // CSV through the first node: a header, then the shop's messages in order, formulas
    // neutralised, Chinese as it was; the other site's message left out by the filter.
    let csv = export(&one, format!("from={today}&to={today}&site={}&format=csv", shop.key)).await;
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("date,conversation_id,seq,site,visitor_id"), "{csv}");
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].contains(&format!("{today},{conversation_id},1,{}", shop.key)), "{csv}");
    assert!(lines[1].ends_with("你好，发票在哪里？"), "{csv}");
    assert!(lines[2].ends_with("'=1+1 please"), "{csv}");

    // JSON Lines through the second node: every site's messages, oldest day first, each
    // conversation's together.
    let jsonl = export(&two, format!("from={today}&to={today}&format=jsonl")).await;
    let rows: Vec<serde_json::Value> = jsonl.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let keys: Vec<(u64, u64)> =
        rows.iter().map(|row| (row["conversation_id"].as_u64().unwrap(), row["seq"].as_u64().unwrap())).collect();
    let mut expected = vec![(conversation_id, 1), (conversation_id, 2), (other_conversation, 1)];
    expected.sort();
    assert_eq!(keys, expected, "{jsonl}");
    assert!(rows.iter().all(|row| row["date"] == today && row["sender_kind"] == "visitor"), "{jsonl}");

    // A range without messages is a header alone; a bad range is refused.
    let empty = export(&one, "from=2000-01-01&to=2000-01-02&format=csv".to_owned()).await;
    assert_eq!(empty.lines().count(), 1, "{empty}");
    let (status, body) = call(&one, "GET", "/api/v1/export?from=2026-02-01&to=2026-01-01", &admin, None).await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn an_agent_enrolled_through_one_node_logs_in_with_a_code_through_another_once() {
    let Some(url) = crate::support::postgres::database("nodes_two_factor").await else { return };
    let Some(nats) = NatsServer::start("nodes_two_factor") else { return };
    let one = TestServer::start_cluster_node(&url, &nats.url()).await;
    let two = TestServer::start_cluster_node(&url, &nats.url()).await;
    let site = one.create_site("Shop").await;
    one.create_agent("wang@shop.example", &site, 3).await;
    let token = one.login("wang@shop.example").await;
    let (secret, recovery_codes) = crate::account::enrol(&one, &token).await;

    // The password through the second node opens no session; a wrong code through the first
    // changes nothing; the right one makes the ticket a session every node accepts, once.
    let (status, first_step) = crate::account::login(&two, "wang@shop.example", crate::support::PASSWORD).await;
    assert_eq!((status.as_u16(), first_step["next"].as_str()), (200, Some("code")), "{first_step}");
    let ticket = first_step["ticket"].as_str().unwrap().to_owned();
    let (status, _) = call(&two, "GET", "/api/v1/agent/me", &ticket, None).await;
    assert_eq!(status, 401, "a ticket is not a session");
    let next_code = crate::account::code(&secret, 1);
    let wrong = if next_code == "000000" { "111111" } else { "000000" };
    assert_eq!(crate::account::give_code(&one, &ticket, wrong).await.0.as_u16(), 401);
    let (status, body) = crate::account::give_code(&one, &ticket, &next_code).await;
    assert_eq!(status.as_u16(), 200, "{body}");
    let (status, me) = call(&two, "GET", "/api/v1/agent/me", &ticket, None).await;
    assert_eq!((status.as_u16(), me["two_factor"].as_bool()), (200, Some(true)), "{me}");
    let (_, again) = crate::account::login(&one, "wang@shop.example", crate::support::PASSWORD).await;
    let again = again["ticket"].as_str().unwrap();
    assert_eq!(crate::account::give_code(&two, again, &next_code).await.0.as_u16(), 401, "a used code");
    let (status, _) = crate::account::give_code(&two, again, &recovery_codes[0]).await;
    assert_eq!(status.as_u16(), 200, "a recovery code, once");
    let (_, third) = crate::account::login(&one, "wang@shop.example", crate::support::PASSWORD).await;
    let third = third["ticket"].as_str().unwrap();
    assert_eq!(crate::account::give_code(&one, third, &recovery_codes[0]).await.0.as_u16(), 401, "used up");
}

#[tokio::test]
async fn an_agents_picture_set_through_one_node_is_served_by_another_and_replaced_whole() {
    let Some(url) = crate::support::postgres::database("nodes_avatar").await else { return };
    let Some(nats) = NatsServer::start("nodes_avatar") else { return };
    let one = TestServer::start_cluster_node(&url, &nats.url()).await;
    let two = TestServer::start_cluster_node(&url, &nats.url()).await;
    let site = one.create_site("Shop").await;
    let agent_id = one.create_agent("wang@shop.example", &site, 3).await;
    let token = one.login("wang@shop.example").await;

    let (status, body) = crate::account::put_avatar(&one, &token, b"just text").await;
    assert_eq!(status.as_u16(), 415, "{body}");
    let (status, me) = crate::account::put_avatar(&one, &token, crate::account::PNG).await;
    assert_eq!(status.as_u16(), 200, "{me}");
    let first = me["avatar_url"].as_str().unwrap().to_owned();
    let picture = crate::support::http().get(two.url(&first)).send().await.unwrap();
    assert_eq!(picture.headers()["content-type"], "image/png");
    assert_eq!(picture.bytes().await.unwrap().as_ref(), crate::account::PNG);

    // A second picture through the other node replaces the first, whose upload goes.
    let (_, me) = crate::account::put_avatar(&two, &token, crate::account::PNG).await;
    assert_ne!(me["avatar_url"].as_str().unwrap(), first);
    let database = crate::support::postgres::connect(&url).await;
    let uploads: i64 = database.query_one("SELECT count(*) FROM uploads", &[]).await.unwrap().get(0);
    assert_eq!(uploads, 1, "the first picture's upload is gone");
    let (status, me) = call(&one, "DELETE", "/api/v1/agent/avatar", &token, None).await;
    assert_eq!(
        (status.as_u16(), me["avatar_url"].as_str()),
        (200, Some(format!("/api/v1/agents/{agent_id}/avatar?v=0").as_str()))
    );
}

#[tokio::test]
async fn a_bot_only_conversation_left_idle_is_closed_once_by_nodes_sweeping_at_once() {
    let Some(url) = crate::support::postgres::database("nodes_bot_idle").await else { return };
    let Some(nats) = NatsServer::start("nodes_bot_idle") else { return };
    let one = TestServer::start_cluster_node(&url, &nats.url()).await;
    let two = TestServer::start_cluster_node(&url, &nats.url()).await;
    let site = one.create_site("Shop").await;
    let admin = one.admin_token("boss@shop.example").await;
    let path = format!("/api/v1/sites/{}/bot", site.key);
    let (status, body) = call(&one, "PUT", &path, &admin, Some(serde_json::json!({"enabled": true}))).await;
    assert_eq!(status, 200, "{body}");
    let (_, token) = two.visitor_session(&site, None).await;
    let mut visitor = two.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v-1", "运费多少？").await["conversation_id"].as_u64().unwrap();

    // Both nodes sweep at once, before and after the site's 30 idle minutes: it closes once.
    let now = kefu::base::clock::now_millis();
    let sweep = |node: &TestServer, at: i64| {
        let app = node.app().clone();
        async move { kefu::bot::lifecycle::close_idle(&app.store, &app.bot, at).await.unwrap() }
    };
    let (early_one, early_two) = tokio::join!(sweep(&one, now + 29 * 60_000), sweep(&two, now + 29 * 60_000));
    assert_eq!((early_one, early_two), (0, 0));
    let (late_one, late_two) = tokio::join!(sweep(&one, now + 31 * 60_000), sweep(&two, now + 31 * 60_000));
    assert_eq!(late_one + late_two, 1, "closed once in all");
    let closed = loop {
        let frame = visitor.expect("conversation").await;
        if frame["event"] == "closed" {
            break frame;
        }
    };
    assert_eq!(
        (closed["conversation"]["id"].as_u64(), closed["conversation"]["assigned_agent"].as_u64()),
        (Some(conversation_id), None)
    );
}

#[tokio::test]
async fn a_visitors_data_written_through_one_node_is_exported_whole_through_another() {
    let Some(url) = crate::support::postgres::database("nodes_visitor_export").await else { return };
    let Some(nats) = NatsServer::start("nodes_visitor_export") else { return };
    let one = TestServer::start_cluster_node(&url, &nats.url()).await;
    let two = TestServer::start_cluster_node(&url, &nats.url()).await;
    let site = one.create_site("Shop").await;
    let admin = one.admin_token("boss@shop.example").await;

    // The visitor writes through the second node, attaches a file and leaves an offline message.
    let (visitor_id, token) = two.visitor_session(&site, None).await;
    let mut visitor = two.visitor(&site, &token).await;
    let ack = visitor.say(None, "v-1", "我的订单号是 8848").await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();
    let file: &[u8] = "发票 invoice 2026".as_bytes();
    let upload = crate::support::http()
        .post(two.url(&format!("/api/v1/uploads?conversation_id={conversation_id}&name=invoice.txt")))
        .bearer_auth(&token)
        .body(file.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    let upload: serde_json::Value = upload.json().await.unwrap();
    let offline = serde_json::json!({"name": "Zoe", "email": "zoe@example.com", "text": "请回电"});
    let (status, _) = call(&two, "POST", "/api/v1/visitor/offline-messages", &token, Some(offline)).await;
    assert_eq!(status, 201);

    // The export through the first node holds all of it, and the file's bytes.
    let path = format!("/api/v1/visitors/{visitor_id}/data");
    let response = crate::support::http().get(one.url(&path)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-tar");
    let archive = response.bytes().await.unwrap();
    let mut files = Vec::new();
    for entry in tar::Archive::new(archive.as_ref()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        files.push((name, bytes));
    }
    let (_, json) = files.iter().find(|(name, _)| name == "visitor.json").expect("visitor.json");
    let data: serde_json::Value = serde_json::from_slice(json).unwrap();
    assert_eq!(data["visitor"]["id"], visitor_id);
    let texts: Vec<&str> =
        data["conversations"][0]["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["我的订单号是 8848", "请回电"]);
    assert_eq!(data["offline_messages"][0]["email"], "zoe@example.com");
    assert_eq!(data["leads"][0]["source"], "offline_message");
    assert_eq!(data["attachments"][0]["name"], "invoice.txt");
    let attachment = format!("attachments/{}", upload["id"].as_str().unwrap());
    assert_eq!(files.iter().find(|(name, _)| *name == attachment).map(|(_, bytes)| bytes.as_slice()), Some(file));

    // An unknown visitor is not found; a visitor's own token reaches nobody's data.
    let (status, _) = call(&one, "GET", "/api/v1/visitors/999999/data", &admin, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&one, "GET", &path, &token, None).await;
    assert!(status == 401 || status == 403, "{status}");
}

#[tokio::test]
async fn a_visitors_data_is_erased_through_one_node_and_their_connection_on_another_ends() {
    let Some(url) = crate::support::postgres::database("nodes_visitor_erase").await else { return };
    let Some(nats) = NatsServer::start("nodes_visitor_erase") else { return };
    let one = TestServer::start_cluster_node(&url, &nats.url()).await;
    let two = TestServer::start_cluster_node(&url, &nats.url()).await;
    let site = one.create_site("Shop").await;
    let admin = one.admin_token("boss@shop.example").await;
    let receiver = crate::webhooks::receiver(0).await;
    let events = serde_json::json!(["message.created", "conversation.created", "offline_message.received"]);
    let body = serde_json::json!({"url": receiver.url, "events": events, "allow_private": true});
    assert_eq!(crate::webhooks::create_webhook(&one, &admin, &site.key, body).await.status(), 201);

    // The visitor writes through the second node, attaches a file, leaves an offline message
    // with their address; another visitor writes too.
    let (visitor_id, token) = two.visitor_session(&site, None).await;
    let mut visitor = two.visitor(&site, &token).await;
    let ack = visitor.say(None, "v-1", "我的订单号是 zebra8848").await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();
    let upload = crate::support::http()
        .post(two.url(&format!("/api/v1/uploads?conversation_id={conversation_id}&name=invoice.txt")))
        .bearer_auth(&token)
        .body("发票 invoice".as_bytes().to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    let offline = serde_json::json!({"name": "Zoe", "email": "zoe@example.com", "text": "请回电 zebra8848"});
    let (status, _) = call(&two, "POST", "/api/v1/visitor/offline-messages", &token, Some(offline)).await;
    assert_eq!(status, 201);
    let (_keeper, _, kept_conversation) = one.visitor_in_conversation(&site, "keep me zebra8848").await;
    let database = crate::support::postgres::connect(&url).await;
    let count = async |statement: &str| database.query_one(statement, &[]).await.unwrap().get::<_, i64>(0);
    // Webhook rows (rendered, or written by the database with what they are about) and emails.
    let outbox_about_them = format!(
        "SELECT count(*) FROM outbox WHERE content::text LIKE '%zoe@example.com%'
            OR content #>> '{{about,message,conversation_id}}' = '{conversation_id}'
            OR content #>> '{{about,conversation,visitor_id}}' = '{visitor_id}'
            OR (content->>'payload' LIKE '{{%' AND (
                (content->>'payload')::jsonb #>> '{{data,message,conversation_id}}' = '{conversation_id}'
                OR (content->>'payload')::jsonb #>> '{{data,conversation,id}}' = '{conversation_id}'
                OR (content->>'payload')::jsonb #>> '{{data,offline_message,visitor_id}}' = '{visitor_id}'))"
    );
    assert!(count(&outbox_about_them).await >= 3, "the webhook rows about the visitor are written");
    // The webhook rows and the agents' email about the offline message are written.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count("SELECT count(*) FROM outbox WHERE content::text LIKE '%zoe@example.com%'").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no email about the offline message");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Erased through the first node: everything of theirs goes, in one transaction.
    let path = format!("/api/v1/visitors/{visitor_id}/data");
    let (status, erased) = call(&one, "DELETE", &path, &admin, None).await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(
        (
            &erased["conversations"],
            &erased["messages"],
            &erased["attachments"],
            &erased["offline_messages"],
            &erased["leads"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "{erased}"
    );
    assert!(erased["webhook_deliveries"].as_u64().unwrap() >= 3, "{erased}");
    assert!(erased["emails"].as_u64().unwrap() >= 1, "{erased}");

    // Their live connection, on the other node, is told and closed.
    loop {
        let frame = visitor.next_with_status().await;
        if frame["type"] == "error" {
            assert_eq!(frame["message"], "your data was erased", "{frame}");
            break;
        }
    }
    assert_eq!(visitor.expect_close().await, 4001);
    for (table, statement) in [
        ("visitors", format!("SELECT count(*) FROM visitors WHERE id = {visitor_id}")),
        ("tokens", format!("SELECT count(*) FROM visitor_tokens WHERE (record #>> '{{}}')::bigint = {visitor_id}")),
        ("conversations", format!("SELECT count(*) FROM conversations WHERE visitor_id = {visitor_id}")),
        ("messages", format!("SELECT count(*) FROM messages WHERE conversation_id = {conversation_id}")),
        ("uploads", format!("SELECT count(*) FROM uploads WHERE conversation_id = {conversation_id}")),
        ("upload contents", "SELECT count(*) FROM upload_contents".to_owned()),
        ("leads", format!("SELECT count(*) FROM leads WHERE (record->>'visitor_id')::bigint = {visitor_id}")),
        ("outbox", outbox_about_them.clone()),
    ] {
        assert_eq!(count(&statement).await, 0, "{table} of the erased visitor");
    }
    assert_eq!(count(&format!("SELECT count(*) FROM messages WHERE conversation_id = {kept_conversation}")).await, 1);

    // Search through either node finds the other visitor's message alone; the data is gone.
    for node in [&one, &two] {
        let (status, found) = call(node, "GET", "/api/v1/search?q=zebra8848", &admin, None).await;
        assert_eq!(status, 200, "{found}");
        let texts: Vec<&str> =
            found["hits"].as_array().unwrap().iter().map(|hit| hit["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["keep me zebra8848"], "{found}");
        let (status, _) = call(node, "GET", &path, &admin, None).await;
        assert_eq!(status, 404);
    }
    let (status, _) = call(&two, "DELETE", &path, &admin, None).await;
    assert_eq!(status, 404, "erased once");
    let (status, _) = call(&two, "DELETE", "/api/v1/visitors/999999999/data", &admin, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_console_sees_the_presence_of_agents_connected_through_another_node_change() {
    let Some(url) = crate::support::postgres::database("nodes_presence_frames").await else { return };
    let Some(nats) = NatsServer::start("nodes_presence_frames") else { return };
    let one = TestServer::start_cluster_node(&url, &nats.url()).await;
    let two = TestServer::start_cluster_node(&url, &nats.url()).await;
    let site = one.create_site("Shop").await;
    let ann = one.create_agent("ann@shop.example", &site, 5).await;
    two.create_agent("bo@shop.example", &site, 5).await;
    let mut bo = two.agent(&two.login("bo@shop.example").await).await;

    // Ann's console opens through the first node; Bo's, on the second, is told she is online,
    // then away when she says so, within a couple of the nodes' presence rounds.
    let mut ann_console = one.agent(&one.login("ann@shop.example").await).await;
    let presence_of_ann = async |console: &mut crate::support::Client| loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), console.expect("presence")).await.expect("in time");
        if frame["agent_id"] == ann {
            return frame["status"].as_str().unwrap().to_owned();
        }
    };
    assert_eq!(presence_of_ann(&mut bo).await, "online");
    ann_console.send(serde_json::json!({"type": "presence", "status": "away"})).await;
    assert_eq!(presence_of_ann(&mut bo).await, "away");
}

#[tokio::test]
async fn an_agent_who_moved_to_another_node_keeps_their_conversation_until_gone_from_both() {
    let Some(url) = crate::support::postgres::database("nodes_grace").await else { return };
    let Some(nats) = NatsServer::start("nodes_grace") else { return };
    fn one_second_grace(config: &mut kefu::base::config::Config) {
        config.routing.offline_grace_secs = 1;
    }
    let a = TestServer::start_cluster_node_with(one_second_grace, "127.0.0.1", &url, &nats.url()).await;
    let b = TestServer::start_cluster_node_with(one_second_grace, "127.0.0.1", &url, &nats.url()).await;
    let site = a.create_site("Shop").await;
    let agent_id = a.create_agent("ann@shop.example", &site, 5).await;
    let token = a.login("ann@shop.example").await;
    let mut on_a = a.agent(&token).await;
    let (_visitor, _, conversation_id) = a.visitor_in_conversation(&site, "你好").await;
    on_a.expect_conversation_event(conversation_id, "assigned").await;
    let holder = async || {
        let conversation = kefu::chat::message_store::MessageStore::conversation(&b.app().store, conversation_id);
        conversation.await.unwrap().unwrap().assigned_agent
    };

    // The agent's console reloads through another node: node A's grace ends while they are
    // online on B, and the conversation stays theirs.
    let on_b = b.agent(&token).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    drop(on_a);
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    assert_eq!(holder().await, Some(agent_id));

    // Gone from both: the grace ends on B, and the conversation goes back to the queue.
    drop(on_b);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while holder().await.is_some() {
        assert!(std::time::Instant::now() < deadline, "the conversation was not released");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! The admin pages through their real HTTP interface: who may use them, CSRF, sites (secret
//! rotation, business hours, routing rules), agents, teams, canned replies, blocks, audit log.

use kefu::people::agents::{self, Role};
use kefu::sites::Site;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestServer, http};

pub(crate) const ADMIN: &str = "boss@shop.example";

/// A client that shows redirects instead of following them.
pub(crate) fn client() -> reqwest::Client {
    let _ = http();
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

/// An admin's session: the token, sent as a bearer token, and the CSRF token of its forms.
pub(crate) struct Admin {
    pub(crate) token: String,
    pub(crate) csrf: String,
}

impl Admin {
    pub(crate) async fn log_in(server: &TestServer) -> Admin {
        let token = server.login(ADMIN).await;
        Admin { csrf: kefu::net::admin::csrf_token(&token), token }
    }

    pub(crate) async fn get(&self, server: &TestServer, path: &str) -> (StatusCode, String) {
        self.get_in(server, path, "").await
    }

    /// A page asked for in the browser language `accept_language` (none when empty).
    pub(crate) async fn get_in(&self, server: &TestServer, path: &str, accept_language: &str) -> (StatusCode, String) {
        let mut request = client().get(server.url(path)).bearer_auth(&self.token);
        if !accept_language.is_empty() {
            request = request.header("accept-language", accept_language);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Posts a form with the CSRF token; returns the status, the redirect target and the body.
    pub(crate) async fn post(
        &self,
        server: &TestServer,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, String, String) {
        self.post_in(server, path, fields, "").await
    }

    /// [`Admin::post`] from a browser in the language `accept_language` (none when empty).
    pub(crate) async fn post_in(
        &self,
        server: &TestServer,
        path: &str,
        fields: &[(&str, &str)],
        accept_language: &str,
    ) -> (StatusCode, String, String) {
        let mut fields = fields.to_vec();
        fields.push(("csrf", &self.csrf));
        let mut request = client().post(server.url(path)).bearer_auth(&self.token).form(&fields);
        if !accept_language.is_empty() {
            request = request.header("accept-language", accept_language);
        }
        let response = request.send().await.unwrap();
        let location =
            response.headers().get("location").map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default();
        (response.status(), location, response.text().await.unwrap())
    }
}

async fn stored_site(server: &TestServer, key: &str) -> Site {
    let key = key.to_owned();
    server.store().read(move |transaction| kefu::sites::get(transaction, &key)).await.unwrap().unwrap()
}

/// The fields of the site form as a browser sends them for `site`, with `changes` applied.
fn site_fields<'a>(site: &'a Site, changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
    let mut fields: Vec<(&str, String)> = vec![
        ("name", site.name.clone()),
        ("allowed_origins", site.allowed_origins.join("\n")),
        ("welcome_text", site.welcome_text.clone()),
        ("color", site.color.clone()),
        ("position", site.position.clone()),
        ("sensitive_mode", "mask".into()),
        ("sensitive_words", site.sensitive_words.join("\n")),
        ("retention_days", String::new()),
        ("time_zone", site.business_hours.time_zone.clone()),
        ("holidays", String::new()),
        ("default_team", String::new()),
    ];
    // Changed fields replace the stored ones; a name may repeat (rule rows), kept in order.
    fields.retain(|(field, _)| !changes.iter().any(|(name, _)| name == field));
    fields.extend(changes.iter().map(|(name, value)| (*name, (*value).to_owned())));
    fields
}

async fn save_site(server: &TestServer, admin: &Admin, site: &Site, changes: &[(&str, &str)]) -> (StatusCode, String) {
    let fields = site_fields(site, changes);
    let borrowed: Vec<(&str, &str)> = fields.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let (status, _, body) = admin.post(server, &format!("/admin/sites/{}", site.key), &borrowed).await;
    (status, body)
}

/// Everything the admin pages change, as text.
async fn snapshot(server: &TestServer) -> String {
    let state = server.store().read(|transaction| {
        Ok(format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            kefu::sites::list(transaction)?,
            kefu::people::agents::list(transaction)?,
            kefu::people::teams::list(transaction)?,
            kefu::people::blocking::blocked_visitors(transaction)?,
            kefu::people::blocking::blocked_addresses(transaction)?,
            kefu::history::audit::search(transaction, &kefu::history::audit::AuditFilter::default())?.len(),
            kefu::chat::canned_replies::of_site(transaction, "")?,
        ) + &kefu::sites::list(transaction)?
            .iter()
            .map(|site| Ok(format!("\n{:?}", kefu::bot::knowledge_base::list(transaction, &site.key)?)))
            .collect::<Result<String, kefu::storage::StorageError>>()?)
    });
    state.await.unwrap()
}

#[tokio::test]
async fn only_admins_reach_admin_routes_and_refusals_change_nothing() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let agent_id = server.create_agent("ann@shop.example", &site, 2).await;
    server.create_admin(ADMIN).await;
    let agent_token = server.login("ann@shop.example").await;
    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let admin = Admin::log_in(&server).await;
    let before = snapshot(&server).await;

    for (method, route) in kefu::net::admin::ROUTES {
        let path = route.replace("{key}", &site.key).replace("{id}", &agent_id.to_string());
        let request = |token: Option<&str>| {
            let builder = match *method {
                "GET" => client().get(server.url(&path)),
                _ => client()
                    .post(server.url(&path))
                    .form(&[("csrf", kefu::net::admin::csrf_token(token.unwrap_or("")))]),
            };
            match token {
                Some(token) => builder.bearer_auth(token),
                None => builder,
            }
        };
        let anonymous = request(None).send().await.unwrap();
        if *method == "GET" {
            assert_eq!(anonymous.status(), StatusCode::SEE_OTHER, "anonymous {method} {path}");
            assert!(anonymous.headers()["location"].to_str().unwrap().starts_with("/admin/login?next="));
        } else {
            assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "anonymous {method} {path}");
        }
        for (who, token) in [("visitor", &visitor_token), ("agent", &agent_token)] {
            let response = request(Some(token)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{who} {method} {path}");
        }
        if *method == "GET" {
            // Ids in paths are placeholders: an admin gets the page or a plain 404.
            let status = request(Some(&admin.token)).send().await.unwrap().status();
            assert!(
                status.is_success() || status.is_redirection() || status == StatusCode::NOT_FOUND,
                "admin GET {path}"
            );
        }
    }
    assert_eq!(before, snapshot(&server).await, "refused requests changed what admins manage");
}

#[tokio::test]
async fn forms_need_the_sessions_csrf_token_and_kefus_own_origin() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    let path = format!("/admin/sites/{}/rotate-secret", site.key);

    let missing = client().post(server.url(&path)).bearer_auth(&admin.token).form(&[("x", "1")]).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    assert!(missing.text().await.unwrap().contains("This form has expired"));
    let other_session = kefu::net::admin::csrf_token("a1.someone-else");
    let wrong = client().post(server.url(&path)).bearer_auth(&admin.token).form(&[("csrf", other_session)]).send();
    assert_eq!(wrong.await.unwrap().status(), StatusCode::FORBIDDEN);
    let cross_site = client()
        .post(server.url(&path))
        .bearer_auth(&admin.token)
        .header("origin", "https://evil.example")
        .form(&[("csrf", admin.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert_eq!(stored_site(&server, &site.key).await.secret, site.secret, "a refused form changed the secret");

    // The login form sets the cookie the pages then accept, and the forms work with it.
    let login = client()
        .post(server.url("/admin/login"))
        .form(&[("email", ADMIN), ("password", PASSWORD), ("next", "/admin/agents")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(login.headers()["location"], "/admin/agents");
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = client().get(server.url("/admin/agents")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("form-action 'self'"));
    let html = page.text().await.unwrap();
    let session = cookie.split_once('=').unwrap().1;
    assert!(html.contains(&kefu::net::admin::csrf_token(session)), "the page carries the session's CSRF token");

    // A wrong password keeps the email typed and says what went wrong; an agent is refused.
    let wrong = client()
        .post(server.url("/admin/login"))
        .form(&[("email", ADMIN), ("password", "nope nope nope"), ("next", "https://evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let html = wrong.text().await.unwrap();
    assert!(html.contains("Wrong email or password") && html.contains(ADMIN));
    assert!(html.contains(r#"name="next" value="/admin""#), "only admin paths are followed after login");
}

#[tokio::test]
async fn sites_are_created_edited_with_clear_errors_and_deleted() {
    let server = TestServer::start().await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;

    let (status, location, _) = admin
        .post(
            &server,
            "/admin/sites/new",
            &[
                ("name", "Shop <b>One</b>"),
                ("color", "#00aa00"),
                ("position", "left"),
                ("sensitive_mode", "mask"),
                ("time_zone", "UTC"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let key = location.trim_start_matches("/admin/sites/").split('?').next().unwrap().to_owned();
    let site = stored_site(&server, &key).await;
    assert_eq!(
        (site.name.as_str(), site.color.as_str(), site.position.as_str()),
        ("Shop <b>One</b>", "#00aa00", "left")
    );
    let (status, page) = admin.get(&server, &location).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Shop &#60;b&#62;One&#60;/b&#62;") || page.contains("Shop &lt;b&gt;One&lt;/b&gt;"),
        "names are escaped"
    );
    assert!(!page.contains("<b>One</b>"));
    let snippet = kefu::sites::embed_snippet(&server.url(""), &key);
    assert!(
        page.contains(&snippet.replace('<', "&#60;").replace('>', "&#62;").replace('"', "&#34;"))
            || page.contains(&snippet.replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")),
        "the page shows the embed snippet"
    );

    // Every invalid value is named, what was typed is kept, and nothing is saved.
    let (status, page) = save_site(
        &server,
        &admin,
        &site,
        &[
            ("name", ""),
            ("allowed_origins", "shop.example/path"),
            ("color", "green"),
            ("time_zone", "Mars/Olympus"),
            ("open_0", "9am"),
            ("close_0", "18:00"),
            ("holidays", "Christmas"),
            ("retention_days", "-3"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for expected in
        ["Name:", "Allowed origins:", "Colour:", "Time zone:", "Monday: times look like", "Holidays:", "Retention:"]
    {
        assert!(page.contains(expected), "the page names {expected}");
    }
    assert!(
        page.contains("value=\"green\"") && page.contains("Mars/Olympus") && page.contains("9am"),
        "typed values are kept"
    );
    assert_eq!(stored_site(&server, &key).await.color, "#00aa00");

    let (status, _) = save_site(
        &server,
        &admin,
        &site,
        &[
            ("allowed_origins", "https://shop.example"),
            ("sensitive_words", "darn\nheck"),
            ("sensitive_mode", "reject"),
            ("welcome_text", "你好!"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let saved = stored_site(&server, &key).await;
    assert_eq!(saved.allowed_origins, ["https://shop.example"]);
    assert_eq!(saved.sensitive_words, ["darn", "heck"]);
    assert_eq!(saved.welcome_text, "你好!");
    assert_eq!(saved.secret, site.secret, "saving the form keeps the secret");

    // The words list applies at once: a visitor's message with a word is refused.
    let (_, token) = server.visitor_session(&saved, None).await;
    let mut visitor = server.visitor(&saved, &token).await;
    visitor.send(json!({"type": "send", "client_id": "w-1", "text": "oh heck"})).await;
    assert_eq!(visitor.expect("error").await["code"], "rejected_content");

    let (status, _, _) = admin.post(&server, &format!("/admin/sites/{key}/delete"), &[("confirm", "wrong")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, location, _) = admin.post(&server, &format!("/admin/sites/{key}/delete"), &[("confirm", &key)]).await;
    assert_eq!((status, location.starts_with("/admin/sites?done=")), (StatusCode::SEE_OTHER, true));
    let widget = http().get(server.url(&format!("/api/v1/sites/{key}/widget"))).send().await.unwrap();
    assert_eq!(widget.status(), StatusCode::NOT_FOUND);
    let (status, _) = admin.get(&server, &format!("/admin/sites/{key}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_rotated_secret_stops_the_old_one_from_signing() {
    let server = TestServer::start().await;
    let site = server
        .create_site_with(kefu::sites::NewSite { name: "Signed".into(), enforce_identity: true, ..Default::default() })
        .await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    let open = |secret: String| {
        let signature = kefu::base::secrets::hmac_sha256_hex(secret.as_bytes(), b"customer-7");
        http()
            .post(server.url("/api/v1/visitor/session"))
            .json(&json!({"site": site.key, "user": {"id": "customer-7", "signature": signature}}))
            .send()
    };
    assert_eq!(open(site.secret.clone()).await.unwrap().status(), StatusCode::OK);

    let (status, _, _) = admin.post(&server, &format!("/admin/sites/{}/rotate-secret", site.key), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let rotated = stored_site(&server, &site.key).await;
    assert_ne!(rotated.secret, site.secret);
    let refused = open(site.secret.clone()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "invalid_signature");
    assert_eq!(open(rotated.secret.clone()).await.unwrap().status(), StatusCode::OK);
    let (_, page) = admin.get(&server, "/admin/audit?action=rotate").await;
    assert!(page.contains("site.rotate_secret") && page.contains(ADMIN));
}

#[tokio::test]
async fn business_hours_decide_whether_the_widget_offers_a_live_chat() {
    let server = TestServer::start().await;
    let site = server.create_site("Hours").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    let open_now = || async {
        let response = http().get(server.url(&format!("/api/v1/sites/{}/widget", site.key))).send().await.unwrap();
        response.json::<Value>().await.unwrap()["open_now"].as_bool().unwrap()
    };
    assert!(open_now().await, "without business hours a site is always open");

    // Open all day every day in Shanghai: open now.
    let all_day: Vec<(String, String)> = (0..7)
        .flat_map(|day| [(format!("open_{day}"), "00:00".to_owned()), (format!("close_{day}"), "24:00".to_owned())])
        .collect();
    let mut changes: Vec<(&str, &str)> = all_day.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    changes.extend([("hours_enabled", "on"), ("time_zone", "Asia/Shanghai")]);
    assert_eq!(save_site(&server, &admin, &site, &changes).await.0, StatusCode::SEE_OTHER);
    assert!(open_now().await);

    // Today in Shanghai is a holiday: closed, without a restart.
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap()).date().to_string();
    changes.push(("holidays", &today));
    assert_eq!(save_site(&server, &admin, &site, &changes).await.0, StatusCode::SEE_OTHER);
    assert!(!open_now().await, "a holiday in the site's time zone closes the whole local day");

    // Every day closed: closed.
    let closed = [("hours_enabled", "on"), ("time_zone", "Europe/Berlin")];
    assert_eq!(save_site(&server, &admin, &site, &closed).await.0, StatusCode::SEE_OTHER);
    assert!(!open_now().await);
}

/// Waits until `conversation_id` is assigned, as seen on an agent's connection; returns the agent.
async fn holder_of(agent: &mut crate::support::Client, conversation_id: u64) -> u64 {
    loop {
        let event = agent.expect("conversation").await;
        if event["event"] == "assigned" && event["conversation"]["id"] == conversation_id {
            return event["conversation"]["assigned_agent"].as_u64().unwrap();
        }
    }
}

#[tokio::test]
async fn routing_rules_send_first_messages_to_teams_by_keyword_category_and_default() {
    let server = TestServer::start().await;
    let site = server.create_site("Routed").await;
    let ann = server.create_agent("ann@shop.example", &site, 5).await;
    let bob = server.create_agent("bob@shop.example", &site, 5).await;
    let cat = server.create_agent("cat@shop.example", &site, 5).await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    let ann_text = ann.to_string();
    let bob_text = bob.to_string();
    let cat_text = cat.to_string();
    for (name, member) in [("Billing", &ann_text), ("Shipping", &bob_text), ("Front desk", &cat_text)] {
        let (status, _, body) =
            admin.post(&server, "/admin/teams", &[("site", &site.key), ("name", name), ("members", member)]).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    }
    let teams = server.store().read(kefu::people::teams::list).await.unwrap();
    let team_id = |name: &str| teams.iter().find(|team| team.name == name).unwrap().id.to_string();
    let (billing, shipping, front_desk) = (team_id("Billing"), team_id("Shipping"), team_id("Front desk"));

    // A knowledge-base entry of category "Delivery" for the category rule.
    let entry = kefu::bot::knowledge_base::EntryInput {
        questions: vec!["where is my parcel".into()],
        answer: "It is on its way.".into(),
        category: "Delivery".into(),
        ..Default::default()
    };
    kefu::bot::knowledge_base::store::KnowledgeBaseStore::create_many(server.store(), site.key.clone(), vec![entry])
        .await
        .unwrap();
    server.app().bot.knowledge().reload(&site.key).await.unwrap();

    let (status, body) = save_site(
        &server,
        &admin,
        &site,
        &[
            ("rule_kind", "keywords"),
            ("rule_value", "refund, 退款"),
            ("rule_team", &billing),
            ("rule_kind", "category"),
            ("rule_value", "Delivery"),
            ("rule_team", &shipping),
            ("default_team", &front_desk),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");

    let mut watcher = server.agent(&server.login("cat@shop.example").await).await;
    let _ann_socket = server.agent(&server.login("ann@shop.example").await).await;
    let _bob_socket = server.agent(&server.login("bob@shop.example").await).await;
    let first_messages =
        [("我要退款谢谢", ann), ("Where is my parcel?", bob), ("hello there", cat), ("I want a REFUND", ann)];
    for (n, (text, expected)) in first_messages.into_iter().enumerate() {
        let (_, token) = server.visitor_session(&site, None).await;
        let mut visitor = server.visitor(&site, &token).await;
        let conversation_id = visitor.say(None, &format!("first-{n}"), text).await["conversation_id"].as_u64().unwrap();
        assert_eq!(holder_of(&mut watcher, conversation_id).await, expected, "{text:?}");
    }

    // A rule naming another site's team is refused with the field named.
    let other = server.create_site("Other").await;
    let (status, _, _) = admin.post(&server, "/admin/teams", &[("site", &other.key), ("name", "Elsewhere")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let elsewhere = server
        .store()
        .read(kefu::people::teams::list)
        .await
        .unwrap()
        .into_iter()
        .find(|team| team.name == "Elsewhere")
        .unwrap();
    let (status, body) = save_site(
        &server,
        &admin,
        &site,
        &[("rule_kind", "keywords"), ("rule_value", "x"), ("rule_team", &elsewhere.id.to_string())],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("not a team of this site"));

    // Deleting a team removes the rules that name it.
    let (status, _, _) = admin.post(&server, &format!("/admin/teams/{billing}/delete"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let stored = stored_site(&server, &site.key).await;
    assert_eq!(stored.routing_rules.len(), 1);
    assert_eq!(stored.default_team.map(|team| team.to_string()), Some(front_desk));
}

#[tokio::test]
async fn agents_are_created_changed_disabled_and_given_new_passwords() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;

    let (status, _, page) = admin
        .post(
            &server,
            "/admin/agents",
            &[
                ("email", "dan@shop.example"),
                ("name", "Dan"),
                ("role", "agent"),
                ("capacity", "3"),
                ("sites", &site.key),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let password =
        page.split("<code class=\"created-password\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    let login = |password: String| {
        http()
            .post(server.url("/api/v1/agent/login"))
            .json(&json!({"email": "dan@shop.example", "password": password}))
            .send()
    };
    assert_eq!(login(password.clone()).await.unwrap().status(), StatusCode::OK);

    // A duplicate email and a bad capacity are named, with the typed values kept.
    let (status, _, page) = admin
        .post(
            &server,
            "/admin/agents",
            &[("email", "dan@shop.example"), ("name", "Dan again"), ("role", "agent"), ("capacity", "lots")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("Capacity: a whole number") && page.contains("Dan again"));

    let dan = server
        .store()
        .read(|transaction| agents::get_by_email(transaction, "dan@shop.example"))
        .await
        .unwrap()
        .unwrap();
    let dan_token = server.login_with("dan@shop.example", &password).await;
    let mut socket = server.agent(&dan_token).await;
    let (status, _, _) = admin
        .post(
            &server,
            &format!("/admin/agents/{}", dan.id),
            &[("name", "Daniel"), ("role", "agent"), ("capacity", "7"), ("sites", &site.key), ("disabled", "on")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(socket.expect_close().await, 4003, "a disabled agent's socket closes");
    assert_eq!(login(password.clone()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let me = http().get(server.url("/api/v1/agent/me")).bearer_auth(&dan_token).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED, "a disabled agent's sessions end");

    let (status, _, _) = admin
        .post(
            &server,
            &format!("/admin/agents/{}", dan.id),
            &[("name", "Daniel"), ("role", "agent"), ("capacity", "7"), ("sites", &site.key)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, page) =
        admin.post(&server, &format!("/admin/agents/{}/password", dan.id), &[("password", "short")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("Password: must be 8"));
    let (status, _, _) = admin
        .post(&server, &format!("/admin/agents/{}/password", dan.id), &[("password", "a brand new password")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(login("a brand new password".into()).await.unwrap().status(), StatusCode::OK);
    assert_eq!(login(password).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // The last enabled admin cannot be demoted: first disable the admin made at first start.
    let everyone = server.store().read(agents::list).await.unwrap();
    for first in everyone.iter().filter(|agent| agent.role == Role::Admin && agent.email != ADMIN) {
        let path = format!("/admin/agents/{}", first.id);
        let fields = [("name", first.name.as_str()), ("role", "admin"), ("capacity", "5"), ("disabled", "on")];
        assert_eq!(admin.post(&server, &path, &fields).await.0, StatusCode::SEE_OTHER);
    }
    let boss = server.store().read(|transaction| agents::get_by_email(transaction, ADMIN)).await.unwrap().unwrap();
    let (status, _, page) = admin
        .post(&server, &format!("/admin/agents/{}", boss.id), &[("name", "Boss"), ("role", "agent"), ("capacity", "5")])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("at least one enabled admin"));

    let (_, audit) = admin.get(&server, "/admin/audit?target=dan%40shop").await;
    for action in ["agent.create", "agent.disable", "agent.update", "agent.reset_password"] {
        assert!(audit.contains(action), "the audit log records {action}");
    }
    assert!(!audit.contains("site.create"), "the target filter applies");
}

#[tokio::test]
async fn canned_replies_blocks_and_the_audit_log() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;

    let (status, _, _) = admin
        .post(&server, "/admin/canned-replies", &[("site", &site.key), ("shortcut", "hi"), ("text", "Hello! 你好")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, page) = admin
        .post(&server, "/admin/canned-replies", &[("site", &site.key), ("shortcut", "hi"), ("text", "Again")])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("already used") && page.contains("Again"));
    let replies = server.store().read({
        let key = site.key.clone();
        move |transaction| kefu::chat::canned_replies::of_site(transaction, &key)
    });
    let reply = replies.await.unwrap().remove(0);
    let path = format!("/admin/canned-replies/{}", reply.id);
    assert_eq!(
        admin.post(&server, &path, &[("site", &site.key), ("shortcut", "hello"), ("text", "Hi there")]).await.0,
        StatusCode::SEE_OTHER
    );
    let (_, page) = admin.get(&server, &format!("/admin/canned-replies?site={}", site.key)).await;
    assert!(page.contains("value=\"hello\"") && page.contains("Hi there"));
    assert_eq!(admin.post(&server, &format!("{path}/delete"), &[("site", &site.key)]).await.0, StatusCode::SEE_OTHER);
    assert_eq!(admin.post(&server, &format!("{path}/delete"), &[("site", &site.key)]).await.0, StatusCode::NOT_FOUND);

    // A blocked visitor and address are listed and can be unblocked.
    let (visitor_id, visitor_token) = server.visitor_session(&site, None).await;
    kefu::people::blocking::BlockStore::set_visitor_blocked(server.store(), visitor_id, true, None).await.unwrap();
    let (status, _, page) =
        admin.post(&server, "/admin/blocked/addresses", &[("site", &site.key), ("address", "not-an-ip")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("not an IPv4 or IPv6 address") && page.contains("not-an-ip"));
    assert_eq!(
        admin.post(&server, "/admin/blocked/addresses", &[("site", &site.key), ("address", "203.0.113.7")]).await.0,
        StatusCode::SEE_OTHER
    );
    let (_, page) = admin.get(&server, "/admin/blocked").await;
    assert!(page.contains(&format!("<span class=\"muted\">#{visitor_id}</span>")) && page.contains("203.0.113.7"));
    let session = http()
        .post(server.url("/api/v1/visitor/session"))
        .json(&json!({"site": site.key, "token": visitor_token}))
        .send();
    assert_eq!(session.await.unwrap().status(), StatusCode::FORBIDDEN);
    let unblock = format!("/admin/blocked/visitors/{visitor_id}/unblock");
    assert_eq!(admin.post(&server, &unblock, &[]).await.0, StatusCode::SEE_OTHER);
    assert_eq!(
        admin
            .post(&server, "/admin/blocked/addresses/unblock", &[("site", &site.key), ("address", "203.0.113.7")])
            .await
            .0,
        StatusCode::SEE_OTHER
    );
    let (_, page) = admin.get(&server, "/admin/blocked").await;
    assert!(
        !page.contains("<code>203.0.113.7</code>")
            && !page.contains(&format!("<span class=\"muted\">#{visitor_id}</span>"))
    );
    let session = http()
        .post(server.url("/api/v1/visitor/session"))
        .json(&json!({"site": site.key, "token": visitor_token}))
        .send();
    assert_eq!(session.await.unwrap().status(), StatusCode::OK);

    // Admin calls of the JSON API are in the log too.
    let team = http()
        .post(server.url("/api/v1/teams"))
        .bearer_auth(&admin.token)
        .json(&json!({"site": site.key, "name": "Night shift"}))
        .send()
        .await
        .unwrap();
    assert_eq!(team.status(), StatusCode::CREATED);

    let (status, page) = admin.get(&server, "/admin/audit").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("team.create") && page.contains("Night shift"));
    for action in [
        "canned_reply.create",
        "canned_reply.update",
        "canned_reply.delete",
        "address.block",
        "visitor.unblock",
        "address.unblock",
    ] {
        assert!(page.contains(action), "the audit log records {action}");
    }
    let (status, page) = admin.get(&server, "/admin/audit?from=yesterday").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("not a date") && page.contains("value=\"yesterday\""));
}

/// A request of the admin's session in a browser language, with the language cookie if any.
fn in_language(
    request: reqwest::RequestBuilder,
    admin: &Admin,
    accept_language: &str,
    cookie: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = request.bearer_auth(&admin.token).header("accept-language", accept_language);
    match cookie {
        Some(cookie) => request.header("cookie", cookie),
        None => request,
    }
}

#[tokio::test]
async fn pages_follow_the_browsers_language_and_the_switch_remembers_a_choice() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    let chinese = "zh-CN,zh;q=0.9,en;q=0.8";
    let get = |path: &str, cookie: Option<&str>| {
        let request = in_language(client().get(server.url(path)), &admin, chinese, cookie);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };

    // A Chinese browser gets every page in Chinese.
    for path in [
        "/admin/sites",
        "/admin/agents",
        "/admin/teams",
        "/admin/canned-replies",
        "/admin/blocked",
        "/admin/api-tokens",
        "/admin/audit",
        "/admin/reports",
        "/admin/knowledge-base",
        "/admin/bot",
    ] {
        let (status, page) = get(path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(page.contains("<html lang=\"zh-CN\">"), "{path}");
        assert!(page.contains("退出登录") && page.contains(">团队与分配</a>"), "{path}");
        assert!(!page.contains("Log out") && !page.contains(">Teams &amp; routing</a>"), "{path}");
    }
    let (_, page) = get(&format!("/admin/sites/{}", site.key), None).await;
    assert!(page.contains("嵌入代码") && page.contains("星期一"), "the site form");

    // The switch sets a cookie and comes back; the choice then wins over the browser.
    let response =
        in_language(client().get(server.url("/admin/language?lang=en&next=%2Fadmin%2Fteams")), &admin, chinese, None)
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/admin/teams");
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("kefu_admin_lang=en;") && cookie.contains("Path=/admin"), "{cookie}");
    let (_, page) = get("/admin/teams", Some("kefu_admin_lang=en")).await;
    assert!(page.contains("<html lang=\"en\">") && page.contains("Log out") && !page.contains("退出登录"));
    let switch_back =
        ["&amp;", "&#38;"].map(|and| format!("href=\"/admin/language?lang=zh{and}next=%2Fadmin%2Fteams\""));
    assert!(switch_back.iter().any(|link| page.contains(link.as_str())), "the switch back");
    // Only the admin pages are a place to come back to; an unknown language sets nothing.
    let response = client().get(server.url("/admin/language?lang=fr&next=https://evil.example/")).send().await.unwrap();
    assert_eq!(response.headers()["location"], "/admin");
    assert!(response.headers().get("set-cookie").is_none());

    // The login page, refusals and form errors speak the language too.
    let response = client().get(server.url("/admin/login")).header("accept-language", chinese).send().await.unwrap();
    assert!(response.text().await.unwrap().contains("登录"));
    let before = snapshot(&server).await;
    let fields = site_fields(&site, &[("time_zone", "Mars/Olympus"), ("color", "green")]);
    let mut borrowed: Vec<(&str, &str)> = fields.iter().map(|(name, value)| (*name, value.as_str())).collect();
    borrowed.push(("csrf", &admin.csrf));
    let response = in_language(client().post(server.url(&format!("/admin/sites/{}", site.key))), &admin, chinese, None)
        .form(&borrowed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("时区：&#34;Mars/Olympus&#34; 不是已知的时区")
            || page.contains("时区：&quot;Mars/Olympus&quot; 不是已知的时区"),
        "{page}"
    );
    assert!(
        page.contains("&#34;green&#34; 不是 #1f6feb 这样的颜色")
            || page.contains("&quot;green&quot; 不是 #1f6feb 这样的颜色")
    );
    assert_eq!(snapshot(&server).await, before, "an invalid time zone changes nothing");
    let (status, _, _) = admin.post(&server, "/admin/teams/999/delete", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = in_language(client().post(server.url("/admin/teams/999/delete")), &admin, chinese, None)
        .form(&[("csrf", admin.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().contains("没有这个团队。"));

    // A valid zone is kept and shown on the list.
    let (status, _) = save_site(&server, &admin, &site, &[("time_zone", "Asia/Shanghai")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(stored_site(&server, &site.key).await.business_hours.time_zone, "Asia/Shanghai");
}

#[test]
fn every_catalogue_key_exists_in_both_languages() {
    use kefu::net::admin::texts::{EN, FIELD_MESSAGES_ZH, Lang, ZH, field_message, placeholders};
    let (en, zh) = (EN.entries(), ZH.entries());
    let en_keys: Vec<&str> = en.iter().map(|(key, _)| *key).collect();
    let zh_keys: Vec<&str> = zh.iter().map(|(key, _)| *key).collect();
    assert_eq!(en_keys, zh_keys);
    for ((key, english), (_, chinese)) in en.iter().zip(&zh) {
        assert!(!english.trim().is_empty() && !chinese.trim().is_empty(), "{key}");
        assert_eq!(placeholders(english), placeholders(chinese), "{key}");
    }
    // Every message the site form's validation gives has a Chinese text.
    let mut site = Site { name: String::new(), color: "green".into(), position: "up".into(), ..Site::default() };
    site.allowed_origins = vec!["shop".into()];
    site.retention_days = Some(0);
    site.business_hours.time_zone = "Mars/Olympus".into();
    site.welcome_text = "x".repeat(2000);
    let problems = site.validate();
    assert!(problems.len() >= 6, "{problems:?}");
    for (field, message) in problems {
        let translated = field_message(Lang::Zh, &message);
        assert_ne!(translated, message, "{field}: {message} has no Chinese text");
    }
    assert!(!FIELD_MESSAGES_ZH.is_empty());
}

#[tokio::test]
async fn webhooks_are_added_edited_listed_with_their_deliveries_resent_and_deleted_in_both_languages() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    let mut receiver = crate::webhooks::receiver(0).await;

    let (status, body) = admin.get_in(&server, &format!("/admin/webhooks?site={}", site.key), "zh-CN,zh;q=0.9").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("这个站点还没有 Webhook。") && body.contains("lang=\"zh-CN\""), "{body}");

    // Bad input is refused with the reason, and adds nothing.
    let bad = [("lang", "en"), ("site", site.key.as_str()), ("url", "not a url"), ("events", "message.created")];
    let (status, _, body) = admin.post(&server, "/admin/webhooks", &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("not a URL") && body.contains("value=\"not a url\""), "{body}");
    let no_events =
        [("lang", "en"), ("site", site.key.as_str()), ("url", receiver.url.as_str()), ("allow_private", "1")];
    let (status, _, body) = admin.post(&server, "/admin/webhooks", &no_events).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("name at least one of"), "{body}");
    let listed = |server: &TestServer, site: String| {
        let store = server.store().clone();
        async move { kefu::webhooks::WebhookStore::of_site(&store, &site).await.unwrap() }
    };
    assert!(listed(&server, site.key.clone()).await.is_empty());

    let fields = [
        ("lang", "en"),
        ("site", site.key.as_str()),
        ("url", receiver.url.as_str()),
        ("events", "conversation.created"),
        ("allow_private", "1"),
    ];
    let (status, _, body) = admin.post(&server, "/admin/webhooks", &fields).await;
    assert_eq!(status, StatusCode::CREATED);
    let webhook = listed(&server, site.key.clone()).await.pop().unwrap();
    assert!(body.contains(&webhook.secret), "the secret is shown once, right after");
    let (_, body) = admin.get(&server, &format!("/admin/webhooks?site={}&lang=en", site.key)).await;
    assert!(body.contains(&receiver.url) && !body.contains(&webhook.secret), "{body}");

    // Edit: the events change, the secret stays.
    let page = format!("/admin/webhooks/{}", webhook.id);
    let change =
        [("lang", "en"), ("url", receiver.url.as_str()), ("events", "message.created"), ("allow_private", "1")];
    let (status, location, _) = admin.post(&server, &page, &change).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    let edited = listed(&server, site.key.clone()).await.pop().unwrap();
    assert_eq!((edited.events.clone(), edited.secret.clone()), (vec!["message.created".to_owned()], webhook.secret));
    let (status, _, body) = admin.post(&server, &page, &[("lang", "en"), ("url", "ftp://x"), ("events", "x")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        listed(&server, site.key.clone()).await.pop().unwrap().events,
        edited.events,
        "a refused edit changes nothing"
    );

    // A delivery shows as sent with its response code; resending sends it again.
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    visitor.say(None, "m1", "hello").await;
    receiver.next().await;
    let delivery_id = loop {
        let (_, body) = admin.get_in(&server, &page, "en").await;
        if let Some(row) = body.split("<tr data-delivery=\"").nth(1)
            && row.contains("status sent")
        {
            assert!(row.contains(">204<") && row.contains(">sent<"), "{row}");
            break row.split('"').next().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (_, body) = admin.get_in(&server, &page, "zh-CN").await;
    assert!(body.contains("已送达") && body.contains("重新发送"), "{body}");
    let resend = format!("{page}/deliveries/{delivery_id}/resend");
    let (status, location, _) = admin.post_in(&server, &resend, &[], "zh-CN").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.starts_with(&page) && location.contains("done=%E5%B7%B2"), "a notice in Chinese: {location}");
    let (_, again) = receiver.next().await;
    assert_eq!(again["type"], "message.created");
    let (status, _, _) = admin.post(&server, &format!("{page}/deliveries/999999/resend"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, location, _) = admin.post(&server, &format!("{page}/delete"), &[("lang", "en")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.starts_with(&format!("/admin/webhooks?site={}", site.key)), "{location}");
    assert!(listed(&server, site.key.clone()).await.is_empty());
    assert_eq!(admin.get(&server, &page).await.0, StatusCode::NOT_FOUND);
}

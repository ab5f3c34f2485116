//! Text people typed cannot disguise itself where kefu shows it: a file name's bidi controls are
//! replaced in the name offered for saving (`Content-Disposition`) while the stored name keeps
//! them, and the admin pages put names in `<bdi>` so an override cannot reorder the text around.

use kefu::people::agents::{self, NewAgent, Role};
use serde_json::Value;

use crate::support::{PASSWORD, TestServer, http};

#[tokio::test]
async fn a_file_name_with_a_right_to_left_override_is_offered_for_saving_without_it() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    // "invoice\u{202E}fdp.exe" reads as "invoiceexe.pdf".
    let response = http()
        .post(server.url("/api/v1/uploads?name=invoice%E2%80%AEfdp.exe"))
        .bearer_auth(&token)
        .body("plain text, not a pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let uploaded: Value = response.json().await.unwrap();
    assert_eq!(uploaded["name"], "invoice\u{202E}fdp.exe", "the stored name is the one sent");

    let served = http().get(server.url(uploaded["url"].as_str().unwrap())).bearer_auth(&token).send().await.unwrap();
    assert_eq!(served.status(), 200);
    let disposition = served.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.ends_with("filename*=UTF-8''invoice%EF%BF%BDfdp.exe"), "{disposition}");
    assert!(!disposition.contains("%E2%80%AE"), "{disposition}");
}

#[tokio::test]
async fn the_admin_pages_isolate_names_and_let_long_ones_wrap() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let token = server.admin_token("boss@shop.example").await;
    let name = format!("Ann\u{202E}evil{}", "W".repeat(300));
    let new_agent = NewAgent {
        email: "ann@shop.example".into(),
        name: name.clone(),
        password: PASSWORD.into(),
        role: Role::Agent,
        sites: vec![site.key.clone()],
        capacity: 5,
    };
    agents::create(server.store(), new_agent).await.unwrap();

    let page = http().get(server.url("/admin/agents")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(&format!("<td><bdi>{name}</bdi></td>")), "the name sits in a <bdi> of its own");

    let css = http().get(server.url("/admin/admin.css")).send().await.unwrap().text().await.unwrap();
    assert!(css.contains("bdi { unicode-bidi: isolate; }"), "{css}");
    assert!(css.contains("th, td {") && css.contains("overflow-wrap: anywhere"), "{css}");
}

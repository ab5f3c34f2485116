//! CSV formula injection: the history export, the report CSVs and the knowledge-base export write
//! a cell that a spreadsheet would run as a formula with a `'` in front, and the knowledge-base
//! import reads its own export back unchanged.

use kefu::base::clock;
use kefu::people::agents::{self, NewAgent, Role};
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestServer, call, call_expecting, http};

/// Texts a spreadsheet would evaluate, one per trigger character.
const FORMULAS: [&str; 6] = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"];

fn csv_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes);
    reader.records().map(|record| record.unwrap().iter().map(str::to_owned).collect()).collect()
}

fn no_cell_starts_a_formula(rows: &[Vec<String>]) {
    for cell in rows.iter().flatten() {
        assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "{cell:?} would run as a formula");
    }
}

#[tokio::test]
async fn the_history_export_quotes_formula_cells() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("root@shop.example").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    // Message texts are trimmed, so a leading tab or carriage return never reaches the export.
    let formulas = &FORMULAS[..4];
    for (index, formula) in formulas.iter().enumerate() {
        visitor.say(None, &format!("v-{index}"), formula).await;
    }
    let today = clock::day_to_date(clock::day_of(clock::now_millis()));
    let response = http()
        .get(server.url(&format!("/api/v1/export?from={today}&to={today}&format=csv")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let rows = csv_rows(&response.bytes().await.unwrap());
    no_cell_starts_a_formula(&rows);
    let texts: Vec<&str> = rows.iter().skip(1).map(|row| row[11].as_str()).collect();
    for formula in formulas {
        let quoted = format!("'{formula}");
        assert!(texts.contains(&quoted.as_str()), "{quoted:?} in {texts:?}");
    }
}

#[tokio::test]
async fn the_report_csvs_quote_formula_cells() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("root@shop.example").await;
    let new_agent = NewAgent {
        email: "mallory@shop.example".into(),
        name: "=HYPERLINK(\"http://evil.example\",\"x\")".into(),
        password: PASSWORD.into(),
        role: Role::Agent,
        sites: vec![site.key.clone()],
        capacity: 5,
    };
    agents::create(server.store(), new_agent).await.unwrap();
    let mallory = server.login("mallory@shop.example").await;
    let mut agent = server.agent(&mallory).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v-1", "hello").await["conversation_id"].as_u64().unwrap();
    agent.say(Some(conversation_id), "a-1", "hi").await;

    for table in ["daily", "agents", "satisfaction"] {
        let response =
            http().get(server.url(&format!("/admin/reports/{table}.csv"))).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(response.status(), 200, "{table}");
        no_cell_starts_a_formula(&csv_rows(&response.bytes().await.unwrap()));
    }
    let response = http().get(server.url("/admin/reports/agents.csv")).bearer_auth(&admin).send().await.unwrap();
    let rows = csv_rows(&response.bytes().await.unwrap());
    assert!(
        rows.iter().flatten().any(|cell| cell == "'=HYPERLINK(\"http://evil.example\",\"x\")"),
        "the agent's name is in the report, quoted: {rows:?}"
    );
}

#[tokio::test]
async fn the_knowledge_base_export_quotes_formula_cells_and_imports_back_unchanged() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("root@shop.example").await;
    let kb = |path: &str| server.url(&format!("/api/v1/kb{path}"));
    let entries = [
        (json!(["=1+1 what?", "and this"]), "-5 degrees", "@team"),
        (json!(["'=typed with a quote"]), "+ plus", "plain"),
    ];
    for (questions, answer, category) in &entries {
        let entry = json!({"questions": questions, "answer": answer, "category": category});
        let (status, answer) =
            call(&server, "POST", &format!("/api/v1/kb?site={}", site.key), &admin, Some(entry)).await;
        assert!(status.is_success(), "{answer}");
    }
    let exported = http()
        .get(kb(&format!("/export?site={}&format=csv", site.key)))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows = csv_rows(exported.as_bytes());
    no_cell_starts_a_formula(&rows);
    assert!(rows.iter().flatten().any(|cell| cell == "'=1+1 what?|and this"), "{rows:?}");
    assert!(rows.iter().flatten().any(|cell| cell == "''=typed with a quote"), "{rows:?}");

    // The ids name entries of the first site; emptied, every row is a new entry of the other.
    let without_ids: Vec<String> = exported
        .lines()
        .enumerate()
        .map(|(row, line)| match row {
            0 => line.to_owned(),
            _ => format!(",{}", line.split_once(',').expect("an id cell").1),
        })
        .collect();
    let other = server.create_site("Other").await;
    let imported: Value = http()
        .post(kb(&format!("/import?site={}&format=csv", other.key)))
        .bearer_auth(&admin)
        .body(without_ids.join("\n"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(imported["imported"], 2, "{imported}");
    let listed = call_expecting(&server, "GET", &format!("/api/v1/kb?site={}", other.key), &admin, None, 200).await;
    let mut seen: Vec<(Value, Value, Value)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["questions"].clone(), entry["answer"].clone(), entry["category"].clone()))
        .collect();
    seen.sort_by_key(|entry| entry.0.to_string());
    let mut expected: Vec<(Value, Value, Value)> = entries
        .iter()
        .map(|(questions, answer, category)| (questions.clone(), json!(answer), json!(category)))
        .collect();
    expected.sort_by_key(|entry| entry.0.to_string());
    assert_eq!(seen, expected);
}

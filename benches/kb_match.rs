//! Benchmark: matching one visitor message against a knowledge base of 10,000 entries.
//!
//! Entries are synthetic but shaped like real ones: three question variants each (two English,
//! one Chinese) and an answer (indexed too), words and characters drawn from Zipf-like
//! distributions so common words have long postings, as they do in a real knowledge base.
//! Queries are paraphrases of random entries (a word swapped, a word dropped) and unrelated
//! messages, half and half; unknown words go through the typo lookup. Each query is the bot's
//! whole lexical decision: [`SiteKnowledge::rank`], the ranking with its calibrated confidence.
//! Then the same queries with the semantic tier ([`SiteKnowledge::rank_fused`]): every entry has a
//! 384-dimensional unit vector (multilingual-e5-small's size), a paraphrase's vector is its
//! entry's with noise, an unrelated message's a random one; the embedding request itself (the
//! endpoint's time) is not counted.
//!
//! Run: `cargo bench --bench kb_match` (release profile). Prints its inputs and results.

use std::time::{Duration, Instant};

use kefu::bot::embeddings::SiteVectors;
use kefu::bot::knowledge_base::{KbEntry, SiteKnowledge};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const N_ENTRIES: usize = 10_000;
const N_QUERIES: usize = 20_000;
const N_WORDS: usize = 8_000;
const N_CHARACTERS: usize = 3_000;
const DIMENSIONS: usize = 384;

/// A rank drawn so that rank r has probability proportional to 1/(r+1).
fn zipf(rng: &mut StdRng, n: usize) -> usize {
    let harmonic = (n as f64).ln() + 0.5772;
    let target = rng.random::<f64>() * harmonic;
    ((target.exp() - 1.0) as usize).min(n - 1)
}

fn word(rank: usize) -> String {
    const SYLLABLES: [&str; 16] =
        ["ka", "lo", "mi", "ren", "to", "sha", "pu", "de", "vin", "or", "el", "sa", "qu", "bi", "ne", "zo"];
    let mut word = String::new();
    let mut rest = rank + 16;
    while rest > 0 {
        word.push_str(SYLLABLES[rest % 16]);
        rest /= 16;
    }
    word
}

fn english(rng: &mut StdRng) -> Vec<String> {
    let n_words = rng.random_range(5..=10);
    (0..n_words).map(|_| word(zipf(rng, N_WORDS))).collect()
}

fn chinese(rng: &mut StdRng) -> String {
    let n_characters = rng.random_range(6..=14);
    (0..n_characters).map(|_| char::from_u32(0x4E00 + zipf(rng, N_CHARACTERS) as u32).unwrap()).collect()
}

fn main() {
    let mut rng = StdRng::seed_from_u64(7);
    let entries: Vec<KbEntry> = (0..N_ENTRIES)
        .map(|index| KbEntry {
            id: index as u64 + 1,
            questions: vec![english(&mut rng).join(" "), english(&mut rng).join(" "), chinese(&mut rng)],
            answer: english(&mut rng).join(" "),
            ..KbEntry::default()
        })
        .collect();
    let started = Instant::now();
    let knowledge = SiteKnowledge::build(entries.clone());
    let build_time = started.elapsed();

    let queries: Vec<String> = (0..N_QUERIES)
        .map(|n| {
            if n % 2 == 1 {
                return if n % 4 == 1 { english(&mut rng).join(" ") } else { chinese(&mut rng) };
            }
            let entry = &entries[rng.random_range(0..N_ENTRIES)];
            let variant = &entry.questions[rng.random_range(0..3)];
            if variant.is_ascii() {
                let mut words: Vec<String> = variant.split(' ').map(str::to_owned).collect();
                let swap = rng.random_range(0..words.len());
                words[swap] = word(zipf(&mut rng, N_WORDS));
                if words.len() > 5 {
                    words.remove(0);
                }
                words.join(" ")
            } else {
                let mut characters: Vec<char> = variant.chars().collect();
                characters.pop();
                characters.into_iter().collect()
            }
        })
        .collect();

    let mut times: Vec<Duration> = Vec::with_capacity(N_QUERIES);
    let mut n_found = 0;
    for query in &queries {
        let started = Instant::now();
        let ranked = knowledge.rank(query, 3);
        times.push(started.elapsed());
        n_found += ranked.len();
    }
    println!(
        "kb_match: {N_ENTRIES} entries ({} indexed texts: questions and answers), vocabulary {N_WORDS} words + {N_CHARACTERS} CJK \
         characters, {N_QUERIES} queries (half paraphrases, half unrelated)",
        knowledge.index.n_variants()
    );
    println!("index build: {:.1} ms", build_time.as_secs_f64() * 1e3);
    print_times("match one message (top 3)", times, n_found);

    let mut vectors = SiteVectors::default();
    let entry_vectors: Vec<Vec<f32>> = (0..N_ENTRIES).map(|_| unit(random_vector(&mut rng))).collect();
    for (entry, vector) in entries.iter().zip(&entry_vectors) {
        vectors.by_entry.insert(entry.id, (0, vector.clone()));
    }
    let message_vectors: Vec<Vec<f32>> = (0..N_QUERIES)
        .map(|n| {
            if n % 2 == 1 {
                return unit(random_vector(&mut rng));
            }
            let near = &entry_vectors[rng.random_range(0..N_ENTRIES)];
            unit(near.iter().zip(random_vector(&mut rng)).map(|(a, noise)| a + 0.05 * noise).collect())
        })
        .collect();
    let mut times: Vec<Duration> = Vec::with_capacity(N_QUERIES);
    let mut n_found = 0;
    for (query, message) in queries.iter().zip(&message_vectors) {
        let started = Instant::now();
        let ranked = knowledge.rank_fused(query, 3, |entry_id| vectors.similarity(entry_id, message));
        times.push(started.elapsed());
        n_found += ranked.len();
    }
    print_times(&format!("with the semantic tier ({DIMENSIONS}-dimensional vectors)"), times, n_found);
}

fn random_vector(rng: &mut StdRng) -> Vec<f32> {
    (0..DIMENSIONS).map(|_| rng.random::<f32>() - 0.5).collect()
}

fn unit(vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    vector.into_iter().map(|x| x / norm).collect()
}

fn print_times(label: &str, mut times: Vec<Duration>, n_found: usize) {
    times.sort();
    let total: Duration = times.iter().sum();
    let percentile = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "{label}: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs ({} results)",
        total.as_secs_f64() * 1e6 / times.len() as f64,
        percentile(0.50).as_secs_f64() * 1e6,
        percentile(0.99).as_secs_f64() * 1e6,
        times[times.len() - 1].as_secs_f64() * 1e6,
        n_found
    );
}

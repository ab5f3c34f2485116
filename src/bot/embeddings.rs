//! The semantic tier: entry and message vectors from any OpenAI-compatible `/v1/embeddings`
//! endpoint (a local Ollama with bge-m3, or a hosted one), optional per site.
//!
//! Each entry's text (its questions, then its answer) is embedded once and kept in
//! `kb_vectors_v1` (entry id → fingerprint, then the unit vector as little-endian f32s). The
//! fingerprint hashes the model name and the text, so an edited entry, or a change of model, is
//! embedded again and nothing else is. A background task ([`super::Bot`]'s refresher) does that
//! after every change of a site's entries or embeddings settings; until it has, the bot matches
//! lexically. A message is embedded when it arrives; its cosines with the entries go into the
//! candidates' confidences ([`super::knowledge_base::calibration::semantic_features`]). Any
//! failure of the endpoint leaves the lexical ranking as it is.
//!
//! Requests go through the bot's outbound client (`base::outbound`), with its private-address
//! guard.

use std::time::Duration;

use redb::{ReadTransaction, ReadableTable};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::knowledge_base::KbEntry;
use crate::bot::llm::LlmError;
use crate::storage::{StorageError, tables};

/// Most texts in one request.
pub const BATCH: usize = 32;

/// Longest vector accepted, in dimensions.
const MAX_DIMENSIONS: usize = 8192;

/// Where and how to ask.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EmbeddingSettings {
    /// The API's base URL, e.g. `http://127.0.0.1:11434/v1`; `/embeddings` is appended.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer KEY` when not empty.
    pub api_key: String,
    /// How long one request may take; a message is matched lexically when it takes longer.
    pub timeout_ms: u64,
}

impl Default for EmbeddingSettings {
    fn default() -> Self {
        EmbeddingSettings { base_url: String::new(), model: String::new(), api_key: String::new(), timeout_ms: 2_000 }
    }
}

impl EmbeddingSettings {
    pub fn validate(&self) -> Result<(), String> {
        let url = self.base_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 500 || url.contains(' ') {
            return Err("embeddings.base_url: must be an http:// or https:// URL".into());
        }
        if self.model.trim().is_empty() || self.model.chars().count() > 200 {
            return Err("embeddings.model: must be 1 to 200 characters".into());
        }
        if self.api_key.chars().count() > 500 || self.api_key.contains(['\n', '\r']) {
            return Err("embeddings.api_key: one line of at most 500 characters".into());
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err("embeddings.timeout_ms: must be 100 to 60000".into());
        }
        Ok(())
    }
}

/// Embeds `texts`, one unit vector each, in order.
pub async fn embed(
    http: &reqwest::Client,
    settings: &EmbeddingSettings,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, LlmError> {
    let url = format!("{}/embeddings", settings.base_url.trim_end_matches('/'));
    let mut request = crate::base::trace_context::with_traceparent(
        http.post(url).json(&json!({"model": settings.model, "input": texts})),
    );
    if !settings.api_key.is_empty() {
        request = request.bearer_auth(&settings.api_key);
    }
    let asked = async {
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(LlmError::Status(response.status().as_u16()));
        }
        let body: Value = response.json().await?;
        read_vectors(&body, texts.len())
    };
    tokio::time::timeout(Duration::from_millis(settings.timeout_ms), asked)
        .await
        .map_err(|_| LlmError::Timeout(settings.timeout_ms))?
}

/// The vectors of an answer `{"data": [{"index": i, "embedding": [...]}, ...]}`, by index,
/// normalised to unit length; every one must be there, of one dimension.
fn read_vectors(body: &Value, n_texts: usize) -> Result<Vec<Vec<f32>>, LlmError> {
    let malformed = |message: &str| LlmError::Malformed(message.to_owned());
    let data = body.get("data").and_then(Value::as_array).ok_or_else(|| malformed("no data array"))?;
    if data.len() != n_texts {
        return Err(malformed("not one embedding per input"));
    }
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; n_texts];
    for (position, item) in data.iter().enumerate() {
        let index = item.get("index").and_then(Value::as_u64).map_or(position, |index| index as usize);
        let numbers = item.get("embedding").and_then(Value::as_array).ok_or_else(|| malformed("no embedding"))?;
        if numbers.is_empty() || numbers.len() > MAX_DIMENSIONS {
            return Err(malformed("an embedding of no or too many dimensions"));
        }
        let vector: Option<Vec<f32>> =
            numbers.iter().map(|number| number.as_f64().map(|x| x as f32).filter(|x| x.is_finite())).collect();
        let vector = vector.ok_or_else(|| malformed("an embedding holds something other than finite numbers"))?;
        let slot = vectors.get_mut(index).ok_or_else(|| malformed("an index out of range"))?;
        *slot = Some(unit(vector));
    }
    let vectors: Vec<Vec<f32>> =
        vectors.into_iter().collect::<Option<_>>().ok_or_else(|| malformed("an index twice"))?;
    if vectors.windows(2).any(|pair| pair[0].len() != pair[1].len()) {
        return Err(malformed("embeddings of different dimensions"));
    }
    Ok(vectors)
}

fn unit(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// The text of an entry that is embedded: its questions, then its answer.
pub fn entry_text(entry: &KbEntry) -> String {
    let mut text = entry.questions.join("\n");
    text.push('\n');
    text.push_str(&entry.answer);
    text
}

/// FNV-1a of the model and the text: what a stored vector was made from.
pub fn fingerprint(model: &str, text: &str) -> u64 {
    let mut hash = 0xCBF2_9CE4_8422_2325_u64;
    for byte in model.bytes().chain([0]).chain(text.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01B3);
    }
    hash
}

/// A stored vector: the fingerprint, then the components.
pub fn encode(fingerprint: u64, vector: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + 4 * vector.len());
    bytes.extend_from_slice(&fingerprint.to_le_bytes());
    for x in vector {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes
}

/// A stored vector read back: [`encode`]'s fingerprint and vector.
pub(crate) fn decode(bytes: &[u8]) -> Result<(u64, Vec<f32>), StorageError> {
    if bytes.len() < 8 || (bytes.len() - 8) % 4 != 0 {
        return Err(StorageError::Corrupt("a knowledge-base vector of a bad length".into()));
    }
    let mut fingerprint = [0_u8; 8];
    fingerprint.copy_from_slice(&bytes[..8]);
    let vector = bytes[8..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((u64::from_le_bytes(fingerprint), vector))
}

/// A site's entry vectors in memory.
#[derive(Debug, Default)]
pub struct SiteVectors {
    /// Entry id → (fingerprint, unit vector).
    pub by_entry: FxHashMap<u64, (u64, Vec<f32>)>,
}

impl SiteVectors {
    /// The cosine of a message's unit vector with an entry's, if the entry has one of the
    /// message's dimension.
    pub fn similarity(&self, entry_id: u64, message: &[f32]) -> Option<f32> {
        let (_, vector) = self.by_entry.get(&entry_id)?;
        (vector.len() == message.len()).then(|| dot(vector, message))
    }
}

/// The dot product of two vectors of one length, summed in eight lanes so the compiler can use
/// SIMD (a plain sum of floats must keep its order, one addition at a time); a message is
/// compared with every entry's vector, so this is most of the semantic tier's time.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// The stored vectors of `entries`.
pub fn load(transaction: &ReadTransaction, entries: &[KbEntry]) -> Result<SiteVectors, StorageError> {
    let table = transaction.open_table(tables::KB_VECTORS)?;
    let mut by_entry = FxHashMap::default();
    for entry in entries {
        if let Some(value) = table.get(entry.id)? {
            by_entry.insert(entry.id, decode(value.value())?);
        }
    }
    Ok(SiteVectors { by_entry })
}

/// An entry's vector as stored: the entry, the fingerprint of its text and model, the vector.
pub type StoredVector = (u64, u64, Vec<f32>);

/// Where the entries' vectors are kept: the appliance's redb, or a cluster's PostgreSQL
/// (`cluster::knowledge_base`), each as [`encode`] writes it.
pub trait VectorStore: Send + Sync {
    /// The stored vectors of `entries`.
    fn load_vectors(
        &self,
        entries: Vec<KbEntry>,
    ) -> impl std::future::Future<Output = Result<SiteVectors, StorageError>> + Send;

    /// Stores `vectors`, those of entries deleted meanwhile left out.
    fn store_vectors(
        &self,
        vectors: Vec<StoredVector>,
    ) -> impl std::future::Future<Output = Result<(), StorageError>> + Send;
}

impl VectorStore for crate::storage::Store {
    async fn load_vectors(&self, entries: Vec<KbEntry>) -> Result<SiteVectors, StorageError> {
        self.read(move |transaction| load(transaction, &entries)).await
    }

    async fn store_vectors(&self, vectors: Vec<StoredVector>) -> Result<(), StorageError> {
        self.write(move |context| {
            let entries = context.transaction.open_table(tables::KB_ENTRIES)?;
            let live: Vec<bool> = vectors
                .iter()
                .map(|(id, _, _)| entries.get(*id).map(|found| found.is_some()))
                .collect::<Result<_, _>>()?;
            drop(entries);
            let mut table = context.transaction.open_table(tables::KB_VECTORS)?;
            for ((id, fingerprint, vector), live) in vectors.iter().zip(live) {
                if live {
                    table.insert(*id, encode(*fingerprint, vector).as_slice())?;
                }
            }
            Ok(Ok::<(), StorageError>(()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dot_product_in_lanes_is_the_plain_one() {
        for length in [0, 1, 7, 8, 9, 384, 1027] {
            let a: Vec<f32> = (0..length).map(|i| ((i * 37) % 11) as f32 / 11.0 - 0.5).collect();
            let b: Vec<f32> = (0..length).map(|i| ((i * 53) % 7) as f32 / 7.0 - 0.4).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "{length}: {} against {plain}", dot(&a, &b));
        }
    }

    #[test]
    fn vectors_are_read_by_index_normalised_and_checked() {
        let body = json!({"data": [
            {"index": 1, "embedding": [0.0, 2.0]},
            {"index": 0, "embedding": [3.0, 4.0]}
        ]});
        let vectors = read_vectors(&body, 2).unwrap();
        assert_eq!(vectors[0], vec![0.6, 0.8]);
        assert_eq!(vectors[1], vec![0.0, 1.0]);
        assert!(read_vectors(&body, 3).is_err());
        assert!(read_vectors(&json!({"data": [{"embedding": ["x"]}]}), 1).is_err());
        assert!(read_vectors(&json!({"data": [{"embedding": [1.0]}, {"embedding": [1.0, 2.0]}]}), 2).is_err());
        assert!(read_vectors(&json!({"nothing": 1}), 1).is_err());
    }

    #[test]
    fn stored_vectors_round_trip_and_fingerprints_follow_the_text_and_model() {
        let bytes = encode(42, &[0.5, -0.25]);
        assert_eq!(decode(&bytes).unwrap(), (42, vec![0.5, -0.25]));
        assert!(decode(&bytes[..9]).is_err());
        assert_ne!(fingerprint("m", "a"), fingerprint("m", "b"));
        assert_ne!(fingerprint("m1", "a"), fingerprint("m2", "a"));
        assert_eq!(fingerprint("m", "a"), fingerprint("m", "a"));
    }
}

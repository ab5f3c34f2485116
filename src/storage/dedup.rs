//! The fast "certainly new" answer for client message ids.
//!
//! Every send carries a client id; a resend must return the original acknowledgement. The
//! authoritative record is the `client_ids_v1` table. A Bloom filter in front of it answers
//! "never seen" without touching redb for almost every new message; a "maybe" is always
//! confirmed in redb, so a false positive costs one lookup and never drops a message.

use std::hash::{Hash, Hasher};

use fastbloom::BloomFilter;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{StorageError, tables};

/// False-positive rate the filter is sized for.
const FALSE_POSITIVE_RATE: f64 = 0.01;

/// Smallest number of ids the filter is sized for; it is rebuilt larger on a later start.
const MIN_EXPECTED_IDS: usize = 1_000_000;

/// Which kind of participant sent a message; part of the dedup key so ids of different senders never collide.
pub type SenderKey<'a> = (u8, u64, &'a str);

pub struct Dedup {
    bloom: BloomFilter,
    /// Ids recorded since the filter was built; past the sized capacity the false-positive rate rises.
    n_ids: usize,
}

impl Dedup {
    /// Builds the filter from every stored client id.
    pub fn load(database: &redb::Database) -> Result<Dedup, StorageError> {
        let transaction = database.begin_read()?;
        let table = transaction.open_table(tables::CLIENT_IDS)?;
        let n_stored = table.len()? as usize;
        let mut bloom =
            BloomFilter::with_false_pos(FALSE_POSITIVE_RATE).expected_items((n_stored * 2).max(MIN_EXPECTED_IDS));
        for entry in table.iter()? {
            let (key, _) = entry?;
            bloom.insert_hash(key_hash(key.value()));
        }
        Ok(Dedup { bloom, n_ids: n_stored })
    }

    /// False when `key` was certainly never recorded.
    pub fn may_contain(&self, key: SenderKey<'_>) -> bool {
        self.bloom.contains_hash(key_hash(key))
    }

    pub fn record(&mut self, key: SenderKey<'_>) {
        self.bloom.insert_hash(key_hash(key));
        self.n_ids += 1;
    }

    pub fn n_ids(&self) -> usize {
        self.n_ids
    }
}

fn key_hash(key: SenderKey<'_>) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

//! Read after answer: the writer answers a batch once its commit-log record is synced, and the
//! redb commit that shows the batch to readers may come later; a reader first waits until every
//! batch answered before it began is visible.
//!
//! Batches are numbered by the writer. `answered` is the last batch whose answers or events may
//! have been sent; `visible` is the last batch committed to redb. A reader that finds
//! `visible < answered` asks the writer to commit at once and waits for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Visibility {
    answered: AtomicU64,
    visible: AtomicU64,
    /// A reader waits for a commit.
    wanted: AtomicBool,
    /// Held by waiting blocking readers between their check and their wait, and by the writer
    /// when it announces a commit, so no announcement falls between the two.
    waiters: Mutex<()>,
    committed: Condvar,
    /// Wakes waiting async readers, which hold no thread while they wait.
    committed_async: Notify,
    /// Wakes the writer when it is waiting for work.
    pub(super) wake_writer: Notify,
}

impl Visibility {
    /// Blocks until every batch answered so far can be seen by a new read transaction.
    pub fn wait_for_answered(&self) {
        let target = self.answered.load(Ordering::Acquire);
        if self.visible.load(Ordering::Acquire) >= target {
            return;
        }
        let mut guard = self.waiters.lock();
        self.ask_writer();
        while self.visible.load(Ordering::Acquire) < target {
            self.committed.wait(&mut guard);
        }
    }

    /// [`Self::wait_for_answered`] without holding a thread.
    pub async fn answered_visible(&self) {
        let target = self.answered.load(Ordering::Acquire);
        loop {
            let committed = self.committed_async.notified();
            tokio::pin!(committed);
            // Registered before the check, so a commit announced after it still wakes this one.
            committed.as_mut().enable();
            if self.visible.load(Ordering::Acquire) >= target {
                return;
            }
            self.ask_writer();
            committed.await;
        }
    }

    fn ask_writer(&self) {
        self.wanted.store(true, Ordering::Release);
        self.wake_writer.notify_one();
    }

    /// Writer: batch `batch` may now be answered (its record is synced). Called before any of its
    /// answers or events leave, so whoever learns of it and then reads waits for its commit.
    pub(super) fn answered(&self, batch: u64) {
        self.answered.store(batch, Ordering::Release);
    }

    /// Writer: every batch up to `batch` is committed to redb.
    pub(super) fn committed(&self, batch: u64) {
        self.visible.store(batch, Ordering::Release);
        self.wanted.store(false, Ordering::Release);
        self.committed_async.notify_waiters();
        let _guard = self.waiters.lock();
        self.committed.notify_all();
    }

    /// Writer: whether a reader is waiting for a commit.
    pub(super) fn is_wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }

    /// Writer: it has stopped, after committing what it answered; readers stop waiting.
    pub(super) fn release_readers(&self) {
        self.committed(u64::MAX);
    }
}

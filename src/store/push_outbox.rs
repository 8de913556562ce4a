//! `push_outbox`: the group-chat pushes herald decided to send and no app server has answered
//! yet, so that none is lost to a reconnect or a restart (`kill -9` included).
//!
//! Key: a `u64` id (big-endian, increasing; the next id continues after the highest stored).
//! Value: a version byte (`1`) and the JSON of a [`PendingPush`].
//!
//! [`PushOutbox::write`] writes a batch of new and replaced pushes and flushes once before it
//! returns: a push is on disk before it is published. Removals are not flushed on their own (the
//! next flush, at most `store.flush_interval` later, carries them): a crash right after an
//! answer publishes that push once more, never loses one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Store, StoreError};
use crate::push::publish::PendingPush;

const TREE_PUSH_OUTBOX: &str = "push_outbox";
const RECORD_VERSION: u8 = 1;

/// The push outbox; cheap to clone.
#[derive(Clone)]
pub struct PushOutbox {
    store: Store,
    tree: sled::Tree,
    next_id: Arc<AtomicU64>,
    /// Serialises flushes (sled's `flush_async` can stall when called concurrently).
    flushing: Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// The push outbox.
    pub fn push_outbox(&self) -> Result<PushOutbox, StoreError> {
        let tree = self.db.open_tree(TREE_PUSH_OUTBOX)?;
        let next = tree
            .iter()
            .keys()
            .rev()
            .filter_map(|k| k.ok().and_then(|k| super::decode_u64(&k)))
            .next()
            .map_or(0, |id| id.saturating_add(1));
        Ok(PushOutbox {
            store: self.clone(),
            tree,
            next_id: Arc::new(AtomicU64::new(next)),
            flushing: Arc::new(tokio::sync::Mutex::new(())),
        })
    }
}

fn encode(p: &PendingPush) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![RECORD_VERSION];
    serde_json::to_writer(&mut out, p)
        .map_err(|e| StoreError::Sled(sled::Error::Io(std::io::Error::other(e))))?;
    Ok(out)
}

fn decode(key: &[u8], v: &[u8]) -> Result<(u64, PendingPush), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: format!("{TREE_PUSH_OUTBOX}/{}", hex::encode(key)),
        reason,
    };
    let id = super::decode_u64(key).ok_or_else(|| corrupt("key is not 8 bytes".into()))?;
    match v.split_first() {
        Some((&RECORD_VERSION, json)) => serde_json::from_slice(json)
            .map(|p| (id, p))
            .map_err(|e| corrupt(e.to_string())),
        Some((version, _)) => Err(corrupt(format!("unknown record version {version}"))),
        None => Err(corrupt("empty record".into())),
    }
}

impl PushOutbox {
    /// Writes `new` pushes (returning their ids, in order) and `replaced` ones (same id, new
    /// content), then flushes once; durable when it returns.
    pub async fn write(
        &self,
        new: &[PendingPush],
        replaced: &[(u64, PendingPush)],
    ) -> Result<Vec<u64>, StoreError> {
        let mut batch = sled::Batch::default();
        let mut ids = Vec::with_capacity(new.len());
        for p in new {
            let id = self.next_id.fetch_add(1, Ordering::SeqCst);
            batch.insert(&id.to_be_bytes(), encode(p)?);
            ids.push(id);
        }
        for (id, p) in replaced {
            batch.insert(&id.to_be_bytes(), encode(p)?);
        }
        self.tree.apply_batch(batch)?;
        self.flush().await?;
        Ok(ids)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let _one = self.flushing.lock().await;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.db_flush())
            .await
            .map_err(|e| StoreError::Sled(sled::Error::Io(std::io::Error::other(e))))?
    }

    /// Removes push `id` (answered, dropped or too old).
    pub fn remove(&self, id: u64) -> Result<(), StoreError> {
        self.tree.remove(id.to_be_bytes())?;
        Ok(())
    }

    /// Every stored push in id order; corrupt records are removed with a WARN.
    pub fn load(&self) -> Vec<(u64, PendingPush)> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::warn!(error = %e, "store: cannot read the push outbox");
                    break;
                }
            };
            match decode(&k, &v) {
                Ok(p) => out.push(p),
                Err(e) => {
                    tracing::warn!(error = %e, "store: dropping a corrupt pending push");
                    let _ = self.tree.remove(&k);
                }
            }
        }
        out
    }

    /// Pushes stored.
    pub fn count(&self) -> usize {
        self.tree.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::open_for_test as open;
    use super::*;

    fn push(user: &str, count: u64) -> PendingPush {
        PendingPush {
            user: user.into(),
            reg_key: "push.localhost<n".into(),
            app: "push.localhost".into(),
            count,
            sender: None,
            body: Some("New Message!".into()),
            at_ms: 5,
            first_ms: 5,
        }
    }

    #[tokio::test]
    async fn written_pushes_survive_a_reopen_and_removed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            let o = s.push_outbox().unwrap();
            let ids = o
                .write(&[push("a@x", 1), push("b@x", 1), push("c@x", 1)], &[])
                .await
                .unwrap();
            assert_eq!(ids, [0, 1, 2]);
            o.write(&[], &[(ids[1], push("b@x", 7))]).await.unwrap();
            o.remove(ids[0]).unwrap();
            s.db_flush().unwrap();
        }
        let s = open(dir.path());
        let o = s.push_outbox().unwrap();
        let got = o.load();
        assert_eq!(got, [(1, push("b@x", 7)), (2, push("c@x", 1))]);
        // Ids continue after the highest stored one.
        assert_eq!(o.write(&[push("d@x", 1)], &[]).await.unwrap(), [3]);
        assert_eq!(o.count(), 3);
    }

    #[tokio::test]
    async fn a_corrupt_record_is_dropped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let o = s.push_outbox().unwrap();
        o.write(&[push("a@x", 1)], &[]).await.unwrap();
        o.tree
            .insert(9u64.to_be_bytes(), &b"\x01{nope"[..])
            .unwrap();
        o.tree.insert(b"short", &b"\x01{}"[..]).unwrap();
        assert_eq!(o.load().len(), 1);
        assert_eq!(o.count(), 1);
    }
}

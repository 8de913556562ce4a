//! Stanzas that made the XML parser end a stream, remembered across connections.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Stanza bytes that made the XML parser end a stream, for the life of the process (or of the
/// value): see the module documentation. Cheap to clone; clones share the memory. While it is
/// empty (the normal case), the reader does no extra work per stanza.
#[derive(Clone)]
pub struct PoisonMemory(Arc<PoisonInner>);

struct PoisonInner {
    len: AtomicUsize,
    hasher: RandomState,
    set: Mutex<PoisonSet>,
}

#[derive(Default)]
struct PoisonSet {
    hashes: HashSet<u64>,
    order: VecDeque<u64>,
}

impl PoisonMemory {
    /// Most stanzas remembered; the oldest is forgotten first.
    pub const CAPACITY: usize = 1024;

    /// An empty memory of its own.
    pub fn new() -> PoisonMemory {
        PoisonMemory(Arc::new(PoisonInner {
            len: AtomicUsize::new(0),
            hasher: RandomState::new(),
            set: Mutex::new(PoisonSet::default()),
        }))
    }

    /// The process-wide memory the component connection uses across its reconnects.
    pub fn global() -> PoisonMemory {
        static GLOBAL: OnceLock<PoisonMemory> = OnceLock::new();
        GLOBAL.get_or_init(PoisonMemory::new).clone()
    }

    /// Stanzas remembered.
    pub fn len(&self) -> usize {
        self.0.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether these exact stanza bytes are remembered.
    pub fn contains(&self, stanza: &[u8]) -> bool {
        if self.is_empty() {
            return false;
        }
        let h = self.0.hasher.hash_one(stanza);
        self.lock().hashes.contains(&h)
    }

    /// Remembers these stanza bytes; `false` if they already were.
    pub fn remember(&self, stanza: &[u8]) -> bool {
        let h = self.0.hasher.hash_one(stanza);
        let mut set = self.lock();
        if !set.hashes.insert(h) {
            return false;
        }
        set.order.push_back(h);
        if set.order.len() > Self::CAPACITY {
            if let Some(old) = set.order.pop_front() {
                set.hashes.remove(&old);
            }
        }
        self.0.len.store(set.hashes.len(), Ordering::Relaxed);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoisonSet> {
        self.0
            .set
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for PoisonMemory {
    fn default() -> Self {
        PoisonMemory::new()
    }
}

impl std::fmt::Debug for PoisonMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoisonMemory")
            .field("len", &self.len())
            .finish()
    }
}

//! The `seq` allocator: `meta/seq_ceiling` (u64 BE) is the highest number reserved on disk.

use super::{decode_u64, Store, StoreError};

/// Sequence numbers are reserved on disk in blocks of this size: one synchronous flush per block
/// instead of one per event. A crash skips the rest of the block (a gap, never a reuse); a
/// graceful shutdown gives the unused rest back.
const SEQ_BLOCK: u64 = 65_536;

const KEY_SEQ_CEILING: &[u8] = b"seq_ceiling";

impl Store {
    /// A sequence allocator that resumes above every number handed out before. A ceiling so
    /// close to `u64::MAX` that no block is left (only a corrupt record can say that) is an
    /// error: numbers must never wrap around.
    pub fn seq_allocator(&self) -> Result<SeqAllocator, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: "meta/seq_ceiling".into(),
            reason,
        };
        let ceiling = match self.meta.get(KEY_SEQ_CEILING)? {
            None => 0,
            Some(v) => decode_u64(&v).ok_or_else(|| corrupt(format!("{} bytes", v.len())))?,
        };
        if ceiling > u64::MAX - SEQ_BLOCK {
            return Err(corrupt(format!(
                "{ceiling} leaves no sequence numbers to hand out"
            )));
        }
        Ok(SeqAllocator {
            meta: self.meta.clone(),
            next: ceiling + 1,
            ceiling,
        })
    }
}

/// Hands out `seq` numbers: strictly increasing, never reused, also across restarts and crashes.
pub struct SeqAllocator {
    meta: sled::Tree,
    /// At least 1.
    next: u64,
    /// Every number up to and including this one is reserved on disk.
    ceiling: u64,
}

impl SeqAllocator {
    /// The last number handed out (by this run, or by the previous one if this run has handed
    /// out none yet); 0 before the first.
    pub fn last_issued(&self) -> u64 {
        self.next.saturating_sub(1)
    }

    pub fn next_seq(&mut self) -> Result<u64, StoreError> {
        let exhausted = || StoreError::Corrupt {
            key: "meta/seq_ceiling".into(),
            reason: "sequence numbers exhausted".into(),
        };
        if self.next > self.ceiling {
            let ceiling = self
                .ceiling
                .max(self.next - 1)
                .checked_add(SEQ_BLOCK)
                .ok_or_else(exhausted)?;
            self.meta.insert(KEY_SEQ_CEILING, &ceiling.to_be_bytes())?;
            // The reservation must be on disk before any number of the block leaves herald.
            self.meta.flush()?;
            self.ceiling = ceiling;
        }
        let seq = self.next;
        self.next = seq.checked_add(1).ok_or_else(exhausted)?;
        Ok(seq)
    }

    /// Gives back the unused rest of the block (graceful shutdown), so the next run continues
    /// without a gap.
    pub fn release(&mut self) -> Result<(), StoreError> {
        let used = self.next - 1;
        self.meta.insert(KEY_SEQ_CEILING, &used.to_be_bytes())?;
        self.meta.flush()?;
        self.ceiling = used;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::open_for_test as open;
    use super::*;

    #[test]
    fn seq_is_strictly_increasing_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut last = 0;
        // Crash-like reopens (no release, no flush of anything but the reservation).
        for _ in 0..3 {
            let s = open(dir.path());
            let mut a = s.seq_allocator().unwrap();
            for _ in 0..(SEQ_BLOCK + 5) {
                let n = a.next_seq().unwrap();
                assert!(n > last, "{n} after {last}");
                last = n;
            }
        }
        // A graceful stop gives the rest of the block back: no gap.
        {
            let s = open(dir.path());
            let mut a = s.seq_allocator().unwrap();
            last = a.next_seq().unwrap();
            a.release().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.seq_allocator().unwrap().next_seq().unwrap(), last + 1);
    }

    #[test]
    fn a_corrupt_ceiling_is_an_error_not_a_panic_or_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        for bad in [&[1u8, 2, 3][..], &u64::MAX.to_be_bytes()[..]] {
            s.meta.insert(KEY_SEQ_CEILING, bad).unwrap();
            assert!(
                matches!(s.seq_allocator(), Err(StoreError::Corrupt { .. })),
                "ceiling {bad:?}"
            );
        }
        // The highest ceiling that still leaves a block: numbers go up to u64::MAX, then stop.
        let last_block = u64::MAX - SEQ_BLOCK;
        s.meta
            .insert(KEY_SEQ_CEILING, &(last_block - 1).to_be_bytes())
            .unwrap();
        let mut a = s.seq_allocator().unwrap();
        assert_eq!(a.next_seq().unwrap(), last_block);
        a.next = u64::MAX;
        a.ceiling = u64::MAX - 1;
        assert!(matches!(a.next_seq(), Err(StoreError::Corrupt { .. })));
        a.ceiling = u64::MAX;
        assert!(matches!(a.next_seq(), Err(StoreError::Corrupt { .. })));
    }
}

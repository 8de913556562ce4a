//! Offline administration of the store: `herald dead-letters …` works on the store of a stopped
//! herald (sled allows one process at a time; a running herald holds the lock).

use std::fmt::Write as _;

use crate::events::format_millis;
use crate::store::{Store, StoreError};

/// What to do with dead letters.
#[derive(Debug, Clone)]
pub enum DeadLetterAction {
    List,
    Requeue(Option<Vec<u64>>),
    Purge(Option<Vec<u64>>),
}

/// Runs `action` on the dead letters of `sink` (or of every sink) and returns a report for the
/// operator.
pub fn dead_letters(
    store: &Store,
    sink: Option<&str>,
    action: &DeadLetterAction,
) -> Result<String, StoreError> {
    let names = store.sink_names();
    let selected: Vec<&String> = names
        .iter()
        .filter(|n| sink.is_none_or(|s| s == n.as_str()))
        .collect();
    let mut out = String::new();
    if selected.is_empty() {
        let _ = writeln!(
            out,
            "no sink {} in the store (known: {})",
            sink.unwrap_or("at all"),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
        return Ok(out);
    }
    for name in selected {
        let q = store.sink_queue(name)?;
        match action {
            DeadLetterAction::List => {
                let letters = q.dead_letters()?;
                let _ = writeln!(
                    out,
                    "sink {name}: {} queued, {} dead letters",
                    q.count(),
                    letters.len()
                );
                for l in letters {
                    let _ = writeln!(
                        out,
                        "  seq {} at {}: {}\n    {}",
                        l.seq,
                        format_millis(l.at_ms),
                        l.reason,
                        String::from_utf8_lossy(&l.json)
                    );
                }
            }
            DeadLetterAction::Requeue(seqs) => {
                let n = q.requeue(seqs.as_deref())?;
                let _ = writeln!(out, "sink {name}: {n} dead letters queued again");
            }
            DeadLetterAction::Purge(seqs) => {
                let n = q.purge_dead(seqs.as_deref())?;
                let _ = writeln!(out, "sink {name}: {n} dead letters deleted");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_requeue_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100, 1 << 20).unwrap();
        let q = store.sink_queue("hook").unwrap();
        q.push(5, br#"{"seq":5}"#).unwrap();
        q.push(6, br#"{"seq":6}"#).unwrap();
        q.dead_letter(&q.peek(2).unwrap(), "HTTP 400 Bad Request", 0)
            .unwrap();

        let listed = dead_letters(&store, None, &DeadLetterAction::List).unwrap();
        assert!(
            listed.contains("sink hook: 0 queued, 2 dead letters"),
            "{listed}"
        );
        assert!(listed.contains("seq 5 at 1970-01-01T00:00:00.000Z: HTTP 400 Bad Request"));

        let r = dead_letters(
            &store,
            Some("hook"),
            &DeadLetterAction::Requeue(Some(vec![6])),
        )
        .unwrap();
        assert!(r.contains("1 dead letters queued again"), "{r}");
        assert_eq!(q.count(), 1);
        let p = dead_letters(&store, Some("hook"), &DeadLetterAction::Purge(None)).unwrap();
        assert!(p.contains("1 dead letters deleted"), "{p}");
        let none = dead_letters(&store, Some("other"), &DeadLetterAction::List).unwrap();
        assert!(none.contains("no sink other"), "{none}");
    }
}

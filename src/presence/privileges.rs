//! Per-server-domain privileges (stub, being written).

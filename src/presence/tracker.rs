//! The live presence table (stub, being written).

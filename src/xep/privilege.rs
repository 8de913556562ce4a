//! XEP-0356 privilege advertisements (stub, being written).

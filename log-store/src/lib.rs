//! Append-only, framed, checksummed, hash-chained, compressed, crash-safe event log

//! Drives a replay: lands each event at its exact timepoint, checks digests, reports divergence

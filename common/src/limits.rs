//! Limits of the public API that more than one process enforces: the
//! router checks a request against them, and the model-node accepts
//! exactly as much, so a query the router took is never refused further
//! down (which would only show as a degraded answer).

/// Longest search query, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;

/// Most words (whitespace-separated) in a search query: each word (and
/// each pair of neighbouring words, for proximity) is a clause of the
/// query, so words bound what one search may cost.
pub const MAX_QUERY_WORDS: usize = 128;

/// Longest filter (`attrs.<key>:<value>`), in bytes.
pub const MAX_FILTER_BYTES: usize = 1024;

/// Longest suggest prefix, in bytes.
pub const MAX_PREFIX_BYTES: usize = 256;

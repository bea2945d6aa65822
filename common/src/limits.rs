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

/// Most bytes of hits in one answer (a node's to the router, the router's
/// to its caller): under the 4 MiB that gRPC clients take by default, with
/// room for the rest of the answer. A page of 1000 hits with 16 KiB titles
/// would be 25 MB; without a budget, such a tenant's every deep search
/// would fail.
pub const MAX_ANSWER_BYTES: usize = 3 * 1024 * 1024;

/// Leaves off the end of `hits` (best first) what does not fit in
/// [`MAX_ANSWER_BYTES`]; true if any was left off.
pub fn fit_hits(hits: &mut Vec<tandem_proto::v1::Hit>) -> bool {
    let mut total = 0;
    let fit = hits
        .iter()
        .take_while(|hit| {
            // The hit's bytes plus its field tag and length prefix.
            total += prost::Message::encoded_len(*hit) + 6;
            total <= MAX_ANSWER_BYTES
        })
        .count();
    let cut = fit < hits.len();
    hits.truncate(fit);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_proto::v1::Hit;

    #[test]
    fn hits_past_the_budget_are_left_off_the_end() {
        let hit = |i: usize| Hit {
            id: format!("doc-{i}"),
            title: "t".repeat(16 * 1024),
            ..Default::default()
        };
        let mut hits: Vec<Hit> = (0..1000).map(hit).collect();
        assert!(fit_hits(&mut hits));
        let bytes: usize = hits.iter().map(prost::Message::encoded_len).sum();
        assert!(
            bytes <= MAX_ANSWER_BYTES && hits.len() > 150,
            "{} hits",
            hits.len()
        );
        assert_eq!(hits[0].id, "doc-0", "the best are kept");
        let mut few: Vec<Hit> = (0..10).map(hit).collect();
        assert!(!fit_hits(&mut few));
        assert_eq!(few.len(), 10);
    }
}

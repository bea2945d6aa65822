//! How a shard scores what a person typed: the ranking recipe.
//!
//! The main score is BM25 over one combined field, `text`, which holds the
//! title [`TITLE_REPEAT`] times and then the body. That is BM25F with
//! integer field weights: the title's weight sits inside the term frequency
//! and the whole document has one length normalisation, so a one-word title
//! that happens to equal a common query word ("write", "open") no longer
//! earns a separate, unsaturated title score on top of the body's.
//!
//! On top of it, one feature, **proximity**: every pair of neighbouring
//! query words that also stand within [`Ranking::pair_slop`] positions of
//! each other in the document adds a share ([`Ranking::pair_weight`]) of the
//! pair's BM25 score (a sequential-dependence bonus: "extract archive" finds
//! the page that says "extract an archive" before the one that mentions
//! each word in a different example).
//!
//! The weights are chosen by the evaluation in `docs/benchmarks.md#ranking`
//! (an exact command-name feature was tried there and did not help);
//! [`Ranking::DEFAULT`] is what a shard uses. Explicit query syntax
//! (`title:tar`, `"a phrase"`, `+must`) is honoured by the parser as
//! written; the features only read the plain words.

use tantivy::query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query};
use tantivy::tokenizer::TokenStream;
use tantivy::{Index, Term};

use crate::schema::Fields;

/// How many times the title is written into the combined field.
pub const TITLE_REPEAT: usize = 2;

/// Query words beyond this many are not paired for the proximity feature
/// (long pasted text would otherwise cost a phrase lookup per word).
const MAX_PAIRED_WORDS: usize = 12;

/// Which fields the main BM25 score reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFields {
    /// The combined `text` field (one length normalisation).
    Combined,
    /// `title` and `body` scored separately and added, the title's score
    /// doubled: the ranking of schema version 1, kept for comparison.
    TitleAndBody,
}

/// The ranking recipe's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranking {
    /// Fields of the main score.
    pub fields: TextFields,
    /// Weight of a neighbouring-pair match relative to a term match (0: off).
    pub pair_weight: f32,
    /// Positions two paired words may stand apart beyond adjacency.
    pub pair_slop: u32,
}

impl Default for Ranking {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Ranking {
    /// The recipe shards use.
    pub const DEFAULT: Ranking = Ranking {
        fields: TextFields::Combined,
        pair_weight: 0.25,
        pair_slop: 2,
    };

    /// Plain BM25 over the combined field, no features.
    pub const PLAIN_BM25: Ranking = Ranking {
        fields: TextFields::Combined,
        pair_weight: 0.0,
        pair_slop: 0,
    };

    /// Schema version 1's ranking: title and body scored apart.
    pub const TITLE_AND_BODY: Ranking = Ranking {
        fields: TextFields::TitleAndBody,
        pair_weight: 0.0,
        pair_slop: 0,
    };

    /// The fields a query without `field:` prefixes searches, with boosts.
    pub fn default_fields(&self, fields: &Fields) -> Vec<(tantivy::schema::Field, f32)> {
        match self.fields {
            TextFields::Combined => vec![(fields.text, 1.0)],
            TextFields::TitleAndBody => vec![(fields.title, 2.0), (fields.body, 1.0)],
        }
    }

    /// Adds the features for the plain `words` of a query to `main`.
    pub fn with_features(
        &self,
        index: &Index,
        fields: &Fields,
        main: Box<dyn Query>,
        words: &[String],
    ) -> Box<dyn Query> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if self.pair_weight > 0.0 {
            for pair in word_pairs(index, fields, words) {
                let phrase = PhraseQuery::new_with_offset_and_slop(pair, self.pair_slop);
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(phrase), self.pair_weight)),
                ));
            }
        }
        if clauses.is_empty() {
            return main;
        }
        clauses.insert(0, (Occur::Must, main));
        Box::new(BooleanQuery::new(clauses))
    }
}

/// Neighbouring analysed terms of the query (stop words dropped, stemmed),
/// each pair with its positions, for the proximity feature.
fn word_pairs(index: &Index, fields: &Fields, words: &[String]) -> Vec<Vec<(usize, Term)>> {
    let Ok(mut analyzer) = index.tokenizer_for_field(fields.text) else {
        return Vec::new();
    };
    let text = words
        .iter()
        .take(MAX_PAIRED_WORDS)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let mut terms: Vec<Term> = Vec::new();
    let mut stream = analyzer.token_stream(&text);
    while let Some(token) = stream.next() {
        let term = Term::from_field_text(fields.text, &token.text);
        if terms.last() != Some(&term) {
            terms.push(term);
        }
    }
    terms
        .windows(2)
        .map(|w| vec![(0, w[0].clone()), (1, w[1].clone())])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{build_schema, register_tokenizers};

    #[test]
    fn pairs_are_neighbouring_analysed_terms() {
        let index = Index::create_in_ram(build_schema("en"));
        register_tokenizers(&index, "en");
        let fields = Fields::from_schema(&index.schema()).unwrap();
        let words: Vec<String> = ["Extract", "a", "tar", "archives"]
            .map(String::from)
            .to_vec();
        let pairs: Vec<(String, String)> = word_pairs(&index, &fields, &words)
            .into_iter()
            .map(|p| {
                let text = |t: &Term| t.value().as_str().unwrap_or_default().to_string();
                (text(&p[0].1), text(&p[1].1))
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("extract".to_string(), "tar".to_string()),
                ("tar".to_string(), "archiv".to_string())
            ]
        );
    }

    #[test]
    fn no_features_leave_the_main_query_alone() {
        let index = Index::create_in_ram(build_schema("en"));
        register_tokenizers(&index, "en");
        let fields = Fields::from_schema(&index.schema()).unwrap();
        let words = vec!["tar".to_string(), "archive".to_string()];
        let main: Box<dyn Query> = Box::new(tantivy::query::AllQuery);
        let plain = Ranking::PLAIN_BM25.with_features(&index, &fields, main.box_clone(), &words);
        assert!(format!("{plain:?}").starts_with("AllQuery"));
        let featured = Ranking::DEFAULT.with_features(&index, &fields, main, &words);
        assert!(format!("{featured:?}").contains("PhraseQuery"));
    }
}

//! Turning a search request into a tantivy query.
//!
//! Two modes, chosen by the caller's `strict` flag:
//! - strict: the query language (terms, "phrases", AND/OR/NOT, +/-,
//!   field:term) is parsed as written and a syntax error is the caller's
//!   problem (INVALID_ARGUMENT quoting the parser);
//! - lenient (default): the text behaves like a search box. Valid syntax is
//!   honoured; text that does not parse (a stray quote, `foo:` with an
//!   unknown field, brackets) is searched as plain words instead, so what a
//!   person types never fails.
//!
//! Filters (`attrs.<key>:<value>`, `id:<doc id>`) are all required and do
//! not affect scores' order beyond restricting the matches; so is a set of
//! ids (a router fetching snippets for the documents of a merged page).

use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, TermQuery, TermSetQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{Index, Term};

use crate::ranking::Ranking;
use crate::schema::Fields;

/// Why a request could not be turned into a query (INVALID_ARGUMENT).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Strict mode and the query does not parse.
    #[error("invalid query syntax: {0}")]
    Syntax(String),
    /// A filter is not `field:value` with a supported field.
    #[error("invalid filter {filter:?}: {reason}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a search request asks of one shard, as a query.
pub struct QuerySpec<'a> {
    /// The text typed (query language or plain words).
    pub text: &'a str,
    /// `field:value` filters, all required.
    pub filters: &'a [String],
    /// Only these documents (empty: all).
    pub ids: &'a [String],
    /// Strict syntax: no features, syntax errors are the caller's.
    pub strict: bool,
    /// The ranking recipe.
    pub ranking: &'a Ranking,
}

/// Builds the query for a request against one shard's index.
pub fn build_query(
    index: &Index,
    fields: &Fields,
    spec: &QuerySpec<'_>,
) -> Result<Box<dyn Query>, QueryError> {
    let QuerySpec {
        text,
        filters,
        ids,
        strict,
        ranking,
    } = *spec;
    let parser = parser(index, ranking.default_fields(fields));
    let main = if text.trim().is_empty() {
        Box::new(AllQuery) as Box<dyn Query>
    } else if strict {
        parse(&parser, text)?
    } else {
        let words: Vec<String> = plain_words(text)
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect();
        ranking.with_features(index, fields, parse_leniently(&parser, text), &words)
    };
    if filters.is_empty() && ids.is_empty() {
        return Ok(main);
    }
    let mut clauses = vec![(Occur::Must, main)];
    for filter in filters {
        clauses.push((Occur::Must, filter_query(index, fields, filter)?));
    }
    if !ids.is_empty() {
        let terms = ids.iter().map(|id| Term::from_field_text(fields.id, id));
        clauses.push((Occur::Must, Box::new(TermSetQuery::new(terms))));
    }
    Ok(Box::new(BooleanQuery::new(clauses)))
}

fn parser(index: &Index, default_fields: Vec<(tantivy::schema::Field, f32)>) -> QueryParser {
    let mut parser = QueryParser::for_index(index, default_fields.iter().map(|f| f.0).collect());
    for (field, boost) in default_fields {
        if boost != 1.0 {
            parser.set_field_boost(field, boost);
        }
    }
    parser
}

/// The query whose body terms a snippet highlights: the plain words of
/// `text` against the body (the ranking's fields may not include it).
pub fn snippet_query(index: &Index, fields: &Fields, text: &str) -> Box<dyn Query> {
    let words = plain_words(text);
    if words.is_empty() {
        return Box::new(BooleanQuery::new(Vec::new()));
    }
    parser(index, vec![(fields.body, 1.0)])
        .parse_query(&words)
        .unwrap_or_else(|_| Box::new(BooleanQuery::new(Vec::new())))
}

/// Search-box parsing: the query as written if it is valid, else its words.
fn parse_leniently(parser: &QueryParser, text: &str) -> Box<dyn Query> {
    if let Ok(query) = parse(parser, text) {
        return query;
    }
    let words = plain_words(text);
    if words.is_empty() {
        // Nothing searchable is left (e.g. the text was only punctuation):
        // an empty result, not an error.
        return Box::new(BooleanQuery::new(Vec::new()));
    }
    parser
        .parse_query(&words)
        .unwrap_or_else(|_| Box::new(BooleanQuery::new(Vec::new())))
}

/// `text` in the query language, refusing what parses but cannot run on
/// a shard: `field:*` (an "exists" query needs fast fields, which
/// tandem's text fields are not; found by the property tests).
fn parse(parser: &QueryParser, text: &str) -> Result<Box<dyn Query>, QueryError> {
    let query = parser
        .parse_query(text)
        .map_err(|e| QueryError::Syntax(e.to_string()))?;
    if format!("{query:?}").contains("ExistsQuery") {
        return Err(QueryError::Syntax(
            "`field:*` (any value) is not supported; search for words".to_string(),
        ));
    }
    Ok(query)
}

/// The alphanumeric runs of `text`, space-separated: no query syntax left.
fn plain_words(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One `field:value` filter as a required clause.
fn filter_query(
    index: &Index,
    fields: &Fields,
    filter: &str,
) -> Result<Box<dyn Query>, QueryError> {
    let bad = |reason: &str| QueryError::Filter {
        filter: filter.to_string(),
        reason: reason.to_string(),
    };
    let (field, value) = filter
        .split_once(':')
        .ok_or_else(|| bad("expected field:value"))?;
    let (field, value) = (field.trim(), value.trim());
    if value.is_empty() {
        return Err(bad("the value is empty"));
    }
    if field == "id" {
        let term = Term::from_field_text(fields.id, value);
        return Ok(Box::new(TermQuery::new(term, IndexRecordOption::Basic)));
    }
    let key = field
        .strip_prefix("attrs.")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| bad("filters apply to id or attrs.<key>"))?;
    if !key
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(bad("attribute keys are letters, digits, '_', '-', '.'"));
    }
    if value.contains(['"', '\\']) {
        return Err(bad("values may not contain '\"' or '\\'"));
    }
    // A phrase, so that a multi-word value must match as written.
    parser(index, vec![(fields.attrs, 1.0)])
        .parse_query(&format!("attrs.{key}:\"{value}\""))
        .map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_drops_syntax() {
        assert_eq!(plain_words("tar \"extract (gz: a]"), "tar extract gz a");
        assert_eq!(plain_words("::\"\""), "");
    }
}

//! Property tests of the query and filter parser: no text a caller types
//! panics a node. A plain query always builds (text that does not parse is
//! searched as words); a strict one builds or is refused with a message;
//! a filter builds or is refused; whatever builds also runs.

use proptest::prelude::*;
use tandem_index_node::query::{build_query, QuerySpec};
use tandem_index_node::ranking::Ranking;
use tandem_index_node::schema::{build_schema, register_tokenizers, Fields};
use tantivy::collector::TopDocs;
use tantivy::Index;

fn index() -> (Index, Fields) {
    let index = Index::create_in_ram(build_schema("en"));
    register_tokenizers(&index, "en");
    let fields = Fields::from_schema(&index.schema()).expect("tandem's schema");
    (index, fields)
}

/// Text a search box receives: words, the query language's operators and
/// quotes, and anything else.
fn typed() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-z :\"()+\\-*~^\\[\\]{}!]{0,40}",
        "(title|body|attrs\\.[a-z]{1,3}|id|[a-z]{1,3}):[a-z\"*]{0,6}( (AND|OR|NOT) [a-z]{1,4}){0,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_typed_text_builds_and_runs(
        text in typed(),
        filters in prop::collection::vec(typed(), 0..3),
        strict in any::<bool>(),
    ) {
        let (index, fields) = index();
        let spec = QuerySpec {
            text: &text,
            filters: &filters,
            ids: &[],
            strict,
            ranking: &Ranking::DEFAULT,
        };
        match build_query(&index, &fields, &spec) {
            Ok(query) => {
                let searcher = index.reader().expect("reader").searcher();
                searcher.search(&query, &TopDocs::with_limit(10).order_by_score()).expect("runs");
            }
            Err(e) => {
                prop_assert!(strict || !filters.is_empty(), "a plain query without filters always builds: {e}");
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

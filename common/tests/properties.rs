//! Property tests of write validation: no batch panics it, and a batch it
//! accepts is within every documented limit.

use proptest::prelude::*;
use tandem_common::documents::{
    check_batch, MAX_ATTRS_BYTES, MAX_DOCUMENT_BYTES, MAX_ID_BYTES, MAX_TITLE_BYTES, MAX_URL_BYTES,
};
use tandem_proto::v1::Document;

/// Strings around `limit` bytes (or short ones).
fn around(limit: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        (limit - 2..limit + 2).prop_map(|n| "é".repeat(n / 2) + &"x".repeat(n % 2)),
    ]
}

fn document() -> impl Strategy<Value = Document> {
    (
        prop_oneof!["[a-z/]{0,12}", around(MAX_ID_BYTES)],
        around(MAX_TITLE_BYTES),
        prop_oneof![".{0,32}", Just("b".repeat(MAX_DOCUMENT_BYTES - 100))],
        around(MAX_URL_BYTES),
        prop_oneof![
            Just(String::new()),
            "\\{\"[a-z]{1,4}\": ?\"[a-z]{0,8}\"\\}",
            ".{0,16}",
            around(MAX_ATTRS_BYTES)
        ],
    )
        .prop_map(|(id, title, body, url, attrs_json)| Document {
            id,
            title,
            body,
            url,
            attrs_json,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn an_accepted_batch_is_within_every_limit(
        upserts in prop::collection::vec(document(), 0..4),
        deletes in prop::collection::vec("[a-z]{0,4}", 0..3),
        request_id in ".{0,140}",
    ) {
        if check_batch(&upserts, &deletes, &request_id, 5).is_ok() {
            prop_assert!(!upserts.is_empty() || !deletes.is_empty());
            for d in &upserts {
                prop_assert!(!d.id.is_empty() && d.id.len() <= MAX_ID_BYTES);
                prop_assert!(d.title.len() <= MAX_TITLE_BYTES);
                prop_assert!(d.url.len() <= MAX_URL_BYTES);
                prop_assert!(d.attrs_json.len() <= MAX_ATTRS_BYTES);
                let total = d.id.len() + d.title.len() + d.body.len() + d.url.len() + d.attrs_json.len();
                prop_assert!(total <= MAX_DOCUMENT_BYTES);
                let attrs = d.attrs_json.trim();
                prop_assert!(attrs.is_empty() || serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(attrs).is_ok());
            }
        }
    }
}

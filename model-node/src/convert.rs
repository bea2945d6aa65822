//! Conversions from this crate's answers to the wire messages of
//! `proto/tandem/v1/model.proto`, so the gRPC layer stays a thin mapping.

use tandem_proto::v1;

use crate::model::ModelInfo;
use crate::relevance::Boost;
use crate::suggest::Suggestion;

impl From<ModelInfo> for v1::ModelInfo {
    fn from(i: ModelInfo) -> Self {
        v1::ModelInfo {
            tenant: i.tenant,
            version: i.version,
            suggestions: i.suggestions,
            boosted_queries: i.boosted_queries,
            size_bytes: i.size_bytes,
        }
    }
}

impl From<Suggestion> for v1::Suggestion {
    fn from(s: Suggestion) -> Self {
        v1::Suggestion {
            text: s.text,
            score: s.score,
        }
    }
}

impl From<Boost> for v1::DocBoost {
    fn from(b: Boost) -> Self {
        v1::DocBoost {
            doc_id: b.doc,
            weight: b.weight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_fields() {
        let b: v1::DocBoost = Boost {
            doc: "en/common/tar".into(),
            weight: 1.5,
        }
        .into();
        assert_eq!((b.doc_id.as_str(), b.weight), ("en/common/tar", 1.5));
        let s: v1::Suggestion = Suggestion {
            text: "tar".into(),
            score: 2.0,
        }
        .into();
        assert_eq!((s.text.as_str(), s.score), ("tar", 2.0));
    }
}

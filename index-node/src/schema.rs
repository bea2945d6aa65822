//! The document schema every tenant shard shares, and its per-language text
//! analysis.
//!
//! Documents have a unique `id`, a `title` and `body` (full text, stemmed in
//! the shard's language), a stored `url`, and `attrs`, a JSON object
//! searchable and filterable as `attrs.<key>:<value>`. One derived field,
//! indexed and never stored, serves the ranking ([`crate::ranking`]): `text`,
//! the title written [`crate::ranking::TITLE_REPEAT`] times and then the
//! body, which a query without field prefixes searches.
//!
//! The schema has a version ([`SCHEMA_VERSION`], kept in each shard's
//! metadata): a shard of an older version is rebuilt from its stored
//! documents when a node opens it ([`crate::upgrade`]).

use tantivy::schema::{
    Field, IndexRecordOption, JsonObjectOptions, Schema, TextFieldIndexing, TextOptions, STORED,
    STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::Index;

/// Tokens longer than this are dropped (base64 blobs, hashes).
const MAX_TOKEN_LEN: usize = 40;

/// The version of the schema and of what the derived fields hold. Version
/// 1 had no derived fields (title and body were scored apart).
pub const SCHEMA_VERSION: u32 = 2;

/// Name of the tokenizer used for `attrs` values: lower-cased, not stemmed,
/// so that filters match values as written.
const ATTRS_TOKENIZER: &str = "tandem_attrs";

/// Handles to the fields of a shard's schema.
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    /// Unique document key (exact match).
    pub id: Field,
    /// Full text (searchable as `title:`).
    pub title: Field,
    /// Full text; snippets come from here.
    pub body: Field,
    /// Derived: title, title again, body (the default search field).
    pub text: Field,
    /// Stored, not searched.
    pub url: Field,
    /// JSON object of attributes.
    pub attrs: Field,
}

impl Fields {
    /// Looks the fields up in a shard's schema; fails if the index was not
    /// created by tandem.
    pub fn from_schema(schema: &Schema) -> tantivy::Result<Self> {
        Ok(Self {
            id: schema.get_field("id")?,
            title: schema.get_field("title")?,
            body: schema.get_field("body")?,
            text: schema.get_field("text")?,
            url: schema.get_field("url")?,
            attrs: schema.get_field("attrs")?,
        })
    }
}

/// The stemmer for an ISO 639-1 code, if tantivy has one.
pub fn stemmer_language(code: &str) -> Option<Language> {
    let lang = match code.to_ascii_lowercase().as_str() {
        "ar" => Language::Arabic,
        "da" => Language::Danish,
        "nl" => Language::Dutch,
        "en" => Language::English,
        "fi" => Language::Finnish,
        "fr" => Language::French,
        "de" => Language::German,
        "el" => Language::Greek,
        "hu" => Language::Hungarian,
        "it" => Language::Italian,
        "no" | "nb" | "nn" => Language::Norwegian,
        "pt" | "pt_br" | "pt_pt" | "pt-br" | "pt-pt" => Language::Portuguese,
        "ro" => Language::Romanian,
        "ru" => Language::Russian,
        "es" => Language::Spanish,
        "sv" => Language::Swedish,
        "ta" => Language::Tamil,
        "tr" => Language::Turkish,
        _ => return None,
    };
    Some(lang)
}

/// Name of the full-text tokenizer for a language code: one per stemmer,
/// and `tandem_plain` (no stemming) for languages without one.
pub fn text_tokenizer_name(language: &str) -> String {
    match stemmer_language(language) {
        Some(lang) => format!("tandem_{lang:?}").to_ascii_lowercase(),
        None => "tandem_plain".to_string(),
    }
}

/// The schema of a shard in `language`.
pub fn build_schema(language: &str) -> Schema {
    let text = TextOptions::default().set_stored().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(&text_tokenizer_name(language))
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let attrs = JsonObjectOptions::default()
        .set_stored()
        .set_expand_dots_enabled()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ATTRS_TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
    let mut builder = Schema::builder();
    builder.add_text_field("id", STRING | STORED);
    builder.add_text_field("title", text.clone());
    builder.add_text_field("body", text.clone());
    let derived = TextOptions::default().set_indexing_options(
        text.get_indexing_options()
            .cloned()
            .expect("text fields are indexed"),
    );
    builder.add_text_field("text", derived);
    builder.add_text_field("url", STORED);
    builder.add_json_field("attrs", attrs);
    builder.build()
}

/// Registers the tokenizers a shard in `language` needs on its index; must
/// be called on every open, since tantivy does not persist analyzers.
pub fn register_tokenizers(index: &Index, language: &str) {
    let base = || {
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_LEN))
            .filter(LowerCaser)
    };
    let text = match stemmer_language(language) {
        // Stop words ("a", "the", "de") would otherwise let a page full of
        // them outrank the one about the query's real terms. Folding accents
        // after stemming keeps the stemmer's rules intact while letting
        // "canción" match "cancion".
        Some(lang) => match StopWordFilter::new(lang) {
            Some(stop_words) => base()
                .filter(stop_words)
                .filter(Stemmer::new(lang))
                .filter(AsciiFoldingFilter)
                .build(),
            None => base()
                .filter(Stemmer::new(lang))
                .filter(AsciiFoldingFilter)
                .build(),
        },
        None => base().filter(AsciiFoldingFilter).build(),
    };
    index
        .tokenizers()
        .register(&text_tokenizer_name(language), text);
    index.tokenizers().register(ATTRS_TOKENIZER, base().build());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_map_to_tokenizers() {
        assert_eq!(text_tokenizer_name("en"), "tandem_english");
        assert_eq!(text_tokenizer_name("ES"), "tandem_spanish");
        assert_eq!(text_tokenizer_name("ko"), "tandem_plain");
        assert_eq!(text_tokenizer_name(""), "tandem_plain");
    }

    #[test]
    fn schema_has_every_field() {
        assert!(Fields::from_schema(&build_schema("en")).is_ok());
    }
}

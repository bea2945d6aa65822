//! Query normalisation, shared by training and serving.
//!
//! Training keys every model table by the normalised query and serving
//! normalises what the caller typed the same way, so "Extract a TAR archive!",
//! "extract a tar archive" and "  éxtract a tar   archive" all meet in one
//! entry. The steps, in order:
//!
//! 1. Unicode NFKD (compatibility decomposition: "ﬁ" becomes "fi", full-width
//!    letters become ASCII, "é" becomes "e" + a combining accent);
//! 2. combining marks (accents) are dropped, so users who do not type accents
//!    (common in Spanish) find the accented phrasings;
//! 3. lower-casing;
//! 4. runs of whitespace and control characters become one space;
//! 5. punctuation that only frames a query (quotes, brackets, sentence marks,
//!    dashes, see [`is_framing_punctuation`]) is trimmed at both ends. Symbols
//!    that are part of names (`c++`, `c#`, `$`) are kept.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Normalises a complete query (see the module docs for the steps).
///
/// The result may be empty (for example for `"?!"`); callers decide whether an
/// empty query is an error.
pub fn normalize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut pending_space = false;
    for c in raw.nfkd() {
        if is_combining_mark(c) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        for lower in c.to_lowercase() {
            // Lower-casing can itself produce combining marks ("İ" -> "i̇").
            if is_combining_mark(lower) {
                continue;
            }
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(lower);
        }
    }
    let trimmed = out.trim_matches(|c: char| c == ' ' || is_framing_punctuation(c));
    if trimmed.len() == out.len() {
        out
    } else {
        trimmed.to_string()
    }
}

/// Normalises a typed prefix for completion.
///
/// Same as [`normalize`], except that a prefix that ended in whitespace keeps
/// one trailing space: "tar " means the user finished the word "tar" and should
/// not be offered "tarball", while "tar" should.
pub fn normalize_prefix(raw: &str) -> String {
    let mut out = normalize(raw);
    let ends_in_space = raw
        .chars()
        .next_back()
        .is_some_and(|c| c.is_whitespace() || c.is_control());
    if ends_in_space && !out.is_empty() {
        out.push(' ');
    }
    out
}

/// The terms of an already normalised query: its space-separated words with
/// framing punctuation trimmed, empty words skipped.
///
/// Relevance tuning backs off from an unseen query to these terms.
pub fn terms(normalized: &str) -> impl Iterator<Item = &str> {
    normalized
        .split(' ')
        .map(|w| w.trim_matches(is_framing_punctuation))
        .filter(|w| !w.is_empty())
}

/// The first `n` characters (not bytes) of `s`, or all of `s` if it is
/// shorter. Prefix tables are keyed by characters so that non-Latin scripts are
/// not cut inside a character.
pub fn char_prefix(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// Whether `c` is punctuation that frames a query rather than being part of a
/// word or name: sentence marks, quotes, brackets, dashes and the Spanish
/// inverted marks. Symbols such as `+`, `#`, `$`, `/` are not framing.
pub fn is_framing_punctuation(c: char) -> bool {
    matches!(
        c,
        '.' | ','
            | ';'
            | ':'
            | '!'
            | '?'
            | '"'
            | '\''
            | '`'
            | '('
            | ')'
            | '['
            | ']'
            | '{'
            | '}'
            | '<'
            | '>'
            | '-'
            | '_'
            | '¿'
            | '¡'
            | '«'
            | '»'
            | '“'
            | '”'
            | '‘'
            | '’'
            | '„'
            | '–'
            | '—'
            | '。'
            | '、'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_and_collapses_whitespace() {
        assert_eq!(
            normalize("  Extract   a\tTAR\narchive  "),
            "extract a tar archive"
        );
    }

    #[test]
    fn strips_accents_and_compatibility_forms() {
        assert_eq!(
            normalize("Descomprimir un ARCHIVO ZIP en él"),
            "descomprimir un archivo zip en el"
        );
        assert_eq!(normalize("ﬁle ＴＡＲ"), "file tar");
        assert_eq!(normalize("Ñandú"), "nandu");
        // Lower-casing the dotted capital I yields a combining dot; it goes too.
        assert_eq!(normalize("İstanbul"), "istanbul");
    }

    #[test]
    fn trims_framing_punctuation_at_the_ends_only() {
        assert_eq!(normalize("¿Cómo listar archivos?"), "como listar archivos");
        assert_eq!(normalize("\"tar -xf\" ..."), "tar -xf");
        assert_eq!(normalize("c++"), "c++");
        assert_eq!(normalize("compile c#"), "compile c#");
        assert_eq!(normalize("( ! )"), "");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn control_characters_act_as_spaces() {
        assert_eq!(normalize("tar\u{0}archive\u{7f}"), "tar archive");
    }

    #[test]
    fn prefix_keeps_one_trailing_space() {
        assert_eq!(normalize_prefix("Tar  "), "tar ");
        assert_eq!(normalize_prefix("Tar"), "tar");
        assert_eq!(normalize_prefix("   "), "");
    }

    #[test]
    fn terms_split_and_trim() {
        let t: Vec<&str> = terms("extract a (tar) archive, now").collect();
        assert_eq!(t, vec!["extract", "a", "tar", "archive", "now"]);
        assert_eq!(terms("").count(), 0);
    }

    #[test]
    fn char_prefix_respects_characters() {
        assert_eq!(char_prefix("añadir", 3), "aña");
        assert_eq!(char_prefix("ab", 3), "ab");
        assert_eq!(char_prefix("검색어입니다", 2), "검색");
    }

    #[test]
    fn normalisation_is_idempotent() {
        for s in [
            "¿Cómo?  Listar   ARCHIVOS",
            "c++ \"x\"",
            "ﬁ ＴＡＲ. ",
            "tar",
        ] {
            let once = normalize(s);
            assert_eq!(normalize(&once), once, "{s:?}");
        }
    }
}

//! Snippets: the part of a hit's body that shows the query's words in
//! context, as HTML.
//!
//! tantivy picks the best window of the body (the one with the most
//! weight of query terms) and cuts it at *token* boundaries, which can be
//! inside a word: the body `[f]ile` is the tokens `f` and `ile`. This module
//! widens or narrows the window to whitespace, so a snippet starts and ends
//! with whole words, marks a cut with `…`, escapes the text, and wraps the
//! matched words in `<b>`. A body without any query term shows its
//! beginning.

use std::ops::Range;

use tantivy::query::Query;
use tantivy::snippet::SnippetGenerator;
use tantivy::{Searcher, TantivyError};

/// Characters of body text in a snippet, before widening to whole words.
pub const SNIPPET_CHARS: usize = 160;

/// Bytes a window edge may move to reach whitespace before it gives up and
/// moves the other way (a long token such as a URL).
const MAX_WIDEN: usize = 24;

/// The generator for one search's snippets on the `body` field.
pub fn generator(
    searcher: &Searcher,
    query: &dyn Query,
    body: tantivy::schema::Field,
) -> Result<SnippetGenerator, TantivyError> {
    let mut generator = SnippetGenerator::create(searcher, query, body)?;
    generator.set_max_num_chars(SNIPPET_CHARS);
    Ok(generator)
}

/// The HTML snippet of `body`.
pub fn render(generator: &SnippetGenerator, body: &str) -> String {
    let snippet = generator.snippet(body);
    if snippet.is_empty() {
        let end = floor_char_boundary(body, SNIPPET_CHARS.min(body.len()));
        let window = to_words(body, 0..end, None);
        return html(body, window, &[]);
    }
    let range = snippet.fragment_range();
    let marks: Vec<Range<usize>> = snippet
        .highlighted()
        .iter()
        .map(|h| h.start + range.start..h.end + range.start)
        .collect();
    let keep = (marks.first().map(|f| f.start), marks.last().map(|l| l.end));
    let window = to_words(body, range, Some(keep));
    html(body, window, &marks)
}

/// `range` of `text` moved to whitespace: each edge widens to the nearest
/// whitespace within [`MAX_WIDEN`] bytes, else narrows to the nearest
/// inside, never past `keep` (the first and last highlight).
fn to_words(
    text: &str,
    range: Range<usize>,
    keep: Option<(Option<usize>, Option<usize>)>,
) -> Range<usize> {
    let (keep_start, keep_end) = keep.unwrap_or((None, None));
    let is_space = |i: usize| text[i..].chars().next().is_some_and(char::is_whitespace);
    let mut start = range.start;
    if start > 0 && !text[..start].ends_with(char::is_whitespace) {
        let limit = start.saturating_sub(MAX_WIDEN);
        match text[..start].rfind(char::is_whitespace) {
            Some(ws) if ws >= limit => start = ws + 1,
            _ => {
                let bound = keep_start.unwrap_or(range.end);
                if let Some(ws) = text[start..bound].find(char::is_whitespace) {
                    start += ws + 1;
                }
            }
        }
    }
    let mut end = range.end.max(start);
    if end < text.len() && !is_space(end) {
        match text[end..].find(char::is_whitespace) {
            Some(ws) if ws <= MAX_WIDEN => end += ws,
            None if text.len() - end <= MAX_WIDEN => end = text.len(),
            _ => {
                let bound = keep_end.unwrap_or(start).max(start);
                if let Some(ws) = text[bound..end].rfind(char::is_whitespace) {
                    end = bound + ws;
                }
            }
        }
    }
    start..end
}

/// `window` of `text` as HTML: escaped, `marks` in `<b>`, `…` at cuts.
fn html(text: &str, window: Range<usize>, marks: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(window.len() + 16 * marks.len() + 8);
    let piece = &text[window.clone()];
    if window.start > 0 {
        out.push('…');
    }
    let mut at = window.start;
    for mark in marks {
        let (s, e) = (mark.start.max(at), mark.end.min(window.end));
        if s >= e {
            continue;
        }
        escape_into(&mut out, &text[at..s]);
        out.push_str("<b>");
        escape_into(&mut out, &text[s..e]);
        out.push_str("</b>");
        at = e;
    }
    escape_into(&mut out, &text[at..window.end]);
    if window.end < text.len() && !piece.is_empty() {
        out.push('…');
    }
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAR: &str = "[c]reate an archive and write it to a [f]ile: tar cf path/to/target.tar \
        path/to/file1\nE[x]tract a (compressed) archive [f]ile into the current directory \
        [v]erbosely: tar xvf path/to/source.tar[.gz|.bz2|.xz]";

    #[test]
    fn a_window_cut_inside_a_word_widens_to_it() {
        let at = TAR.find("ile into").unwrap();
        let window = to_words(TAR, at..at + 20, None);
        assert!(
            TAR[window.clone()].starts_with("[f]ile into"),
            "{:?}",
            &TAR[window]
        );
    }

    #[test]
    fn a_window_ending_inside_a_word_ends_at_its_end() {
        let at = TAR.find("archive and").unwrap();
        let window = to_words(TAR, at..at + 4, None);
        assert_eq!(&TAR[window], "archive");
    }

    #[test]
    fn a_long_token_is_cut_before_rather_than_widened_through() {
        let text = format!("find {} here", "x".repeat(100));
        let window = to_words(&text, 0..20, Some((Some(0), Some(4))));
        assert_eq!(&text[window], "find");
    }

    #[test]
    fn html_escapes_marks_and_cuts() {
        let text = "use <a> & b then more";
        let window = 4..14;
        let got = html(text, window, std::slice::from_ref(&(4..7)));
        assert_eq!(got, "…<b>&lt;a&gt;</b> &amp; b th…");
    }

    #[test]
    fn floor_char_boundary_never_splits_a_char() {
        assert_eq!(floor_char_boundary("aé", 2), 1);
        assert_eq!(floor_char_boundary("aé", 3), 3);
    }
}

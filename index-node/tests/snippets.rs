//! Snippets start and end at word boundaries, show the matched words in
//! `<b>` marks, and are HTML-escaped text of the body.

use tandem_index_node::shard::{SearchParams, Shard, ShardKey};
use tandem_proto::v1::Document;

/// The English tldr page for `tar`, as the sample corpus has it.
const TAR: &str = "Archiving utility.\nOften combined with a compression method, such as `gzip` or `bzip2`.\n[c]reate an archive and write it to a [f]ile: tar cf path/to/target.tar path/to/file1 path/to/file2 ...\n[c]reate a g[z]ipped archive and write it to a [f]ile: tar czf path/to/target.tar.gz path/to/file1 path/to/file2 ...\n[c]reate a g[z]ipped (compressed) archive from a directory using relative paths: tar czf path/to/target.tar.gz [-C|--directory] path/to/directory .\nE[x]tract a (compressed) archive [f]ile into the current directory [v]erbosely: tar xvf path/to/source.tar[.gz|.bz2|.xz]\nE[x]tract a (compressed) archive [f]ile into the target directory: tar xf path/to/source.tar[.gz|.bz2|.xz] [-C|--directory] path/to/directory\n[c]reate a compressed archive and write it to a [f]ile, using the file extension to [a]utomatically determine the compression program: tar caf path/to/target.tar.xz path/to/file1 path/to/file2 ...\nLis[t] the contents of a tar [f]ile [v]erbosely: tar tvf path/to/source.tar\nE[x]tract files matching a pattern from an archive [f]ile: tar xf path/to/source.tar --wildcards \"*.html\"";

fn snippet_for(query: &str, title: &str, body: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = ShardKey {
        tenant: "t".into(),
        shard: 0,
    };
    let shard = Shard::create(dir.path(), key, "en").unwrap();
    let doc = Document {
        id: "page".into(),
        title: title.into(),
        body: body.into(),
        ..Default::default()
    };
    shard.load_batch(1, &[doc], &[]).unwrap();
    let params = SearchParams {
        query: query.into(),
        top_k: 1,
        snippets: true,
        ..Default::default()
    };
    shard.search(&params).unwrap().hits.remove(0).snippet
}

/// The body text a snippet shows (marks, cut signs and escapes undone),
/// and whether it was cut at the start and at the end.
fn shown(snippet: &str) -> (String, bool, bool) {
    let cut_start = snippet.starts_with('…');
    let cut_end = snippet.ends_with('…');
    let text = snippet
        .trim_start_matches('…')
        .trim_end_matches('…')
        .replace("<b>", "")
        .replace("</b>", "")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    (text, cut_start, cut_end)
}

fn assert_word_bounded(snippet: &str, body: &str) {
    let (text, cut_start, cut_end) = shown(snippet);
    let at = body
        .find(&text)
        .unwrap_or_else(|| panic!("{snippet:?} is not text of the body"));
    let before = body[..at].chars().last();
    let after = body[at + text.len()..].chars().next();
    assert!(
        before.is_none_or(char::is_whitespace),
        "{snippet:?} starts inside a word"
    );
    assert!(
        after.is_none_or(char::is_whitespace),
        "{snippet:?} ends inside a word"
    );
    assert_eq!(cut_start, at > 0, "{snippet:?}: … marks a cut start");
    assert_eq!(
        cut_end,
        at + text.len() < body.len(),
        "{snippet:?}: … marks a cut end"
    );
}

#[test]
fn the_tar_page_snippet_is_whole_words_around_the_match() {
    let snippet = snippet_for("extract a tar archive", "tar", TAR);
    assert_word_bounded(&snippet, TAR);
    assert!(snippet.contains("<b>archive</b>"), "{snippet:?}");
    assert!(snippet.contains("<b>tar</b>"), "{snippet:?}");
}

#[test]
fn markup_in_the_body_is_escaped() {
    let body = "Run <script>alert(1)</script> & then extract the archive \"quietly\".";
    let snippet = snippet_for("extract archive", "page", body);
    assert!(!snippet.contains("<script>"), "{snippet:?}");
    assert!(snippet.contains("&lt;script&gt;"), "{snippet:?}");
    assert_word_bounded(&snippet, body);
}

#[test]
fn a_body_without_the_words_shows_its_beginning() {
    // "tar" is in the title only.
    let snippet = snippet_for("tar", "tar", "Archiving utility.".repeat(20).as_str());
    let (text, cut_start, _) = shown(&snippet);
    let body = "Archiving utility.".repeat(20);
    assert!(!cut_start && body.starts_with(&text), "{snippet:?}");
    assert_word_bounded(&snippet, &body);
}

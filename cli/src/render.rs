//! How the client commands show answers: snippets with their matched words
//! in bold on a terminal (plain elsewhere), and routes as a line or JSON.

use std::io::IsTerminal;

use tandem_proto::v1::Route;

/// Whether stdout is a terminal (bold highlights, progress bars).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

const BOLD: &str = "\u{1b}[1m";
const PLAIN: &str = "\u{1b}[22m";

/// A snippet for the terminal: the router's HTML (`<b>` around matched
/// words, text HTML-escaped) as bold text on a terminal (`bold`) or plain
/// text, on one line, at most `width` visible characters.
pub fn snippet(html: &str, width: usize, bold: bool) -> String {
    let mut out = String::new();
    let mut visible = 0;
    let mut open = false;
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        if visible >= width {
            break;
        }
        if let Some(after) = rest.strip_prefix("<b>") {
            open = bold;
            out.push_str(if bold { BOLD } else { "" });
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix("</b>") {
            open = false;
            out.push_str(if bold { PLAIN } else { "" });
            rest = after;
            continue;
        }
        let (text, len) = entity(rest).unwrap_or((c, c.len_utf8()));
        out.push(if text == '\n' { ' ' } else { text });
        visible += 1;
        rest = &rest[len..];
    }
    if open {
        out.push_str(PLAIN);
    }
    out
}

/// The character an HTML entity at the start of `s` stands for, and its
/// length (the escapes the router's snippets use).
fn entity(s: &str) -> Option<(char, usize)> {
    [
        ("&amp;", '&'),
        ("&lt;", '<'),
        ("&gt;", '>'),
        ("&quot;", '"'),
        ("&#39;", '\''),
    ]
    .iter()
    .find(|(e, _)| s.starts_with(e))
    .map(|(e, c)| (*c, e.len()))
}

/// Prints the route an answer took (and its time), one line.
pub fn print_route(route: Option<&Route>, took_micros: Option<u64>) {
    let Some(r) = route else { return };
    let shards: Vec<String> = r
        .shards
        .iter()
        .map(|s| {
            format!(
                "shard {} -> {} ({}, attempts {}{})",
                s.shard,
                s.node,
                s.region,
                s.attempts,
                if s.hedged { ", hedged" } else { "" }
            )
        })
        .collect();
    let shards = if shards.is_empty() {
        String::new()
    } else {
        format!("; {}", shards.join("; "))
    };
    println!(
        "route: entry {} -> served {}{}{}{}; model {}{}",
        r.entry_region,
        r.served_region,
        if r.forwarded { ", forwarded" } else { "" },
        if r.fallback { ", fallback" } else { "" },
        shards,
        if r.model_node.is_empty() {
            "-"
        } else {
            &r.model_node
        },
        took_micros.map_or(String::new(), |t| format!(
            "; took {:.2} ms",
            t as f64 / 1000.0
        )),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlights_are_bold_on_a_terminal_and_plain_elsewhere() {
        let html = "Extract <b>tar</b> files &amp; keep &lt;links&gt;\nnext line";
        assert_eq!(
            snippet(html, 90, false),
            "Extract tar files & keep <links> next line"
        );
        assert_eq!(
            snippet(html, 90, true),
            "Extract \u{1b}[1mtar\u{1b}[22m files & keep <links> next line"
        );
        assert_eq!(snippet(html, 11, false), "Extract tar");
        // A cut inside a highlight still ends the bold.
        assert!(snippet(html, 10, true).ends_with("\u{1b}[22m"));
    }
}

//! Writes tandem's known-item evaluation set for the English tldr pages
//! (`data/eval/tldr-known-items.jsonl`) on standard output:
//!
//! ```sh
//! cargo run -p tandem-benches --bin make-known-items > data/eval/tldr-known-items.jsonl
//! ```
//!
//! One query per page, made from the page's one-line **description** (never
//! from its example lines, which the model's synthetic events come from),
//! perturbed the way people type: lower case without punctuation, filler
//! words dropped, common synonyms swapped in, a content word left out,
//! words reordered. The description is also the first line of the page's
//! body, so an unperturbed copy would only reward exact-phrase matching.
//!
//! Pages left out: aliases, disambiguation pages ("can refer to multiple
//! commands"), and pages whose first description sentence is shared with
//! another page (the known item would be ambiguous) or has fewer than two
//! words. Each query is put in the `dev` split (tune on it) or the `test`
//! split (report it) by a hash of its page id. The output is deterministic.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;

/// Words people leave out of a search box.
const FILLER: &[&str] = &[
    "a", "an", "the", "of", "for", "to", "in", "on", "with", "and", "or", "using", "your", "from",
    "by", "as", "its", "into", "that", "which", "is", "are", "via", "at", "it",
];

/// Common substitutes for words of the descriptions.
const SYNONYMS: &[(&str, &[&str])] = &[
    ("display", &["show", "print"]),
    ("show", &["display", "view"]),
    ("print", &["show", "output"]),
    ("view", &["show", "see"]),
    ("list", &["show"]),
    ("remove", &["delete"]),
    ("delete", &["remove", "erase"]),
    ("create", &["make", "new"]),
    ("make", &["create", "build"]),
    ("generate", &["create", "make"]),
    ("directory", &["folder", "dir"]),
    ("directories", &["folders"]),
    ("utility", &["tool"]),
    ("tool", &["utility", "program"]),
    ("program", &["app", "application"]),
    ("application", &["app", "program"]),
    ("manage", &["control", "administer"]),
    ("download", &["fetch", "get"]),
    ("execute", &["run"]),
    ("run", &["execute", "start"]),
    ("start", &["launch", "begin"]),
    ("stop", &["halt", "end"]),
    ("modify", &["change", "edit"]),
    ("edit", &["modify", "change"]),
    ("change", &["modify", "set"]),
    ("convert", &["transform", "turn"]),
    ("search", &["find", "look"]),
    ("find", &["search", "locate"]),
    ("information", &["info", "details"]),
    ("configuration", &["config", "settings"]),
    ("configure", &["setup", "set"]),
    ("interact", &["work", "talk"]),
    ("terminal", &["console", "shell"]),
    ("command-line", &["cli", "terminal"]),
    ("retrieve", &["get", "fetch"]),
    ("check", &["verify", "test"]),
    ("compress", &["zip", "pack"]),
    ("extract", &["unpack", "unzip"]),
    ("copy", &["duplicate", "clone"]),
    ("move", &["relocate"]),
    ("monitor", &["watch", "track"]),
    ("kill", &["terminate", "end"]),
    ("process", &["task"]),
    ("processes", &["tasks"]),
    ("user", &["account"]),
    ("users", &["accounts"]),
    ("image", &["picture"]),
    ("images", &["pictures"]),
    ("simple", &["basic", "easy"]),
    ("fast", &["quick"]),
    ("lightweight", &["small", "light"]),
    ("client", &["app"]),
    ("send", &["transmit"]),
    ("update", &["upgrade", "refresh"]),
    ("install", &["setup", "add"]),
    ("files", &["documents"]),
    ("file", &["document"]),
    ("text", &["string"]),
    ("network", &["net"]),
    ("server", &["host", "daemon"]),
    ("package", &["pkg"]),
    ("packages", &["pkgs"]),
    ("system", &["os", "machine"]),
    ("query", &["ask", "lookup"]),
];

#[derive(Deserialize)]
struct Page {
    id: String,
    lang: String,
    description: String,
    is_alias: bool,
}

fn main() -> anyhow::Result<()> {
    let corpus = tandem_benches::sample_corpus();
    let file = std::fs::File::open(&corpus)?;
    let pages: Vec<Page> = BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Page>(&l).ok())
        .filter(|p| p.lang == "en" && !p.is_alias)
        .filter(|p| !p.description.contains("can refer to multiple commands"))
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for page in &pages {
        *seen
            .entry(words(&first_sentence(&page.description)).join(" "))
            .or_default() += 1;
    }
    let synonyms: HashMap<&str, &[&str]> = SYNONYMS.iter().copied().collect();
    let mut out = std::io::stdout().lock();
    for page in &pages {
        let original = words(&first_sentence(&page.description));
        if original.len() < 2 || seen[&original.join(" ")] > 1 {
            continue;
        }
        let mut rng = StdRng::seed_from_u64(fnv1a(page.id.as_bytes()));
        let query = perturb(&original, &synonyms, &mut rng);
        let split = if fnv1a(format!("split:{}", page.id).as_bytes()).is_multiple_of(2) {
            "dev"
        } else {
            "test"
        };
        let line = serde_json::json!({"query": query, "page": page.id, "split": split});
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The description up to its first sentence end (". "), which is the line
/// a page's body starts with.
fn first_sentence(description: &str) -> String {
    match description.find(". ") {
        Some(end) => description[..end].to_string(),
        None => description.trim_end_matches('.').to_string(),
    }
}

/// Lower-case words without punctuation (hyphens inside words kept).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '.' || c == '+'))
        .map(|w| {
            w.trim_matches(|c: char| c == '.' || c == '-')
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// A typed version of `original`: always different from it when it can be.
fn perturb(original: &[String], synonyms: &HashMap<&str, &[&str]>, rng: &mut StdRng) -> String {
    let mut out: Vec<String> = Vec::new();
    for word in original {
        if FILLER.contains(&word.as_str()) && rng.random_bool(0.6) {
            continue;
        }
        match synonyms.get(word.as_str()) {
            Some(alts) if rng.random_bool(0.5) => {
                out.push(alts[rng.random_range(0..alts.len())].to_string())
            }
            _ => out.push(word.clone()),
        }
    }
    let content: Vec<usize> = (0..out.len())
        .filter(|&i| !FILLER.contains(&out[i].as_str()))
        .collect();
    if content.len() >= 4 && rng.random_bool(0.4) {
        out.remove(content[rng.random_range(0..content.len())]);
    }
    if out.len() >= 2 && rng.random_bool(0.35) {
        let i = rng.random_range(0..out.len() - 1);
        out.swap(i, i + 1);
    }
    if out.len() >= 3 && rng.random_bool(0.2) {
        let last = out.pop().expect("three words");
        out.insert(0, last);
    }
    if out == original && out.len() >= 2 {
        // Nothing changed: people rarely type a sentence in its order.
        out.swap(0, 1);
    }
    out.join(" ")
}

/// FNV-1a: a seed and a split that stay the same across Rust versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

//! Fixtures shared by the unit tests of several modules.

use std::path::Path;

use crate::artifact::write_new_version;
use crate::corpus::Page;
use crate::synth::{generate, SynthConfig};
use crate::train::{train, TrainConfig};

/// A small corpus for fast tests: 60 pages with three examples each, sharing
/// vocabulary so that the synthetic engine has neighbours to show.
pub(crate) fn toy_pages() -> Vec<Page> {
    let verbs = ["Extract", "Create", "List", "Delete", "Show", "Compress"];
    let objects = [
        "archive",
        "file",
        "directory",
        "process",
        "user",
        "network interface",
        "disk image",
        "package",
        "container",
        "branch",
    ];
    let mut pages = Vec::new();
    for (i, obj) in objects.iter().enumerate() {
        for (j, verb) in verbs.iter().enumerate() {
            let name = format!("cmd{i}{j}");
            pages.push(Page {
                id: format!("en/common/{name}"),
                title: name.clone(),
                examples: vec![
                    format!("{verb} a {obj} with `{name}`"),
                    format!("{verb} every {obj} recursively in verbose mode"),
                    format!("Display the help of {name}"),
                ],
            });
        }
    }
    pages
}

/// Trains `tenant` on a small synthetic log of [`toy_pages`] (`seed` varies
/// the model) and writes it as version `v<millis>` under `dir`; returns the
/// version.
pub(crate) fn write_version(dir: &Path, tenant: &str, seed: u64, millis: u64) -> String {
    let events = generate(&toy_pages(), &SynthConfig::new(400, seed));
    let (set, _) = train(&events, tenant, &TrainConfig::default()).expect("train");
    write_new_version(dir, &set, millis)
        .expect("write")
        .file
        .version
}

//! The container image and the deployment name only binaries the workspace
//! builds: a renamed or removed binary fails here, not in a cluster. (No
//! container runtime is reachable where the tests run, so the image itself
//! is not built; see docs/operations.md.)

use std::collections::BTreeSet;

use tandem_e2e::{bin_path, repo_root};

/// Every `tandem...` word of the Dockerfile's `cp target/release/...` lines.
fn binaries_in_dockerfile() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix("target/release/"))
        .map(|w| w.trim_end_matches('\\').to_string())
        .collect()
}

#[test]
fn every_binary_the_image_ships_is_a_workspace_binary() {
    let named = binaries_in_dockerfile();
    assert_eq!(
        named,
        BTreeSet::from(
            [
                "tandem",
                "tandem-index-node",
                "tandem-loadgen",
                "tandem-model-node",
                "tandem-router"
            ]
            .map(String::from)
        ),
        "the image ships the servers, the CLI and the load generator"
    );
    for name in &named {
        assert!(
            bin_path(name).exists(),
            "the Dockerfile copies {name}, which the workspace does not build"
        );
    }
    // The packages it builds are the workspace's.
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    for package in dockerfile
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
    {
        let dir = package.trim_start_matches("tandem-");
        let manifest = match dir {
            "cli" => repo_root().join("cli/Cargo.toml"),
            other => repo_root().join(other).join("Cargo.toml"),
        };
        let text = std::fs::read_to_string(&manifest)
            .unwrap_or_else(|_| panic!("-p {package}: no {}", manifest.display()));
        assert!(text.contains(&format!("name = \"{package}\"")), "{package}");
    }
}

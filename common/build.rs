//! Records the git commit the binaries are built from (`TANDEM_COMMIT`,
//! shown by `tandem_build_info` and `tandem --version`); `unknown` when the
//! source is not a git checkout (a container build without `.git`).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TANDEM_COMMIT={commit}");
    // Built again when HEAD moves: HEAD itself, and the branch it names.
    if let Ok(head) = std::fs::read_to_string("../.git/HEAD") {
        println!("cargo:rerun-if-changed=../.git/HEAD");
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            let path = format!("../.git/{branch}");
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

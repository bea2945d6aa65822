//! Running the `tandem` command as a process, as its users do, and checks
//! of its behaviour shared by the tests of plaintext and TLS clusters.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `tandem` binary.
pub fn tandem() -> PathBuf {
    crate::bin_path("tandem")
}

/// Runs `tandem args...` in `cwd` and returns what it did.
pub fn run(cwd: &Path, args: &[&str]) -> Output {
    Command::new(tandem())
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tandem")
}

/// What it printed on stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What it printed on stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `tandem args...` succeeded; its stdout.
pub fn ok(cwd: &Path, args: &[&str]) -> String {
    let o = run(cwd, args);
    assert!(
        o.status.success(),
        "tandem {args:?} failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

/// `tandem args...` failed with an error message; its stderr.
pub fn fails(cwd: &Path, args: &[&str]) -> String {
    let o = run(cwd, args);
    assert!(!o.status.success(), "tandem {args:?} should fail");
    stderr(&o)
}

/// `tandem key`: a new search key works through both regions' routers at
/// once; revoked, it stops working in both.
pub fn assert_key_lifecycle(cwd: &Path, t: &str) {
    let scope = ["--tenant", "tldr-en", "--scope", "search", "--topology", t];
    let out = ok(cwd, &[&["key", "create"][..], &scope].concat());
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("new Search key of tldr-en: "))
        .unwrap_or_else(|| panic!("no key in {out}"))
        .trim()
        .to_string();
    let listed = ok(
        cwd,
        &["key", "list", "--tenant", "tldr-en", "--topology", t],
    );
    let hash = tandem_catalog::hash_key(&key);
    assert!(listed.contains(&hash) && !listed.contains(&key), "{listed}");
    fn search<'a>(t: &'a str, region: &'a str, key: &'a str) -> Vec<&'a str> {
        let args = ["search", "--topology", t, "--region", region];
        [
            &args[..],
            &["--tenant", "tldr-en", "--key", key, "list files"],
        ]
        .concat()
    }
    for region in ["us-east-1", "us-east-2"] {
        ok(cwd, &search(t, region, &key));
    }
    ok(
        cwd,
        &[
            &["key", "revoke", "--key-sha256", hash.as_str()][..],
            &scope,
        ]
        .concat(),
    );
    for region in ["us-east-1", "us-east-2"] {
        let err = fails(cwd, &search(t, region, &key));
        assert!(
            err.to_lowercase().contains("unauthenticated") || err.contains("key"),
            "{err}"
        );
    }
}

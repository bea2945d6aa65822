//! Loading TOML configuration files.
//!
//! Every process accepts a `--config FILE` whose values command-line flags may
//! override ([`load_with_flags`]: one rule for every binary). A broken file
//! must be refused with a message that names the file and the problem, never
//! a panic.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The configuration `T` from the file at `path` (or `T`'s defaults), with
/// every flag in `flags` that was given set over it.
///
/// `flags` serializes to a table whose keys are `T`'s field names, leaving
/// out the flags not given (`#[serde(skip_serializing_if =
/// "Option::is_none")]`, and for switches `"std::ops::Not::not"`), and
/// skipping what is not configuration (`#[serde(skip)]`: the config path,
/// secrets).
pub fn load_with_flags<T: DeserializeOwned>(
    path: Option<&Path>,
    flags: &impl Serialize,
) -> anyhow::Result<T> {
    let mut table = match path {
        Some(path) => load_toml::<toml::Table>(path)?,
        None => toml::Table::new(),
    };
    let given = toml::Table::try_from(flags).context("cannot read the command-line flags")?;
    table.extend(given);
    T::deserialize(table).map_err(|e| match path {
        Some(path) => anyhow::anyhow!("invalid config file {}: {e}", path.display()),
        None => anyhow::anyhow!("invalid flags: {e}"),
    })
}

/// Reads and parses a TOML file into `T`, naming the file in any error.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_toml(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Parses TOML text into `T`; the error carries the line and column.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Sample {
        name: String,
        #[serde(default)]
        port: u16,
    }

    #[test]
    fn parses_valid_toml() {
        let s: Sample = parse_toml("name = \"a\"\nport = 7").unwrap();
        assert_eq!((s.name.as_str(), s.port), ("a", 7));
    }

    #[test]
    fn broken_toml_is_an_error_with_position() {
        let err = parse_toml::<Sample>("name = ").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    }

    #[test]
    fn flags_given_override_the_file_and_others_leave_it() {
        let dir = std::env::temp_dir().join(format!("tandem-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "name = \"a\"\nport = 7").unwrap();
        let s: Sample = load_with_flags(Some(&path), &Flags { port: Some(9) }).unwrap();
        assert_eq!((s.name.as_str(), s.port), ("a", 9));
        let s: Sample = load_with_flags(Some(&path), &Flags { port: None }).unwrap();
        assert_eq!(s.port, 7);
        let err = load_with_flags::<Sample>(None, &Flags { port: None }).unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = load_toml::<Sample>(Path::new("/nonexistent/tandem.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/tandem.toml"));
    }
}

//! Loading TOML configuration files.
//!
//! Every process accepts a `--config FILE` whose values command-line flags may
//! override. A broken file must be refused with a message that names the file
//! and the problem, never a panic.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

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

    #[test]
    fn missing_file_names_the_file() {
        let err = load_toml::<Sample>(Path::new("/nonexistent/tandem.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/tandem.toml"));
    }
}

//! Property tests of the catalog parser: no file, however broken, panics
//! it; a broken file is refused with a message, never half-read.

use proptest::prelude::*;
use tandem_catalog::Catalog;

const EXAMPLE: &str = include_str!("../catalog.example.toml");

proptest! {
    #[test]
    fn any_bytes_are_parsed_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Catalog::parse(&bytes);
    }

    /// The example catalog with a few bytes changed, cut or repeated:
    /// parsed or refused with a message.
    #[test]
    fn a_damaged_catalog_is_parsed_or_refused(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8)
    ) {
        let mut bytes = EXAMPLE.as_bytes().to_vec();
        for (at, byte, how) in edits {
            let i = at.index(bytes.len().max(1));
            match how {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => {
                    let tail = bytes[i..].to_vec();
                    bytes.extend_from_slice(&tail[..tail.len().min(64)]);
                }
            }
        }
        match Catalog::parse(&bytes) {
            Ok(c) => prop_assert!(!c.version().is_empty()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

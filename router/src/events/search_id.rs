//! Search ids: self-contained, signed tokens that let any router of either
//! region verify a click without asking the router that served the search.
//!
//! A token holds the tenant, the time of the search, a random nonce (so
//! that two equal searches get different ids), the offset of the result
//! list, and for each hit shown a 64-bit hash of (document id, position).
//! It is signed with HMAC-SHA256 (truncated to 128 bits) under a key all
//! routers share (`--search-id-key-file`), and encoded as URL-safe base64:
//!
//! ```text
//! 1 | key id | unix secs (8) | nonce (8) | offset (4) | n (1) | n x hash (8) | mac (16)
//! ```
//!
//! The tenant is not written out: the MAC covers it, so a token verifies
//! for its own tenant only. The nonce, as 16 hex digits, is the search's
//! session in the event log ([`SearchIdClaims::session`]): short, unique,
//! and the same for a search and its clicks.
//!
//! Only the first [`MAX_SIGNED_HITS`] hits are signed: a click further down
//! a very long list is refused. Keys rotate: the file lists several, the
//! first signs and every one verifies (the key id, the first byte of the
//! key's SHA-256, picks it), so a new key goes on top and the old one stays
//! below until its tokens have expired.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The token format this router writes and reads.
const FORMAT: u8 = 1;
/// Hits whose positions a token proves.
pub const MAX_SIGNED_HITS: usize = 100;
/// Bytes of each hit's hash.
const HASH_LEN: usize = 8;
/// Bytes of the truncated MAC.
const MAC_LEN: usize = 16;
/// Bytes before the hashes: format, key id, time, nonce, offset, count.
const HEADER_LEN: usize = 1 + 1 + 8 + 8 + 4 + 1;

type HmacSha256 = Hmac<Sha256>;

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchIdClaims {
    /// Unix seconds of the search.
    pub issued: u64,
    /// The search's random nonce.
    pub nonce: u64,
    /// The result list's offset.
    pub offset: u32,
    /// Hashes of (id, position) of the hits shown, in order.
    hashes: Vec<u64>,
}

impl SearchIdClaims {
    /// Whether `doc` was shown at 1-based `position` (offset included).
    pub fn showed(&self, doc: &str, position: u32) -> bool {
        let Some(index) = position
            .checked_sub(self.offset)
            .and_then(|p| p.checked_sub(1))
        else {
            return false;
        };
        self.hashes
            .get(index as usize)
            .is_some_and(|&h| h == hit_hash(doc, position))
    }

    /// The search's session in the event log.
    pub fn session(&self) -> String {
        session_of(self.nonce)
    }

    /// The hit's rank within the list as shown (1-based, without offset).
    pub fn rank_in_list(&self, position: u32) -> u32 {
        position.saturating_sub(self.offset)
    }
}

/// Why a token was refused (the public message says which, never more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SearchIdError {
    /// Not base64, too short, a format this router does not know.
    #[error("search_id is malformed")]
    Malformed,
    /// The signature does not verify under any key (or another tenant's).
    #[error("search_id does not verify")]
    BadSignature,
    /// Older than the click window, or from the future.
    #[error("search_id has expired")]
    Expired,
}

/// The signing keys: the first signs, each verifies.
#[derive(Clone)]
pub struct SearchIdKeys {
    /// (key id, the MAC keyed with the key), the signing key first; a MAC
    /// is cloned per token, so the key's padding is hashed once.
    keys: Vec<(u8, HmacSha256)>,
}

impl std::fmt::Debug for SearchIdKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SearchIdKeys({} keys)", self.keys.len())
    }
}

impl SearchIdKeys {
    /// Keys from a key file's text: one key per line (at least 16 bytes
    /// each; blank lines and `#` comments ignored; at most 255 keys).
    pub fn parse(text: &str) -> Result<SearchIdKeys, String> {
        use sha2::Digest;
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.is_empty() {
            return Err("no key in the search-id key file".into());
        }
        if lines.len() > 255 {
            return Err("more than 255 keys in the search-id key file".into());
        }
        if lines.iter().any(|k| k.len() < 16) {
            return Err("a search-id key is shorter than 16 bytes".into());
        }
        let keys = lines
            .iter()
            .filter_map(|l| {
                let mac = HmacSha256::new_from_slice(l.as_bytes()).ok()?;
                Some((Sha256::digest(l.as_bytes())[0], mac))
            })
            .collect();
        Ok(SearchIdKeys { keys })
    }

    fn mac(keyed: &HmacSha256, tenant: &str, body: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = keyed.clone();
        mac.update(tenant.as_bytes());
        mac.update(&[0]);
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// A token for a search of `tenant` at `issued`, with `nonce` (random,
    /// see [`session_of`]), that showed `ids` from `offset` on.
    pub fn sign<'a>(
        &self,
        tenant: &str,
        (issued, nonce): (u64, u64),
        offset: u32,
        ids: impl ExactSizeIterator<Item = &'a str>,
    ) -> String {
        let shown = ids.len().min(MAX_SIGNED_HITS);
        let mut body = Vec::with_capacity(HEADER_LEN + HASH_LEN * shown + MAC_LEN);
        let (key_id, key) = &self.keys[0];
        body.extend_from_slice(&[FORMAT, *key_id]);
        body.extend_from_slice(&issued.to_be_bytes());
        body.extend_from_slice(&nonce.to_be_bytes());
        body.extend_from_slice(&offset.to_be_bytes());
        body.push(shown as u8);
        for (i, id) in ids.take(shown).enumerate() {
            let position = offset.saturating_add(i as u32 + 1);
            body.extend_from_slice(&hit_hash(id, position).to_be_bytes());
        }
        let mac = Self::mac(key, tenant, &body);
        body.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// Checks a token for `tenant` at `now` (Unix seconds): it must verify
    /// and have been issued within `window_secs` (a minute of clock skew
    /// is forgiven).
    pub fn verify(
        &self,
        token: &str,
        tenant: &str,
        now: u64,
        window_secs: u64,
    ) -> Result<SearchIdClaims, SearchIdError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| SearchIdError::Malformed)?;
        if bytes.len() < HEADER_LEN + MAC_LEN || bytes[0] != FORMAT {
            return Err(SearchIdError::Malformed);
        }
        let (body, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        let shown = body[HEADER_LEN - 1] as usize;
        if body.len() != HEADER_LEN + HASH_LEN * shown {
            return Err(SearchIdError::Malformed);
        }
        let signed = self
            .keys
            .iter()
            .filter(|(id, _)| *id == body[1])
            .map(|(_, key)| Self::mac(key, tenant, body))
            .any(|expected| bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], mac)));
        if !signed {
            return Err(SearchIdError::BadSignature);
        }
        let be8 = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
        let (issued, nonce) = (be8(2), be8(10));
        let offset = u32::from_be_bytes(body[18..22].try_into().unwrap_or([0; 4]));
        if issued > now.saturating_add(60) || now.saturating_sub(issued) > window_secs {
            return Err(SearchIdError::Expired);
        }
        let hashes = body[HEADER_LEN..]
            .chunks_exact(HASH_LEN)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(SearchIdClaims {
            issued,
            nonce,
            offset,
            hashes,
        })
    }
}

/// A 64-bit hash of a hit at its position. The MAC keeps it from being
/// changed; 64 bits keep a made-up id from being found that hashes alike.
fn hit_hash(id: &str, position: u32) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), u64::from(position))
}

/// The session of a search with `nonce` in the event log.
pub fn session_of(nonce: u64) -> String {
    format!("{nonce:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SearchIdKeys {
        SearchIdKeys::parse("# rotate by adding a line on top\n0123456789abcdef0123\n")
            .expect("keys")
    }

    #[test]
    fn a_token_proves_each_hit_at_its_position_and_nothing_else() {
        let k = keys();
        let token = k.sign("t1", (1000, 7), 10, ["a", "b", "c"].into_iter());
        let claims = k.verify(&token, "t1", 1010, 3600).expect("verifies");
        assert_eq!(claims.session(), "0000000000000007");
        assert!(claims.showed("a", 11));
        assert!(claims.showed("c", 13));
        assert_eq!(claims.rank_in_list(13), 3);
        assert!(!claims.showed("a", 12), "wrong position");
        assert!(!claims.showed("z", 11), "never shown");
        assert!(!claims.showed("a", 1), "before the offset");
        assert!(!claims.showed("a", 14), "past the list");
    }

    #[test]
    fn forged_foreign_expired_and_garbled_tokens_are_refused() {
        let k = keys();
        let token = k.sign("t1", (1000, rand::random()), 0, ["a"].into_iter());
        assert_eq!(
            k.verify(&token, "t2", 1000, 3600),
            Err(SearchIdError::BadSignature),
            "another tenant's"
        );
        assert_eq!(
            k.verify(&token, "t1", 5000, 3600),
            Err(SearchIdError::Expired)
        );
        assert_eq!(
            k.verify(&token, "t1", 800, 3600),
            Err(SearchIdError::Expired)
        );
        let other = SearchIdKeys::parse("another key, long enough").expect("keys");
        assert_eq!(
            other.verify(&token, "t1", 1000, 3600),
            Err(SearchIdError::BadSignature)
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("b64");
        bytes[HEADER_LEN] ^= 1; // the first hit's hash
        let tampered = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(
            k.verify(&tampered, "t1", 1000, 3600),
            Err(SearchIdError::BadSignature)
        );
        for junk in ["", "!!!", "AAAA", &token[..token.len() - 3]] {
            assert!(k.verify(junk, "t1", 1000, 3600).is_err(), "{junk}");
        }
    }

    #[test]
    fn equal_searches_get_different_ids_and_rotation_keeps_old_ones() {
        let k = keys();
        let a = k.sign("t1", (1000, rand::random()), 0, ["a"].into_iter());
        let b = k.sign("t1", (1000, rand::random()), 0, ["a"].into_iter());
        assert_ne!(a, b);
        // A rotated file: the new key on top signs, the old one verifies.
        let rotated = SearchIdKeys::parse("new key, long enough\n0123456789abcdef0123").expect("k");
        assert!(rotated.verify(&a, "t1", 1000, 3600).is_ok());
        let fresh = rotated.sign("t1", (1000, 1), 0, ["a"].into_iter());
        assert!(rotated.verify(&fresh, "t1", 1000, 3600).is_ok());
        assert!(k.verify(&fresh, "t1", 1000, 3600).is_err());
        let long: Vec<String> = (0..150).map(|i| format!("d{i}")).collect();
        let t = k.sign("t1", (1000, 2), 0, long.iter().map(String::as_str));
        let claims = k.verify(&t, "t1", 1000, 3600).expect("verifies");
        assert!(claims.showed("d99", 100));
        assert!(!claims.showed("d100", 101), "past the signed hits");
        assert!(SearchIdKeys::parse("short").is_err());
        assert!(SearchIdKeys::parse("\n# only a comment\n").is_err());
    }
}

//! Bearer-token checks for admin APIs (fault injection, router admin).
//!
//! Tokens are compared as SHA-256 digests in constant time, so neither the
//! token's length nor its prefix leaks through response timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// Hex SHA-256 of a secret, the form in which keys are stored.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Hex SHA-256 of raw bytes (e.g. a catalog file's version).
pub fn sha256_hex_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The token of an `authorization: Bearer <token>` header, if present.
pub fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    parse_bearer(metadata.get("authorization")?.to_str().ok()?)
}

/// The token of an `authorization` header value `Bearer <token>` (scheme
/// case-insensitive, as HTTP auth schemes are); `None` when the value is
/// not a bearer credential or the token is empty.
pub fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// Constant-time equality of two secrets (compared through their digests).
pub fn secrets_equal(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// Checks the caller's bearer token against the admin token: a missing token
/// is UNAUTHENTICATED, a wrong one PERMISSION_DENIED.
pub fn require_admin(metadata: &MetadataMap, admin_token: &str) -> Result<(), Status> {
    match bearer_token(metadata) {
        None => Err(Status::unauthenticated(
            "missing `authorization: Bearer <admin token>`",
        )),
        Some(token) if secrets_equal(token, admin_token) => Ok(()),
        Some(_) => Err(Status::permission_denied("admin token not accepted")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = value {
            m.insert("authorization", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn bearer_values() {
        assert_eq!(parse_bearer("Bearer abc"), Some("abc"));
        assert_eq!(parse_bearer("bearer   abc "), Some("abc"));
        assert_eq!(parse_bearer("Basic abc"), None);
        assert_eq!(parse_bearer("Bearer "), None);
        assert_eq!(parse_bearer("abc"), None);
    }

    #[test]
    fn admin_checks() {
        assert_eq!(
            require_admin(&md(None), "t").unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            require_admin(&md(Some("Bearer nope")), "t")
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        assert!(require_admin(&md(Some("Bearer t")), "t").is_ok());
        assert!(require_admin(&md(Some("bearer t")), "t").is_ok());
        assert_eq!(
            require_admin(&md(Some("Basic t")), "t").unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn sha256_hex_is_stable() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

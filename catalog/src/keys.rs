//! API keys: hashing, constant-time verification, and the auth decision.
//!
//! The catalog stores only SHA-256 hashes of keys. Keys are random secrets
//! (not passwords), so an unsalted fast hash is enough: a stolen catalog gives
//! nothing to brute-force. A presented key is hashed and compared against
//! every stored hash of the tenant with `subtle`, without early exit, so
//! timing does not reveal how close a guess was or which key matched.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::{Catalog, Tenant};

/// SHA-256 of an API key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Hashes a presented key.
    pub fn of_key(key: &str) -> KeyHash {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// Parses 64 hex digits (either case), as written in `api_key_sha256`.
    pub fn from_hex(hex: &str) -> Option<KeyHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).ok()?;
        Some(KeyHash(out))
    }

    /// Lowercase hex, as written in a catalog.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.to_hex())
    }
}

/// The `api_key_sha256` entry for `key`, for tooling that writes catalogs
/// (same as `printf %s "$KEY" | sha256sum`).
pub fn hash_key(key: &str) -> String {
    KeyHash::of_key(key).to_hex()
}

/// Result of checking a presented key against one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// The key is one of the tenant's keys.
    Valid,
    /// It is not (or it is empty).
    Invalid,
}

/// What a key may do. A tenant's keys are listed per scope in the catalog
/// (`api_key_sha256`: search, `write_key_sha256`: write); a key listed in
/// both has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// `Search` and `Suggest`.
    Search,
    /// `Documents.Write`.
    Write,
}

/// Checks `presented` against `tenant`'s search keys in constant time (with
/// respect to the stored hashes: every one is compared, no early exit).
pub fn verify_key(tenant: &Tenant, presented: &str) -> KeyCheck {
    if presented.is_empty() {
        return KeyCheck::Invalid;
    }
    verify_key_hash(tenant, &KeyHash::of_key(presented))
}

/// [`verify_key`] for a key already hashed (see [`KeyHash::of_key`]).
pub fn verify_key_hash(tenant: &Tenant, presented: &KeyHash) -> KeyCheck {
    verify_scoped_key_hash(tenant, presented, KeyScope::Search)
}

/// Whether `presented` is one of `tenant`'s keys with `scope`.
pub fn verify_scoped_key_hash(tenant: &Tenant, presented: &KeyHash, scope: KeyScope) -> KeyCheck {
    let stored = match scope {
        KeyScope::Search => &tenant.key_hashes,
        KeyScope::Write => &tenant.write_key_hashes,
    };
    let mut found = Choice::from(0);
    for stored in stored {
        found |= stored.0.ct_eq(&presented.0);
    }
    if bool::from(found) {
        KeyCheck::Valid
    } else {
        KeyCheck::Invalid
    }
}

/// The auth decision for a call naming `tenant` with a presented key, mapped
/// one-to-one onto gRPC codes by the serving layer. No outcome reveals
/// whether an unknown tenant exists to a caller without a valid key.
#[derive(Debug, Clone)]
pub enum AuthOutcome {
    /// The key belongs to the tenant: serve it.
    Authorized(Arc<Tenant>),
    /// No key, or a key of no tenant at all: UNAUTHENTICATED.
    Unauthenticated,
    /// A valid key of a *different* tenant: PERMISSION_DENIED.
    PermissionDenied,
    /// The caller holds a valid key but names a tenant that does not exist:
    /// NOT_FOUND (only authenticated callers learn that a tenant is unknown).
    TenantNotFound,
}

impl Catalog {
    /// Decides whether a call for `tenant` presenting `key` (already taken
    /// out of `authorization: Bearer`, see [`bearer_token`]) may be served.
    pub fn authorize(&self, tenant: &str, key: Option<&str>) -> AuthOutcome {
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return AuthOutcome::Unauthenticated;
        };
        self.authorize_hash(tenant, &KeyHash::of_key(key))
    }

    /// The tenant a key (hashed) belongs to, whatever its scope: what a
    /// router knows from a call's headers alone, before reading its body.
    pub fn key_owner(&self, hash: &KeyHash) -> Option<&Arc<str>> {
        self.key_owner.get(hash)
    }

    /// [`Catalog::authorize`] for a presented key already hashed.
    pub fn authorize_hash(&self, tenant: &str, hash: &KeyHash) -> AuthOutcome {
        self.authorize_scoped(tenant, hash, KeyScope::Search)
    }

    /// Like [`Catalog::authorize_hash`] for a key that needs `scope`. A key
    /// of the tenant without that scope is PERMISSION_DENIED.
    pub fn authorize_scoped(&self, tenant: &str, hash: &KeyHash, scope: KeyScope) -> AuthOutcome {
        if let Some(t) = self.tenants.get(tenant) {
            if verify_scoped_key_hash(t, hash, scope) == KeyCheck::Valid {
                return AuthOutcome::Authorized(t.clone());
            }
        }
        // Looking the hash up (not the key) cannot leak the key through
        // timing; it only tells a valid key of another tenant from garbage.
        match self.key_owner.get(hash) {
            None => AuthOutcome::Unauthenticated,
            Some(_) if self.tenants.contains_key(tenant) => AuthOutcome::PermissionDenied,
            Some(_) => AuthOutcome::TenantNotFound,
        }
    }
}

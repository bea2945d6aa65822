//! The rule for ids: tenants, nodes, regions.
//!
//! Tenant ids become directory names on index and model nodes, so they must
//! never be able to escape the data directory (`../x`), be empty, or be long
//! enough to hit file-system limits. The catalog holds every id to the same
//! rule, and the nodes and the router check the ids callers send with it.

/// The longest tenant id accepted.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// Whether `id` is 1-64 characters of `[A-Za-z0-9_.-]` starting with a
/// letter or digit (no allocation: the router asks on every call).
pub fn is_valid_id(id: &str) -> bool {
    match id.as_bytes().split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphanumeric()
                && rest.len() < MAX_TENANT_ID_LEN
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        }
        None => false,
    }
}

/// [`is_valid_id`] for a tenant id, with a message suitable for
/// INVALID_ARGUMENT saying what is wrong.
pub fn validate_tenant_id(tenant: &str) -> Result<(), String> {
    if is_valid_id(tenant) {
        return Ok(());
    }
    if tenant.is_empty() {
        return Err("tenant id is empty".to_string());
    }
    if tenant.len() > MAX_TENANT_ID_LEN {
        return Err(format!(
            "tenant id is {} bytes long; at most {MAX_TENANT_ID_LEN} are allowed",
            tenant.len()
        ));
    }
    Err(format!(
        "tenant id {tenant:?} is not allowed: use letters, digits, '_', '.', '-', starting with a letter or digit"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for id in ["en", "tldr-es", "acme.prod_2", "A1"] {
            assert!(validate_tenant_id(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_unsafe_ids() {
        let long = "a".repeat(300);
        for id in [
            "",
            "../x",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "é",
            long.as_str(),
            "-x",
        ] {
            assert!(validate_tenant_id(id).is_err(), "{id:?}");
        }
    }
}

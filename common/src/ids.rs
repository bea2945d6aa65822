//! Validation of tenant ids.
//!
//! Tenant ids become directory names on index and model nodes, so they must
//! never be able to escape the data directory (`../x`), be empty, or be long
//! enough to hit file-system limits.

/// The longest tenant id accepted.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// Checks that `tenant` is 1-64 characters of `[A-Za-z0-9_.-]` starting with
/// a letter or digit. Returns a message suitable for INVALID_ARGUMENT.
pub fn validate_tenant_id(tenant: &str) -> Result<(), String> {
    if tenant.is_empty() {
        return Err("tenant id is empty".to_string());
    }
    if tenant.len() > MAX_TENANT_ID_LEN {
        return Err(format!(
            "tenant id is {} bytes long; at most {MAX_TENANT_ID_LEN} are allowed",
            tenant.len()
        ));
    }
    let mut chars = tenant.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok {
        return Err(format!(
            "tenant id {tenant:?} is not allowed: use letters, digits, '_', '.', '-', starting with a letter or digit"
        ));
    }
    Ok(())
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

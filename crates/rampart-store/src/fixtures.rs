//! Records for the tests of this crate.

use std::collections::BTreeSet;

use crate::catalog::{KeyRecord, TenantRecord};

/// An enabled tenant.
pub(crate) fn tenant(name: &str) -> TenantRecord {
    TenantRecord {
        name: name.into(),
        disabled: false,
        created_ms: 1,
        changed_ms: 1,
        erased_ms: None,
        disabled_namespaces: BTreeSet::new(),
    }
}

/// A managed key record whose hash is a canary, for at-rest scans.
pub(crate) fn key(id: &str, tenant: &str) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        tenant: tenant.into(),
        name: "ci".into(),
        roles: vec!["user".into()],
        hash: "hmac-sha256:CANARY-HASH".into(),
        created_ms: 1,
        expires_ms: None,
        revoked_ms: None,
        rotated_to: None,
    }
}

//! Validated names for every addressable thing on the wire.
//!
//! Parse, don't validate: a [`StreamName`] can only be built by a parser that
//! checks the rule `[a-z0-9][a-z0-9_.-]{0,62}`, so code past the codec never
//! re-checks names and never sees a bad one.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name is longer than {max} bytes")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} name has a character outside {allowed}")]
    BadChar {
        kind: &'static str,
        allowed: &'static str,
    },
}

/// Longest resource name, in bytes.
pub const MAX_NAME_LEN: usize = 63;
/// Longest cache key, in bytes.
pub const MAX_CACHE_KEY_LEN: usize = 256;

fn check_resource_name(kind: &'static str, s: &str) -> Result<(), NameError> {
    const ALLOWED: &str = "[a-z0-9][a-z0-9_.-]{0,62}";
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return Err(NameError::Empty { kind });
    };
    if b.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            max: MAX_NAME_LEN,
        });
    }
    let lead_ok = first.is_ascii_lowercase() || first.is_ascii_digit();
    let rest_ok = b[1..]
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'));
    if lead_ok && rest_ok {
        Ok(())
    } else {
        Err(NameError::BadChar {
            kind,
            allowed: ALLOWED,
        })
    }
}

macro_rules! resource_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Cloning one is a reference count, not a copy: a connection's
        /// frames mostly name the same scope, and the decoder and the
        /// client hand the same names out again (see
        /// [`FrameDecoder`](crate::FrameDecoder)).
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            /// Parses `s`, refusing anything outside `[a-z0-9][a-z0-9_.-]{0,62}`.
            pub fn parse(s: &str) -> Result<Self, NameError> {
                check_resource_name($kind, s)?;
                Ok(Self(s.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

resource_name!(
    /// A tenant: the top of the scope hierarchy and the unit of isolation.
    TenantId,
    "tenant"
);
resource_name!(
    /// A namespace inside a tenant (an environment, a team, an application).
    NamespaceName,
    "namespace"
);
resource_name!(
    /// A stream inside a namespace.
    StreamName,
    "stream"
);
resource_name!(
    /// A durable consumer (a named consumer group) of a stream.
    ConsumerName,
    "consumer"
);
resource_name!(
    /// A cache inside a namespace.
    CacheName,
    "cache"
);

/// A key inside a cache.
///
/// Keys are data chosen by applications (user ids, order numbers), so they
/// allow a wider alphabet than resource names: 1 to 256 bytes of
/// `[A-Za-z0-9_.:/@=+-]`. No whitespace, control characters or non-ASCII, so a
/// key can always be printed safely in an error or an audit record.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Box<str>);

impl CacheKey {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        const KIND: &str = "cache key";
        if s.is_empty() {
            return Err(NameError::Empty { kind: KIND });
        }
        if s.len() > MAX_CACHE_KEY_LEN {
            return Err(NameError::TooLong {
                kind: KIND,
                max: MAX_CACHE_KEY_LEN,
            });
        }
        let ok = s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.:/@=+-".contains(&c));
        if !ok {
            return Err(NameError::BadChar {
                kind: KIND,
                allowed: "[A-Za-z0-9_.:/@=+-]",
            });
        }
        Ok(Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({:?})", &*self.0)
    }
}

/// A fully qualified stream: `tenant/namespace/stream`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StreamPath {
    pub tenant: TenantId,
    pub namespace: NamespaceName,
    pub stream: StreamName,
}

/// A fully qualified cache: `tenant/namespace/cache`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CachePath {
    pub tenant: TenantId,
    pub namespace: NamespaceName,
    pub cache: CacheName,
}

/// Why a `tenant/namespace/name` path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("expected TENANT/NAMESPACE/NAME, got {0} part(s)")]
    Shape(usize),
    #[error(transparent)]
    Name(#[from] NameError),
}

fn split3(s: &str) -> Result<[&str; 3], PathError> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [a, b, c] => Ok([a, b, c]),
        other => Err(PathError::Shape(other.len())),
    }
}

impl std::str::FromStr for StreamPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, PathError> {
        let [t, n, x] = split3(s)?;
        Ok(Self {
            tenant: TenantId::parse(t)?,
            namespace: NamespaceName::parse(n)?,
            stream: StreamName::parse(x)?,
        })
    }
}

impl fmt::Display for StreamPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.namespace, self.stream)
    }
}

impl std::str::FromStr for CachePath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, PathError> {
        let [t, n, x] = split3(s)?;
        Ok(Self {
            tenant: TenantId::parse(t)?,
            namespace: NamespaceName::parse(n)?,
            cache: CacheName::parse(x)?,
        })
    }
}

impl fmt::Display for CachePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.namespace, self.cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "0", "acme", "orders-2024.v1_x", &"a".repeat(63)] {
            assert!(StreamName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "-a",
            "_a",
            ".a",
            "A",
            "acme corp",
            "a/b",
            "é",
            "a\0",
            &"a".repeat(64),
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn consumer_names_follow_the_resource_rule() {
        for ok in ["billing", "0", "workers-v2.eu_west", &"c".repeat(63)] {
            assert_eq!(ConsumerName::parse(ok).expect(ok).as_str(), ok);
        }
        for bad in ["", "Billing", "-x", "a b", "a/b", "é", &"c".repeat(64)] {
            assert!(ConsumerName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ConsumerName::parse("").unwrap_err(),
            NameError::Empty { kind: "consumer" }
        );
    }

    #[test]
    fn cache_keys_allow_application_ids() {
        assert!(CacheKey::parse("user:42/Order-ABC@x=1+2").is_ok());
        assert!(CacheKey::parse("has space").is_err());
        assert!(CacheKey::parse("").is_err());
        assert!(CacheKey::parse(&"k".repeat(257)).is_err());
    }

    #[test]
    fn paths_parse_and_print() {
        let p: StreamPath = "acme/production/orders".parse().expect("valid");
        assert_eq!(p.to_string(), "acme/production/orders");
        assert!("acme/production".parse::<StreamPath>().is_err());
        assert!("acme/Prod/orders".parse::<StreamPath>().is_err());
        assert!("a/b/c/d".parse::<CachePath>().is_err());
    }

    proptest! {
        #[test]
        fn parse_agrees_with_the_rule(s in "\\PC{0,70}") {
            let expected = !s.is_empty()
                && s.len() <= 63
                && s.bytes().enumerate().all(|(i, c)| {
                    c.is_ascii_lowercase() || c.is_ascii_digit()
                        || (i > 0 && matches!(c, b'_' | b'.' | b'-'))
                });
            prop_assert_eq!(NamespaceName::parse(&s).is_ok(), expected);
        }
    }
}

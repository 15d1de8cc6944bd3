//! Where a secret lives inside a tenant: `APP/ENV/PATH...`.
//!
//! Parse, don't validate: a [`SecretPath`] or [`SecretPrefix`] can only be
//! built by a parser, so the record keys made from them are always well
//! formed and never cross into another tenant's or another secret's keys.

use std::fmt;

use rampart_proto::{NameError, NamespaceName};

/// Longest `PATH` part of a secret path, in bytes.
pub const MAX_SECRET_PATH_LEN: usize = 512;

/// Why a secret path or prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("expected APP/ENV/PATH, got {0} segment(s)")]
    TooFewSegments(usize),
    #[error(transparent)]
    Name(NameError),
    #[error("empty path segment")]
    EmptySegment,
    #[error("path segment `.` or `..`")]
    DotSegment,
    #[error("path segment has a character outside [A-Za-z0-9._-]")]
    BadChar,
    #[error("path is longer than {MAX_SECRET_PATH_LEN} bytes")]
    TooLong,
}

/// Re-labels a namespace-name error with the kind of name we parsed.
fn relabel(kind: &'static str, e: NameError) -> PathError {
    PathError::Name(match e {
        NameError::Empty { .. } => NameError::Empty { kind },
        NameError::TooLong { max, .. } => NameError::TooLong { kind, max },
        NameError::BadChar { allowed, .. } => NameError::BadChar { kind, allowed },
        other => other,
    })
}

macro_rules! scope_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            /// Parses `s` with the rule of [`NamespaceName`]:
            /// `[a-z0-9][a-z0-9_.-]{0,62}`.
            pub fn parse(s: &str) -> Result<Self, PathError> {
                NamespaceName::parse(s)
                    .map(|n| Self(n.as_str().into()))
                    .map_err(|e| relabel($kind, e))
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
            type Err = PathError;
            fn from_str(s: &str) -> Result<Self, PathError> {
                Self::parse(s)
            }
        }
    };
}

scope_name!(
    /// The application a secret belongs to: the first segment of its path.
    AppName,
    "app"
);
scope_name!(
    /// The environment of an application (`prod`, `staging`): the second
    /// segment of a secret path.
    EnvName,
    "env"
);

fn check_segment(seg: &str) -> Result<(), PathError> {
    match seg {
        "" => Err(PathError::EmptySegment),
        "." | ".." => Err(PathError::DotSegment),
        _ if seg
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')) =>
        {
            Ok(())
        }
        _ => Err(PathError::BadChar),
    }
}

fn check_rest(rest: &str) -> Result<(), PathError> {
    if rest.len() > MAX_SECRET_PATH_LEN {
        return Err(PathError::TooLong);
    }
    rest.split('/').try_for_each(check_segment)
}

/// The address of one secret inside a tenant: `APP/ENV/PATH`, where `PATH`
/// is one or more `/`-separated segments of `[A-Za-z0-9._-]` (no empty,
/// `.` or `..` segment), at most [`MAX_SECRET_PATH_LEN`] bytes in all.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SecretPath {
    app: AppName,
    env: EnvName,
    path: Box<str>,
}

impl SecretPath {
    /// Builds a path from its parts, checking `path`.
    pub fn new(app: AppName, env: EnvName, path: &str) -> Result<Self, PathError> {
        check_rest(path)?;
        Ok(Self {
            app,
            env,
            path: path.into(),
        })
    }

    /// Parses `APP/ENV/PATH...`.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        let mut parts = s.splitn(3, '/');
        let (Some(app), Some(env), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(PathError::TooFewSegments(s.split('/').count()));
        };
        Self::new(AppName::parse(app)?, EnvName::parse(env)?, rest)
    }

    pub fn app(&self) -> &AppName {
        &self.app
    }

    pub fn env(&self) -> &EnvName {
        &self.env
    }

    /// The part after `APP/ENV/`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.app, self.env, self.path)
    }
}

impl std::str::FromStr for SecretPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, PathError> {
        Self::parse(s)
    }
}

/// A folder to list inside a tenant: empty (the root, whose children are
/// applications), `APP`, `APP/ENV`, or `APP/ENV/PATH...`. Each segment
/// follows the rule of its place in a [`SecretPath`].
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct SecretPrefix(Box<str>);

impl SecretPrefix {
    /// The root of a tenant.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses a folder; one trailing `/` is allowed (`app/env/` is
    /// `app/env`), and the empty string is the root.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.is_empty() {
            return Ok(Self::root());
        }
        let mut parts = s.splitn(3, '/');
        if let Some(app) = parts.next() {
            AppName::parse(app)?;
        }
        if let Some(env) = parts.next() {
            EnvName::parse(env)?;
        }
        if let Some(rest) = parts.next() {
            check_rest(rest)?;
        }
        Ok(Self(s.into()))
    }

    /// The folder without a trailing `/`; empty for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p = SecretPath::parse("billing/prod/db/Primary_Password.v2").unwrap();
        assert_eq!(p.app().as_str(), "billing");
        assert_eq!(p.env().as_str(), "prod");
        assert_eq!(p.path(), "db/Primary_Password.v2");
        assert_eq!(p.to_string(), "billing/prod/db/Primary_Password.v2");
        assert_eq!("a/b/c".parse::<SecretPath>().unwrap().path(), "c");
    }

    #[test]
    fn refuses_bad_paths() {
        let cases: &[(&str, PathError)] = &[
            ("", PathError::TooFewSegments(1)),
            ("app", PathError::TooFewSegments(1)),
            ("app/prod", PathError::TooFewSegments(2)),
            ("app/prod/", PathError::EmptySegment),
            ("app/prod/a//b", PathError::EmptySegment),
            ("app/prod/a/", PathError::EmptySegment),
            ("app/prod/../x", PathError::DotSegment),
            ("app/prod/a/..", PathError::DotSegment),
            ("app/prod/.", PathError::DotSegment),
            ("app/prod/a b", PathError::BadChar),
            ("app/prod/é", PathError::BadChar),
            ("app/prod/a%2f", PathError::BadChar),
        ];
        for (s, want) in cases {
            assert_eq!(SecretPath::parse(s).unwrap_err(), *want, "{s:?}");
        }
        assert_eq!(
            SecretPath::parse("App/prod/x").unwrap_err(),
            PathError::Name(NameError::BadChar {
                kind: "app",
                allowed: "[a-z0-9][a-z0-9_.-]{0,62}"
            })
        );
        assert_eq!(
            SecretPath::parse("app//x").unwrap_err(),
            PathError::Name(NameError::Empty { kind: "env" })
        );
        assert!(SecretPath::parse("../prod/x").is_err());
        let long = format!("a/b/{}", "x".repeat(MAX_SECRET_PATH_LEN));
        assert!(SecretPath::parse(&long).is_ok());
        let longer = format!("a/b/{}", "x".repeat(MAX_SECRET_PATH_LEN + 1));
        assert_eq!(SecretPath::parse(&longer).unwrap_err(), PathError::TooLong);
    }

    #[test]
    fn app_and_env_follow_the_namespace_rule() {
        for s in ["a", "0", "web-api", "x.y_z", "", "A", "-a", "a/b", "é"] {
            assert_eq!(
                AppName::parse(s).is_ok(),
                NamespaceName::parse(s).is_ok(),
                "{s:?}"
            );
            assert_eq!(EnvName::parse(s).is_ok(), NamespaceName::parse(s).is_ok());
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(SecretPrefix::parse("").unwrap(), SecretPrefix::root());
        assert_eq!(SecretPrefix::parse("/").unwrap(), SecretPrefix::root());
        assert_eq!(SecretPrefix::parse("app/").unwrap().as_str(), "app");
        assert_eq!(
            SecretPrefix::parse("app/prod").unwrap().as_str(),
            "app/prod"
        );
        assert_eq!(
            SecretPrefix::parse("app/prod/db/").unwrap().as_str(),
            "app/prod/db"
        );
        for bad in [
            "App",
            "app//",
            "app/prod//",
            "app/prod/../",
            "//",
            "app/Prod",
        ] {
            assert!(SecretPrefix::parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! Stable numeric error codes carried by NACK frames.
//!
//! The numbers follow HTTP status codes so that operators and the HTTPS API
//! share one vocabulary. They never change meaning within a protocol version.

use std::fmt;

/// A NACK code. Unknown values from a newer peer are kept as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// Malformed frame, bad name, unsupported option.
    pub const BAD_REQUEST: Self = Self(400);
    /// Not authenticated, or the credential was refused.
    pub const UNAUTHORIZED: Self = Self(401);
    /// Authenticated, but not allowed (another tenant's resource, say).
    pub const FORBIDDEN: Self = Self(403);
    /// No such stream, subscription or cache entry.
    pub const NOT_FOUND: Self = Self(404);
    /// The resource is in a state that conflicts with the request.
    pub const CONFLICT: Self = Self(409);
    /// Frame, payload or value larger than allowed.
    pub const PAYLOAD_TOO_LARGE: Self = Self(413);
    /// Protocol version not supported.
    pub const UPGRADE_REQUIRED: Self = Self(426);
    /// Over a rate limit; see retry-after.
    pub const TOO_MANY_REQUESTS: Self = Self(429);
    /// The server failed; nothing about why is disclosed.
    pub const INTERNAL: Self = Self(500);
    /// Temporarily unable to serve (shutting down, dependency down).
    pub const UNAVAILABLE: Self = Self(503);
    /// A storage quota is full (cache memory, stored bytes).
    pub const INSUFFICIENT_STORAGE: Self = Self(507);

    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Short reason phrase for the code.
    pub fn reason(self) -> &'static str {
        match self.0 {
            400 => "bad request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not found",
            409 => "conflict",
            413 => "payload too large",
            426 => "upgrade required",
            429 => "too many requests",
            500 => "internal error",
            503 => "unavailable",
            507 => "insufficient storage",
            _ => "unknown error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorCode({})", self.0)
    }
}

//! The master key interface, apart from its implementations.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use rampart_identity::Secret;

use crate::error::KeyError;

/// A boxed, sendable future: what [`MasterKeyProvider`] methods return, so
/// the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The root of the key hierarchy. It wraps and unwraps tenant
/// key-encryption keys and never hands out the master key itself (with an
/// external transit engine, the key never enters Rampart at all).
///
/// Master keys are versioned: [`rotate`](Self::rotate) makes a new version
/// for future wraps; older versions stay available to unwrap what they
/// wrapped until everything has been [`rewrap`](Self::rewrap)ped.
///
/// Implementations: [`crate::LocalMasterKey`] (file or environment),
/// [`crate::VaultTransit`] (Vault / OpenBao transit engine).
pub trait MasterKeyProvider: Send + Sync + fmt::Debug {
    /// What the provider is, for logs: kind, location, key name; never a
    /// secret.
    fn describe(&self) -> String;

    /// Encrypts `plaintext` under the newest master version, bound to `aad`.
    fn wrap<'a>(
        &'a self,
        plaintext: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KeyError>>;

    /// Decrypts what [`wrap`](Self::wrap) made with the same `aad`.
    /// [`KeyError::Tampered`] if it does not authenticate,
    /// [`KeyError::UnknownMasterVersion`] if its version is not held.
    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Secret<Vec<u8>>, KeyError>>;

    /// Makes a new master version, used by every later wrap. The change is
    /// durable before this returns.
    fn rotate(&self) -> BoxFuture<'_, Result<(), KeyError>>;

    /// Re-encrypts a wrapped value under the newest version, same `aad`.
    fn rewrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KeyError>>;

    /// The newest master version (asks the server, for transit).
    fn current_version(&self) -> BoxFuture<'_, Result<u32, KeyError>>;

    /// The master version a wrapped value was made with, read from its
    /// header; [`KeyError::Tampered`] if it has none.
    fn version_of(&self, wrapped: &[u8]) -> Result<u32, KeyError>;
}

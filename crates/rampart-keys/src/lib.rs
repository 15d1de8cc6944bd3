//! Rampart key management: the master key, per-tenant key-encryption keys,
//! data keys, authenticated encryption bound to where the data belongs,
//! rotation and erasure.
//!
//! ```text
//! master key (provider: local file/env, or Vault/OpenBao transit)
//!   └─ wraps ─ tenant KEK v1, v2, ...        (random, stored wrapped)
//!                └─ wraps ─ data key per (kind) or per (namespace, kind, name),
//!                           versioned        (random, stored wrapped)
//!                             └─ seals ─ data, AES-256-GCM, with the
//!                                        resource identity as associated data
//! ```
//!
//! At start-up the server opens a [`Keyring`] over its store with a
//! [`MasterKeyProvider`]; [`Keyring::open`] proves the master key is the one
//! the data was written with and writes nothing when it is not. It then asks
//! for a tenant's [`TenantKeys`] (one async step that unwraps the KEK) and
//! seals and opens synchronously from there on.
//!
//! Erasure is by destroying keys: [`Keyring::erase_tenant`] for a whole
//! tenant, [`TenantKeys::erase_resource`] for one resource sealed with
//! [`KeyScope::Resource`]. Rotation: [`Keyring::rotate_master`] (crash-safe,
//! resumable) and [`Keyring::rotate_tenant`].
//!
//! Key bytes are held in [`Secret`]s, zeroized when dropped and printed as
//! `[redacted]`; errors never carry key material. Copies made inside `ring`
//! (expanded AES key schedules, on the stack for one call) and inside hyper
//! and rustls (transit request buffers) are outside this crate's reach.
//!
//! # Layout
//! - `provider`: the [`MasterKeyProvider`] trait, apart from its
//!   implementations.
//! - `local`: [`LocalMasterKey`], versions of a 256-bit key from a private
//!   file or [`MASTER_KEY_ENV`].
//! - `transit`: [`VaultTransit`], the Vault/OpenBao transit engine as the
//!   master key, over `rampart_identity::https`.
//! - `keyring`: [`Keyring`], the start-up check, tenant KEKs, tenant erasure,
//!   master and tenant rotation.
//! - `tenant`: [`TenantKeys`], data keys and sealing.
//! - `aad`: [`Aad`], the identity bound to each ciphertext, and its
//!   canonical encoding.
//! - `aead`: AES-256-GCM as every layer uses it.
//! - `records`: what is stored where, and the associated data of wrapped
//!   keys.
//! - `error`: [`KeyError`].

mod aad;
mod aead;
mod error;
mod keyring;
mod local;
mod provider;
mod records;
mod tenant;
mod transit;

pub use aad::{Aad, KeyScope};
pub use error::KeyError;
pub use keyring::{Keyring, RotateReport, RotateStep};
pub use local::{LocalMasterKey, MASTER_KEY_ENV};
pub use provider::{BoxFuture, MasterKeyProvider};
pub use rampart_identity::Secret;
pub use tenant::{sealed_key_version, TenantKeys};
pub use transit::{TransitConfig, VaultTransit};

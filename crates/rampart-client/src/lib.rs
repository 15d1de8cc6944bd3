//! Rust client for Rampart.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rampart_client::ClientError> {
//! use rampart_client::{Client, ClientConfig};
//! let config = ClientConfig::default()
//!     .with_ca("/etc/rampart/ca.crt")
//!     .with_api_key(std::env::var("RAMPART_API_KEY").unwrap_or_default());
//! let client = Client::connect("tls://broker.internal:7401", config).await?;
//! client.publish("acme", "production", "orders", "order-123").await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `config`: [`ClientConfig`] and [`Transport`].
//! - `client`: [`Client`], [`Subscription`], durable consumers
//!   ([`ConsumeOptions`]) and the connection tasks.
//! - `tls`: TLS 1.3 client settings.
//! - `error`: [`ClientError`], which keeps the server's NACK code.
//! - `admin`: [`AdminClient`] for the HTTPS API.

mod admin;
mod client;
mod config;
mod error;
mod tls;

pub use admin::{AdminClient, AdminResponse, AdminSession};
pub use client::{Acked, Client, ConsumeOptions, Event, Subscription};
pub use config::{
    read_key_file, ClientConfig, Credential, CredentialFuture, CredentialProvider, Provider,
    Transport,
};
pub use error::ClientError;
pub use rampart_proto::{AckMode, AuthMethod, Durability, ErrorCode, EventBatch, StartAt};

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
//! # Rate limits
//! A server over a rate limit refuses a request with NACK 429 and says how
//! long to wait (`retry_after_ms`; over HTTPS, 429 with `Retry-After` in
//! seconds). The client waits that long, plus up to 10% jitter, and sends
//! the request again, until one request's waits would add up to more than
//! [`ClientConfig::rate_limit_max_wait`] (default 30 s; zero turns this
//! off); then it returns the 429 as [`ClientError::Nack`] with its
//! `retry_after` (the [`AdminClient`] returns the 429 response). This
//! covers acknowledged publishes, single and batch, cache operations,
//! subscribe and consume, and every [`AdminClient`] call. Fire-and-forget
//! publishes ([`AckMode::None`]) cannot be sent again: the call returns
//! before any refusal, which [`Client::take_async_error`] then reports.
//! Nor are [`Client::publish_async`]'s: its [`PendingAck`] resolves to the
//! 429, since a message sent again would land behind the ones published
//! after it.
//! Quota refusals (429 without a wait) are final, and so is a 429 to AUTH
//! (a lockout, which another attempt would extend). A batch costing more
//! than a rate limit's whole burst gets 413, never a wait: the message
//! names the most one request may cost, so split the batch to that. Each
//! request attempt has its own `request_timeout`. [`Client::rate_limit_backoffs`] and
//! [`AdminClient::rate_limit_backoffs`] count the waits.
//!
//! # Layout
//! - `config`: [`ClientConfig`] and [`Transport`].
//! - `backoff`: how long a rate-limited request waits before it is sent
//!   again, and the bound on the total (no IO).
//! - `client`: [`Client`], [`Subscription`], durable consumers
//!   ([`ConsumeOptions`]) and the connection tasks.
//! - `outbox`: a connection's write side, shared by the callers and the
//!   writer task: a lone request is written by its own caller, a burst
//!   is gathered by the writer task.
//! - `tls`: TLS 1.3 client settings.
//! - `error`: [`ClientError`], which keeps the server's NACK code.
//! - `admin`: [`AdminClient`] for the HTTPS API.
//! - `drive`: runs an HTTPS connection in the task that sends on it,
//!   instead of a task of its own.

mod admin;
mod backoff;
mod client;
mod config;
mod drive;
mod error;
mod outbox;
mod tls;

pub use admin::{AdminClient, AdminResponse, AdminSession};
pub use client::{Acked, Client, ConsumeOptions, Event, PendingAck, Subscription};
pub use config::{
    read_key_file, ClientConfig, Credential, CredentialFuture, CredentialProvider, Provider,
    Transport,
};
pub use error::ClientError;
pub use rampart_proto::{AckMode, AuthMethod, Durability, ErrorCode, EventBatch, StartAt};

//! End-to-end tests: a real server on 127.0.0.1 with ephemeral ports, the
//! same scenarios over QUIC and TLS/TCP. One test binary, so the tree is
//! linked once.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

#[macro_use]
mod common;
mod admission;
mod agent;
mod audit;
mod backoff;
mod backup;
mod cache;
mod cli;
mod config_check;
mod crash;
mod durable;
mod federated;
mod health;
mod identity;
mod incident;
mod key_rotation;
mod keys;
mod limits;
mod metrics;
mod pubsub;
mod security;
mod shutdown;
mod state;
mod tls_reload;
mod vault_compat;
mod vault_external;

//! Abuse controls for Rampart, free of IO.
//!
//! - [`Limits`]: token buckets and quotas for every tenant and, within it,
//!   every principal. A request is charged to both; the tenant's buckets
//!   are shared by all its principals, connections and streams, so creating
//!   more keys or streams never raises a tenant's cap. Defaults come from
//!   the configuration; overrides per tenant and per principal apply at once
//!   to connections already open.
//! - [`Admission`]: connection admission before authentication (caps per
//!   server and per IP, unauthenticated connections per IP, new
//!   connections per second per IP) and failed-authentication lockout per
//!   IP and per key id with growing backoff.
//!
//! Checks on the data path are lock-free: one atomic load to notice changed
//! limits, then one compare-and-swap per bucket that limits anything (a
//! GCRA, in `bucket`). A cost larger than a whole bucket is refused with
//! 413 before anything is charged, so a batch can neither raise a rate nor
//! leave a tenant's bucket in debt for its other principals.
//! `benches/check.rs` measures it.

mod admission;
mod bucket;
mod limits;
mod spec;

pub use admission::{Admission, AdmissionSpec, Refusal, Ticket};
pub use bucket::MAX_RATE;
pub use limits::{Handle, Level, Limits, QuotaGuard, Rejection, RejectionCount};
pub use spec::{LimitSpec, QuotaKind, RateKind, DEFAULT_BURST};

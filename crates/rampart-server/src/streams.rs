//! Durable streams in the server: where their logs live, how their blocks
//! are sealed, opening them, and their upkeep (consumer positions,
//! retention).
//!
//! Each block of a durable stream is sealed with a data key of the stream's
//! own ([`KeyScope::Resource`]) under the tenant's keys, bound to the
//! stream's name and the block's first offset: a block copied to another
//! stream or offset fails to open, and erasing that one key makes the
//! stream's data unreadable even where a copy of the files survives.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rampart_broker::{BlockSealer, ConsumerOptions, DurableOptions, DurableStream, SyncPolicy};
use rampart_keys::{Aad, KeyScope, Keyring, TenantKeys};
use rampart_proto::StreamPath;
use rampart_store::DurableSpec;

use crate::config::Config;

/// The `kind` of stream blocks in their sealing identity.
pub(crate) const BLOCK_KIND: &str = "stream";

/// Parses `none`, `interval:MS` or `on_commit`.
pub(crate) fn parse_sync(s: &str) -> Result<SyncPolicy, String> {
    match s.trim() {
        "none" => Ok(SyncPolicy::None),
        "on_commit" => Ok(SyncPolicy::OnCommit),
        other => match other.strip_prefix("interval:").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms > 0 => Ok(SyncPolicy::IntervalMs(ms)),
            _ => Err(format!(
                "`{other}` is not a sync policy: none, interval:MS (MS > 0) or on_commit"
            )),
        },
    }
}

/// The directory of one durable stream under the data dir. Names are
/// validated (no separators, no dots-only), so they are safe path parts.
pub(crate) fn stream_dir(data_dir: &Path, path: &StreamPath) -> PathBuf {
    data_dir
        .join("streams")
        .join(path.tenant.as_str())
        .join(path.namespace.as_str())
        .join(path.stream.as_str())
}

/// Seals a stream's blocks with the stream's own data key.
struct StreamSealer {
    keys: Arc<TenantKeys>,
    namespace: String,
    stream: String,
}

impl StreamSealer {
    fn aad(&self, first_offset: u64) -> Aad<'_> {
        Aad::new(
            self.keys.tenant(),
            &self.namespace,
            BLOCK_KIND,
            &self.stream,
            first_offset,
        )
        .with_scope(KeyScope::Resource)
    }
}

impl BlockSealer for StreamSealer {
    fn seal(&self, first_offset: u64, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        self.keys
            .seal(&self.aad(first_offset), plaintext)
            .map_err(|e| e.to_string())
    }

    fn open(&self, first_offset: u64, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let mut plain = self
            .keys
            .open(&self.aad(first_offset), sealed)
            .map_err(|e| e.to_string())?;
        Ok(std::mem::take(plain.expose_mut()))
    }
}

/// Opens (creating if new) a durable stream: loads the tenant's keys, then
/// recovers the log off the runtime.
pub(crate) async fn open(
    config: &Config,
    keyring: &Keyring,
    path: &StreamPath,
    spec: &DurableSpec,
) -> Result<Arc<DurableStream>, String> {
    let sync = parse_sync(&spec.sync)?;
    let sealer: Arc<dyn BlockSealer> = if spec.unsealed {
        tracing::warn!(stream = %path, "stream payloads are stored UNSEALED (dangerous_unsealed_streams)");
        Arc::new(rampart_broker::Plain)
    } else {
        let keys = keyring
            .tenant(path.tenant.as_str())
            .await
            .map_err(|e| format!("keys of tenant {}: {e}", path.tenant))?;
        Arc::new(StreamSealer {
            keys,
            namespace: path.namespace.to_string(),
            stream: path.stream.to_string(),
        })
    };
    let mut opts = DurableOptions::new(sync, sealer);
    opts.segment_bytes = config.stream_segment_bytes;
    opts.max_age_ms = spec.max_age_ms;
    opts.max_bytes = spec.max_bytes;
    opts.retention_overrides_consumers = spec.retention_overrides_consumers;
    opts.consumer_defaults = ConsumerOptions {
        max_in_flight: config.consumer_max_in_flight,
        ack_wait: Duration::from_millis(config.consumer_ack_wait_ms),
    };
    let dir = stream_dir(&config.data_dir, path);
    let p = path.clone();
    let d = tokio::task::spawn_blocking(move || DurableStream::open(p, &dir, opts))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_policies_parse() {
        assert_eq!(parse_sync("none"), Ok(SyncPolicy::None));
        assert_eq!(parse_sync("on_commit"), Ok(SyncPolicy::OnCommit));
        assert_eq!(parse_sync("interval:25"), Ok(SyncPolicy::IntervalMs(25)));
        for bad in ["", "interval:0", "interval:x", "always", "interval:"] {
            assert!(parse_sync(bad).is_err(), "{bad}");
        }
    }
}

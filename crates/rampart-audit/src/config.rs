//! How the audit log is set up.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::AuditError;

/// Where records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Sink {
    /// Hash-chained files in [`AuditConfig::dir`]. Mandatory records are
    /// acknowledged once fsynced.
    #[default]
    File,
    /// JSON lines on stdout only, for a log collector. Nothing is kept on
    /// disk, so every start begins a new chain at seq 1, and mandatory
    /// records are acknowledged once flushed to stdout.
    Stdout,
    /// Files as with [`Sink::File`], which decide acknowledgements, plus a
    /// best-effort copy on stdout (from its own thread: a blocked stdout
    /// loses copies, never file records).
    Both,
}

/// Audit log settings. Build with [`AuditConfig::new`] and change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditConfig {
    /// The log folder, normally `<data_dir>/audit`; created mode 0700, files
    /// 0600. Unused with [`Sink::Stdout`].
    pub dir: PathBuf,
    pub sink: Sink,
    /// A signed checkpoint after this many records (default 1000)...
    pub checkpoint_every: u64,
    /// ...or after this long, if any record was written since the last one
    /// (default 5 s).
    pub checkpoint_interval: Duration,
    /// Start a new file once the current one reaches this size (default
    /// 64 MiB).
    pub max_file_bytes: u64,
    /// Longest time [`Auditor::mandatory`](crate::Auditor::mandatory) waits
    /// for its record to be durable (default 100 ms).
    pub durable_timeout: Duration,
    /// Capacity of the queue between callers and the writer (default 65536
    /// events). It is allocated up front: about 300 bytes per slot.
    pub queue: usize,
    /// Longest time [`Auditor::shutdown`](crate::Auditor::shutdown) waits
    /// for the queue to drain (default 5 s).
    pub shutdown_timeout: Duration,
}

impl Default for AuditConfig {
    /// The defaults with an empty `dir`, which [`Auditor::start`](crate::Auditor::start)
    /// refuses for file sinks: set it.
    fn default() -> Self {
        AuditConfig {
            dir: PathBuf::new(),
            sink: Sink::File,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(5),
            max_file_bytes: 64 << 20,
            durable_timeout: Duration::from_millis(100),
            queue: 65_536,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl AuditConfig {
    /// The defaults, with the log in `dir` (normally `<data_dir>/audit`).
    pub fn new(dir: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            dir: dir.into(),
            ..AuditConfig::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), AuditError> {
        let files = matches!(self.sink, Sink::File | Sink::Both);
        if files && self.dir.as_os_str().is_empty() {
            return Err(AuditError::Config("dir must be set"));
        }
        if self.checkpoint_every == 0 {
            return Err(AuditError::Config("checkpoint_every must be at least 1"));
        }
        if self.checkpoint_interval.is_zero() {
            return Err(AuditError::Config("checkpoint_interval must be positive"));
        }
        if self.max_file_bytes < 4096 {
            return Err(AuditError::Config("max_file_bytes must be at least 4096"));
        }
        if self.durable_timeout.is_zero() {
            return Err(AuditError::Config("durable_timeout must be positive"));
        }
        if self.queue == 0 {
            return Err(AuditError::Config("queue must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = AuditConfig::new("/data/audit");
        assert_eq!(c.sink, Sink::File);
        assert_eq!(c.checkpoint_every, 1000);
        assert_eq!(c.checkpoint_interval, Duration::from_secs(5));
        assert_eq!(c.max_file_bytes, 64 * 1024 * 1024);
        assert_eq!(c.durable_timeout, Duration::from_millis(100));
        assert_eq!(c.queue, 65_536);
        assert!(c.validate().is_ok());
        assert!(AuditConfig::default().validate().is_err());
        let s = AuditConfig {
            sink: Sink::Stdout,
            ..AuditConfig::default()
        };
        assert!(s.validate().is_ok(), "stdout needs no folder");
        let mut z = c.clone();
        z.queue = 0;
        assert!(z.validate().is_err());
    }
}

//! Which segments retention may delete: a pure function over a summary of the
//! sealed (non-active) segments, oldest first.

/// A sealed segment as retention sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    /// The first offset after this segment.
    pub end_offset: u64,
    pub bytes: u64,
    /// The newest block timestamp in it, `None` if it holds no valid block.
    pub newest_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub max_age_ms: Option<u64>,
    pub max_bytes: Option<u64>,
    pub now_ms: u64,
    pub keep_from: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Plan {
    /// Delete this many of the oldest candidates.
    pub delete: usize,
    /// Candidates over a limit but kept because they hold offsets at or after
    /// `keep_from`.
    pub kept_for_consumer: usize,
}

/// `total_bytes` includes the active segment, which is never a candidate.
pub(crate) fn plan(candidates: &[Candidate], total_bytes: u64, l: &Limits) -> Plan {
    let cutoff = l.max_age_ms.and_then(|age| l.now_ms.checked_sub(age));
    let mut remaining = total_bytes;
    let mut out = Plan::default();
    for c in candidates {
        let by_size = l.max_bytes.is_some_and(|max| remaining > max);
        let by_age = cutoff.is_some_and(|cut| c.newest_ms.is_none_or(|t| t < cut));
        if !by_size && !by_age {
            break;
        }
        // Offsets only grow, so once one segment is protected all later ones
        // are too: deletions stay a prefix.
        if out.kept_for_consumer > 0 || l.keep_from.is_some_and(|k| c.end_offset > k) {
            out.kept_for_consumer += 1;
        } else {
            out.delete += 1;
        }
        remaining = remaining.saturating_sub(c.bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs() -> Vec<Candidate> {
        (1..=4)
            .map(|i| Candidate {
                end_offset: i * 10,
                bytes: 100,
                newest_ms: Some(i * 1000),
            })
            .collect()
    }

    #[test]
    fn size_age_and_keep_from() {
        let s = segs();
        // 4 sealed + 100 active = 500 bytes.
        let by_size = Limits {
            max_bytes: Some(250),
            ..Limits::default()
        };
        assert_eq!(plan(&s, 500, &by_size).delete, 3);
        let by_age = Limits {
            max_age_ms: Some(1500),
            now_ms: 4000,
            ..Limits::default()
        };
        assert_eq!(plan(&s, 500, &by_age).delete, 2);
        let kept = Limits {
            keep_from: Some(15),
            ..by_size
        };
        assert_eq!(
            plan(&s, 500, &kept),
            Plan {
                delete: 1,
                kept_for_consumer: 2
            }
        );
        let young = Limits {
            max_age_ms: Some(10_000),
            now_ms: 4000,
            ..Limits::default()
        };
        assert_eq!(plan(&s, 500, &young), Plan::default());
    }
}

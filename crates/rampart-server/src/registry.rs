//! Live connections, so that revoking a credential or disabling a tenant
//! reaches the connections already open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rampart_identity::Principal;
use rampart_proto::ReauthReason;
use tokio::sync::mpsc;

/// What a connection is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctl {
    /// Close now, telling the peer why.
    Close(ReauthReason),
    /// Authorization may have changed: re-check open subscriptions.
    PolicyChanged,
}

#[derive(Debug)]
struct Entry {
    principal: Principal,
    ctl: mpsc::UnboundedSender<Ctl>,
}

/// Every authenticated connection of the server.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Entry>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection; returns its id.
    pub(crate) fn register(&self, principal: Principal, ctl: mpsc::UnboundedSender<Ctl>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Entry { principal, ctl });
        id
    }

    /// Records the credential a connection re-authenticated with.
    pub(crate) fn update(&self, id: u64, principal: Principal) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.principal = principal;
        }
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The principal of every connection, as it is now.
    pub(crate) fn principals(&self) -> Vec<Principal> {
        self.lock().values().map(|e| e.principal.clone()).collect()
    }

    /// Tells every connection whose principal matches to close. Returns how
    /// many were told.
    pub(crate) fn close_where(
        &self,
        reason: ReauthReason,
        matches: impl Fn(&Principal) -> bool,
    ) -> usize {
        let conns = self.lock();
        let mut n = 0;
        for e in conns.values() {
            if matches(&e.principal) && e.ctl.send(Ctl::Close(reason)).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Tells every connection of `tenant` that its policy changed.
    pub(crate) fn policy_changed(&self, tenant: &str) {
        for e in self.lock().values() {
            if e.principal.tenant.as_str() == tenant {
                let _ = e.ctl.send(Ctl::PolicyChanged);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

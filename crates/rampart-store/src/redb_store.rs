//! The embedded engine: one redb file under the data directory.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::kv::{Appender, KvStore, Op, StoreError, Table};

fn def(t: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(t.name())
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn write_ops(tx: &redb::WriteTransaction, ops: Vec<Op>) -> Result<(), StoreError> {
    for op in ops {
        match op {
            Op::Put(table, k, v) => {
                let mut t = tx.open_table(def(table)).map_err(err)?;
                t.insert(k.as_str(), v.as_slice()).map_err(err)?;
            }
            Op::Delete(table, k) => {
                let mut t = tx.open_table(def(table)).map_err(err)?;
                t.remove(k.as_str()).map_err(err)?;
            }
        }
    }
    Ok(())
}

/// A [`KvStore`] in a single redb file. Every commit is durable (fsynced).
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens or creates the database at `path` (mode 0600 on Unix, inside a
    /// directory the caller made private).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
        // Create every table so reads never meet a missing one.
        let tx = db.begin_write().map_err(err)?;
        for t in Table::ALL {
            tx.open_table(def(t)).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(Self { db })
    }
}

impl KvStore for RedbStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(def(table)).map_err(err)?;
        Ok(t.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(def(table)).map_err(err)?;
        let mut out = Vec::new();
        for entry in t.range(prefix..).map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn last(&self, table: Table) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(def(table)).map_err(err)?;
        let last = t
            .last()
            .map_err(err)?
            .map(|(k, v)| (k.value().to_string(), v.value().to_vec()));
        Ok(last)
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        write_ops(&tx, ops)?;
        tx.commit().map_err(err)
    }

    fn apply_appending(
        &self,
        ops: Vec<Op>,
        table: Table,
        append: &mut Appender<'_>,
    ) -> Result<(), StoreError> {
        // redb has one write transaction at a time: the last entry read
        // here is still the last one when this commits. A failed `append`
        // drops the transaction, which aborts it.
        let tx = self.db.begin_write().map_err(err)?;
        write_ops(&tx, ops)?;
        {
            let mut t = tx.open_table(def(table)).map_err(err)?;
            let last = t
                .last()
                .map_err(err)?
                .map(|(k, v)| (k.value().to_string(), v.value().to_vec()));
            for (k, v) in append(last)? {
                t.insert(k.as_str(), v.as_slice()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn snapshot(&self) -> Result<crate::kv::Snapshot, StoreError> {
        // One read transaction: every table as of the same commit, while
        // writers go on.
        let tx = self.db.begin_read().map_err(err)?;
        let mut out = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            let t = tx.open_table(def(table)).map_err(err)?;
            let mut entries = Vec::new();
            for entry in t.iter().map_err(err)? {
                let (k, v) = entry.map_err(err)?;
                entries.push((k.value().to_string(), v.value().to_vec()));
            }
            out.push((table, entries));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_scan_delete_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            s.apply(vec![
                Op::Put(Table::Keys, "acme/a".into(), b"1".to_vec()),
                Op::Put(Table::Keys, "acme/b".into(), b"2".to_vec()),
                Op::Put(Table::Keys, "acmex/c".into(), b"3".to_vec()),
                Op::Put(Table::Tenants, "acme".into(), b"t".to_vec()),
            ])
            .unwrap();
            assert_eq!(s.get(Table::Keys, "acme/a").unwrap(), Some(b"1".to_vec()));
            let got: Vec<String> = s
                .scan(Table::Keys, "acme/")
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(got, vec!["acme/a", "acme/b"]);
            s.apply(vec![Op::Delete(Table::Keys, "acme/a".into())])
                .unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(s.get(Table::Keys, "acme/a").unwrap(), None);
        assert_eq!(s.get(Table::Keys, "acme/b").unwrap(), Some(b"2".to_vec()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_snapshot_holds_every_table_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        s.apply(vec![
            Op::Put(Table::Secrets, "acme/a".into(), b"sealed".to_vec()),
            Op::Put(Table::Tenants, "acme".into(), b"t".to_vec()),
        ])
        .unwrap();
        let snap = s.snapshot().unwrap();
        assert_eq!(snap.len(), Table::ALL.len());
        let copy = RedbStore::open(&dir.path().join("copy.redb")).unwrap();
        let ops = snap
            .into_iter()
            .flat_map(|(t, es)| es.into_iter().map(move |(k, v)| Op::Put(t, k, v)))
            .collect();
        copy.apply(ops).unwrap();
        for t in Table::ALL {
            assert_eq!(copy.scan(t, "").unwrap(), s.scan(t, "").unwrap());
        }
    }

    #[test]
    fn every_table_has_its_own_name_and_opens() {
        let names: std::collections::HashSet<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), Table::ALL.len());
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        s.apply(
            Table::ALL
                .iter()
                .map(|&t| Op::Put(t, "k".into(), t.name().as_bytes().to_vec()))
                .collect(),
        )
        .unwrap();
        for t in Table::ALL {
            assert_eq!(s.get(t, "k").unwrap(), Some(t.name().as_bytes().to_vec()));
        }
    }
}

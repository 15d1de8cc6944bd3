//! The local master key provider from arbitrary bytes: a key file of any
//! text loads or is refused without a panic, a key that loads wraps and
//! unwraps, and no wrapped key the provider did not make is ever opened.

#![no_main]

use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use rampart_keys::{LocalMasterKey, MasterKeyProvider};

/// The local provider's futures are ready at once.
fn now<T>(f: impl Future<Output = T>) -> T {
    match std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the local provider waited"),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    /// Where each input's key file text is written (mode 0600).
    path: PathBuf,
    /// A provider with a real key, and a wrap it made.
    key: LocalMasterKey,
    wrapped: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = LocalMasterKey::create(&dir.path().join("real.key")).expect("key");
        let wrapped = now(key.wrap(b"a data key", b"aad")).expect("wrap");
        let path = dir.path().join("input.key");
        Fixture {
            _dir: dir,
            path,
            key,
            wrapped,
        }
    })
}

/// Writes `data` as a new private file (the loader refuses others).
fn write_private(path: &std::path::Path, data: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("input file");
    f.write_all(data).expect("written");
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        // The input as a key file.
        write_private(&f.path, rest);
        if let Ok(key) = LocalMasterKey::load(&f.path) {
            let wrapped = now(key.wrap(b"secret", b"aad")).expect("a loaded key wraps");
            let opened = now(key.unwrap(&wrapped, b"aad")).expect("and unwraps");
            assert_eq!(opened.expose().as_slice(), b"secret");
            assert!(now(key.unwrap(&wrapped, b"other aad")).is_err());
        }
    } else {
        // The input as a wrapped key: never opened unless it is the real
        // one (which libFuzzer may find by watching the comparisons)...
        let opened = now(f.key.unwrap(rest, b"aad"));
        assert_eq!(opened.is_ok(), rest == f.wrapped.as_slice());
        // ...nor a real one with the input spliced in, unless unchanged.
        let at = usize::from(mode) % (f.wrapped.len() + 1);
        let mut spliced = f.wrapped[..at].to_vec();
        spliced.extend_from_slice(rest);
        spliced.extend_from_slice(&f.wrapped[(at + rest.len()).min(f.wrapped.len())..]);
        if spliced != f.wrapped {
            assert!(now(f.key.unwrap(&spliced, b"aad")).is_err());
        }
    }
});

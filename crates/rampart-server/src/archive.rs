//! The backup archive format, free of the server: an encrypted,
//! authenticated stream of chunks around a list of entries.
//!
//! ```text
//! header  = "RAMPBKUP" | version u16 (1) | wrapped key len u16 | wrapped key | salt [32]
//! chunk   = ciphertext len u32 | nonce [12] | AES-256-GCM(plaintext ≤ 1 MiB) with tag
//! aad     = SHA-256(header) | chunk index u64 | last u8
//! entries = entry* | END
//! entry   = DIR path | FILE path len u64 bytes | TABLE name count u64 (key u32 bytes, value u32 bytes)*
//! path    = len u16 | UTF-8, relative, `/`-separated, no `.`, `..` or empty parts
//! ```
//!
//! The archive key is 32 random bytes made for each archive and kept in the
//! header only wrapped by the master key; the chunk key is derived from it
//! with HKDF-SHA256 (the header's salt, an info string naming the format
//! version). Every chunk's nonce is random. The header is bound into every
//! chunk, each chunk's index into its own, and the last chunk says it is
//! the last, so an altered, reordered, cut-short or extended archive is
//! refused ([`ArchiveError`]) before anything it says is believed.

use std::fmt;
use std::io::{self, Read, Write};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const MAGIC: &[u8; 8] = b"RAMPBKUP";
const VERSION: u16 = 1;
const SALT_LEN: usize = 32;
const HKDF_INFO: &[u8] = b"rampart backup v1 chunk key";
/// Plaintext bytes per chunk.
pub(crate) const CHUNK: usize = 1 << 20;
const TAG_LEN: usize = 16;
/// What the master key wraps the archive key under.
pub(crate) const KEY_AAD: &[u8] = b"rampart:backup-key:v1";

const END: u8 = 0;
const DIR: u8 = 1;
const FILE: u8 = 2;
const TABLE: u8 = 3;
const MAX_PATH: usize = 4096;

/// Why an archive cannot be read.
#[derive(Debug)]
pub(crate) enum ArchiveError {
    /// Not a Rampart backup, or a format version this build cannot read.
    NotAnArchive(String),
    /// A chunk does not authenticate: altered bytes, or another key.
    Altered {
        chunk: u64,
    },
    /// The archive ends before its last chunk.
    Truncated,
    /// Bytes follow the last chunk.
    TrailingBytes,
    /// The entries inside are malformed (a bad path, a bad length).
    Malformed(String),
    Io(io::Error),
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAnArchive(why) => write!(f, "not a Rampart backup archive: {why}"),
            Self::Altered { chunk } => write!(
                f,
                "the archive does not authenticate at chunk {chunk}: it was altered, or made with another key"
            ),
            Self::Truncated => write!(f, "the archive is cut short: its last chunk is missing"),
            Self::TrailingBytes => write!(f, "the archive has bytes after its last chunk"),
            Self::Malformed(why) => write!(f, "the archive's contents are malformed: {why}"),
            Self::Io(e) => write!(f, "reading the archive: {e}"),
        }
    }
}

impl std::error::Error for ArchiveError {}

impl From<io::Error> for ArchiveError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A parsed header: what unwraps the archive key, and the bytes every
/// chunk is bound to.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) wrapped_key: Vec<u8>,
    salt: [u8; SALT_LEN],
    digest: [u8; 32],
}

impl Header {
    /// A header for a new archive whose key the master key wrapped into
    /// `wrapped_key`.
    pub(crate) fn new(wrapped_key: Vec<u8>) -> io::Result<Header> {
        let mut salt = [0u8; SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| io::Error::other("no randomness"))?;
        Header::with_digest(wrapped_key, salt)
    }

    /// The header of `wrapped_key` and `salt`, with the digest that binds
    /// every chunk to it.
    fn with_digest(wrapped_key: Vec<u8>, salt: [u8; SALT_LEN]) -> io::Result<Header> {
        let mut h = Header {
            wrapped_key,
            salt,
            digest: [0; 32],
        };
        h.digest = digest(&h.encode()?);
        Ok(h)
    }

    fn encode(&self) -> io::Result<Vec<u8>> {
        let len = u16::try_from(self.wrapped_key.len())
            .map_err(|_| io::Error::other("wrapped key too long"))?;
        let mut out = Vec::with_capacity(12 + self.wrapped_key.len() + SALT_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.wrapped_key);
        out.extend_from_slice(&self.salt);
        Ok(out)
    }

    /// Reads a header from the start of an archive.
    pub(crate) fn read(r: &mut dyn Read) -> Result<Header, ArchiveError> {
        let mut fixed = [0u8; 12];
        read_full(r, &mut fixed).map_err(|_| ArchiveError::NotAnArchive("too short".into()))?;
        if &fixed[..8] != MAGIC {
            return Err(ArchiveError::NotAnArchive("no RAMPBKUP magic".into()));
        }
        let version = u16::from_be_bytes([fixed[8], fixed[9]]);
        if version != VERSION {
            return Err(ArchiveError::NotAnArchive(format!(
                "format version {version}; this build reads version {VERSION}"
            )));
        }
        let len = usize::from(u16::from_be_bytes([fixed[10], fixed[11]]));
        let mut wrapped_key = vec![0u8; len];
        let mut salt = [0u8; SALT_LEN];
        read_full(r, &mut wrapped_key).map_err(|_| ArchiveError::Truncated)?;
        read_full(r, &mut salt).map_err(|_| ArchiveError::Truncated)?;
        Ok(Header::with_digest(wrapped_key, salt)?)
    }

    fn chunk_key(&self, archive_key: &[u8]) -> io::Result<LessSafeKey> {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &self.salt);
        let prk = salt.extract(archive_key);
        let okm = prk
            .expand(&[HKDF_INFO], &AES_256_GCM)
            .map_err(|_| io::Error::other("key derivation"))?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut d = [0u8; 32];
    d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    d
}

fn aad(digest: &[u8; 32], index: u64, last: bool) -> [u8; 41] {
    let mut a = [0u8; 41];
    a[..32].copy_from_slice(digest);
    a[32..40].copy_from_slice(&index.to_be_bytes());
    a[40] = u8::from(last);
    a
}

/// Reads exactly `buf.len()` bytes; `UnexpectedEof` if the input ends
/// first.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<()> {
    r.read_exact(buf)
}

// === impl Sealer ===

/// Encrypts a stream of plaintext into chunks written to `out`. Call
/// [`Sealer::finish`]: without it the archive has no last chunk and is
/// refused as cut short.
pub(crate) struct Sealer<W: Write> {
    out: W,
    key: LessSafeKey,
    digest: [u8; 32],
    index: u64,
    buf: Vec<u8>,
    rng: SystemRandom,
}

impl<W: Write> Sealer<W> {
    /// Writes the header and returns a sealer for the chunks after it.
    pub(crate) fn new(mut out: W, header: &Header, archive_key: &[u8]) -> io::Result<Self> {
        out.write_all(&header.encode()?)?;
        Ok(Sealer {
            out,
            key: header.chunk_key(archive_key)?,
            digest: header.digest,
            index: 0,
            buf: Vec::with_capacity(CHUNK),
            rng: SystemRandom::new(),
        })
    }

    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| io::Error::other("no randomness"))?;
        let mut data = std::mem::take(&mut self.buf);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&self.digest, self.index, last)),
                &mut data,
            )
            .map_err(|_| io::Error::other("seal failed"))?;
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("chunk too long"))?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(&nonce)?;
        self.out.write_all(&data)?;
        data.clear();
        self.buf = data;
        self.index += 1;
        Ok(())
    }

    /// Seals what is buffered as the last chunk and returns the output.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.seal_chunk(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() == CHUNK {
            self.seal_chunk(false)?;
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// === impl Opener ===

/// Decrypts the chunks after a header; every byte it hands out has
/// authenticated, and it fails rather than end early.
pub(crate) struct Opener<R: Read> {
    input: R,
    key: LessSafeKey,
    digest: [u8; 32],
    index: u64,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> Opener<R> {
    pub(crate) fn new(input: R, header: &Header, archive_key: &[u8]) -> io::Result<Self> {
        Ok(Opener {
            input,
            key: header.chunk_key(archive_key)?,
            digest: header.digest,
            index: 0,
            plain: Vec::new(),
            pos: 0,
            done: false,
        })
    }

    fn next_chunk(&mut self) -> Result<(), ArchiveError> {
        let mut len = [0u8; 4];
        read_full(&mut self.input, &mut len).map_err(eof_is_truncated)?;
        let len = u32::from_be_bytes(len) as usize;
        if !(TAG_LEN..=CHUNK + TAG_LEN).contains(&len) {
            return Err(ArchiveError::Altered { chunk: self.index });
        }
        let mut nonce = [0u8; NONCE_LEN];
        read_full(&mut self.input, &mut nonce).map_err(eof_is_truncated)?;
        let mut data = vec![0u8; len];
        read_full(&mut self.input, &mut data).map_err(eof_is_truncated)?;
        // The last flag is not stored: a chunk opens under exactly one of
        // the two, so whoever cuts the archive cannot claim an end.
        let mut last = false;
        let mut opened = None;
        for flag in [false, true] {
            let mut try_data = data.clone();
            if let Ok(p) = self.key.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&self.digest, self.index, flag)),
                &mut try_data,
            ) {
                let n = p.len();
                try_data.truncate(n);
                opened = Some(try_data);
                last = flag;
                break;
            }
        }
        let plain = opened.ok_or(ArchiveError::Altered { chunk: self.index })?;
        self.index += 1;
        self.plain = plain;
        self.pos = 0;
        if last {
            self.done = true;
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra)? != 0 {
                return Err(ArchiveError::TrailingBytes);
            }
        }
        Ok(())
    }
}

fn eof_is_truncated(e: io::Error) -> ArchiveError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ArchiveError::Truncated
    } else {
        ArchiveError::Io(e)
    }
}

impl<R: Read> Read for Opener<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk().map_err(io::Error::other)?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Turns an error out of [`Opener`]'s `Read` back into the
/// [`ArchiveError`] it carries.
pub(crate) fn archive_error(e: io::Error) -> ArchiveError {
    if e.get_ref().is_some_and(|inner| inner.is::<ArchiveError>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(a) = inner.downcast::<ArchiveError>() {
                return *a;
            }
        }
        return ArchiveError::Malformed("unreadable".into());
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        // The plaintext ended inside an entry although every chunk
        // authenticated: the writer stopped mid-entry.
        return ArchiveError::Malformed("an entry is cut short".into());
    }
    ArchiveError::Io(e)
}

/// The archive parsers on arbitrary bytes, for the `backup_archive` fuzz
/// target: `data` as a whole archive (header and chunk framing; no chunk
/// authenticates without the key, which is fixed here), then as the
/// plaintext entry stream an archive decrypts to. It must never panic or
/// allocate by a declared length; errors are the expected outcome.
#[doc(hidden)]
pub fn fuzz_archive(data: &[u8]) {
    const KEY: [u8; 32] = [7; 32];
    let mut input = data;
    if let Ok(h) = Header::read(&mut input) {
        if let Ok(o) = Opener::new(input, &h, &KEY) {
            drain(EntryReader::new(o));
        }
    }
    drain(EntryReader::new(data));
}

fn drain<R: Read>(mut r: EntryReader<R>) {
    loop {
        match r.next_entry() {
            Ok(Entry::End) | Err(_) => return,
            Ok(Entry::File(_, len)) => {
                if r.file_bytes(len, &mut io::sink()).is_err() {
                    return;
                }
            }
            Ok(Entry::Dir(_) | Entry::Table(..)) => {}
        }
    }
}

// === entries ===

/// A relative path inside the data directory, checked: `/`-separated
/// normal parts only (no `.`, `..`, empty part, backslash or NUL), so it
/// can only name something under the directory it is joined to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryPath(String);

impl EntryPath {
    pub(crate) fn parse(s: &str) -> Result<EntryPath, ArchiveError> {
        let bad =
            |why: &str| ArchiveError::Malformed(format!("path `{}`: {why}", s.escape_debug()));
        if s.is_empty() || s.len() > MAX_PATH {
            return Err(bad("empty or too long"));
        }
        if s.starts_with('/') {
            return Err(bad("absolute"));
        }
        for part in s.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(bad("`.`, `..` or an empty part"));
            }
            if part.contains(['\\', '\0', ':']) {
                return Err(bad("a backslash, colon or NUL"));
            }
        }
        Ok(EntryPath(s.to_string()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// One thing read back out of an archive.
#[derive(Debug)]
pub(crate) enum Entry {
    Dir(EntryPath),
    /// A file; its bytes follow and must be read with [`EntryReader::file_bytes`].
    File(EntryPath, u64),
    /// A store table and its entries.
    Table(String, Vec<(String, Vec<u8>)>),
    End,
}

fn put_path(w: &mut dyn Write, path: &str) -> io::Result<()> {
    let p = EntryPath::parse(path).map_err(io::Error::other)?;
    let len = u16::try_from(p.as_str().len()).map_err(|_| io::Error::other("path too long"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(p.as_str().as_bytes())
}

pub(crate) fn write_dir(w: &mut dyn Write, path: &str) -> io::Result<()> {
    w.write_all(&[DIR])?;
    put_path(w, path)
}

/// Writes a file entry of exactly `len` bytes; `body` must write them all.
pub(crate) fn write_file(
    w: &mut dyn Write,
    path: &str,
    len: u64,
    body: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    w.write_all(&[FILE])?;
    put_path(w, path)?;
    w.write_all(&len.to_be_bytes())?;
    let mut counted = Counted { inner: w, n: 0 };
    body(&mut counted)?;
    if counted.n != len {
        return Err(io::Error::other(format!(
            "{path}: {} bytes written where {len} were announced",
            counted.n
        )));
    }
    Ok(())
}

struct Counted<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn write_table(
    w: &mut dyn Write,
    name: &str,
    entries: &[(String, Vec<u8>)],
) -> io::Result<()> {
    w.write_all(&[TABLE])?;
    put_path(w, name)?;
    w.write_all(&(entries.len() as u64).to_be_bytes())?;
    for (k, v) in entries {
        for part in [k.as_bytes(), v.as_slice()] {
            let len = u32::try_from(part.len()).map_err(|_| io::Error::other("value too long"))?;
            w.write_all(&len.to_be_bytes())?;
            w.write_all(part)?;
        }
    }
    Ok(())
}

pub(crate) fn write_end(w: &mut dyn Write) -> io::Result<()> {
    w.write_all(&[END])
}

/// Reads entries one at a time from decrypted plaintext.
pub(crate) struct EntryReader<R: Read> {
    r: R,
}

impl<R: Read> EntryReader<R> {
    pub(crate) fn new(r: R) -> Self {
        EntryReader { r }
    }

    fn u16(&mut self) -> Result<u16, ArchiveError> {
        let mut b = [0u8; 2];
        self.r.read_exact(&mut b).map_err(archive_error)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, ArchiveError> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b).map_err(archive_error)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, ArchiveError> {
        let mut b = [0u8; 8];
        self.r.read_exact(&mut b).map_err(archive_error)?;
        Ok(u64::from_be_bytes(b))
    }

    fn bytes(&mut self, len: usize) -> Result<Vec<u8>, ArchiveError> {
        let mut v = Vec::new();
        (&mut self.r)
            .take(len as u64)
            .read_to_end(&mut v)
            .map_err(archive_error)?;
        if v.len() != len {
            return Err(ArchiveError::Malformed("an entry is cut short".into()));
        }
        Ok(v)
    }

    fn path(&mut self) -> Result<EntryPath, ArchiveError> {
        let len = usize::from(self.u16()?);
        let raw = self.bytes(len)?;
        let s = String::from_utf8(raw)
            .map_err(|_| ArchiveError::Malformed("a path is not UTF-8".into()))?;
        EntryPath::parse(&s)
    }

    pub(crate) fn next_entry(&mut self) -> Result<Entry, ArchiveError> {
        let mut tag = [0u8; 1];
        self.r.read_exact(&mut tag).map_err(archive_error)?;
        Ok(match tag[0] {
            END => {
                let mut extra = [0u8; 1];
                if self.r.read(&mut extra).map_err(archive_error)? != 0 {
                    return Err(ArchiveError::Malformed("entries after the end".into()));
                }
                Entry::End
            }
            DIR => Entry::Dir(self.path()?),
            FILE => {
                let p = self.path()?;
                Entry::File(p, self.u64()?)
            }
            TABLE => {
                let name = self.path()?.as_str().to_string();
                let count = self.u64()?;
                let mut entries = Vec::new();
                for _ in 0..count {
                    let klen = self.u32()? as usize;
                    let k = String::from_utf8(self.bytes(klen)?)
                        .map_err(|_| ArchiveError::Malformed("a store key is not UTF-8".into()))?;
                    let vlen = self.u32()? as usize;
                    entries.push((k, self.bytes(vlen)?));
                }
                Entry::Table(name, entries)
            }
            t => return Err(ArchiveError::Malformed(format!("unknown entry type {t}"))),
        })
    }

    /// Copies the `len` bytes of the file entry just read to `out`.
    pub(crate) fn file_bytes(&mut self, len: u64, out: &mut dyn Write) -> Result<(), ArchiveError> {
        let n = io::copy(&mut (&mut self.r).take(len), out).map_err(archive_error)?;
        if n != len {
            return Err(ArchiveError::Malformed("a file is cut short".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn archive(entries: &dyn Fn(&mut dyn Write) -> io::Result<()>) -> Vec<u8> {
        let h = Header::new(b"wrapped".to_vec()).unwrap();
        let mut s = Sealer::new(Vec::new(), &h, &KEY).unwrap();
        entries(&mut s).unwrap();
        s.finish().unwrap()
    }

    fn sample(w: &mut dyn Write) -> io::Result<()> {
        write_dir(w, "audit")?;
        // More than a chunk, so the archive has several.
        let big = vec![0xA5u8; CHUNK + 1000];
        write_file(w, "audit/HEAD", big.len() as u64, &mut |o| {
            o.write_all(&big)
        })?;
        write_table(w, "secrets", &[("acme/x".into(), b"sealed".to_vec())])?;
        write_end(w)
    }

    fn read_all(bytes: &[u8], key: &[u8]) -> Result<Vec<String>, ArchiveError> {
        let mut input = bytes;
        let h = Header::read(&mut input)?;
        assert_eq!(h.wrapped_key, b"wrapped");
        let mut r = EntryReader::new(Opener::new(input, &h, key)?);
        let mut seen = Vec::new();
        loop {
            match r.next_entry()? {
                Entry::End => return Ok(seen),
                Entry::Dir(p) => seen.push(format!("dir {}", p.as_str())),
                Entry::File(p, len) => {
                    let mut v = Vec::new();
                    r.file_bytes(len, &mut v)?;
                    seen.push(format!("file {} {}", p.as_str(), v.len()));
                }
                Entry::Table(t, es) => seen.push(format!("table {t} {}", es.len())),
            }
        }
    }

    #[test]
    fn round_trip() {
        let a = archive(&sample);
        assert_eq!(
            read_all(&a, &KEY).unwrap(),
            vec![
                "dir audit".to_string(),
                format!("file audit/HEAD {}", CHUNK + 1000),
                "table secrets 1".to_string()
            ]
        );
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused() {
        let a = archive(&sample);
        // In the header, in the first chunk's length, nonce and body, in
        // the last chunk's tag.
        for at in [3, 20, 60, 62, 80, 5000, a.len() - 1] {
            let mut b = a.clone();
            b[at] ^= 0x01;
            assert!(
                read_all(&b, &KEY).is_err(),
                "byte {at} flipped was accepted"
            );
        }
    }

    #[test]
    fn a_cut_short_or_extended_archive_is_refused() {
        let a = archive(&sample);
        // Header (12 + 7 wrapped + 32 salt), then the first, full chunk.
        let first_chunk_end = 51 + 4 + NONCE_LEN + CHUNK + TAG_LEN;
        for cut in [a.len() - 1, a.len() / 2, first_chunk_end, 10] {
            assert!(read_all(&a[..cut], &KEY).is_err(), "cut at {cut}");
        }
        let mut longer = a.clone();
        longer.push(0);
        assert!(matches!(
            read_all(&longer, &KEY),
            Err(ArchiveError::TrailingBytes)
        ));
    }

    #[test]
    fn a_wrong_key_is_refused() {
        let a = archive(&sample);
        assert!(matches!(
            read_all(&a, &[8; 32]),
            Err(ArchiveError::Altered { chunk: 0 })
        ));
    }

    #[test]
    fn paths_that_leave_the_directory_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a\\..\\b",
            "c:x",
            "a\0b",
        ] {
            assert!(EntryPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["state", "audit/HEAD", "streams/acme/prod/jobs/log/0.seg"] {
            assert!(EntryPath::parse(good).is_ok(), "{good:?} refused");
        }
        // A writer cannot put one in either, and a crafted archive that
        // holds one is refused on reading.
        assert!(archive_with_raw_path("../../etc/cron.d/x").is_err());
    }

    fn archive_with_raw_path(path: &str) -> Result<Vec<String>, ArchiveError> {
        let a = archive(&|w: &mut dyn Write| {
            w.write_all(&[FILE])?;
            w.write_all(&(path.len() as u16).to_be_bytes())?;
            w.write_all(path.as_bytes())?;
            w.write_all(&1u64.to_be_bytes())?;
            w.write_all(b"x")?;
            write_end(w)
        });
        read_all(&a, &KEY)
    }
}

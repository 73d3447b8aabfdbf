//! Downloading the data sets: the four gzip files of MNIST or Fashion-MNIST, checked against
//! built-in SHA-256 sums and written atomically.
//!
//! Each file is streamed into a temporary file beside its destination (see
//! [`temp_path_for`]) while it is hashed; only when the whole body has arrived and its SHA-256
//! matches is it renamed into place. On any failure (HTTP error, broken connection, truncated
//! body, wrong checksum, oversized body, full disk, even a panic in the progress callback) the
//! temporary file is removed, so an interrupted or corrupted download never leaves a file that
//! looks valid. Files already present with the right checksum are not downloaded again.
//!
//! ```no_run
//! use mnist_data::fetch::{fetch, default_base_url, FetchEvent};
//! use mnist_data::DatasetKind;
//!
//! let kind = DatasetKind::Mnist;
//! let report = fetch(kind, default_base_url(kind), "data/mnist".as_ref(), &mut |event| {
//!     if let FetchEvent::Done { name, bytes } = event {
//!         println!("{name}: {bytes} bytes");
//!     }
//! })?;
//! println!("{} downloaded, {} already present", report.downloaded.len(), report.skipped.len());
//! # Ok::<(), mnist_data::DataError>(())
//! ```

use std::fmt;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::atomic::{remove_stale_temps, temp_path_for};
use crate::dataset::DatasetKind;
use crate::error::{DataError, Result};

/// Where MNIST's four gzip files are downloaded from by default (Google's mirror; the original
/// site at yann.lecun.com is often unavailable).
pub const MNIST_BASE_URL: &str = "https://storage.googleapis.com/cvdf-datasets/mnist/";

/// Where Fashion-MNIST's four gzip files are downloaded from by default (Zalando's bucket).
pub const FASHION_BASE_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/// The largest response body accepted by default (100 MiB; the largest real file is 26 MB), so
/// that a misbehaving server cannot fill the disk.
pub const MAX_DOWNLOAD_BYTES: u64 = 100 * 1024 * 1024;

/// The names of the four files downloaded, in the order train images, train labels, test
/// images, test labels (the order of [`crate::dataset::FILE_STEMS`]).
pub const FILE_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// SHA-256 sums of MNIST's four official gzip files, in the order of [`FILE_NAMES`].
pub const MNIST_SHA256: [&str; 4] = [
    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
];

/// SHA-256 sums of Fashion-MNIST's four official gzip files, in the order of [`FILE_NAMES`].
pub const FASHION_SHA256: [&str; 4] = [
    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
];

/// The default download location of `kind` ([`MNIST_BASE_URL`] or [`FASHION_BASE_URL`]).
pub fn default_base_url(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Mnist => MNIST_BASE_URL,
        DatasetKind::Fashion => FASHION_BASE_URL,
    }
}

/// The built-in SHA-256 sums of `kind`'s four files ([`MNIST_SHA256`] or [`FASHION_SHA256`]).
pub fn sha256_sums(kind: DatasetKind) -> [&'static str; 4] {
    match kind {
        DatasetKind::Mnist => MNIST_SHA256,
        DatasetKind::Fashion => FASHION_SHA256,
    }
}

/// What [`fetch`] is doing, reported to its progress callback.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchEvent {
    /// The file is already present with the expected checksum; it is not downloaded.
    Skipped {
        /// The file name (one of [`FILE_NAMES`]).
        name: &'static str,
        /// Its size.
        bytes: u64,
    },
    /// The file is present but its checksum is wrong; it will be downloaded again and replaced
    /// (it is left untouched if the download fails).
    Replacing {
        /// The file name.
        name: &'static str,
        /// The SHA-256 of the file present.
        found: String,
    },
    /// The server answered and the body is about to be received.
    Started {
        /// The file name.
        name: &'static str,
        /// The URL requested.
        url: String,
        /// The announced size (`Content-Length`), when the server sent one.
        total: Option<u64>,
    },
    /// Some more bytes of the body have arrived.
    Progress {
        /// The file name.
        name: &'static str,
        /// Bytes received so far.
        received: u64,
        /// The announced size, when known.
        total: Option<u64>,
    },
    /// The file was received, verified and renamed into place.
    Done {
        /// The file name.
        name: &'static str,
        /// Its size.
        bytes: u64,
    },
}

/// What [`fetch`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// The files downloaded and verified, in the order of [`FILE_NAMES`].
    pub downloaded: Vec<PathBuf>,
    /// The files already present with the right checksum, left as they were.
    pub skipped: Vec<PathBuf>,
    /// Total size of the downloaded files.
    pub bytes_downloaded: u64,
}

/// The checksum check of one file by [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCheck {
    /// The file checked.
    pub path: PathBuf,
    /// The expected SHA-256, lowercase hex.
    pub expected: String,
    /// The SHA-256 found, lowercase hex; `None` when the file is missing.
    pub found: Option<String>,
}

impl FileCheck {
    /// True when the file is present and its checksum is the expected one.
    pub fn is_ok(&self) -> bool {
        self.found.as_deref() == Some(self.expected.as_str())
    }
}

impl fmt::Display for FileCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.found {
            None => write!(f, "{}: missing", self.path.display()),
            Some(_) if self.is_ok() => write!(f, "{}: OK", self.path.display()),
            Some(found) => {
                write!(f, "{}: SHA-256 mismatch: expected {}, got {found}", self.path.display(), self.expected)
            }
        }
    }
}

/// Settings of a download: where from, the checksums to expect, and limits.
///
/// [`FetchOptions::new`] gives the official location and sums of a data set; the builder
/// methods change them (tests serve their own files with their own sums).
#[derive(Clone, Debug)]
pub struct FetchOptions {
    base_url: String,
    sums: [String; 4],
    max_bytes: u64,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl FetchOptions {
    /// The official base URL and SHA-256 sums of `kind`, a body limit of
    /// [`MAX_DOWNLOAD_BYTES`], a 30 s connect timeout and a 60 s read timeout.
    pub fn new(kind: DatasetKind) -> Self {
        FetchOptions {
            base_url: default_base_url(kind).to_string(),
            sums: sha256_sums(kind).map(str::to_string),
            max_bytes: MAX_DOWNLOAD_BYTES,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }

    /// Downloads from `url` instead: the files are fetched from `{url}/{name}` (a trailing `/`
    /// is optional).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Expects these SHA-256 sums (64 hex digits each, in the order of [`FILE_NAMES`]) instead
    /// of the built-in ones.
    pub fn sums<S: Into<String>>(mut self, sums: [S; 4]) -> Self {
        self.sums = sums.map(Into::into);
        self
    }

    /// Refuses bodies larger than `bytes` (default [`MAX_DOWNLOAD_BYTES`]).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Gives up when connecting takes longer than `connect`, or when no data arrives for
    /// `read`.
    pub fn timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self
    }

    /// The URL of `name` under the base URL.
    pub fn url_of(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url.trim_end_matches('/'))
    }

    /// The four expected sums, checked (64 hex digits) and lowercased.
    fn checked_sums(&self) -> Result<[String; 4]> {
        let mut out: [String; 4] = Default::default();
        for ((slot, sum), name) in out.iter_mut().zip(&self.sums).zip(FILE_NAMES) {
            let sum = sum.trim();
            if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DataError::Config(format!(
                    "the SHA-256 sum for {name} must be 64 hex digits, found {sum:?} ({} characters)",
                    sum.len()
                )));
            }
            *slot = sum.to_ascii_lowercase();
        }
        Ok(out)
    }

    /// Downloads the four files into `dest_dir` (created if needed), skipping those already
    /// present with the expected checksum. See the [module documentation](self).
    ///
    /// # Errors
    /// [`DataError::Fetch`] naming the URL for an HTTP error status, a host that cannot be
    /// reached (the message then says where to put the files by hand), a broken or truncated
    /// body, a body over the size limit, or a checksum mismatch; [`DataError::Io`] when
    /// `dest_dir` cannot be created or written; [`DataError::Config`] for a malformed sum.
    /// Files completed before the error stay in place (they are verified).
    pub fn fetch(&self, dest_dir: &Path, progress: &mut dyn FnMut(FetchEvent)) -> Result<FetchReport> {
        let sums = self.checked_sums()?;
        std::fs::create_dir_all(dest_dir).map_err(|e| DataError::io(dest_dir, e))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The files are gzip already; ask for them as they are, so the bytes hashed are the
            // bytes published.
            .accept_encoding("identity")
            .timeout_resolve(Some(self.connect_timeout))
            .timeout_connect(Some(self.connect_timeout))
            .timeout_recv_response(Some(self.read_timeout))
            .timeout_per_read(Some(self.read_timeout))
            .build()
            .into();
        let mut report = FetchReport::default();
        for (name, expected) in FILE_NAMES.into_iter().zip(&sums) {
            let path = dest_dir.join(name);
            match sha256_if_present(&path)? {
                Some((found, bytes)) if &found == expected => {
                    progress(FetchEvent::Skipped { name, bytes });
                    report.skipped.push(path);
                    continue;
                }
                Some((found, _)) => progress(FetchEvent::Replacing { name, found }),
                None => {}
            }
            let bytes = self.download(&agent, name, &path, expected, dest_dir, progress)?;
            progress(FetchEvent::Done { name, bytes });
            report.bytes_downloaded += bytes;
            report.downloaded.push(path);
        }
        Ok(report)
    }

    /// Downloads one file into a temporary file beside `path`, verifies it and renames it into
    /// place; returns its size.
    fn download(
        &self,
        agent: &ureq::Agent,
        name: &'static str,
        path: &Path,
        expected: &str,
        dest_dir: &Path,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<u64> {
        let url = self.url_of(name);
        let fail = |message: String| DataError::Fetch { url: url.clone(), message };
        let mut response = agent.get(&url).call().map_err(|e| fail(self.request_failure(&url, &e, dest_dir)))?;
        let status = response.status();
        if !status.is_success() {
            let reason = status.canonical_reason().map(|r| format!(" {r}")).unwrap_or_default();
            return Err(fail(format!("HTTP {}{reason}", status.as_u16())));
        }
        let total = response.body().content_length();
        if let Some(total) = total.filter(|&t| t > self.max_bytes) {
            return Err(fail(format!(
                "the server announces {total} bytes (Content-Length), more than the limit of {} bytes; \
                 nothing was written",
                self.max_bytes
            )));
        }
        progress(FetchEvent::Started { name, url: url.clone(), total });

        remove_stale_temps(path);
        let mut part = PartFile::create(temp_path_for(path))?;
        let mut reader = response.body_mut().as_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut received = 0u64;
        let mut head = [0u8; 2];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let cause = ureq::Error::from(e);
                    return Err(fail(match total {
                        Some(total) if received < total => format!(
                            "truncated: expected {total} bytes (Content-Length), received {received} before the \
                             connection ended ({cause}); the partial file was discarded"
                        ),
                        _ => format!(
                            "the download broke off after {received} bytes ({cause}); the partial file was discarded"
                        ),
                    }));
                }
            };
            if received + (n as u64) > self.max_bytes {
                return Err(fail(format!(
                    "the body exceeds the limit of {} bytes; the partial file was discarded",
                    self.max_bytes
                )));
            }
            if received < 2 {
                let start = received as usize;
                let take = (2 - start).min(n);
                head[start..start + take].copy_from_slice(&buf[..take]);
            }
            received += n as u64;
            hasher.update(&buf[..n]);
            part.write_all(&buf[..n]).map_err(|e| DataError::io(path, e))?;
            progress(FetchEvent::Progress { name, received, total });
        }
        if let Some(total) = total.filter(|&t| received < t) {
            return Err(fail(format!(
                "truncated: expected {total} bytes (Content-Length), received {received}; the partial file was \
                 discarded"
            )));
        }
        let found = hex(&hasher.finalize());
        if found != expected {
            let hint = if received >= 2 && !crate::idx::is_gzip(&head) {
                " (the data received is not gzip: the server may have sent an error page, or decompressed the file)"
            } else {
                ""
            };
            return Err(fail(format!(
                "SHA-256 mismatch: expected {expected}, got {found}; the file was discarded{hint}"
            )));
        }
        part.persist(path)?;
        Ok(received)
    }

    /// The message of a request that got no response: for a host that cannot be reached, says
    /// that we seem to be offline and where to put the files by hand.
    fn request_failure(&self, url: &str, e: &ureq::Error, dest_dir: &Path) -> String {
        // A name that does not resolve shows up as an I/O error of no particular kind; check
        // the name ourselves (only on this error path) to recognise it on every platform.
        let reason = unreachable_reason(e).or_else(|| match e {
            ureq::Error::Io(io) if !host_resolves(url) => Some(format!("host not found: {io}")),
            _ => None,
        });
        match reason {
            Some(reason) => format!(
                "cannot reach the server ({reason}); we seem to be offline. Download the files by hand from {} \
                 and put them in {}: {}",
                self.base_url,
                dest_dir.display(),
                FILE_NAMES.join(", ")
            ),
            None => format!("request failed: {e}"),
        }
    }

    /// Checks the four files in `dir` against the expected sums (see [`verify`]).
    ///
    /// # Errors
    /// As [`verify`]; [`DataError::Config`] when the sums given with [`FetchOptions::sums`] are not
    /// SHA-256 sums.
    pub fn verify(&self, dir: &Path) -> Result<Vec<FileCheck>> {
        let sums = self.checked_sums()?;
        FILE_NAMES
            .into_iter()
            .zip(sums)
            .map(|(name, expected)| {
                let path = dir.join(name);
                let found = sha256_if_present(&path)?.map(|(sum, _)| sum);
                Ok(FileCheck { path, expected, found })
            })
            .collect()
    }
}

/// Why a request failed without reaching the server, if that is why it failed.
fn unreachable_reason(e: &ureq::Error) -> Option<String> {
    match e {
        ureq::Error::HostNotFound => Some("host not found".to_string()),
        ureq::Error::ConnectionFailed => Some("connection failed".to_string()),
        ureq::Error::Timeout(t @ (ureq::Timeout::Connect | ureq::Timeout::Resolve)) => Some(format!("timed out: {t}")),
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkDown
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::TimedOut
            ) =>
        {
            Some(io.to_string())
        }
        _ => None,
    }
}

/// Whether the host of `url` resolves to at least one address (false also for a URL without a
/// host).
fn host_resolves(url: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else { return false };
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port).to_socket_addrs().map(|mut addrs| addrs.next().is_some()).unwrap_or(false)
}

/// Downloads `kind`'s four files from `base_url` into `dest_dir` with the built-in checksums
/// (shorthand for [`FetchOptions::new`]`(kind).base_url(base_url).fetch(dest_dir, progress)`).
///
/// # Errors
/// As [`FetchOptions::fetch`].
pub fn fetch(
    kind: DatasetKind,
    base_url: &str,
    dest_dir: &Path,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<FetchReport> {
    FetchOptions::new(kind).base_url(base_url).fetch(dest_dir, progress)
}

/// Checks the four gzip files of `kind` in `dir` (named as in [`FILE_NAMES`]) against the
/// built-in SHA-256 sums. A missing file is reported (`found: None`), not an error.
///
/// # Errors
/// [`DataError::Io`] when a file is present but cannot be read.
pub fn verify(kind: DatasetKind, dir: &Path) -> Result<Vec<FileCheck>> {
    FetchOptions::new(kind).verify(dir)
}

/// The SHA-256 of a file, lowercase hex.
///
/// # Errors
/// [`DataError::Io`] naming `path` when it cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    hash_reader(path, file).map(|(sum, _)| sum)
}

/// The SHA-256 and size of `path`, or `None` when there is no such file.
fn sha256_if_present(path: &Path) -> Result<Option<(String, u64)>> {
    match File::open(path) {
        Ok(file) => hash_reader(path, file).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DataError::io(path, e)),
    }
}

fn hash_reader(path: &Path, mut read: impl Read) -> Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        match read.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(DataError::io(path, e)),
        }
    }
    Ok((hex(&hasher.finalize()), len))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|&b| [DIGITS[(b >> 4) as usize] as char, DIGITS[(b & 15) as usize] as char]).collect()
}

/// A temporary file that is removed when dropped, unless [`PartFile::persist`] renamed it into
/// place.
struct PartFile {
    path: PathBuf,
    file: Option<File>,
}

impl PartFile {
    fn create(path: PathBuf) -> Result<Self> {
        let file = File::create(&path).map_err(|e| DataError::io(&path, e))?;
        Ok(PartFile { path, file: Some(file) })
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Err(std::io::Error::other("temporary file already closed")),
        }
    }

    /// Flushes the file to disk and renames it to `dest`.
    fn persist(mut self, dest: &Path) -> Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(|e| DataError::io(dest, e))?;
        }
        std::fs::rename(&self.path, dest).map_err(|e| DataError::io(dest, e))?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn builtin_sums_are_well_formed_and_distinct() {
        for kind in [DatasetKind::Mnist, DatasetKind::Fashion] {
            let sums = FetchOptions::new(kind).checked_sums().unwrap();
            assert_eq!(sums.map(|s| s.len()), [64; 4]);
        }
        let mut all: Vec<&str> = MNIST_SHA256.iter().chain(&FASHION_SHA256).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn hex_and_urls() {
        assert_eq!(hex(&[0x00, 0x1f, 0xab, 0xff]), "001fabff");
        let o = FetchOptions::new(DatasetKind::Mnist);
        assert_eq!(o.url_of("a.gz"), "https://storage.googleapis.com/cvdf-datasets/mnist/a.gz");
        assert_eq!(o.base_url("http://h:1/x").url_of("a.gz"), "http://h:1/x/a.gz");
        let err = FetchOptions::new(DatasetKind::Mnist).sums(["abc", "", "", ""]).checked_sums().unwrap_err();
        assert!(err.to_string().contains("train-images-idx3-ubyte.gz must be 64 hex digits"), "{err}");
    }

    #[test]
    fn sha256_of_known_input() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("abc");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(sha256_file(&f).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(sha256_if_present(&dir.path().join("none")).unwrap().is_none());
    }
}

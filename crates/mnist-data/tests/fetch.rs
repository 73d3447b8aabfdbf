//! Tests of `mnist_data::fetch` against a tiny HTTP/1.1 server on 127.0.0.1 run by the test
//! itself: it serves the files of a temporary folder, and can be told to misbehave for a path.
#![cfg(feature = "fetch")]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mnist_data::fetch::{fetch, sha256_file, FetchEvent, FetchOptions, FILE_NAMES};
use mnist_data::{DataError, DatasetKind, Mnist};

/// How the server answers a path, instead of serving the file of that name.
#[derive(Clone)]
enum Reply {
    /// A status line with no body.
    Status(u16, &'static str),
    /// Announces `announced` bytes, sends `body` (shorter), then closes the connection.
    Truncated { announced: usize, body: Vec<u8> },
    /// Sends `body` without a `Content-Length`, ending it by closing the connection.
    NoLength(Vec<u8>),
    /// A 200 with this body (e.g. an HTML page where a gzip file was expected).
    Body(Vec<u8>),
}

struct Server {
    base_url: String,
    root: tempfile::TempDir,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a server on a free port of 127.0.0.1 that serves the files of a new temporary
    /// folder (`GET /name` → the file `name`, or 404).
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let root = tempfile::tempdir().unwrap();
        let replies: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let (dir, r, h) = (root.path().to_path_buf(), replies.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (dir, r, h) = (dir.clone(), r.clone(), h.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &dir, &r, &h);
                });
            }
        });
        Server { base_url: format!("http://127.0.0.1:{port}/"), root, replies, hits }
    }

    fn reply(&self, name: &str, reply: Reply) {
        self.replies.lock().unwrap().insert(name.to_string(), reply);
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }

    fn options(&self, sums: &[String; 4]) -> FetchOptions {
        FetchOptions::new(DatasetKind::Mnist).base_url(&self.base_url).sums(sums.clone())
    }
}

fn handle(
    stream: TcpStream,
    dir: &Path,
    replies: &Mutex<HashMap<String, Reply>>,
    hits: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let name = path.trim_start_matches('/').to_string();
    hits.lock().unwrap().push(name.clone());
    let reply = replies.lock().unwrap().get(&name).cloned();
    let reply = reply.unwrap_or_else(|| match std::fs::read(dir.join(&name)) {
        Ok(bytes) => Reply::Body(bytes),
        Err(_) => Reply::Status(404, "Not Found"),
    });
    let mut out = stream;
    match reply {
        Reply::Status(code, reason) => {
            write!(out, "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?
        }
        Reply::Body(body) => {
            write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
            out.write_all(&body)?;
        }
        Reply::Truncated { announced, body } => {
            write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n")?;
            out.write_all(&body)?;
        }
        Reply::NoLength(body) => {
            write!(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            out.write_all(&body)?;
        }
    }
    out.flush()?;
    out.shutdown(std::net::Shutdown::Both)
}

/// Writes a small gzip MNIST-like data set (6 training and 3 test images of 4×4) into `dir`
/// under the official names and returns the SHA-256 sums of the four files.
fn synthesize(dir: &Path) -> [String; 4] {
    let images = |n: usize| (0..n * 16).map(|i| (i * 7 % 256) as u8).collect::<Vec<u8>>();
    let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect::<Vec<u8>>();
    mnist_data::write_idx(dir.join(FILE_NAMES[0]), &[6, 4, 4], &images(6), true).unwrap();
    mnist_data::write_idx(dir.join(FILE_NAMES[1]), &[6], &labels(6), true).unwrap();
    mnist_data::write_idx(dir.join(FILE_NAMES[2]), &[3, 4, 4], &images(3), true).unwrap();
    mnist_data::write_idx(dir.join(FILE_NAMES[3]), &[3], &labels(3), true).unwrap();
    FILE_NAMES.map(|n| sha256_file(&dir.join(n)).unwrap())
}

/// The names in `dir`, sorted (temporary files start with a dot and show up here too).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn fetch_err(err: DataError) -> (String, String) {
    match err {
        DataError::Fetch { url, message } => (url, message),
        other => panic!("expected DataError::Fetch, got {other:?}"),
    }
}

#[test]
fn downloads_verifies_and_loads_then_skips_on_the_second_run() {
    let server = Server::start();
    let sums = synthesize(server.root.path());
    let out = tempfile::tempdir().unwrap();
    let dest: PathBuf = out.path().join("data").join("mnist"); // created by fetch
    let mut events = Vec::new();
    let report = server.options(&sums).fetch(&dest, &mut |e| events.push(e)).unwrap();

    assert_eq!(report.downloaded, FILE_NAMES.map(|n| dest.join(n)).to_vec());
    assert!(report.skipped.is_empty());
    let sizes: u64 = FILE_NAMES.iter().map(|n| std::fs::metadata(dest.join(n)).unwrap().len()).sum();
    assert_eq!(report.bytes_downloaded, sizes);
    for name in FILE_NAMES {
        assert_eq!(std::fs::read(dest.join(name)).unwrap(), std::fs::read(server.root.path().join(name)).unwrap());
    }
    assert_eq!(listing(&dest), sorted(&FILE_NAMES), "no temporary files left");
    assert_eq!(server.hits(), FILE_NAMES.to_vec());

    // Events: Started, Progress…, Done for each file, in order.
    let first = &events[0];
    assert_eq!(
        first,
        &FetchEvent::Started {
            name: FILE_NAMES[0],
            url: format!("{}{}", server.base_url, FILE_NAMES[0]),
            total: Some(std::fs::metadata(dest.join(FILE_NAMES[0])).unwrap().len()),
        }
    );
    let done: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            FetchEvent::Done { name, .. } => Some(*name),
            _ => None,
        })
        .collect();
    assert_eq!(done, FILE_NAMES.to_vec());
    assert!(events.iter().any(|e| matches!(e, FetchEvent::Progress { received, total: Some(t), .. } if received == t)));

    let splits = Mnist::load(&dest).unwrap();
    assert_eq!((splits.train.len(), splits.test.len(), splits.train.rows(), splits.train.cols()), (6, 3, 4, 4));
    assert_eq!(splits.train.labels(), &[0, 1, 2, 3, 4, 5]);

    // Second run: everything present and correct, nothing requested.
    let mut events = Vec::new();
    let report = server.options(&sums).fetch(&dest, &mut |e| events.push(e)).unwrap();
    assert!(report.downloaded.is_empty());
    assert_eq!(report.skipped.len(), 4);
    assert_eq!(report.bytes_downloaded, 0);
    assert_eq!(server.hits().len(), 4, "no new request: {:?}", server.hits());
    assert!(events.iter().all(|e| matches!(e, FetchEvent::Skipped { .. })), "{events:?}");

    // verify agrees.
    let checks = server.options(&sums).verify(&dest).unwrap();
    assert!(checks.iter().all(|c| c.is_ok()), "{checks:?}");
    assert_eq!(checks[0].to_string(), format!("{}: OK", dest.join(FILE_NAMES[0]).display()));
}

#[test]
fn present_file_is_skipped_and_a_wrong_one_is_replaced() {
    let server = Server::start();
    let sums = synthesize(server.root.path());
    let dest = tempfile::tempdir().unwrap();
    let dest = dest.path();
    std::fs::copy(server.root.path().join(FILE_NAMES[0]), dest.join(FILE_NAMES[0])).unwrap();
    std::fs::write(dest.join(FILE_NAMES[1]), b"stale copy").unwrap();
    let stale_sum = sha256_file(&dest.join(FILE_NAMES[1])).unwrap();

    let mut events = Vec::new();
    let report = server.options(&sums).fetch(dest, &mut |e| events.push(e)).unwrap();
    assert_eq!(report.skipped, vec![dest.join(FILE_NAMES[0])]);
    assert_eq!(report.downloaded, FILE_NAMES[1..].iter().map(|n| dest.join(n)).collect::<Vec<_>>());
    assert_eq!(server.hits(), FILE_NAMES[1..].to_vec(), "the good file is not requested");
    assert!(events.contains(&FetchEvent::Replacing { name: FILE_NAMES[1], found: stale_sum }), "{events:?}");
    assert_eq!(sha256_file(&dest.join(FILE_NAMES[1])).unwrap(), sums[1]);
    assert_eq!(listing(dest), sorted(&FILE_NAMES));
}

#[test]
fn checksum_mismatch_discards_the_file() {
    let server = Server::start();
    let mut sums = synthesize(server.root.path());
    let actual = sums[1].clone();
    sums[1] = "00".repeat(32);
    let dest = tempfile::tempdir().unwrap();
    let dest = dest.path();

    let err = server.options(&sums).fetch(dest, &mut |_| {}).unwrap_err();
    let text = err.to_string();
    let (url, message) = fetch_err(err);
    assert_eq!(url, format!("{}{}", server.base_url, FILE_NAMES[1]));
    assert_eq!(
        message,
        format!("SHA-256 mismatch: expected {}, got {actual}; the file was discarded", "00".repeat(32))
    );
    assert!(text.starts_with(&url), "{text}");
    // The first file was complete and verified; the bad one is gone, and no temporary file left.
    assert_eq!(listing(dest), vec![FILE_NAMES[0].to_string()]);

    // A server answering 200 with an error page instead of the file.
    server.reply(FILE_NAMES[1], Reply::Body(b"<html>Access denied</html>".to_vec()));
    sums[1] = actual;
    let (_, message) = fetch_err(server.options(&sums).fetch(dest, &mut |_| {}).unwrap_err());
    assert!(message.starts_with(&format!("SHA-256 mismatch: expected {}, got ", sums[1])), "{message}");
    assert!(message.contains("the file was discarded (the data received is not gzip"), "{message}");
    assert_eq!(listing(dest), vec![FILE_NAMES[0].to_string()]);
}

#[test]
fn http_404_is_reported_with_its_url() {
    let server = Server::start();
    let sums = synthesize(server.root.path());
    std::fs::remove_file(server.root.path().join(FILE_NAMES[2])).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = server.options(&sums).fetch(dest.path(), &mut |_| {}).unwrap_err();
    assert_eq!(err.to_string(), format!("{}{}: HTTP 404 Not Found", server.base_url, FILE_NAMES[2]));
    assert_eq!(listing(dest.path()), sorted(&FILE_NAMES[..2]));

    server.reply(FILE_NAMES[2], Reply::Status(503, "Service Unavailable"));
    let (_, message) = fetch_err(server.options(&sums).fetch(dest.path(), &mut |_| {}).unwrap_err());
    assert_eq!(message, "HTTP 503 Service Unavailable");
}

#[test]
fn truncated_body_is_an_error_and_leaves_nothing() {
    let server = Server::start();
    let sums = synthesize(server.root.path());
    let full = std::fs::read(server.root.path().join(FILE_NAMES[0])).unwrap();
    let half = full[..full.len() / 2].to_vec();
    server.reply(FILE_NAMES[0], Reply::Truncated { announced: full.len(), body: half.clone() });
    let dest = tempfile::tempdir().unwrap();
    let (url, message) = fetch_err(server.options(&sums).fetch(dest.path(), &mut |_| {}).unwrap_err());
    assert_eq!(url, format!("{}{}", server.base_url, FILE_NAMES[0]));
    let expected = format!("truncated: expected {} bytes (Content-Length), received {}", full.len(), half.len());
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.ends_with("the partial file was discarded"), "{message}");
    assert_eq!(listing(dest.path()), Vec::<String>::new());
}

#[test]
fn oversized_bodies_are_refused() {
    let server = Server::start();
    let sums = synthesize(server.root.path());
    let len = std::fs::metadata(server.root.path().join(FILE_NAMES[0])).unwrap().len();
    let dest = tempfile::tempdir().unwrap();
    let small = server.options(&sums).max_bytes(len - 1);
    let (_, message) = fetch_err(small.fetch(dest.path(), &mut |_| {}).unwrap_err());
    assert_eq!(
        message,
        format!(
            "the server announces {len} bytes (Content-Length), more than the limit of {} bytes; nothing was written",
            len - 1
        )
    );
    // Without a Content-Length the limit is enforced while receiving.
    server.reply(FILE_NAMES[0], Reply::NoLength(vec![0x1f; 5000]));
    let (_, message) = fetch_err(server.options(&sums).max_bytes(1000).fetch(dest.path(), &mut |_| {}).unwrap_err());
    assert_eq!(message, "the body exceeds the limit of 1000 bytes; the partial file was discarded");
    assert_eq!(listing(dest.path()), Vec::<String>::new());
}

#[test]
fn unreachable_host_says_we_are_offline_and_where_to_put_the_files() {
    // A port that was just free: nothing listens there, so the connection is refused.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}/");
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("mnist");
    let err = fetch(DatasetKind::Mnist, &base, &dest, &mut |_| {}).unwrap_err();
    let (url, message) = fetch_err(err);
    assert_eq!(url, format!("{base}{}", FILE_NAMES[0]));
    assert!(message.starts_with("cannot reach the server ("), "{message}");
    assert!(message.contains("we seem to be offline"), "{message}");
    assert!(message.contains(&format!("Download the files by hand from {base} and put them in {}", dest.display())));
    for name in FILE_NAMES {
        assert!(message.contains(name), "{message}");
    }
    assert_eq!(listing(&dest), Vec::<String>::new());
}

#[test]
fn unknown_host_says_we_are_offline() {
    // `.invalid` never resolves (RFC 6761).
    let out = tempfile::tempdir().unwrap();
    let base = "http://mnist-data-test.invalid/files";
    let options = FetchOptions::new(DatasetKind::Fashion).base_url(base);
    let (url, message) = fetch_err(options.fetch(out.path(), &mut |_| {}).unwrap_err());
    assert_eq!(url, format!("{base}/{}", FILE_NAMES[0]));
    assert!(message.starts_with("cannot reach the server (host not found"), "{message}");
    assert!(
        message.contains(&format!(
            "we seem to be offline. Download the files by hand from {base} and put them in {}: ",
            out.path().display()
        )),
        "{message}"
    );
    assert!(message.ends_with(&FILE_NAMES.join(", ")), "{message}");
}

#[test]
fn verify_reports_missing_and_mismatching_files() {
    let dir = tempfile::tempdir().unwrap();
    let sums = synthesize(dir.path());
    std::fs::remove_file(dir.path().join(FILE_NAMES[3])).unwrap();
    std::fs::write(dir.path().join(FILE_NAMES[2]), b"x").unwrap();
    let options = FetchOptions::new(DatasetKind::Mnist).sums(sums.clone());
    let checks = options.verify(dir.path()).unwrap();
    assert_eq!(checks.iter().map(|c| c.is_ok()).collect::<Vec<_>>(), [true, true, false, false]);
    assert_eq!(checks[3].found, None);
    assert_eq!(checks[3].to_string(), format!("{}: missing", dir.path().join(FILE_NAMES[3]).display()));
    assert_eq!(
        checks[2].to_string(),
        format!(
            "{}: SHA-256 mismatch: expected {}, got 2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881",
            dir.path().join(FILE_NAMES[2]).display(),
            sums[2]
        )
    );
    // The built-in sums do not match synthesized files.
    let checks = mnist_data::fetch::verify(DatasetKind::Fashion, dir.path()).unwrap();
    assert!(checks.iter().all(|c| !c.is_ok()));
}

#[test]
fn malformed_sums_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = FetchOptions::new(DatasetKind::Mnist)
        .base_url("http://127.0.0.1:9/")
        .sums(["abc", "", "", ""])
        .fetch(dir.path(), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, DataError::Config(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the SHA-256 sum for train-images-idx3-ubyte.gz must be 64 hex digits, found \"abc\" (3 characters)"
    );
}

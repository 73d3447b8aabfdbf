//! The IDX file format of MNIST (`train-images-idx3-ubyte` and friends), raw or gzip-compressed.
//!
//! An IDX file is a 4-byte magic number `0x00 0x00 TYPE NDIMS`, then `NDIMS` big-endian `u32`
//! dimensions, then the data in row-major order. Only `TYPE = 0x08` (unsigned bytes) is used by
//! the MNIST family and supported here. Gzip is recognised by its magic bytes (`1f 8b`), not by
//! the file name.
//!
//! The header is checked against the file's length *before* anything is allocated for the data,
//! so a small file that claims a billion images is an error, not a gigabyte allocation.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{DataError, Result};

/// The largest expansion factor of DEFLATE (about 1032:1); a gzip file of `n` bytes cannot hold
/// more than this many times `n` bytes of data.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The contents of an IDX file of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions from the header, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// The data, row-major, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// Parses the magic number and dimensions of an IDX header and returns them with the number of
/// data bytes they promise. `read` supplies the header bytes.
fn read_header(path: &Path, read: &mut dyn Read) -> Result<(Vec<usize>, u64)> {
    let mut magic = [0u8; 4];
    read_full(read, &mut magic).map_err(|e| header_err(path, e, "the 4-byte magic number"))?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(DataError::invalid(
            path,
            format!(
                "not an IDX file: magic number {:02x} {:02x} {:02x} {:02x}, expected 00 00 08 NN",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    if magic[2] != 0x08 {
        return Err(DataError::invalid(
            path,
            format!(
                "IDX data type 0x{:02x} ({}) is not supported, expected 0x08 (unsigned byte)",
                magic[2],
                type_name(magic[2])
            ),
        ));
    }
    let ndims = magic[3] as usize;
    if ndims == 0 {
        return Err(DataError::invalid(path, "IDX header declares 0 dimensions, expected at least 1"));
    }
    let mut raw = vec![0u8; 4 * ndims];
    read_full(read, &mut raw).map_err(|e| header_err(path, e, "the dimensions"))?;
    let dims: Vec<usize> = raw.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let len = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| DataError::invalid(path, format!("IDX dimensions {dims:?} overflow")))?;
    Ok((dims, len))
}

fn header_err(path: &Path, e: std::io::Error, what: &str) -> DataError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        DataError::invalid(path, format!("truncated: the file ends inside the IDX header ({what})"))
    } else {
        DataError::io(path, e)
    }
}

/// Like `read_exact`, but reports how far it got through the error kind only.
fn read_full(read: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<()> {
    read.read_exact(buf)
}

fn describe(dims: &[usize]) -> String {
    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×")
}

/// Reads an IDX file of unsigned bytes, raw or gzip-compressed.
///
/// # Errors
/// [`DataError::Io`] when the file cannot be read; [`DataError::Invalid`] when it is not IDX,
/// holds another data type, is truncated, has trailing bytes, is a corrupt gzip stream, or
/// declares more data than the file can possibly hold.
pub fn read_idx(path: impl AsRef<Path>) -> Result<Idx> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_idx(path, &bytes)
}

/// Whether `start` begins as a gzip stream does (its two magic bytes).
pub(crate) fn is_gzip(start: &[u8]) -> bool {
    start.starts_with(&[0x1f, 0x8b])
}

/// The dimensions an IDX file (raw or gzip) declares, from its header alone: a few bytes read
/// (and, for gzip, decompressed), so that files can be checked against each other before their
/// data are read.
///
/// # Errors
/// [`DataError::Io`] naming the file when it cannot be read; [`DataError::Invalid`] when its
/// header is not an IDX header of bytes (as [`read_idx`]).
pub fn read_idx_dims(path: impl AsRef<Path>) -> Result<Vec<usize>> {
    use std::io::BufRead;
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let start = reader.fill_buf().map_err(|e| DataError::io(path, e))?;
    let (dims, _) = if is_gzip(start) {
        read_header(path, &mut flate2::read::MultiGzDecoder::new(reader)).map_err(gzip_context)?
    } else {
        read_header(path, &mut reader)?
    };
    Ok(dims)
}

/// Parses the bytes of an IDX file (raw or gzip); `path` only names the file in errors.
///
/// # Errors
/// As [`read_idx`].
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<Idx> {
    if is_gzip(bytes) {
        let mut gz = flate2::read::MultiGzDecoder::new(bytes);
        let (dims, len) = read_header(path, &mut gz).map_err(gzip_context)?;
        let limit = (bytes.len() as u64).saturating_mul(MAX_DEFLATE_RATIO);
        if len > limit {
            return Err(DataError::invalid(
                path,
                format!(
                    "IDX header claims {} ({len} bytes of data), but a gzip file of {} bytes can hold at most {limit}",
                    describe(&dims),
                    bytes.len()
                ),
            ));
        }
        read_body(path, &mut gz, dims, len, "decompressed ")
    } else {
        let mut cursor = bytes;
        let (dims, len) = read_header(path, &mut cursor)?;
        let available = cursor.len() as u64;
        if len > available {
            return Err(DataError::invalid(
                path,
                format!(
                    "truncated: IDX header declares {} ({len} bytes of data), the file holds {available}",
                    describe(&dims)
                ),
            ));
        }
        if len < available {
            return Err(DataError::invalid(
                path,
                format!(
                    "{} bytes of trailing data after the {len} bytes that the header ({}) declares",
                    available - len,
                    describe(&dims)
                ),
            ));
        }
        Ok(Idx { dims, data: cursor.to_vec() })
    }
}

fn gzip_context(e: DataError) -> DataError {
    match e {
        DataError::Io { path, source } => DataError::invalid(path, corrupt_gzip(&source)),
        other => other,
    }
}

/// "corrupt gzip stream: …", without saying it twice (flate2's checksum error begins so).
fn corrupt_gzip(e: &std::io::Error) -> String {
    let message = e.to_string();
    if message.starts_with("corrupt gzip stream") {
        message
    } else {
        format!("corrupt gzip stream: {message}")
    }
}

/// Reads the `len` bytes of data a (gzip) header declares. The buffer grows as data really
/// arrives, from at most [`FIRST_READ`]: a header that lies about its size (within what the
/// compressed size allows, up to a thousand times it) costs no more memory than the stream holds.
fn read_body(path: &Path, read: &mut dyn Read, dims: Vec<usize>, len: u64, kind: &str) -> Result<Idx> {
    let mut data = Vec::with_capacity(len.min(FIRST_READ) as usize);
    // One byte past the declared length tells trailing data from the end of the stream.
    read.take(len.saturating_add(1)).read_to_end(&mut data).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            format!(
                "truncated: the compressed stream ends after {} of the {len} bytes of data its header ({}) declares; \
                 download the file again",
                data.len(),
                describe(&dims)
            )
        } else if e.kind() == std::io::ErrorKind::OutOfMemory {
            format!(
                "out of memory after decompressing {} of the {len} bytes of data its header ({}) declares",
                data.len(),
                describe(&dims)
            )
        } else {
            corrupt_gzip(&e)
        };
        DataError::invalid(path, why)
    })?;
    let got = data.len() as u64;
    if got < len {
        return Err(DataError::invalid(
            path,
            format!(
                "truncated: IDX header declares {} ({len} bytes of data), the {kind}file holds {got}",
                describe(&dims)
            ),
        ));
    }
    if got > len {
        return Err(DataError::invalid(
            path,
            format!("trailing data after the {len} bytes that the header ({}) declares", describe(&dims)),
        ));
    }
    Ok(Idx { dims, data })
}

/// The most a gzip IDX body is read into at first (MNIST's training images, 47 MB, fit).
const FIRST_READ: u64 = 64 << 20;

/// Encodes dimensions and data as IDX bytes (unsigned byte type).
///
/// # Errors
/// [`DataError::Config`] when `data.len()` is not the product of `dims`, `dims` is empty or has
/// more than 255 entries, or a dimension does not fit in a `u32`.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Result<Vec<u8>> {
    let expected: usize = dims.iter().product();
    if expected != data.len() || dims.is_empty() || dims.len() > 255 {
        return Err(DataError::Config(format!("IDX data of {} bytes does not match dimensions {dims:?}", data.len())));
    }
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, 0x08, dims.len() as u8]);
    for &d in dims {
        let d = u32::try_from(d).map_err(|_| DataError::Config(format!("IDX dimension {d} does not fit in u32")))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// Writes an IDX file, gzip-compressed when `gzip` is true. Used to synthesize test files and
/// to export subsets. The file is written to a temporary name and renamed into place.
///
/// # Errors
/// [`DataError::Io`] on write failure, [`DataError::Config`] when `data` does not match `dims`.
pub fn write_idx(path: impl AsRef<Path>, dims: &[usize], data: &[u8], gzip: bool) -> Result<()> {
    let path = path.as_ref();
    let raw = encode_idx(dims, data)?;
    let bytes = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).map_err(|e| DataError::io(path, e))?;
        enc.finish().map_err(|e| DataError::io(path, e))?
    } else {
        raw
    };
    crate::atomic::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("test.idx")
    }

    #[test]
    fn roundtrip_raw_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        for gz in [false, true] {
            let f = dir.path().join(format!("x{gz}"));
            write_idx(&f, &[2, 3, 4], &data, gz).unwrap();
            let idx = read_idx(&f).unwrap();
            assert_eq!(idx.dims, vec![2, 3, 4]);
            assert_eq!(idx.data, data);
        }
    }

    #[test]
    fn lying_header_is_rejected_before_allocating() {
        // 1 KB file claiming 10^9 images of 28x28.
        let mut bytes = vec![0, 0, 8, 3];
        bytes.extend_from_slice(&1_000_000_000u32.to_be_bytes());
        bytes.extend_from_slice(&28u32.to_be_bytes());
        bytes.extend_from_slice(&28u32.to_be_bytes());
        bytes.resize(1024, 0);
        let err = parse_idx(p(), &bytes).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("784000000000"), "{err}");
        // The same lie inside gzip.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        let gz = enc.finish().unwrap();
        let err = parse_idx(p(), &gz).unwrap_err().to_string();
        assert!(err.contains("can hold at most"), "{err}");
    }

    #[test]
    fn bad_magic_type_and_truncation() {
        let err = parse_idx(p(), b"PK\x03\x04hello").unwrap_err().to_string();
        assert!(err.contains("not an IDX file") && err.contains("test.idx"), "{err}");
        let err = parse_idx(p(), &[0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap_err().to_string();
        assert!(err.contains("0x0d (f32)"), "{err}");
        let err = parse_idx(p(), &[0, 0, 8]).unwrap_err().to_string();
        assert!(err.contains("ends inside the IDX header"), "{err}");
        let err = parse_idx(p(), &[0, 0, 8, 2, 0, 0]).unwrap_err().to_string();
        assert!(err.contains("ends inside the IDX header (the dimensions)"), "{err}");
        let err = parse_idx(p(), &[0, 0, 8, 0]).unwrap_err().to_string();
        assert!(err.contains("0 dimensions"), "{err}");
        let err = parse_idx(p(), &[0, 0, 8, 1, 0, 0, 0, 3, 1, 2]).unwrap_err().to_string();
        assert!(err.contains("declares 3 (3 bytes of data), the file holds 2"), "{err}");
        let err = parse_idx(p(), &[0, 0, 8, 1, 0, 0, 0, 1, 1, 2]).unwrap_err().to_string();
        assert!(err.contains("1 bytes of trailing data"), "{err}");
    }

    #[test]
    fn truncated_and_corrupt_gzip() {
        let raw = encode_idx(&[100, 10], &[7u8; 1000]).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).unwrap();
        let gz = enc.finish().unwrap();
        let cut = &gz[..gz.len() - 12];
        let err = parse_idx(p(), cut).unwrap_err().to_string();
        assert!(err.contains("test.idx") && (err.contains("truncated") || err.contains("corrupt")), "{err}");
        // Cut inside the data (bytes that do not compress): told as cut, with how far it got.
        let noise: Vec<u8> = (0u32..4000).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&encode_idx(&[4000], &noise).unwrap()).unwrap();
        let long = enc.finish().unwrap();
        let err = parse_idx(p(), &long[..long.len() / 2]).unwrap_err().to_string();
        assert!(
            err.contains("truncated: the compressed stream ends after ") && err.contains("of the 4000 bytes"),
            "{err}"
        );
        assert!(err.contains("download the file again"), "{err}");
        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xFF;
        bad[mid + 1] ^= 0xFF;
        assert!(parse_idx(p(), &bad).is_err());
        // A wrong checksum (the last 8 bytes: CRC-32 and length) is said once, not twice.
        let mut crc = gz.clone();
        let at = crc.len() - 8;
        crc[at] ^= 0xFF;
        let err = parse_idx(p(), &crc).unwrap_err().to_string();
        assert!(err.contains("corrupt gzip stream") && err.matches("corrupt gzip stream").count() == 1, "{err}");
    }
}

//! Reading an object file from disk: the one place percpu-bed turns a path
//! into bytes for the ELF parser.
//!
//! Distributions ship modules compressed (`.ko.xz` on Debian and Fedora,
//! `.ko.zst` on Arch and Ubuntu), so xz and zstd streams are recognised by
//! their magic and decompressed; the name does not matter.  Only regular
//! files are read (a FIFO would block, `/dev/zero` never ends), and both the
//! file and its decompressed contents are capped at [`MAX_OBJECT_BYTES`]
//! before any parsing starts.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// The largest object read: a debug vmlinux is a few hundred MiB, a module
/// a few MiB.  Applies to the file and to its decompressed contents.
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;

const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

/// How an object file was stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Xz,
    Zstd,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        })
    }
}

/// Why a file could not be read as an object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: cannot read file: {reason}")]
    Io { path: String, reason: String },
    #[error("{path}: not a regular file ({kind}); give an object file")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path}: larger than {limit} bytes{what}, which no object percpu-bed reads is", what = if *.decompressed { " once decompressed" } else { "" })]
    TooLarge { path: String, limit: u64, decompressed: bool },
    #[error("{path}: corrupt {format} stream: {reason}")]
    Decompress { path: String, format: Compression, reason: String },
    #[error("{path}: gzip-compressed; decompress it first (gunzip -k)")]
    Gzip { path: String },
}

/// An object file's contents, decompressed.
#[derive(Clone, Debug)]
pub struct ObjectBytes {
    pub bytes: Vec<u8>,
    /// How the file was compressed, if it was.
    pub compression: Option<Compression>,
}

/// Read `path` as an object (see the module docs), capped at
/// [`MAX_OBJECT_BYTES`].
pub fn read_object_file(path: &Path) -> Result<ObjectBytes, ReadError> {
    read_object_file_limited(path, MAX_OBJECT_BYTES)
}

/// [`read_object_file`] with another size cap.
pub fn read_object_file_limited(path: &Path, limit: u64) -> Result<ObjectBytes, ReadError> {
    let name = path.display().to_string();
    let io = |e: std::io::Error| ReadError::Io { path: name.clone(), reason: e.to_string() };
    // stat before open: opening a FIFO for reading blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(io)?;
    check_regular(&name, &meta)?;
    if meta.len() > limit {
        return Err(ReadError::TooLarge { path: name, limit, decompressed: false });
    }
    let file = File::open(path).map_err(io)?;
    // The path may have been replaced between the stat and the open.
    check_regular(&name, &file.metadata().map_err(io)?)?;
    let raw = read_capped(file, limit).map_err(io)?;
    if raw.len() as u64 > limit {
        return Err(ReadError::TooLarge { path: name, limit, decompressed: false });
    }
    decompress(&name, raw, limit)
}

/// Decompress `raw` if it is an xz or zstd stream, capped at `limit` bytes.
pub fn decompress(name: &str, raw: Vec<u8>, limit: u64) -> Result<ObjectBytes, ReadError> {
    let format = if raw.starts_with(XZ_MAGIC) {
        Compression::Xz
    } else if raw.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else if raw.starts_with(GZIP_MAGIC) {
        return Err(ReadError::Gzip { path: name.to_string() });
    } else {
        return Ok(ObjectBytes { bytes: raw, compression: None });
    };
    let corrupt = |e: std::io::Error| ReadError::Decompress { path: name.to_string(), format, reason: e.to_string() };
    let bytes = match format {
        Compression::Xz => read_capped(xz2::read::XzDecoder::new_multi_decoder(raw.as_slice()), limit),
        Compression::Zstd => read_capped(zstd::stream::read::Decoder::new(raw.as_slice()).map_err(corrupt)?, limit),
    }
    .map_err(corrupt)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { path: name.to_string(), limit, decompressed: true });
    }
    Ok(ObjectBytes { bytes, compression: Some(format) })
}

/// At most `limit + 1` bytes, so a caller can tell "too large" apart.
fn read_capped(r: impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    Ok(out)
}

fn check_regular(name: &str, meta: &std::fs::Metadata) -> Result<(), ReadError> {
    if meta.is_file() {
        return Ok(());
    }
    let ft = meta.file_type();
    let kind = if ft.is_dir() { "a directory" } else { special_kind(&ft) };
    Err(ReadError::NotRegular { path: name.to_string(), kind })
}

#[cfg(unix)]
fn special_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "not a file"
}

/// The file name an object is reported under, without a compression
/// suffix: `percpu_test.ko.xz` is the module `percpu_test.ko`.
pub fn object_name(path: &Path) -> String {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    for suffix in [".xz", ".zst"] {
        if let Some(stem) = name.strip_suffix(suffix) {
            if !stem.is_empty() {
                return stem.to_string();
            }
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/obj/x86_64/mod_basic.o")
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("percpu-loader-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_plain_xz_and_zstd_to_the_same_bytes() {
        let plain = std::fs::read(fixture()).unwrap();
        let d = tmp("codecs");
        let xz = d.join("mod_basic.ko.xz");
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
        std::io::Write::write_all(&mut enc, &plain).unwrap();
        std::fs::write(&xz, enc.finish().unwrap()).unwrap();
        let zst = d.join("mod_basic.ko.zst");
        std::fs::write(&zst, zstd::encode_all(plain.as_slice(), 3).unwrap()).unwrap();

        let p = read_object_file(&fixture()).unwrap();
        assert_eq!((p.bytes.as_slice(), p.compression), (plain.as_slice(), None));
        let x = read_object_file(&xz).unwrap();
        assert_eq!((x.bytes.as_slice(), x.compression), (plain.as_slice(), Some(Compression::Xz)));
        let z = read_object_file(&zst).unwrap();
        assert_eq!((z.bytes.as_slice(), z.compression), (plain.as_slice(), Some(Compression::Zstd)));
        assert_eq!(object_name(&xz), "mod_basic.ko");
        assert_eq!(object_name(&zst), "mod_basic.ko");
        assert_eq!(object_name(Path::new("a/kernel.o")), "kernel.o");

        // A truncated stream is a corrupt stream, not an ELF with bad magic.
        let bad = d.join("cut.ko.xz");
        let whole = std::fs::read(&xz).unwrap();
        std::fs::write(&bad, &whole[..whole.len() / 2]).unwrap();
        let e = read_object_file(&bad).unwrap_err();
        assert!(matches!(e, ReadError::Decompress { format: Compression::Xz, .. }), "{e}");
        assert!(e.to_string().contains("corrupt xz stream"), "{e}");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn caps_the_file_and_the_decompressed_size() {
        let d = tmp("cap");
        let big = d.join("big.o");
        std::fs::write(&big, vec![0u8; 4096]).unwrap();
        let e = read_object_file_limited(&big, 1000).unwrap_err();
        assert_eq!(e, ReadError::TooLarge { path: big.display().to_string(), limit: 1000, decompressed: false });
        // A small zstd bomb: 1 MiB of zeros in a few bytes.
        let bomb = d.join("bomb.ko.zst");
        std::fs::write(&bomb, zstd::encode_all(vec![0u8; 1 << 20].as_slice(), 19).unwrap()).unwrap();
        assert!(std::fs::metadata(&bomb).unwrap().len() < 1000);
        let e = read_object_file_limited(&bomb, 1000).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { decompressed: true, .. }), "{e}");
        assert!(e.to_string().contains("once decompressed"), "{e}");
        let _ = std::fs::remove_dir_all(d);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_fifos_devices_and_directories_without_blocking() {
        let d = tmp("special");
        let fifo = d.join("pipe.ko");
        let st = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
        assert!(st.success());
        let e = read_object_file(&fifo).unwrap_err();
        assert!(e.to_string().ends_with("not a regular file (a FIFO); give an object file"), "{e}");
        let e = read_object_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(e, ReadError::NotRegular { path: "/dev/zero".into(), kind: "a character device" });
        let e = read_object_file(&d).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular { kind: "a directory", .. }), "{e}");
        let e = read_object_file(&d.join("missing.o")).unwrap_err();
        assert!(matches!(e, ReadError::Io { .. }), "{e}");
        let gz = d.join("m.ko.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(read_object_file(&gz).unwrap_err().to_string().contains("gunzip"));
        let _ = std::fs::remove_dir_all(d);
    }
}

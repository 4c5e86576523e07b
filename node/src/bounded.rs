//! Bounded reads of the files and standard input that users hand the CLI
//! and the daemon: nothing is read past its limit, so a manifest, token or
//! key that is `/dev/zero` (or a symlink to it, or a 10 GB file) costs at
//! most the limit plus one byte and ends in [`ReadError::TooLarge`] naming
//! the file and the limit.
//!
//! | what | limit | why |
//! |---|---|---|
//! | a manifest | [`MAX_MANIFEST_BYTES`] (1 MiB) | ZGraph's own bound on a manifest's text |
//! | a token argument (`-`, a file) | 2 × [`omega_identity::ucan::MAX_TOKEN_LEN`] (128 KiB) | the largest token, as base64 text with room for whitespace |
//! | a key file (`--key`, `node.key`) | [`omega_identity::keyfile::MAX_LEN`] (1 KiB) | the key file format's bound |
//! | `join.token` | [`omega_gossip::join::MAX_TOKEN_LEN`] (8 KiB) | the join token's bound |
//! | an event payload (`@FILE`, `-`) | [`omega_p2p::http::MAX_BODY`] (4 MiB) | the most one request to the local API carries; the node itself refuses a payload over its `max_payload` (256 KiB by default) with its own message |
//! | a component (`image push`, `run`, `dev`, `bench`) | [`omega_runtime::MAX_IMAGE_BYTES`] (256 MiB) | the largest image the store keeps and members fetch |

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest manifest the CLI reads, in bytes (1 MiB): the same bound
/// ZGraph puts on a manifest's text before it parses it.
pub const MAX_MANIFEST_BYTES: u64 = omega_zgraph::bounds::MAX_MANIFEST_BYTES as u64;

/// A read limit: at most `bytes`, for `what` (said in the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Most bytes accepted.
    pub bytes: u64,
    /// What is being read, for the error ("a manifest").
    pub what: &'static str,
}

/// [`MAX_MANIFEST_BYTES`].
pub const MANIFEST: Limit = Limit {
    bytes: MAX_MANIFEST_BYTES,
    what: "a manifest",
};
/// A token given as a file or on standard input (base64 text or DAG-CBOR).
pub const TOKEN: Limit = Limit {
    bytes: 2 * omega_identity::ucan::MAX_TOKEN_LEN as u64,
    what: "a token",
};
/// A key file.
pub const KEY_FILE: Limit = Limit {
    bytes: omega_identity::keyfile::MAX_LEN as u64,
    what: "a key file",
};
/// The stored join token.
pub const JOIN_TOKEN: Limit = Limit {
    bytes: omega_gossip::join::MAX_TOKEN_LEN as u64,
    what: "a join token",
};
/// An event payload: no more than one local API request can carry (the
/// node's own, smaller, `max_payload` is the node's to enforce).
pub const PAYLOAD: Limit = Limit {
    bytes: omega_p2p::http::MAX_BODY as u64,
    what: "an event payload",
};
/// A WASI component.
pub const COMPONENT: Limit = Limit {
    bytes: omega_runtime::MAX_IMAGE_BYTES,
    what: "a component image",
};

/// Why a bounded read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// More than the limit.
    #[error("{}: more than {} bytes, the limit for {}", shown(path), limit.bytes, limit.what)]
    TooLarge {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// The limit it broke.
        limit: Limit,
    },
    /// The operating system failed the read (or the text is not UTF-8).
    #[error("{}: {source}", shown(path))]
    Io {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A path as the errors name it: `-` is standard input.
fn shown(path: &Path) -> String {
    if path == Path::new("-") {
        "standard input".into()
    } else {
        path.display().to_string()
    }
}

impl ReadError {
    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads `path` (`-`: standard input) whole, if it holds at most
/// `limit.bytes`; never reads more than one byte past the limit.
pub fn read(path: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path == Path::new("-") {
        return read_from(std::io::stdin().lock(), path, limit);
    }
    let file = std::fs::File::open(path).map_err(io)?;
    // A regular file says its size: refuse without reading.
    let meta = file.metadata().map_err(io)?;
    if meta.is_file() && meta.len() > limit.bytes {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    read_from(file, path, limit)
}

/// At most `limit.bytes + 1` bytes of `path` (`-`: standard input), whatever
/// its size: for a reader with a size error of its own (a manifest's
/// `zgraph::too_large`), which refuses the excess.
pub fn read_up_to(path: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    let cap = limit.bytes.saturating_add(1);
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(cap)
            .read_to_end(&mut out)
            .map_err(io)?;
    } else {
        let file = std::fs::File::open(path).map_err(io)?;
        file.take(cap).read_to_end(&mut out).map_err(io)?;
    }
    Ok(out)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path, limit: Limit) -> Result<String, ReadError> {
    String::from_utf8(read(path, limit)?).map_err(|_| ReadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

fn read_from(source: impl Read, path: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    source
        .take(limit.bytes.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() as u64 > limit.bytes {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SMALL: Limit = Limit {
        bytes: 10,
        what: "a test input",
    };

    #[test]
    fn at_most_the_limit_is_read_and_more_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, b"0123456789").unwrap();
        assert_eq!(read(&ok, SMALL).unwrap(), b"0123456789");
        let big = dir.path().join("big");
        std::fs::write(&big, b"0123456789a").unwrap();
        let e = read(&big, SMALL).unwrap_err().to_string();
        assert!(e.contains("big") && e.contains("more than 10 bytes, the limit for a test input"));
    }

    #[test]
    fn an_endless_device_behind_a_symlink_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("node.key");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            read(&link, KEY_FILE),
            Err(ReadError::TooLarge { limit, .. }) if limit == KEY_FILE
        ));
        assert!(matches!(
            read(Path::new("/dev/zero"), MANIFEST),
            Err(ReadError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_missing_file_is_not_found_and_bad_utf8_is_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read(&dir.path().join("nope"), SMALL)
                .unwrap_err()
                .is_not_found()
        );
        let bin = dir.path().join("bin");
        std::fs::write(&bin, [0xff, 0xfe]).unwrap();
        let e = read_to_string(&bin, SMALL).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }
}

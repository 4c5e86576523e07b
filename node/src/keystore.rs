//! The user's key on disk: where it lives, how it is created and loaded.
//!
//! The key file format and its permission rule belong to
//! [`omega_identity::keyfile`]; this module only does the file I/O around it:
//! it creates the file with mode `0600` (atomically: write a temporary file
//! in the same directory, then rename) and passes the file's mode to the
//! decoder, which refuses a key that others could read.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use omega_identity::{Keypair, keyfile};

/// What can go wrong reading or writing a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// No key file at the path.
    #[error("no key at {path}; create one with `omega id new`")]
    Missing {
        /// Where the key was looked for.
        path: PathBuf,
    },
    /// A key already exists and `force` was not given.
    #[error("a key already exists at {path}; pass --force to replace it (its identity is lost)")]
    Exists {
        /// The existing key file.
        path: PathBuf,
    },
    /// The file exists but is not a valid key file, or its mode is too open.
    #[error("key file {path}: {source}")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What the decoder found wrong.
        #[source]
        source: keyfile::KeyFileError,
    },
    /// The file is larger than any key file ([`crate::bounded::KEY_FILE`]).
    #[error(transparent)]
    Read(crate::bounded::ReadError),
    /// An operating-system error.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing ("reading", "creating", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The key path used when neither `--key` nor `OMEGA_KEY` is given:
/// `$OMEGA_HOME/identity.key`, with `OMEGA_HOME` defaulting to `~/.omega`.
pub fn default_key_path() -> PathBuf {
    let home = std::env::var_os("OMEGA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".omega")))
        .unwrap_or_else(|| PathBuf::from(".omega"));
    home.join("identity.key")
}

/// A fresh key from the operating system's random source.
pub fn generate() -> Result<Keypair, getrandom::Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    Ok(Keypair::from_seed(seed))
}

/// Load the key at `path`, refusing one whose mode lets group or others read it.
pub fn load(path: &Path) -> Result<Keypair, KeyStoreError> {
    let io = |action, source| KeyStoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyStoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io("reading", e)),
    };
    let text =
        crate::bounded::read_to_string(path, crate::bounded::KEY_FILE).map_err(|e| match e {
            crate::bounded::ReadError::Io { source, .. } => io("reading", source),
            e => KeyStoreError::Read(e),
        })?;
    keyfile::decode(&text, Some(meta.permissions().mode())).map_err(|source| {
        KeyStoreError::Invalid {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Write `key` to `path` with mode `0600`, creating the directory (`0700`).
pub fn save(path: &Path, key: &Keypair, force: bool) -> Result<(), KeyStoreError> {
    let io = |action, p: &Path, source| KeyStoreError::Io {
        action,
        path: p.to_path_buf(),
        source,
    };
    if path.exists() && !force {
        return Err(KeyStoreError::Exists {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io("setting the mode of", &dir, e))?;
    }
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "key".into())
    ));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("creating", &tmp, e))?;
    file.write_all(keyfile::encode(key).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io("renaming into", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity.key");
        let key = Keypair::from_seed([7; 32]);
        save(&path, &key, false).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(&path).unwrap().did(), key.did());
        assert!(matches!(
            save(&path, &key, false),
            Err(KeyStoreError::Exists { .. })
        ));
    }

    #[test]
    fn world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        save(&path, &Keypair::from_seed([1; 32]), false).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, KeyStoreError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn missing_key_says_how_to_create_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("omega id new"), "{err}");
    }
}

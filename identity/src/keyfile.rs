//! The node key file format, as pure functions (the node crate does the file I/O).
//!
//! A key file is two lines of ASCII:
//!
//! ```text
//! omega-ed25519-key v1
//! <the 32-byte seed in standard base64 with padding>
//! ```
//!
//! followed by an optional newline. [`decode`] also takes the file's Unix mode,
//! when known, and refuses keys that group or others may access
//! (`mode & 0o077 != 0`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::keys::Keypair;

/// The first line of every key file.
pub const HEADER: &str = "omega-ed25519-key v1";

/// Longest key file [`decode`] reads; a valid one is 66 bytes.
pub const MAX_LEN: usize = 1024;

/// Why a key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Group or others may read or write the file.
    #[error(
        "key file mode is {mode:04o}: group or others can access it; \
         fix it with `chmod 600 FILE`"
    )]
    InsecurePermissions {
        /// The file's permission bits.
        mode: u32,
    },
    /// The first line is not [`HEADER`].
    #[error("not an Omega key file: the first line must be `{HEADER}`")]
    BadHeader,
    /// The second line is missing or not base64.
    #[error("key file line 2: the seed is not valid base64")]
    BadBase64,
    /// The seed does not have 32 bytes.
    #[error("key file line 2: the seed has {0} bytes, expected 32")]
    BadSeedLength(usize),
    /// Extra lines or bytes after the seed.
    #[error("key file has unexpected content after line 2")]
    TrailingContent,
    /// The file is larger than [`MAX_LEN`].
    #[error("key file is larger than {MAX_LEN} bytes")]
    TooLarge,
}

/// Encodes `key` as a key file (ending with a newline).
pub fn encode(key: &Keypair) -> String {
    format!("{HEADER}\n{}\n", STANDARD.encode(key.seed_bytes()))
}

/// Decodes a key file. `unix_mode` is the file's `st_mode` (or just its
/// permission bits) where the platform has one; any group/other bit is refused.
pub fn decode(text: &str, unix_mode: Option<u32>) -> Result<Keypair, KeyFileError> {
    if let Some(mode) = unix_mode
        && mode & 0o077 != 0
    {
        return Err(KeyFileError::InsecurePermissions {
            mode: mode & 0o7777,
        });
    }
    if text.len() > MAX_LEN {
        return Err(KeyFileError::TooLarge);
    }
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some(HEADER) {
        return Err(KeyFileError::BadHeader);
    }
    let line = lines.next().ok_or(KeyFileError::BadBase64)?.trim();
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(KeyFileError::TrailingContent);
    }
    let seed = STANDARD.decode(line).map_err(|_| KeyFileError::BadBase64)?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| KeyFileError::BadSeedLength(seed.len()))?;
    Ok(Keypair::from_seed(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let kp = Keypair::from_seed([5; 32]);
        let text = encode(&kp);
        assert!(text.starts_with("omega-ed25519-key v1\n"));
        let back = decode(&text, Some(0o100600)).unwrap();
        assert_eq!(back.public(), kp.public());
        assert_eq!(decode(text.trim_end(), None).unwrap().public(), kp.public());
    }

    #[test]
    fn refuses_open_modes_with_a_fix() {
        let text = encode(&Keypair::from_seed([5; 32]));
        for mode in [0o644, 0o100640, 0o604, 0o610] {
            let err = decode(&text, Some(mode)).unwrap_err();
            assert!(matches!(err, KeyFileError::InsecurePermissions { .. }));
            let msg = err.to_string();
            assert!(msg.contains("chmod 600"), "{msg}");
            assert!(msg.contains(&format!("{:04o}", mode & 0o7777)), "{msg}");
        }
        assert!(decode(&text, Some(0o400)).is_ok());
    }

    #[test]
    fn malformed_files() {
        assert_eq!(
            decode("hello\n", None).unwrap_err(),
            KeyFileError::BadHeader
        );
        assert_eq!(decode(HEADER, None).unwrap_err(), KeyFileError::BadBase64);
        let short = format!("{HEADER}\nAAAA\n");
        assert_eq!(
            decode(&short, None).unwrap_err(),
            KeyFileError::BadSeedLength(3)
        );
        let extra = format!("{}more\n", encode(&Keypair::from_seed([1; 32])));
        assert_eq!(
            decode(&extra, None).unwrap_err(),
            KeyFileError::TrailingContent
        );
        assert_eq!(
            decode(&"x".repeat(2000), None).unwrap_err(),
            KeyFileError::TooLarge
        );
    }
}

//! The content-addressed image store of a node's data directory.
//!
//! ```text
//! <dir>/blobs/<bafkr4i…>.wasm        component bytes, named by BLAKE3
//! <dir>/tags/<name>/<tag>.json       signed name:tag → hash record
//! ```
//!
//! Blobs are written atomically and verified against their name on every
//! read. A tag record is signed by the key that pushed it; reading it checks
//! the signature. Records are local for now; the mesh replicates them later.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use omega_identity::{ContentId, Did, Keypair, Signature};
use serde::{Deserialize, Serialize};

use crate::cache::write_atomic;
use crate::error::ImageError;
use crate::runtime::Runtime;

/// Longest name or tag.
const MAX_REF_PART: usize = 64;
/// Largest component the store accepts.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// A `name:tag` image reference, e.g. `ingest:1.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// The name.
    pub name: String,
    /// The tag.
    pub tag: String,
}

impl FromStr for ImageRef {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, ImageError> {
        let bad = || ImageError::BadReference(s.to_string());
        let (name, tag) = s.split_once(':').ok_or_else(bad)?;
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= MAX_REF_PART
                && !p.starts_with('.')
                && p.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        };
        if !ok(name) || !ok(tag) {
            return Err(bad());
        }
        Ok(Self {
            name: name.into(),
            tag: tag.into(),
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// A signed `name:tag → image` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    /// `name:tag`.
    pub reference: String,
    /// The image hash (CID).
    pub image: String,
    /// The `did:key` of the signer.
    pub signer: String,
    /// Ed25519 signature over [`TagRecord::signing_bytes`], hex.
    pub signature: String,
}

impl TagRecord {
    /// The bytes a tag record's signature covers.
    pub fn signing_bytes(reference: &str, image: &str) -> Vec<u8> {
        format!("omega-image-tag/v1\n{reference}\n{image}").into_bytes()
    }

    fn verify(&self) -> Result<ContentId, String> {
        let did = Did::from_str(&self.signer).map_err(|e| format!("signer: {e}"))?;
        let sig = from_hex(&self.signature)
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or("signature is not 64 hex bytes")?;
        did.public_key()
            .verify(
                &Self::signing_bytes(&self.reference, &self.image),
                &Signature::from_bytes(sig),
            )
            .map_err(|_| "signature does not verify".to_string())?;
        ContentId::from_str(&self.image).map_err(|e| format!("image: {e}"))
    }
}

/// One stored image, as listed by [`ImageStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    /// Its hash.
    pub hash: ContentId,
    /// Its size in bytes.
    pub size: u64,
    /// The `name:tag`s pointing at it.
    pub tags: Vec<String>,
}

/// The image store rooted at one directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ImageStore {
    /// Open (creating if needed) the store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let dir = dir.into();
        for sub in ["blobs", "tags"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        Ok(Self { dir })
    }

    fn blob_path(&self, hash: &ContentId) -> PathBuf {
        self.dir.join("blobs").join(format!("{hash}.wasm"))
    }

    fn tag_path(&self, r: &ImageRef) -> PathBuf {
        self.dir
            .join("tags")
            .join(&r.name)
            .join(format!("{}.json", r.tag))
    }

    /// Store a component after checking that `runtime` can compile it
    /// (which also fills the precompiled cache). Idempotent.
    pub fn put(&self, runtime: &Runtime, bytes: &[u8]) -> Result<ContentId, ImageError> {
        if bytes.len() as u64 > MAX_IMAGE_BYTES {
            return Err(ImageError::Invalid(crate::RuntimeError::NotComponent(
                format!(
                    "{} bytes is larger than the maximum of {MAX_IMAGE_BYTES}",
                    bytes.len()
                ),
            )));
        }
        let image = runtime.load(bytes)?;
        let hash = *image.hash();
        let path = self.blob_path(&hash);
        if self.get(&hash).is_err() {
            write_atomic(&path, bytes).map_err(io(&path))?;
        }
        Ok(hash)
    }

    /// Read an image, verifying that its content matches its hash.
    pub fn get(&self, hash: &ContentId) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(hash);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound(hash.to_string()));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let actual = ContentId::of(&bytes);
        if actual != *hash {
            return Err(ImageError::Corrupt {
                expected: hash.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Point `name:tag` at a stored image, signed by `key`.
    pub fn tag(
        &self,
        r: &ImageRef,
        hash: &ContentId,
        key: &Keypair,
    ) -> Result<TagRecord, ImageError> {
        self.get(hash)?;
        let (reference, image) = (r.to_string(), hash.to_string());
        let sig = key.sign(&TagRecord::signing_bytes(&reference, &image));
        let record = TagRecord {
            reference,
            image,
            signer: key.did().to_string(),
            signature: to_hex(sig.as_bytes()),
        };
        let path = self.tag_path(r);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        write_atomic(&path, &json).map_err(io(&path))?;
        Ok(record)
    }

    /// The verified record of `name:tag`.
    pub fn record(&self, r: &ImageRef) -> Result<TagRecord, ImageError> {
        let path = self.tag_path(r);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound(r.to_string()));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let bad = |reason: String| ImageError::BadRecord {
            name: r.to_string(),
            reason,
        };
        let record: TagRecord = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if record.reference != r.to_string() {
            return Err(bad(format!("record names {}", record.reference)));
        }
        record.verify().map_err(bad)?;
        Ok(record)
    }

    /// The image hash `name:tag` points at (signature checked).
    pub fn resolve(&self, r: &ImageRef) -> Result<ContentId, ImageError> {
        let record = self.record(r)?;
        ContentId::from_str(&record.image).map_err(|e| ImageError::BadRecord {
            name: r.to_string(),
            reason: e.to_string(),
        })
    }

    /// Every stored image with the tags that point at it, sorted by hash.
    /// Tags whose record does not verify are left out.
    pub fn list(&self) -> Result<Vec<StoredImage>, ImageError> {
        let blobs = self.dir.join("blobs");
        let mut images = Vec::new();
        for entry in std::fs::read_dir(&blobs).map_err(io(&blobs))? {
            let entry = entry.map_err(io(&blobs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hash) = name
                .strip_suffix(".wasm")
                .and_then(|h| ContentId::from_str(h).ok())
            else {
                continue;
            };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            images.push(StoredImage {
                hash,
                size,
                tags: Vec::new(),
            });
        }
        for r in self.tags()? {
            if let Ok(hash) = self.resolve(&r)
                && let Some(img) = images.iter_mut().find(|i| i.hash == hash)
            {
                img.tags.push(r.to_string());
            }
        }
        images.sort_by_key(|i| i.hash.to_string());
        Ok(images)
    }

    fn tags(&self) -> Result<Vec<ImageRef>, ImageError> {
        let root = self.dir.join("tags");
        let mut refs = Vec::new();
        for name in std::fs::read_dir(&root).map_err(io(&root))?.flatten() {
            let Ok(tags) = std::fs::read_dir(name.path()) else {
                continue;
            };
            for tag in tags.flatten() {
                let file = tag.file_name().to_string_lossy().into_owned();
                let Some(tag) = file.strip_suffix(".json") else {
                    continue;
                };
                let text = format!("{}:{tag}", name.file_name().to_string_lossy());
                if let Ok(r) = text.parse() {
                    refs.push(r);
                }
            }
        }
        refs.sort();
        Ok(refs)
    }
}

/// Lowercase hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of lowercase or uppercase hex; `None` if malformed.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

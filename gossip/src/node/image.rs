//! The image protocol's messages (`/omega/image/1`): one chunk of an image
//! by content id per request.

use omega_identity::ContentId;

use super::status::WireError;

/// `/omega/image/1` request: a chunk of `content` from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    /// The image.
    pub content: ContentId,
    /// Byte offset.
    pub offset: u64,
}

impl ImageRequest {
    /// `offset` (8 bytes, big-endian) ‖ content id text.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.offset.to_be_bytes().to_vec();
        b.extend_from_slice(self.content.to_string().as_bytes());
        b
    }

    /// Decodes a request.
    pub fn from_bytes(b: &[u8]) -> Result<Self, WireError> {
        let bad = |why: &str| WireError::Malformed {
            what: "image request",
            why: why.into(),
        };
        if b.len() > 8 + 128 {
            return Err(WireError::TooLarge {
                what: "image request",
                len: b.len(),
                max: 8 + 128,
            });
        }
        let (off, cid) = b.split_at_checked(8).ok_or_else(|| bad("truncated"))?;
        let offset = u64::from_be_bytes(off.try_into().map_err(|_| bad("truncated"))?);
        let content = std::str::from_utf8(cid)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("not a content id"))?;
        Ok(Self { content, offset })
    }
}

/// `/omega/image/1` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageResponse {
    /// A chunk and the image's total size.
    Chunk {
        /// Total size of the image.
        total: u64,
        /// The bytes from the requested offset.
        bytes: Vec<u8>,
    },
    /// This node does not hold the image.
    NotFound,
    /// The request was refused (not admitted, bad request, rate).
    Refused(String),
}

impl ImageResponse {
    /// `0 ‖ total (8 bytes BE) ‖ bytes`, `1`, or `2 ‖ reason`.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Chunk { total, bytes } => {
                let mut b = vec![0];
                b.extend_from_slice(&total.to_be_bytes());
                b.extend_from_slice(bytes);
                b
            }
            Self::NotFound => vec![1],
            Self::Refused(why) => {
                let mut b = vec![2];
                b.extend(why.bytes().take(256));
                b
            }
        }
    }

    /// Decodes a response.
    pub fn from_bytes(b: &[u8]) -> Result<Self, WireError> {
        let bad = || WireError::Malformed {
            what: "image response",
            why: "unknown tag or truncated".into(),
        };
        match b.split_first() {
            Some((0, rest)) if rest.len() >= 8 => {
                let (t, bytes) = rest.split_at(8);
                let total = u64::from_be_bytes(t.try_into().map_err(|_| bad())?);
                Ok(Self::Chunk {
                    total,
                    bytes: bytes.to_vec(),
                })
            }
            Some((1, [])) => Ok(Self::NotFound),
            Some((2, why)) => Ok(Self::Refused(String::from_utf8_lossy(why).into_owned())),
            _ => Err(bad()),
        }
    }
}

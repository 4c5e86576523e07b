//! Member records: what a member says about itself, signed with its own key.
//!
//! A [`MemberRecord`] carries the member's id, the mesh it belongs to, its
//! incarnation (which only the member itself raises: to refute a suspicion, to
//! change its profile, or to leave) and its [`Profile`]. A [`SignedRecord`] is a
//! record plus the member's Ed25519 signature over its canonical encoding, so a
//! record can be relayed by anyone but forged by no one.

use omega_identity::{Keypair, PublicKey, Signature};

use crate::config::Limits;
use crate::id::{MeshId, NodeId};
use crate::wire::{DecodeError, Reader, Writer};

/// Domain separation for record signatures.
const SIGNING_CONTEXT: &[u8] = b"omega-gossip/member-record/v1\0";

/// Where a member runs (the placement axis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Substrate {
    /// Operator-run datacenter or edge nodes.
    Gaia,
    /// Long-lived provider peers.
    Biome,
    /// The tenant's own hardware.
    Habitat,
}

impl Substrate {
    /// Every substrate.
    pub const ALL: [Substrate; 3] = [Self::Gaia, Self::Biome, Self::Habitat];

    /// The name used in tokens, flags, manifests and JSON: `gaia`, `biome`, `habitat`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gaia => "gaia",
            Self::Biome => "biome",
            Self::Habitat => "habitat",
        }
    }

    /// Parses `gaia`, `biome` or `habitat`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn code(self) -> u8 {
        match self {
            Self::Gaia => 0,
            Self::Biome => 1,
            Self::Habitat => 2,
        }
    }

    fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            0 => Ok(Self::Gaia),
            1 => Ok(Self::Biome),
            2 => Ok(Self::Habitat),
            v => Err(DecodeError::UnknownValue {
                what: "substrate",
                value: v.into(),
            }),
        }
    }
}

impl std::fmt::Display for Substrate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<omega_zgraph::Substrate> for Substrate {
    fn from(s: omega_zgraph::Substrate) -> Self {
        match s {
            omega_zgraph::Substrate::Gaia => Self::Gaia,
            omega_zgraph::Substrate::Biome => Self::Biome,
            omega_zgraph::Substrate::Habitat => Self::Habitat,
        }
    }
}

/// Which capability profiles a member can run, as bits. Unknown bits are kept
/// (and signed) so newer members can advertise profiles older ones ignore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(pub u8);

impl Capabilities {
    /// WASI 0.2 components on Wasmtime.
    pub const STANDARD: Self = Self(1);
    /// MicroVMs (Firecracker or QEMU `microvm`).
    pub const FRONTIER: Self = Self(2);

    /// Whether every bit of `other` is set here.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both sets.
    #[must_use]
    pub fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Resources a member offers to the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// The part of a record the member chooses: name, axes, resources, addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Profile {
    /// A human-readable node name (at most [`Limits::max_name_len`] bytes).
    pub name: String,
    /// The placement substrate.
    pub substrate: Substrate,
    /// The capability profiles it runs.
    pub capabilities: Capabilities,
    /// What it offers.
    pub resources: Resources,
    /// Multiaddrs it listens on (at most [`Limits::max_addresses`], each at most
    /// [`Limits::max_address_len`] bytes).
    pub addresses: Vec<String>,
}

impl Profile {
    /// Checks the profile against `limits` and the axis rules.
    pub fn validate(&self, limits: &Limits) -> Result<(), RecordError> {
        if self.name.len() > limits.max_name_len || self.name.chars().any(char::is_control) {
            return Err(RecordError::BadName);
        }
        if self.addresses.len() > limits.max_addresses {
            return Err(RecordError::TooManyAddresses);
        }
        if self
            .addresses
            .iter()
            .any(|a| a.len() > limits.max_address_len || a.chars().any(char::is_control))
        {
            return Err(RecordError::BadAddress);
        }
        if self.substrate == Substrate::Habitat
            && self.capabilities.contains(Capabilities::FRONTIER)
        {
            return Err(RecordError::FrontierOnHabitat);
        }
        Ok(())
    }
}

/// Why a record (ours or a peer's) is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The name is too long or has control characters.
    #[error("node name is too long or contains control characters")]
    BadName,
    /// More addresses than allowed.
    #[error("too many addresses")]
    TooManyAddresses,
    /// An address is too long or has control characters.
    #[error("an address is too long or contains control characters")]
    BadAddress,
    /// `frontier` on `habitat` is never allowed.
    #[error("a habitat node may not advertise the frontier profile")]
    FrontierOnHabitat,
}

/// What a member says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberRecord {
    /// The member (its `did:key`'s public key).
    pub id: NodeId,
    /// The mesh it belongs to.
    pub mesh: MeshId,
    /// Raised by the member only; a higher incarnation supersedes a lower one.
    pub incarnation: u64,
    /// Set when the member left gracefully (it will not be probed or suspected).
    pub leaving: bool,
    /// Name, axes, resources and addresses.
    pub profile: Profile,
}

impl MemberRecord {
    /// The canonical bytes that are signed (domain-separated).
    fn signing_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(SIGNING_CONTEXT);
        self.encode(&mut w);
        w.buf
    }

    fn encode(&self, w: &mut Writer) {
        w.id(&self.id);
        w.bytes(&self.mesh.0);
        w.varint(self.incarnation);
        w.u8(u8::from(self.leaving));
        w.str(&self.profile.name);
        w.u8(self.profile.substrate.code());
        w.u8(self.profile.capabilities.0);
        w.varint(self.profile.resources.cpu_millis);
        w.varint(self.profile.resources.memory_bytes);
        // Limits::max_addresses is capped at 255 by Limits::validate.
        w.u8(self.profile.addresses.len() as u8);
        for a in &self.profile.addresses {
            w.str(a);
        }
    }

    fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let id = r.id("record id")?;
        let mesh = MeshId(r.array("record mesh")?);
        let incarnation = r.varint("incarnation")?;
        let leaving = match r.u8("record flags")? {
            0 => false,
            1 => true,
            v => {
                return Err(DecodeError::UnknownValue {
                    what: "record flags",
                    value: v.into(),
                });
            }
        };
        let name = r.str("name", limits.max_name_len)?;
        let substrate = Substrate::from_code(r.u8("substrate")?)?;
        let capabilities = Capabilities(r.u8("capabilities")?);
        let cpu_millis = r.varint("cpu_millis")?;
        let memory_bytes = r.varint("memory_bytes")?;
        let count = r.u8("address count")? as usize;
        if count > limits.max_addresses {
            return Err(DecodeError::TooMany {
                what: "addresses",
                count: count as u64,
                max: limits.max_addresses,
            });
        }
        let mut addresses = Vec::with_capacity(count.min(r.remaining()));
        for _ in 0..count {
            addresses.push(r.str("address", limits.max_address_len)?);
        }
        Ok(Self {
            id,
            mesh,
            incarnation,
            leaving,
            profile: Profile {
                name,
                substrate,
                capabilities,
                resources: Resources {
                    cpu_millis,
                    memory_bytes,
                },
                addresses,
            },
        })
    }

    /// Signs the record with the member's key. The key must be the record's id
    /// (checked: a record signed by another key is refused by every receiver).
    pub fn sign(self, key: &Keypair) -> Result<SignedRecord, SignError> {
        if NodeId::from(key.public()) != self.id {
            return Err(SignError::WrongKey);
        }
        Ok(self.sign_own(key))
    }

    /// Signs with `key`, which the caller guarantees is `self.id`'s key.
    pub(crate) fn sign_own(self, key: &Keypair) -> SignedRecord {
        let signature = key.sign(&self.signing_bytes());
        SignedRecord {
            record: self,
            signature,
        }
    }
}

/// Signing a record with a key that is not the record's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The key does not match `record.id`.
    #[error("the signing key is not the record's member key")]
    WrongKey,
}

/// A member record with the member's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    /// The record.
    pub record: MemberRecord,
    /// Ed25519 signature by `record.id` over the record's canonical encoding.
    pub signature: Signature,
}

impl SignedRecord {
    /// Checks the signature with `verifier`.
    pub fn verify(&self, verifier: &dyn Verifier) -> bool {
        verifier.verify(
            &self.record.id,
            &self.record.signing_bytes(),
            &self.signature,
        )
    }

    /// Encodes the record and signature (the `record` production of the wire format).
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.record.encode(w);
        w.bytes(self.signature.as_bytes());
    }

    /// The encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        let mut w = Writer::default();
        self.encode(&mut w);
        w.buf.len()
    }

    pub(crate) fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let record = MemberRecord::decode(r, limits)?;
        let signature = Signature::from_bytes(r.array("signature")?);
        Ok(Self { record, signature })
    }

    /// Heap bytes owned by this record (for memory accounting).
    pub(crate) fn heap_bytes(&self) -> usize {
        let p = &self.record.profile;
        p.name.capacity()
            + p.addresses.capacity() * std::mem::size_of::<String>()
            + p.addresses.iter().map(String::capacity).sum::<usize>()
    }
}

/// Smallest possible encoded record, used to bound list counts before decoding.
pub(crate) const MIN_RECORD_LEN: usize = 32 + 16 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 64;

/// Checks record signatures. The default is [`Ed25519Verifier`]; a simulator
/// running thousands of members in one process may share a cache of verified
/// signatures across them (see [`testkit`](crate::testkit)).
pub trait Verifier {
    /// Whether `signature` is `signer`'s valid signature over `message`.
    fn verify(&self, signer: &NodeId, message: &[u8], signature: &Signature) -> bool;
}

/// Verifies with `omega_identity` (strict Ed25519).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ed25519Verifier;

impl Verifier for Ed25519Verifier {
    fn verify(&self, signer: &NodeId, message: &[u8], signature: &Signature) -> bool {
        match PublicKey::from_bytes(signer.as_bytes()) {
            Ok(key) => key.verify(message, signature).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &Keypair) -> MemberRecord {
        MemberRecord {
            id: key.public().into(),
            mesh: MeshId([7; 16]),
            incarnation: 3,
            leaving: false,
            profile: Profile {
                name: "nas-01".into(),
                substrate: Substrate::Habitat,
                capabilities: Capabilities::STANDARD,
                resources: Resources {
                    cpu_millis: 4000,
                    memory_bytes: 8 << 30,
                },
                addresses: vec!["/ip4/127.0.0.1/udp/4001/quic-v1".into()],
            },
        }
    }

    #[test]
    fn sign_encode_decode_verify() {
        let key = Keypair::from_seed([1; 32]);
        let signed = record(&key).sign(&key).unwrap();
        assert!(signed.verify(&Ed25519Verifier));
        let mut w = Writer::default();
        signed.encode(&mut w);
        assert_eq!(w.buf.len(), signed.encoded_len());
        let mut r = Reader::new(&w.buf);
        let back = SignedRecord::decode(&mut r, &Limits::default()).unwrap();
        r.finish().unwrap();
        assert_eq!(back, signed);
        assert!(back.verify(&Ed25519Verifier));
    }

    #[test]
    fn tampering_and_wrong_keys_fail() {
        let key = Keypair::from_seed([1; 32]);
        let other = Keypair::from_seed([2; 32]);
        assert_eq!(record(&key).sign(&other), Err(SignError::WrongKey));
        let mut signed = record(&key).sign(&key).unwrap();
        signed.record.incarnation += 1;
        assert!(!signed.verify(&Ed25519Verifier));
    }

    #[test]
    fn profile_rules() {
        let limits = Limits::default();
        let key = Keypair::from_seed([1; 32]);
        let mut p = record(&key).profile;
        assert_eq!(p.validate(&limits), Ok(()));
        p.capabilities = p.capabilities.with(Capabilities::FRONTIER);
        assert_eq!(p.validate(&limits), Err(RecordError::FrontierOnHabitat));
        p.capabilities = Capabilities::STANDARD;
        p.name = "x".repeat(limits.max_name_len + 1);
        assert_eq!(p.validate(&limits), Err(RecordError::BadName));
    }
}

//! Omega identities and authority.
//!
//! This crate owns everything about *who* may do *what* in an Omega mesh, as pure
//! functions with no I/O (no files, sockets, clock or OS randomness: time and
//! seeds are arguments):
//!
//! - [`keys`]: Ed25519 key pairs ([`Keypair`], [`PublicKey`]), and [`keyfile`],
//!   the node key file format;
//! - [`did`]: `did:key` identifiers ([`Did`]);
//! - [`content`]: BLAKE3 content identifiers ([`ContentId`]);
//! - [`ucan`]: capability tokens (ACTs), UCAN 1.0 delegations and invocations in
//!   signed DAG-CBOR envelopes;
//! - [`policy`]: the UCAN policy language that restricts invocation arguments;
//! - [`chain`]: validation of an invocation against its delegation chain,
//!   revocation sets and replay protection.
//!
//! # Example
//!
//! The mesh root delegates `/mesh` to an admin, the admin delegates
//! `/mesh/join` to a new node, and the node invokes `/mesh/join`:
//!
//! ```
//! use omega_identity::{Keypair, chain::*, ucan::*};
//! use std::collections::HashMap;
//!
//! let root = Keypair::from_seed([1; 32]);
//! let admin = Keypair::from_seed([2; 32]);
//! let node = Keypair::from_seed([3; 32]);
//! let now = 1_700_000_000;
//!
//! let d1 = Delegation::new(root.did(), admin.did(), Some(root.did()), "/mesh".parse()?, vec![1])
//!     .with_exp(now + 3600);
//! let d1 = Signed::sign(d1, &root)?;
//! let d2 = Delegation::new(admin.did(), node.did(), Some(root.did()), "/mesh/join".parse()?, vec![2])
//!     .with_exp(now + 600);
//! let d2 = Signed::sign(d2, &admin)?;
//! let inv = Invocation::new(node.did(), root.did(), "/mesh/join".parse()?, vec![3])
//!     .with_proofs(vec![d1.cid(), d2.cid()])
//!     .with_exp(now + 60);
//! let inv = Signed::sign(inv, &node)?;
//!
//! let proofs: HashMap<_, _> = [(d1.cid(), d1), (d2.cid(), d2)].into_iter().collect();
//! let validator = Validator::new(ValidatorConfig::default());
//! let mut seen = ReplayGuard::new(1024);
//! let ok = validator.validate(&inv, &proofs, now, &RevocationSet::new(), &mut seen)?;
//! assert_eq!(ok.root_issuer, root.did());
//! assert_eq!(ok.cmd.as_str(), "/mesh/join");
//! // The same invocation is refused the second time.
//! assert!(validator.validate(&inv, &proofs, now, &RevocationSet::new(), &mut seen).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs, unreachable_pub)]

/// Serde for a type whose text form is its `Display` and `FromStr`:
/// serialized as that string, deserialized by parsing it.
macro_rules! serde_as_text {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod cache;
pub mod chain;
pub mod content;
mod dagcbor;
pub mod did;
pub mod keyfile;
pub mod keys;
pub mod policy;
pub mod ucan;

pub use cid::Cid;
pub use content::ContentId;
pub use did::Did;
pub use ipld_core::ipld::Ipld;
pub use keys::{Keypair, PublicKey, Signature};

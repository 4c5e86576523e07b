//! Mesh admission: join tokens and the checks behind `/omega/join/1`.
//!
//! # Design
//!
//! The mesh root cannot know a joining node's DID when it writes an invite,
//! so `omega mesh invite` mints an ephemeral *invite key* K and signs a
//! delegation root → K for the command `/mesh/join`, with an expiry and a
//! policy that binds the substrate (`==`) and, optionally, the node name
//! (`like`). The printed [`JoinToken`] bundles the mesh root's DID, that
//! delegation and K's 32-byte seed.
//!
//! When a node connects to a member it signs, with K, a fresh invocation of
//! `/mesh/join` whose arguments are `{node: its own DID, name, substrate}` and
//! whose proof is the delegation; it expires after [`INVOCATION_TTL_SECS`].
//! The member ([`Admitter::admit`]) checks the chain with
//! [`omega_identity::chain::Validator`] (signatures, expiry, revocation,
//! policy, replay), that the chain's subject is *this* mesh's root (a token for
//! another mesh is worthless here), that `args.node` is the DID of the
//! transport-authenticated peer (so a captured invocation is useless to any
//! other key), and that neither the node nor any token in the chain was
//! revoked.
//!
//! An invite is a bearer secret until it expires: whoever holds the token can
//! join (once per node key) within the substrate and name pattern it allows.
//! Each member admits at most [`Admitter::with_max_nodes_per_invite`] node
//! keys with one invite (default [`DEFAULT_MAX_NODES_PER_INVITE`]), so a
//! holder cannot mint member after member from it; further keys are refused
//! with [`JoinError::InviteExhausted`]. A key admitted before is admitted
//! again (a restart) without counting twice.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use omega_identity::chain::{
    ChainError, MeshPolicy, Refusal, ReplayGuard, Validator, ValidatorConfig,
};
use omega_identity::policy::Policy;
use omega_identity::ucan::{Command, Delegation, Invocation, Signed, TokenError};
use omega_identity::{Cid, Did, Ipld, Keypair};
use serde::{Deserialize, Serialize};

use crate::desired::Revocations;
use crate::id::NodeId;
use crate::record::Substrate;

/// The command a join invocation invokes.
pub const JOIN_COMMAND: &str = "/mesh/join";
/// How long a join invocation stays valid after it is signed.
pub const INVOCATION_TTL_SECS: u64 = 300;
/// Text prefix of a join token (versioned).
pub const TOKEN_PREFIX: &str = "omega-join1.";
/// Longest join token or join request accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a token or a join request is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The peer presented no token at all.
    #[error("no join token presented")]
    NoToken,
    /// The bytes are not a join token or request.
    #[error("malformed join token: {0}")]
    Malformed(String),
    /// The token was issued for another mesh.
    #[error("token is for mesh {token_mesh}, this mesh is {this_mesh}")]
    OtherMesh {
        /// The root the token leads to.
        token_mesh: String,
        /// This mesh's root.
        this_mesh: String,
    },
    /// The delegation chain is not valid (expired, revoked, tampered, policy…),
    /// by the spec or by the mesh policy ([`Refusal::layer`]).
    #[error("invalid token chain: {0}")]
    Chain(Box<Refusal>),
    /// The invocation names a node other than the authenticated peer.
    #[error("token presented for node {claimed} by peer {actual}")]
    WrongNode {
        /// `args.node`.
        claimed: String,
        /// The DID of the authenticated connection.
        actual: String,
    },
    /// The node was revoked.
    #[error("node {0} is revoked")]
    NodeRevoked(String),
    /// An argument is missing or malformed.
    #[error("invocation argument `{0}` is missing or malformed")]
    BadArgument(&'static str),
    /// A token could not be created.
    #[error("cannot create token: {0}")]
    Create(String),
    /// The invite already admitted as many node keys as allowed here.
    #[error(
        "invite {invite} already admitted {max} nodes here (max_nodes_per_invite); ask the mesh root for a new invite"
    )]
    InviteExhausted {
        /// The invite delegation's CID.
        invite: String,
        /// The limit.
        max: usize,
    },
}

/// The default of [`Admitter::with_max_nodes_per_invite`]: 4096.
pub const DEFAULT_MAX_NODES_PER_INVITE: usize = 4096;

impl From<ChainError> for JoinError {
    fn from(e: ChainError) -> Self {
        Self::Chain(Box::new(Refusal::Spec(e)))
    }
}

impl From<Refusal> for JoinError {
    fn from(e: Refusal) -> Self {
        Self::Chain(Box::new(e))
    }
}

impl From<TokenError> for JoinError {
    fn from(e: TokenError) -> Self {
        Self::Malformed(e.to_string())
    }
}

#[derive(Serialize, Deserialize)]
struct TokenWire {
    v: u8,
    mesh: String,
    #[serde(with = "serde_bytes")]
    delegation: Vec<u8>,
    #[serde(with = "serde_bytes")]
    invite_seed: Vec<u8>,
}

/// A join token: the mesh root, its delegation to an invite key, and that key.
#[derive(Debug, Clone)]
pub struct JoinToken {
    /// The mesh root (its DID is the mesh id).
    pub mesh: Did,
    /// root → invite key, `/mesh/join`.
    pub delegation: Signed<Delegation>,
    /// The invite key.
    pub invite_key: Keypair,
}

/// What an invite allows.
#[derive(Debug, Clone)]
pub struct InviteSpec {
    /// The only substrate a node joining with it may declare.
    pub substrate: Substrate,
    /// A glob (`*`) the node name must match, if any.
    pub name_pattern: Option<String>,
    /// Unix time the invite expires.
    pub expires_at: u64,
}

impl JoinToken {
    /// Mints an invite for the mesh whose root key is `root`. `invite_seed`
    /// and `nonce` must come from a secure random source.
    pub fn mint(
        root: &Keypair,
        spec: &InviteSpec,
        invite_seed: [u8; 32],
        nonce: Vec<u8>,
    ) -> Result<Self, JoinError> {
        let invite_key = Keypair::from_seed(invite_seed);
        let mut pol = vec![serde_json::json!([
            "==",
            ".substrate",
            spec.substrate.as_str()
        ])];
        if let Some(p) = &spec.name_pattern {
            pol.push(serde_json::json!(["like", ".name", p]));
        }
        let pol = Policy::from_json(&serde_json::Value::Array(pol))
            .map_err(|e| JoinError::Create(e.to_string()))?;
        let cmd = join_command();
        let d = Delegation::new(root.did(), invite_key.did(), Some(root.did()), cmd, nonce)
            .with_policy(pol)
            .with_exp(spec.expires_at);
        let delegation = Signed::sign(d, root).map_err(|e| JoinError::Create(e.to_string()))?;
        Ok(Self {
            mesh: root.did(),
            delegation,
            invite_key,
        })
    }

    /// The printable form.
    pub fn encode(&self) -> String {
        let wire = TokenWire {
            v: 1,
            mesh: self.mesh.to_string(),
            delegation: self.delegation.to_bytes(),
            invite_seed: self.invite_key.seed_bytes().to_vec(),
        };
        // Serializing plain bytes and strings to DAG-CBOR cannot fail.
        let bytes = serde_ipld_dagcbor::to_vec(&wire).unwrap_or_default();
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses the printable form (checks shape and signature, not validity).
    pub fn decode(text: &str) -> Result<Self, JoinError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_LEN {
            return Err(JoinError::Malformed("token too long".into()));
        }
        let body = text
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| JoinError::Malformed(format!("does not start with `{TOKEN_PREFIX}`")))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| JoinError::Malformed(e.to_string()))?;
        let wire: TokenWire = serde_ipld_dagcbor::from_slice(&bytes)
            .map_err(|e| JoinError::Malformed(e.to_string()))?;
        if wire.v != 1 {
            return Err(JoinError::Malformed(format!(
                "unsupported version {}",
                wire.v
            )));
        }
        let mesh: Did = wire
            .mesh
            .parse()
            .map_err(|_| JoinError::Malformed("bad mesh DID".into()))?;
        let delegation = Signed::<Delegation>::decode(&wire.delegation)?;
        let seed: [u8; 32] = wire
            .invite_seed
            .try_into()
            .map_err(|_| JoinError::Malformed("invite seed is not 32 bytes".into()))?;
        Ok(Self {
            mesh,
            delegation,
            invite_key: Keypair::from_seed(seed),
        })
    }

    /// Signs the invocation a node presents to a member.
    pub fn invoke(
        &self,
        node: &Did,
        name: &str,
        substrate: Substrate,
        now: u64,
        nonce: Vec<u8>,
    ) -> Result<JoinRequest, JoinError> {
        let args: BTreeMap<String, Ipld> = [
            ("node".to_owned(), Ipld::String(node.to_string())),
            ("name".to_owned(), Ipld::String(name.to_owned())),
            (
                "substrate".to_owned(),
                Ipld::String(substrate.as_str().to_owned()),
            ),
        ]
        .into_iter()
        .collect();
        let inv = Invocation::new(self.invite_key.did(), self.mesh, join_command(), nonce)
            .with_args(args)
            .with_proofs(vec![self.delegation.cid()])
            .with_exp(now + INVOCATION_TTL_SECS);
        let inv =
            Signed::sign(inv, &self.invite_key).map_err(|e| JoinError::Create(e.to_string()))?;
        Ok(JoinRequest {
            invocation: Some(inv.to_bytes()),
            delegation: Some(self.delegation.to_bytes()),
        })
    }
}

fn join_command() -> Command {
    // A constant, valid command.
    JOIN_COMMAND.parse().expect("/mesh/join is a valid command")
}

/// What a node sends on `/omega/join/1`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The signed invocation (absent: the node has no token).
    #[serde(with = "serde_bytes")]
    pub invocation: Option<Vec<u8>>,
    /// The delegation it cites.
    #[serde(with = "serde_bytes")]
    pub delegation: Option<Vec<u8>>,
}

/// A member's answer on `/omega/join/1`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinResponse {
    /// Whether the peer was admitted.
    pub ok: bool,
    /// Why not (at most [`MAX_REASON_LEN`] bytes).
    pub reason: String,
}

/// Longest refusal reason sent back.
pub const MAX_REASON_LEN: usize = 512;

impl JoinRequest {
    /// DAG-CBOR bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(self).unwrap_or_default()
    }

    /// Parses bytes from the wire.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, JoinError> {
        if bytes.len() > MAX_TOKEN_LEN {
            return Err(JoinError::Malformed("join request too long".into()));
        }
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| JoinError::Malformed(e.to_string()))
    }
}

impl JoinResponse {
    /// DAG-CBOR bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(self).unwrap_or_default()
    }

    /// Parses bytes from the wire, truncating an overlong reason.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, JoinError> {
        let mut r: Self = serde_ipld_dagcbor::from_slice(bytes)
            .map_err(|e| JoinError::Malformed(e.to_string()))?;
        truncate(&mut r.reason, MAX_REASON_LEN);
        Ok(r)
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// What an admitted peer is allowed to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The node.
    pub node: NodeId,
    /// The name it joined with.
    pub name: String,
    /// The substrate its token allowed.
    pub substrate: Substrate,
    /// The CIDs of the invite delegation chain.
    pub proofs: Vec<Cid>,
}

/// Checks join requests against this mesh's root and the mesh's
/// revocations (the desired-state document's, passed to every call: there is
/// one revocation set per node, not one per check).
#[derive(Debug)]
pub struct Admitter {
    mesh: Did,
    validator: Validator,
    policy: MeshPolicy,
    seen: ReplayGuard,
    /// Node keys admitted per invite (its delegation's CID); at most
    /// `max_replay` invites remembered (only the mesh root makes invites).
    invites: BTreeMap<Cid, BTreeSet<NodeId>>,
    max_invites: usize,
    max_nodes_per_invite: usize,
}

impl Admitter {
    /// An admitter for the mesh rooted at `mesh`, remembering at most
    /// `max_replay` recent invocations.
    pub fn new(mesh: Did, max_replay: usize) -> Self {
        Self {
            mesh,
            validator: Validator::new(ValidatorConfig::default()),
            policy: MeshPolicy::default(),
            seen: ReplayGuard::new(max_replay),
            invites: BTreeMap::new(),
            max_invites: max_replay.max(1),
            max_nodes_per_invite: DEFAULT_MAX_NODES_PER_INVITE,
        }
    }

    /// Admits at most `max` distinct node keys per invite.
    pub fn with_max_nodes_per_invite(mut self, max: usize) -> Self {
        self.max_nodes_per_invite = max;
        self
    }

    /// This mesh's root.
    pub fn mesh(&self) -> &Did {
        &self.mesh
    }

    /// Validates `req` from the authenticated peer `peer` at unix time `now`
    /// (seconds): refused when the peer or any token of the chain is in `revoked`.
    pub fn admit(
        &mut self,
        peer: &NodeId,
        req: &JoinRequest,
        now: u64,
        revoked: &Revocations,
    ) -> Result<Admitted, JoinError> {
        let actual = peer.did().map_err(|_| JoinError::BadArgument("peer key"))?;
        if revoked.nodes.contains(&actual) {
            return Err(JoinError::NodeRevoked(actual.to_string()));
        }
        let (Some(inv), Some(del)) = (&req.invocation, &req.delegation) else {
            return Err(JoinError::NoToken);
        };
        let inv = Signed::<Invocation>::decode(inv)?;
        let del = Signed::<Delegation>::decode(del)?;
        if inv.payload().sub != self.mesh {
            return Err(JoinError::OtherMesh {
                token_mesh: inv.payload().sub.to_string(),
                this_mesh: self.mesh.to_string(),
            });
        }
        if inv.payload().cmd.as_str() != JOIN_COMMAND {
            return Err(JoinError::BadArgument("cmd"));
        }
        let proofs = [del];
        self.seen.prune(now);
        let valid = self.policy.validate(
            &self.validator,
            &inv,
            &proofs[..],
            now,
            &revoked.tokens,
            &mut self.seen,
        )?;
        if valid.subject != self.mesh || valid.root_issuer != self.mesh {
            return Err(JoinError::OtherMesh {
                token_mesh: valid.root_issuer.to_string(),
                this_mesh: self.mesh.to_string(),
            });
        }
        let args = &inv.payload().args;
        let text = |k: &'static str| match args.get(k) {
            Some(Ipld::String(s)) => Ok(s.clone()),
            _ => Err(JoinError::BadArgument(k)),
        };
        let claimed = text("node")?;
        if claimed != actual.to_string() {
            return Err(JoinError::WrongNode {
                claimed,
                actual: actual.to_string(),
            });
        }
        let substrate =
            Substrate::parse(&text("substrate")?).ok_or(JoinError::BadArgument("substrate"))?;
        let name = text("name")?;
        if let Some(invite) = valid.proofs.first() {
            self.count_invite(*invite, *peer)?;
        }
        Ok(Admitted {
            node: *peer,
            name,
            substrate,
            proofs: valid.proofs,
        })
    }
}

impl Admitter {
    /// Counts `peer` against `invite`, refusing a key past the limit.
    fn count_invite(&mut self, invite: Cid, peer: NodeId) -> Result<(), JoinError> {
        if !self.invites.contains_key(&invite) && self.invites.len() >= self.max_invites {
            self.invites.pop_first();
        }
        let nodes = self.invites.entry(invite).or_default();
        if !nodes.contains(&peer) && nodes.len() >= self.max_nodes_per_invite {
            return Err(JoinError::InviteExhausted {
                invite: invite.to_string(),
                max: self.max_nodes_per_invite,
            });
        }
        nodes.insert(peer);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn none() -> Revocations {
        Revocations::default()
    }

    const NOW: u64 = 1_800_000_000;

    fn spec() -> InviteSpec {
        InviteSpec {
            substrate: Substrate::Habitat,
            name_pattern: Some("nas-*".into()),
            expires_at: NOW + 3600,
        }
    }

    fn setup() -> (Keypair, JoinToken, Keypair) {
        let root = Keypair::from_seed([1; 32]);
        let token = JoinToken::mint(&root, &spec(), [2; 32], vec![9]).unwrap();
        (root, token, Keypair::from_seed([3; 32]))
    }

    #[test]
    fn token_round_trips_and_admits_the_named_node() {
        let (root, token, node) = setup();
        let token = JoinToken::decode(&token.encode()).unwrap();
        let req = token
            .invoke(&node.did(), "nas-01", Substrate::Habitat, NOW, vec![1])
            .unwrap();
        let req = JoinRequest::from_bytes(&req.to_bytes()).unwrap();
        let mut adm = Admitter::new(root.did(), 64);
        let ok = adm
            .admit(&NodeId::from(node.public()), &req, NOW, &none())
            .unwrap();
        assert_eq!(ok.name, "nas-01");
        assert_eq!(ok.substrate, Substrate::Habitat);
    }

    #[test]
    fn refusals_name_their_reason() {
        let (root, token, node) = setup();
        let id = NodeId::from(node.public());
        let mut adm = Admitter::new(root.did(), 64);
        // No token.
        assert_eq!(
            adm.admit(&id, &JoinRequest::default(), NOW, &none()),
            Err(JoinError::NoToken)
        );
        // Wrong substrate / name: the policy refuses.
        let req = token
            .invoke(&node.did(), "nas-01", Substrate::Gaia, NOW, vec![2])
            .unwrap();
        assert!(matches!(
            adm.admit(&id, &req, NOW, &none()),
            Err(JoinError::Chain(e)) if matches!(e.as_spec(), Some(ChainError::PolicyMismatch { .. }))
        ));
        let req = token
            .invoke(&node.did(), "pi-01", Substrate::Habitat, NOW, vec![3])
            .unwrap();
        assert!(matches!(
            adm.admit(&id, &req, NOW, &none()),
            Err(JoinError::Chain(e)) if matches!(e.as_spec(), Some(ChainError::PolicyMismatch { .. }))
        ));
        // Expired.
        let req = token
            .invoke(
                &node.did(),
                "nas-01",
                Substrate::Habitat,
                NOW + 7200,
                vec![4],
            )
            .unwrap();
        assert!(matches!(
            adm.admit(&id, &req, NOW + 7200, &none()),
            Err(JoinError::Chain(e)) if matches!(e.as_spec(), Some(ChainError::Expired { .. }))
        ));
        // Presented by another peer.
        let req = token
            .invoke(&node.did(), "nas-01", Substrate::Habitat, NOW, vec![5])
            .unwrap();
        let other = NodeId::from(Keypair::from_seed([4; 32]).public());
        assert!(matches!(
            adm.admit(&other, &req, NOW, &none()),
            Err(JoinError::WrongNode { .. })
        ));
        // Another mesh.
        let mut other_mesh = Admitter::new(Keypair::from_seed([5; 32]).did(), 64);
        assert!(matches!(
            other_mesh.admit(&id, &req, NOW, &none()),
            Err(JoinError::OtherMesh { .. })
        ));
        // Tampered delegation bytes.
        let mut bad = req.clone();
        if let Some(d) = bad.delegation.as_mut() {
            let n = d.len();
            d[n - 3] ^= 1;
        }
        assert!(adm.admit(&id, &bad, NOW, &none()).is_err());
        // Revoked token, then revoked node.
        let mut revoked = none();
        revoked.tokens.insert(token.delegation.cid());
        assert!(matches!(
            adm.admit(&id, &req, NOW, &revoked),
            Err(JoinError::Chain(e)) if matches!(e.as_spec(), Some(ChainError::Revoked { .. }))
        ));
        revoked.nodes.insert(node.did());
        assert!(matches!(
            adm.admit(&id, &req, NOW, &revoked),
            Err(JoinError::NodeRevoked(_))
        ));
    }

    #[test]
    fn one_invite_admits_a_bounded_number_of_keys() {
        let (root, token, _) = setup();
        let mut adm = Admitter::new(root.did(), 64).with_max_nodes_per_invite(2);
        let mut verdicts = Vec::new();
        for (round, seed) in [10u8, 11, 10, 12].into_iter().enumerate() {
            let key = Keypair::from_seed([seed; 32]);
            let nonce = |n: u8| vec![round as u8, n];
            let req = token
                .invoke(&key.did(), "nas-01", Substrate::Habitat, NOW, nonce(1))
                .unwrap();
            let nonce_again = token
                .invoke(&key.did(), "nas-01", Substrate::Habitat, NOW, nonce(2))
                .unwrap();
            let id = NodeId::from(key.public());
            let first = adm.admit(&id, &req, NOW, &none());
            let _ = adm.admit(&id, &nonce_again, NOW, &none());
            verdicts.push(first.map(|_| ()));
        }
        assert_eq!(
            verdicts[..3],
            [Ok(()), Ok(()), Ok(())],
            "a key again is no new key"
        );
        assert!(
            matches!(&verdicts[3], Err(JoinError::InviteExhausted { max: 2, .. })),
            "{:?}",
            verdicts[3]
        );
        assert!(
            verdicts[3]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("max_nodes_per_invite")
        );
    }

    #[test]
    fn garbage_never_panics() {
        let (root, _, node) = setup();
        let mut adm = Admitter::new(root.did(), 64);
        for junk in [&b""[..], b"\xff\xff", &[0xa2; 100]] {
            if let Ok(req) = JoinRequest::from_bytes(junk) {
                assert!(
                    adm.admit(&NodeId::from(node.public()), &req, NOW, &none())
                        .is_err()
                );
            }
        }
        assert!(JoinToken::decode("omega-join1.!!!").is_err());
        assert!(JoinToken::decode("hello").is_err());
    }
}

//! The delegation and invocation payloads and their IPLD field mapping.

use std::collections::BTreeMap;

use cid::Cid;
use ipld_core::ipld::Ipld;

use super::{Command, TokenError};
use crate::did::Did;
use crate::policy::Policy;

/// A UCAN 1.0 delegation payload (`ucan/dlg@1.0.0`): `iss` grants `aud` the
/// authority to run `cmd` (and every command below it) on `sub`, for invocation
/// arguments that satisfy `pol`.
///
/// Build one with a struct literal or [`Delegation::new`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
pub struct Delegation {
    /// The issuer, who signs.
    pub iss: Did,
    /// The audience, who receives the authority.
    pub aud: Did,
    /// The subject whose resource this is; `None` (`null`) is a "powerline"
    /// delegation that passes on authority over any subject.
    pub sub: Option<Did>,
    /// The command granted (and every command below it).
    pub cmd: Command,
    /// Predicates on the invocation's arguments.
    pub pol: Policy,
    /// Uniqueness nonce.
    pub nonce: Vec<u8>,
    /// Expiry in unix seconds; `None` (`null`) never expires.
    pub exp: Option<u64>,
    /// Not valid before, in unix seconds.
    pub nbf: Option<u64>,
    /// Free-form metadata.
    pub meta: Option<BTreeMap<String, Ipld>>,
}

impl Delegation {
    /// A delegation with an empty policy, no expiry, no `nbf` and no meta.
    pub fn new(iss: Did, aud: Did, sub: Option<Did>, cmd: Command, nonce: Vec<u8>) -> Self {
        Self {
            iss,
            aud,
            sub,
            cmd,
            pol: Policy::new(),
            nonce,
            exp: None,
            nbf: None,
            meta: None,
        }
    }

    /// Sets the policy.
    pub fn with_policy(mut self, pol: Policy) -> Self {
        self.pol = pol;
        self
    }

    /// Sets the expiry (unix seconds).
    pub fn with_exp(mut self, exp: u64) -> Self {
        self.exp = Some(exp);
        self
    }

    /// Sets "not before" (unix seconds).
    pub fn with_nbf(mut self, nbf: u64) -> Self {
        self.nbf = Some(nbf);
        self
    }
}

/// A UCAN 1.0 invocation payload (`ucan/inv@1.0.0`): `iss` asks to run `cmd`
/// on `sub` with `args`, proving authority with the delegations in `prf`.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The invoker, who signs.
    pub iss: Did,
    /// The subject whose resource is used.
    pub sub: Did,
    /// The executor, when it differs from the subject.
    pub aud: Option<Did>,
    /// The command to run.
    pub cmd: Command,
    /// The command's arguments.
    pub args: BTreeMap<String, Ipld>,
    /// Proof delegations by CID, from the root (issued by `sub`) to the one
    /// whose `aud` is the invoker.
    pub prf: Vec<Cid>,
    /// Uniqueness nonce.
    pub nonce: Vec<u8>,
    /// Expiry in unix seconds; `None` (`null`) never expires.
    pub exp: Option<u64>,
    /// Issued-at, in unix seconds.
    pub iat: Option<u64>,
    /// Free-form metadata.
    pub meta: Option<BTreeMap<String, Ipld>>,
    /// The receipt that caused this invocation.
    pub cause: Option<Cid>,
}

impl Invocation {
    /// An invocation with no arguments, proofs, expiry, `aud`, `iat`, meta or cause.
    pub fn new(iss: Did, sub: Did, cmd: Command, nonce: Vec<u8>) -> Self {
        Self {
            iss,
            sub,
            aud: None,
            cmd,
            args: BTreeMap::new(),
            prf: Vec::new(),
            nonce,
            exp: None,
            iat: None,
            meta: None,
            cause: None,
        }
    }

    /// Sets the arguments.
    pub fn with_args(mut self, args: BTreeMap<String, Ipld>) -> Self {
        self.args = args;
        self
    }

    /// Sets the proof CIDs (root first).
    pub fn with_proofs(mut self, prf: Vec<Cid>) -> Self {
        self.prf = prf;
        self
    }

    /// Sets the expiry (unix seconds).
    pub fn with_exp(mut self, exp: u64) -> Self {
        self.exp = Some(exp);
        self
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Delegation {}
    impl Sealed for super::Invocation {}
}

/// A payload that travels in a signed envelope: [`Delegation`] or [`Invocation`].
pub trait Payload: sealed::Sealed + Sized {
    /// The tag without version, `ucan/dlg` or `ucan/inv`.
    const TAG: &'static str;
    /// Who signs it.
    fn issuer(&self) -> &Did;
    /// The IPLD map form.
    fn to_map(&self) -> BTreeMap<String, Ipld>;
    /// Reads the IPLD map form, naming the offending field on error.
    fn from_map(map: BTreeMap<String, Ipld>) -> Result<Self, TokenError>;
}

fn s(v: impl ToString) -> Ipld {
    Ipld::String(v.to_string())
}

fn opt_u64(v: Option<u64>) -> Ipld {
    v.map_or(Ipld::Null, |n| Ipld::Integer(n.into()))
}

impl Payload for Delegation {
    const TAG: &'static str = "ucan/dlg";

    fn issuer(&self) -> &Did {
        &self.iss
    }

    fn to_map(&self) -> BTreeMap<String, Ipld> {
        let mut m = BTreeMap::new();
        m.insert("iss".into(), s(self.iss));
        m.insert("aud".into(), s(self.aud));
        m.insert("sub".into(), self.sub.map_or(Ipld::Null, s));
        m.insert("cmd".into(), s(&self.cmd));
        m.insert("pol".into(), self.pol.to_ipld());
        m.insert("nonce".into(), Ipld::Bytes(self.nonce.clone()));
        m.insert("exp".into(), opt_u64(self.exp));
        if let Some(nbf) = self.nbf {
            m.insert("nbf".into(), Ipld::Integer(nbf.into()));
        }
        if let Some(meta) = &self.meta {
            m.insert("meta".into(), Ipld::Map(meta.clone()));
        }
        m
    }

    fn from_map(map: BTreeMap<String, Ipld>) -> Result<Self, TokenError> {
        let mut f = Fields(map);
        let out = Self {
            iss: f.did("iss")?,
            aud: f.did("aud")?,
            sub: f.nullable("sub", Fields::as_did)?,
            cmd: f.command()?,
            pol: f.policy()?,
            nonce: f.required("nonce", Fields::as_bytes)?,
            exp: f.nullable("exp", Fields::as_u64)?,
            nbf: f.optional("nbf", Fields::as_u64)?,
            meta: f.optional("meta", Fields::as_map)?,
        };
        f.finish()?;
        Ok(out)
    }
}

impl Payload for Invocation {
    const TAG: &'static str = "ucan/inv";

    fn issuer(&self) -> &Did {
        &self.iss
    }

    fn to_map(&self) -> BTreeMap<String, Ipld> {
        let mut m = BTreeMap::new();
        m.insert("iss".into(), s(self.iss));
        m.insert("sub".into(), s(self.sub));
        if let Some(aud) = self.aud {
            m.insert("aud".into(), s(aud));
        }
        m.insert("cmd".into(), s(&self.cmd));
        m.insert("args".into(), Ipld::Map(self.args.clone()));
        m.insert(
            "prf".into(),
            Ipld::List(self.prf.iter().copied().map(Ipld::Link).collect()),
        );
        m.insert("nonce".into(), Ipld::Bytes(self.nonce.clone()));
        m.insert("exp".into(), opt_u64(self.exp));
        if let Some(iat) = self.iat {
            m.insert("iat".into(), Ipld::Integer(iat.into()));
        }
        if let Some(meta) = &self.meta {
            m.insert("meta".into(), Ipld::Map(meta.clone()));
        }
        if let Some(cause) = self.cause {
            m.insert("cause".into(), Ipld::Link(cause));
        }
        m
    }

    fn from_map(map: BTreeMap<String, Ipld>) -> Result<Self, TokenError> {
        let mut f = Fields(map);
        let out = Self {
            iss: f.did("iss")?,
            sub: f.did("sub")?,
            aud: f.optional("aud", Fields::as_did)?,
            cmd: f.command()?,
            args: f.required("args", Fields::as_map)?,
            prf: f.required("prf", Fields::as_links)?,
            nonce: f.required("nonce", Fields::as_bytes)?,
            exp: f.nullable("exp", Fields::as_u64)?,
            iat: f.optional("iat", Fields::as_u64)?,
            meta: f.optional("meta", Fields::as_map)?,
            cause: f.optional("cause", Fields::as_link)?,
        };
        f.finish()?;
        Ok(out)
    }
}

/// Takes fields out of a payload map, turning kind mismatches into errors that
/// name the field.
struct Fields(BTreeMap<String, Ipld>);

type Conv<T> = fn(Ipld) -> Result<T, &'static str>;

impl Fields {
    fn field_err(field: &'static str, expected: &str) -> TokenError {
        TokenError::Field {
            field,
            reason: format!("expected {expected}"),
        }
    }

    fn required<T>(&mut self, field: &'static str, conv: Conv<T>) -> Result<T, TokenError> {
        let v = self
            .0
            .remove(field)
            .ok_or(TokenError::MissingField(field))?;
        conv(v).map_err(|e| Self::field_err(field, e))
    }

    fn nullable<T>(&mut self, field: &'static str, conv: Conv<T>) -> Result<Option<T>, TokenError> {
        match self
            .0
            .remove(field)
            .ok_or(TokenError::MissingField(field))?
        {
            Ipld::Null => Ok(None),
            v => conv(v)
                .map(Some)
                .map_err(|e| Self::field_err(field, &format!("{e} or null"))),
        }
    }

    fn optional<T>(&mut self, field: &'static str, conv: Conv<T>) -> Result<Option<T>, TokenError> {
        match self.0.remove(field) {
            None => Ok(None),
            Some(v) => conv(v)
                .map(Some)
                .map_err(|e| Self::field_err(field, &format!("{e} (or the field absent)"))),
        }
    }

    fn did(&mut self, field: &'static str) -> Result<Did, TokenError> {
        self.required(field, Self::as_did)
    }

    fn command(&mut self) -> Result<Command, TokenError> {
        let text = self.required("cmd", |v| match v {
            Ipld::String(s) => Ok(s),
            _ => Err("a command string"),
        })?;
        Command::parse(&text).map_err(|e| TokenError::Field {
            field: "cmd",
            reason: e.to_string(),
        })
    }

    fn policy(&mut self) -> Result<Policy, TokenError> {
        let v = self
            .0
            .remove("pol")
            .ok_or(TokenError::MissingField("pol"))?;
        Policy::from_ipld(&v).map_err(|e| TokenError::Field {
            field: "pol",
            reason: e.to_string(),
        })
    }

    fn finish(self) -> Result<(), TokenError> {
        match self.0.into_keys().next() {
            None => Ok(()),
            Some(k) => Err(TokenError::UnknownField(k)),
        }
    }

    fn as_did(v: Ipld) -> Result<Did, &'static str> {
        match v {
            Ipld::String(s) => s.parse().map_err(|_| "an Ed25519 did:key"),
            _ => Err("a did:key string"),
        }
    }

    fn as_u64(v: Ipld) -> Result<u64, &'static str> {
        match v {
            Ipld::Integer(i) => u64::try_from(i).map_err(|_| "a non-negative 64-bit integer"),
            _ => Err("integer"),
        }
    }

    fn as_bytes(v: Ipld) -> Result<Vec<u8>, &'static str> {
        match v {
            Ipld::Bytes(b) => Ok(b),
            _ => Err("bytes"),
        }
    }

    fn as_map(v: Ipld) -> Result<BTreeMap<String, Ipld>, &'static str> {
        match v {
            Ipld::Map(m) => Ok(m),
            _ => Err("a map"),
        }
    }

    fn as_link(v: Ipld) -> Result<Cid, &'static str> {
        match v {
            Ipld::Link(c) => Ok(c),
            _ => Err("a CID link"),
        }
    }

    fn as_links(v: Ipld) -> Result<Vec<Cid>, &'static str> {
        match v {
            Ipld::List(items) => items
                .into_iter()
                .map(|i| Self::as_link(i).map_err(|_| "a list of CID links"))
                .collect(),
            _ => Err("a list of CID links"),
        }
    }
}

//! Admission: who may be a member. The driver decides (it backs this with
//! join-token verification and the revocation set); the core asks before it
//! accepts any record.

use std::collections::BTreeSet;

use crate::id::NodeId;
use crate::record::MemberRecord;

/// Decides whether a record's member is admitted to the mesh.
///
/// Called for every record that is new to this node (a new member or a new
/// incarnation), after its signature and mesh id were checked. It must be cheap
/// and deterministic; it may look at the profile (for example, to check the
/// substrate a join token fixed).
pub trait Admission {
    /// Whether `record.id` is an admitted member and this record is acceptable.
    fn is_admitted(&self, record: &MemberRecord) -> bool;
}

/// Admits everyone whose record is validly signed (tests and closed networks).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Admission for AllowAll {
    fn is_admitted(&self, _record: &MemberRecord) -> bool {
        true
    }
}

/// Admits exactly the members in a set.
#[derive(Debug, Clone, Default)]
pub struct AllowSet(pub BTreeSet<NodeId>);

impl Admission for AllowSet {
    fn is_admitted(&self, record: &MemberRecord) -> bool {
        self.0.contains(&record.id)
    }
}

impl FromIterator<NodeId> for AllowSet {
    fn from_iter<I: IntoIterator<Item = NodeId>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

//! Owns the answers to membership changes and leader moves (etcd `Cluster.MemberAdd`,
//! `MemberRemove`, `MemberUpdate`, `MemberPromote`, `Maintenance.MoveLeader`), shared by the
//! gRPC services and the gateway. A watchkv server is one member with no consensus layer: what
//! etcd answers about a member or leader that does not exist, it answers with etcd's text and
//! code; a change etcd would make to its one-member cluster is refused as `Unimplemented`,
//! with what to do instead (docs/etcd-semantics.md §8). Callers check that the client is an
//! admin first, as etcd does for member changes (and, stricter than etcd 3.4, for leader moves).

use super::ApiError;

/// A membership change a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// `MemberAdd` (as a learner or not).
    Add,
    /// `MemberRemove` of the member with this id.
    Remove(u64),
    /// `MemberUpdate` of the member with this id (its peer URLs).
    Update(u64),
    /// `MemberPromote` of the member with this id.
    Promote(u64),
}

/// The answer to `change` on the server whose member id is `own` (a mirror of an etcd cluster
/// if `mirror`): always a refusal, since the one member cannot change. The caller has checked
/// that the client may change members (an admin, as etcd's `checkMembershipOperationPermission`
/// asks).
///
/// For another id, etcd's `etcdserver: member not found`. For this member: a promote gets
/// etcd's `etcdserver: can only promote a learner member` (it is no learner); removing it gets
/// etcd's `etcdserver: re-configuration failed due to not enough started members` (etcd's
/// strict reconfiguration check refuses to remove the last member too); an add or an update of
/// its peer URLs (it has none) is `Unimplemented`.
#[must_use]
pub fn member_change(own: u64, mirror: bool, change: MemberChange) -> ApiError {
    match change {
        MemberChange::Add if mirror => {
            ApiError::FixedMembership("a member cannot be added; add it to the etcd cluster this mirror follows")
        }
        MemberChange::Add => ApiError::FixedMembership(
            "a member cannot be added; to scale out, run watchkv --upstream in front of an etcd cluster",
        ),
        MemberChange::Remove(id) | MemberChange::Update(id) | MemberChange::Promote(id) if id != own => {
            ApiError::MemberNotFound
        }
        MemberChange::Remove(_) => ApiError::NotEnoughStartedMembers,
        MemberChange::Update(_) => ApiError::FixedMembership("this member has no peer URLs to update"),
        MemberChange::Promote(_) => ApiError::MemberNotLearner,
    }
}

/// `MoveLeader` to `target` on the server whose member id is `own`, which leads: done at once
/// when `target` is itself, as etcd's `MoveLeader` returns once the target leads; any other
/// target is no member (etcd: `etcdserver: bad leader transferee`).
///
/// # Errors
/// [`ApiError::BadLeaderTransferee`].
pub fn move_leader(own: u64, target: u64) -> Result<(), ApiError> {
    if target == own {
        Ok(())
    } else {
        Err(ApiError::BadLeaderTransferee)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn another_members_id_is_not_found_and_this_ones_change_is_refused() {
        let own = 7;
        for change in [MemberChange::Remove(8), MemberChange::Update(8), MemberChange::Promote(8)] {
            let e = member_change(own, false, change);
            assert_eq!(
                (e.code(), e.to_string()),
                (Code::NotFound, "etcdserver: member not found".into()),
                "{change:?}"
            );
        }
        let promote = member_change(own, false, MemberChange::Promote(own));
        assert_eq!(promote.code(), Code::FailedPrecondition);
        assert_eq!(promote.to_string(), "etcdserver: can only promote a learner member");
        let remove = member_change(own, false, MemberChange::Remove(own));
        assert_eq!(remove.code(), Code::FailedPrecondition);
        assert_eq!(remove.to_string(), "etcdserver: re-configuration failed due to not enough started members");
        for change in [MemberChange::Add, MemberChange::Update(own)] {
            let e = member_change(own, false, change);
            assert_eq!(e.code(), Code::Unimplemented, "{change:?}");
        }
        let add = member_change(own, false, MemberChange::Add).to_string();
        assert!(add.contains("run watchkv --upstream"), "says what to do instead: {add}");
        let add = member_change(own, true, MemberChange::Add).to_string();
        assert!(add.contains("the etcd cluster this mirror follows"), "a mirror says where to add it: {add}");
    }

    #[test]
    fn the_leader_moves_only_to_itself() {
        assert!(move_leader(7, 7).is_ok());
        let e = move_leader(7, 8).expect_err("no such member");
        assert_eq!((e.code(), e.to_string()), (Code::FailedPrecondition, "etcdserver: bad leader transferee".into()));
    }
}

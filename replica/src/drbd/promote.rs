//! When this node may become DRBD Primary. Pure: the caller supplies the status and what the
//! cluster knows of the peer.

use super::status::{Connection, DiskState, ResourceStatus, Role};

/// What membership knows about the peer node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerKnowledge {
    /// Heartbeats arrive.
    Alive,
    /// Silent on every link for the dead time (or fenced): it cannot be writing.
    Dead,
    /// Not decided yet (starting up, within the dead time).
    #[default]
    Unknown,
}

/// What the cluster knows that the local DRBD status does not say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    pub peer: PeerKnowledge,
    /// A split brain was detected and is unresolved.
    pub split_brain: bool,
    /// The peer asked this node to outdate its disk (its DRBD lost us while Primary) and the
    /// outdate never succeeded: the peer's fence-peer handler got a failure, the peer may
    /// have written on, and this disk may still call itself UpToDate.
    pub missed_fence: bool,
}

/// Operator policy for promotion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PromotePolicy {
    /// Promote with a Consistent or Outdated disk when the peer is known dead. Off by default:
    /// it may bring up older data, which is better than no service only if the operator says so.
    pub allow_degraded_when_peer_dead: bool,
}

/// Ok when promotion is allowed; otherwise the reason, for logs and the alert.
pub fn may_promote(status: &ResourceStatus, policy: PromotePolicy, facts: ClusterFacts) -> Result<(), String> {
    let peer = facts.peer;
    if facts.split_brain {
        return Err(format!(
            "a split brain was detected and is unresolved (DRBD resolves only what the after-sb policy allows; \
             the rest needs an operator): {}",
            status.summary()
        ));
    }
    if status.role == Role::Primary {
        return Ok(());
    }
    if facts.missed_fence && !in_sync(status) {
        return Err(format!(
            "the peer asked this node to outdate its disk and that never succeeded, so the peer may have written \
             since and this copy may be stale although it says {:?}; let DRBD reconnect and resync, or check both \
             sides and promote by hand (`drbdadm primary --force {}`), then `pbxha online`",
            status.disk, status.name
        ));
    }
    let disk_ok = match status.disk {
        DiskState::UpToDate => Ok(()),
        DiskState::Consistent | DiskState::Outdated => {
            if !policy.allow_degraded_when_peer_dead {
                Err(format!(
                    "local disk is {:?}, not UpToDate, and the policy does not allow degraded promotion",
                    status.disk
                ))
            } else if peer != PeerKnowledge::Dead {
                Err(format!(
                    "local disk is {:?}, not UpToDate, and the peer is not known to be dead ({peer:?})",
                    status.disk
                ))
            } else {
                Ok(())
            }
        }
        ref d => Err(format!("local disk is {d:?}; its data is not usable")),
    };
    disk_ok?;
    match status.peers.iter().find(|p| p.role == Role::Primary && p.connection == Connection::Connected) {
        Some(p) => Err(format!("peer {} is Primary; single-primary mode allows one", p.name)),
        None => Ok(()),
    }
}

/// Both copies are the same: this disk is UpToDate and connected to an UpToDate peer.
pub fn in_sync(status: &ResourceStatus) -> bool {
    status.disk == DiskState::UpToDate
        && status.peers.iter().any(|p| p.connection == Connection::Connected && p.disk == DiskState::UpToDate)
}

/// The alert text for a split brain: both sides' state as far as they are known.
pub fn split_brain_report(local: &ResourceStatus, peer_view: Option<&ResourceStatus>) -> String {
    format!(
        "local: {}; peer: {}. DRBD kept both copies (connection StandAlone); resolve by choosing the \
         victim: on it `drbdadm connect --discard-my-data {}`, then `drbdadm connect {}` on the survivor",
        local.summary(),
        peer_view.map_or_else(|| "unknown (not reachable)".to_string(), ResourceStatus::summary),
        local.name,
        local.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drbd::status::parse_status_text;

    fn status(text: &str) -> ResourceStatus {
        parse_status_text(text).unwrap().remove(0)
    }

    const UP_TO_DATE_PEER_GONE: &str = "r0 role:Secondary\n  disk:UpToDate\n  bob connection:Connecting\n";
    const OUTDATED_PEER_GONE: &str = "r0 role:Secondary\n  disk:Outdated\n  bob connection:Connecting\n";
    const CONSISTENT_PEER_GONE: &str = "r0 role:Secondary\n  disk:Consistent\n  bob connection:Connecting\n";
    const SYNC_TARGET: &str =
        "r0 role:Secondary\n  disk:Inconsistent\n  alice role:Primary\n    replication:SyncTarget peer-disk:UpToDate done:40.00\n";
    const PEER_PRIMARY: &str = "r0 role:Secondary\n  disk:UpToDate\n  alice role:Primary\n    peer-disk:UpToDate\n";
    const PRIMARY: &str = "r0 role:Primary\n  disk:UpToDate\n  bob connection:StandAlone\n";

    #[test]
    fn up_to_date_promotes_whatever_the_peer() {
        for peer in [PeerKnowledge::Alive, PeerKnowledge::Dead, PeerKnowledge::Unknown] {
            assert_eq!(
                may_promote(
                    &status(UP_TO_DATE_PEER_GONE),
                    PromotePolicy::default(),
                    ClusterFacts { peer, ..Default::default() }
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn degraded_disk_needs_policy_and_dead_peer() {
        let allow = PromotePolicy { allow_degraded_when_peer_dead: true };
        for text in [OUTDATED_PEER_GONE, CONSISTENT_PEER_GONE] {
            let s = status(text);
            let err = may_promote(
                &s,
                PromotePolicy::default(),
                ClusterFacts { peer: PeerKnowledge::Dead, ..Default::default() },
            )
            .unwrap_err();
            assert!(err.contains("policy"), "{err}");
            let err = may_promote(&s, allow, ClusterFacts { peer: PeerKnowledge::Unknown, ..Default::default() })
                .unwrap_err();
            assert!(err.contains("not known to be dead"), "{err}");
            assert_eq!(
                may_promote(&s, allow, ClusterFacts { peer: PeerKnowledge::Dead, ..Default::default() }),
                Ok(())
            );
        }
    }

    #[test]
    fn inconsistent_never_promotes() {
        let allow = PromotePolicy { allow_degraded_when_peer_dead: true };
        let err =
            may_promote(&status(SYNC_TARGET), allow, ClusterFacts { peer: PeerKnowledge::Dead, ..Default::default() })
                .unwrap_err();
        assert!(err.contains("Inconsistent"), "{err}");
    }

    #[test]
    fn connected_primary_peer_blocks_and_primary_is_idempotent() {
        let err = may_promote(
            &status(PEER_PRIMARY),
            PromotePolicy::default(),
            ClusterFacts { peer: PeerKnowledge::Alive, ..Default::default() },
        )
        .unwrap_err();
        assert!(err.contains("alice is Primary"), "{err}");
        assert_eq!(
            may_promote(
                &status(PRIMARY),
                PromotePolicy::default(),
                ClusterFacts { peer: PeerKnowledge::Alive, ..Default::default() }
            ),
            Ok(())
        );
    }

    /// Issue 10, item 6: a node that could not outdate its disk when the peer asked may be
    /// behind the peer whatever its disk says, until the two copies are in sync again.
    #[test]
    fn a_missed_fence_blocks_promotion_until_the_copies_are_in_sync() {
        let missed = |peer| ClusterFacts { peer, missed_fence: true, ..Default::default() };
        let err = may_promote(&status(UP_TO_DATE_PEER_GONE), PromotePolicy::default(), missed(PeerKnowledge::Dead))
            .unwrap_err();
        assert!(err.contains("never succeeded") && err.contains("drbdadm primary --force r0"), "{err}");
        let synced = status("r0 role:Secondary\n  disk:UpToDate\n  alice role:Secondary\n    peer-disk:UpToDate\n");
        assert!(in_sync(&synced));
        assert_eq!(may_promote(&synced, PromotePolicy::default(), missed(PeerKnowledge::Alive)), Ok(()));
        assert_eq!(
            may_promote(&status(PRIMARY), PromotePolicy::default(), missed(PeerKnowledge::Dead)),
            Ok(()),
            "already Primary"
        );
    }

    #[test]
    fn split_brain_blocks_and_reports_both_sides() {
        let local = status(PRIMARY);
        let err = may_promote(
            &status(UP_TO_DATE_PEER_GONE),
            PromotePolicy::default(),
            ClusterFacts { peer: PeerKnowledge::Dead, split_brain: true, ..Default::default() },
        )
        .unwrap_err();
        assert!(err.contains("split brain"), "{err}");
        let peer = status("r0 role:Primary\n  disk:UpToDate\n  alice connection:StandAlone\n");
        let report = split_brain_report(&local, Some(&peer));
        assert!(report.contains("local: r0 role:Primary") && report.contains("peer: r0 role:Primary"), "{report}");
        assert!(report.contains("peer alice connection:StandAlone"), "{report}");
        assert!(split_brain_report(&local, None).contains("unknown (not reachable)"));
    }
}

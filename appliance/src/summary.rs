//! What one node tells its peer about itself in every heartbeat.

use serde::{Deserialize, Serialize};

/// A node's role in the pair (see docs/ARCHITECTURE.md, "Failover rules").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Just started, waiting for the peer or for `initdead`.
    Starting,
    /// Healthy and ready to take over.
    Secondary,
    /// Holds (or is acquiring or releasing) the resource group.
    Primary,
    /// Taken out of service by an operator; never takes over.
    Standby,
    /// Has at least one fault reason and may not take over.
    Fault,
}

impl Role {
    pub fn code(self) -> u8 {
        match self {
            Role::Starting => 0,
            Role::Secondary => 1,
            Role::Primary => 2,
            Role::Standby => 3,
            Role::Fault => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<Role> {
        Some(match code {
            0 => Role::Starting,
            1 => Role::Secondary,
            2 => Role::Primary,
            3 => Role::Standby,
            4 => Role::Fault,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Secondary => "secondary",
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Fault => "fault",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the resource group stands on a node. The peer needs this, not just the role: it
/// must not add the VIP while this node is still `Stopping` it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupPhase {
    Stopped,
    Starting,
    Running,
    Stopping,
}

impl GroupPhase {
    pub fn code(self) -> u8 {
        match self {
            GroupPhase::Stopped => 0,
            GroupPhase::Starting => 1,
            GroupPhase::Running => 2,
            GroupPhase::Stopping => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<GroupPhase> {
        Some(match code {
            0 => GroupPhase::Stopped,
            1 => GroupPhase::Starting,
            2 => GroupPhase::Running,
            3 => GroupPhase::Stopping,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupPhase::Stopped => "stopped",
            GroupPhase::Starting => "starting",
            GroupPhase::Running => "running",
            GroupPhase::Stopping => "stopping",
        }
    }
}

/// The sender's state, carried in every heartbeat packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub role: Role,
    pub group: GroupPhase,
    /// No fault reasons on the sender.
    pub healthy: bool,
    /// Ping targets answering / configured (0/0 when none are configured, which counts as
    /// connected: a pair without ping nodes cannot break ties on connectivity).
    pub reachable: u8,
    pub targets: u8,
    /// "Take over from me": set by a node that released the group for its peer
    /// (switchover, standby, local fault) until the peer is primary.
    pub handover: bool,
    /// Active calls on the sender's PBX when it can count them. After an unplanned failover
    /// the new primary reports the dead peer's last count as the calls dropped.
    pub calls: Option<u32>,
    /// DRBD fencing (`fencing resource-only`): "outdate your copy of the data", sent by a node
    /// whose DRBD lost its peer and must not be promoted beside a possibly newer copy ...
    pub fence_request: bool,
    /// ... and the answer: this node's DRBD disk is outdated, the requester may go on.
    pub fenced: bool,
    /// The sender's first `drbd` resource as it last read it; none without one. The peer puts
    /// it in its split-brain alert and its fence-peer verdict.
    pub drbd: Option<DrbdBrief>,
}

impl NodeSummary {
    /// A healthy `role` with its group `group` and nothing more to say (no ping targets,
    /// calls, fencing or DRBD): where the tests and the benches start from.
    pub fn plain(role: Role, group: GroupPhase) -> NodeSummary {
        NodeSummary {
            role,
            group,
            healthy: true,
            reachable: 0,
            targets: 0,
            handover: false,
            calls: None,
            fence_request: false,
            fenced: false,
            drbd: None,
        }
    }

    pub fn connected(&self) -> bool {
        self.targets == 0 || self.reachable > 0
    }
}

/// A node's DRBD role and disk, compact enough for the heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrbdBrief {
    pub role: DrbdRole,
    pub disk: DrbdDisk,
}

/// DRBD's role for the resource (drbdsetup(8), "roles").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrbdRole {
    Unknown,
    Secondary,
    Primary,
}

/// DRBD's local disk state (drbdsetup(8), "disk states"); the transitional and failed ones
/// are `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrbdDisk {
    Unknown,
    Diskless,
    Inconsistent,
    Outdated,
    Consistent,
    UpToDate,
}

impl DrbdRole {
    /// The heartbeat code; 0 is left for "no drbd resource".
    pub fn code(self) -> u8 {
        match self {
            DrbdRole::Unknown => 1,
            DrbdRole::Secondary => 2,
            DrbdRole::Primary => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<DrbdRole> {
        Some(match code {
            1 => DrbdRole::Unknown,
            2 => DrbdRole::Secondary,
            3 => DrbdRole::Primary,
            _ => return None,
        })
    }
}

impl DrbdDisk {
    pub fn code(self) -> u8 {
        match self {
            DrbdDisk::Unknown => 0,
            DrbdDisk::Diskless => 1,
            DrbdDisk::Inconsistent => 2,
            DrbdDisk::Outdated => 3,
            DrbdDisk::Consistent => 4,
            DrbdDisk::UpToDate => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<DrbdDisk> {
        Some(match code {
            0 => DrbdDisk::Unknown,
            1 => DrbdDisk::Diskless,
            2 => DrbdDisk::Inconsistent,
            3 => DrbdDisk::Outdated,
            4 => DrbdDisk::Consistent,
            5 => DrbdDisk::UpToDate,
            _ => return None,
        })
    }
}

impl DrbdBrief {
    /// The brief of a parsed DRBD status.
    pub fn of(status: &pbxha_replica::drbd::status::ResourceStatus) -> DrbdBrief {
        use pbxha_replica::drbd::status::{DiskState, Role as R};
        DrbdBrief {
            role: match status.role {
                R::Primary => DrbdRole::Primary,
                R::Secondary => DrbdRole::Secondary,
                R::Unknown => DrbdRole::Unknown,
            },
            disk: match status.disk {
                DiskState::UpToDate => DrbdDisk::UpToDate,
                DiskState::Consistent => DrbdDisk::Consistent,
                DiskState::Outdated => DrbdDisk::Outdated,
                DiskState::Inconsistent => DrbdDisk::Inconsistent,
                DiskState::Diskless => DrbdDisk::Diskless,
                DiskState::DUnknown | DiskState::Other(_) => DrbdDisk::Unknown,
            },
        }
    }

    /// The peer's side for `split_brain_report`: its role and disk as it last told them,
    /// without its own view of the connections.
    pub fn to_status(self, resource: &str) -> pbxha_replica::drbd::status::ResourceStatus {
        use pbxha_replica::drbd::status::{DiskState, ResourceStatus, Role as R};
        ResourceStatus {
            name: resource.to_string(),
            role: match self.role {
                DrbdRole::Primary => R::Primary,
                DrbdRole::Secondary => R::Secondary,
                DrbdRole::Unknown => R::Unknown,
            },
            disk: match self.disk {
                DrbdDisk::UpToDate => DiskState::UpToDate,
                DrbdDisk::Consistent => DiskState::Consistent,
                DrbdDisk::Outdated => DiskState::Outdated,
                DrbdDisk::Inconsistent => DiskState::Inconsistent,
                DrbdDisk::Diskless => DiskState::Diskless,
                DrbdDisk::Unknown => DiskState::DUnknown,
            },
            peers: Vec::new(),
        }
    }
}

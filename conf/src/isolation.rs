//! `[ping] on-isolation`: a value both sides of pbxha.toml share, the daemon that reads it
//! and the lab that writes it, so it is defined once here beside the reader.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a primary does when it is cut off from everything at once: every heartbeat link
/// silent and no ping target answering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnIsolation {
    /// Stop the group: the peer, which still hears the gateway, takes over, and the
    /// isolated copy writes nothing that the heal would have to reconcile (DRBD, MySQL).
    #[default]
    Release,
    /// Keep serving whoever can still reach this node (heartbeat v1's behaviour).
    Keep,
}

impl OnIsolation {
    pub const ALL: [OnIsolation; 2] = [OnIsolation::Release, OnIsolation::Keep];

    /// As written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnIsolation::Release => "release",
            OnIsolation::Keep => "keep",
        }
    }
}

impl FromStr for OnIsolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OnIsolation::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown on-isolation policy `{s}` (one of release, keep)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_reads_back_by_its_name() {
        for o in OnIsolation::ALL {
            assert_eq!(o.as_str().parse(), Ok(o));
        }
        assert!("stay".parse::<OnIsolation>().unwrap_err().contains("`stay`"));
    }
}

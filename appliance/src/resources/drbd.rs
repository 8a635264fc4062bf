//! `drbd` resources: promote on start (only when the replica's promotion rules allow it),
//! demote on stop, Primary means running.

use std::sync::Arc;

use async_trait::async_trait;
use pbxha_replica::drbd::conf::Syntax;
use pbxha_replica::drbd::control::Drbd;
use pbxha_replica::drbd::promote::{PeerKnowledge, PromotePolicy};
use pbxha_replica::drbd::status::Role;

use super::{Resource, ResourceState};
use crate::config::DrbdConfig;
use crate::Error;

pub struct DrbdResource {
    name: String,
    drbd: Drbd,
}

impl DrbdResource {
    pub fn new(name: &str, cfg: &DrbdConfig, runner: Arc<dyn pbxha_runner::Runner>) -> Self {
        // Status is read through `drbdsetup status --json`, which needs DRBD 9; the minor
        // only matters for 8.4's /proc/drbd.
        DrbdResource {
            name: name.to_string(),
            drbd: Drbd::new(runner, cfg.resource.clone(), Syntax::V9, 0),
        }
    }

    fn err(&self, e: pbxha_replica::Error) -> Error {
        Error::Resource {
            resource: self.name.clone(),
            message: e.to_string(),
        }
    }
}

#[async_trait]
impl Resource for DrbdResource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self) -> Result<(), Error> {
        // adjust brings the resource up if it is down and is a no-op otherwise.
        self.drbd.adjust().await.map_err(|e| self.err(e))?;
        // The group starts only after the fsm decided this node takes over, so the peer is
        // either alive and handing over or declared dead; without that knowledge here, only
        // an UpToDate disk is promoted.
        self.drbd
            .promote(PromotePolicy::default(), PeerKnowledge::Unknown, false)
            .await
            .map_err(|e| self.err(e))
    }

    async fn stop(&self) -> Result<(), Error> {
        self.drbd.secondary().await.map_err(|e| self.err(e))
    }

    async fn monitor(&self) -> Result<ResourceState, Error> {
        let status = self.drbd.status().await.map_err(|e| self.err(e))?;
        Ok(if status.role == Role::Primary {
            ResourceState::Running
        } else {
            ResourceState::Stopped
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbxha_runner::{Output, ScriptedRunner};

    // `drbdsetup status --json` shape from drbd-utils 9 (see replica/src/drbd/status.rs).
    const OUTDATED: &str = r#"[{"name":"r0","role":"Secondary","devices":[{"volume":0,"disk-state":"Outdated"}],"connections":[]}]"#;
    const PRIMARY: &str = r#"[{"name":"r0","role":"Primary","devices":[{"volume":0,"disk-state":"UpToDate"}],"connections":[]}]"#;

    #[tokio::test]
    async fn outdated_disk_is_not_promoted_and_primary_is_running() {
        let r = Arc::new(ScriptedRunner::new());
        r.on(["drbdadm", "adjust"], Output::ok(""));
        r.on(["drbdsetup", "status"], Output::ok(OUTDATED));
        let res = DrbdResource::new(
            "data",
            &DrbdConfig {
                resource: "r0".into(),
            },
            r.clone(),
        );
        let err = res.start().await.unwrap_err().to_string();
        assert!(
            err.contains("data") && err.contains("refusing to promote"),
            "{err}"
        );
        assert!(!r.argvs().iter().any(|a| a.starts_with("drbdadm primary")));
        r.on(["drbdsetup", "status"], Output::ok(PRIMARY));
        assert_eq!(res.monitor().await.unwrap(), ResourceState::Running);
    }
}

//! DRBD control through the command runner: `drbdadm create-md|up|down|primary|secondary|
//! adjust` and status from the place the installed DRBD generation reports it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pbxha_runner::{Cmd, Runner};

use super::conf::Syntax;
use super::promote::{may_promote, ClusterFacts, PromotePolicy};
use super::status::{parse_proc_drbd, parse_status_json, ResourceStatus};
use crate::error::{Error, Result};

/// DRBD's state changes wait for the peer (e.g. `primary` with fencing calls the fence-peer
/// handler), so they get more time than a plain command.
const STATE_CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// One DRBD resource on this node.
pub struct Drbd {
    runner: Arc<dyn Runner>,
    resource: String,
    syntax: Syntax,
    /// 8.4 reports by minor in /proc/drbd only.
    minor: u32,
    proc_drbd: PathBuf,
}

impl Drbd {
    pub fn new(runner: Arc<dyn Runner>, resource: impl Into<String>, syntax: Syntax, minor: u32) -> Self {
        Drbd { runner, resource: resource.into(), syntax, minor, proc_drbd: PathBuf::from("/proc/drbd") }
    }

    /// Reads 8.4 status from another file (tests).
    pub fn with_proc_drbd(mut self, path: impl Into<PathBuf>) -> Self {
        self.proc_drbd = path.into();
        self
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    async fn drbdadm(&self, args: &[&str]) -> Result<()> {
        let mut argv = vec!["drbdadm"];
        argv.extend_from_slice(args);
        argv.push(&self.resource);
        self.runner.run_ok(&Cmd::new(argv).timeout(STATE_CHANGE_TIMEOUT)).await?;
        Ok(())
    }

    /// Writes fresh metadata on the backing disk. `--force` answers drbdmeta's confirmation
    /// prompt, which would otherwise wait for a terminal.
    pub async fn create_md(&self) -> Result<()> {
        self.drbdadm(&["create-md", "--force"]).await
    }
    pub async fn up(&self) -> Result<()> {
        self.drbdadm(&["up"]).await
    }
    pub async fn down(&self) -> Result<()> {
        self.drbdadm(&["down"]).await
    }
    pub async fn secondary(&self) -> Result<()> {
        self.drbdadm(&["secondary"]).await
    }
    /// Applies config file changes to the running resource.
    pub async fn adjust(&self) -> Result<()> {
        self.drbdadm(&["adjust"]).await
    }
    /// Marks this node's disk Outdated, so it cannot be promoted beside a newer copy: the
    /// answer to the peer's fence-peer request (`fencing resource-only`).
    pub async fn outdate(&self) -> Result<()> {
        self.drbdadm(&["outdate"]).await
    }

    /// The resource's current state.
    pub async fn status(&self) -> Result<ResourceStatus> {
        let missing = || Error::Drbd {
            resource: self.resource.clone(),
            message: "not configured in the kernel (is it up?)".into(),
        };
        match self.syntax {
            Syntax::V9 => {
                let cmd = Cmd::new(["drbdsetup", "status", "--json", self.resource.as_str()]);
                let out = self.runner.run_ok(&cmd).await?;
                parse_status_json(&out.stdout)?.into_iter().find(|r| r.name == self.resource).ok_or_else(missing)
            }
            Syntax::V84 => {
                let text = std::fs::read_to_string(&self.proc_drbd)
                    .map_err(|e| Error::io(format!("reading {}", self.proc_drbd.display()), e))?;
                let (_, mut status) =
                    parse_proc_drbd(&text, "peer")?.into_iter().find(|(m, _)| *m == self.minor).ok_or_else(missing)?;
                status.name = self.resource.clone();
                Ok(status)
            }
        }
    }

    /// Promotes when the rules allow it; otherwise says why not and runs nothing.
    pub async fn promote(&self, policy: PromotePolicy, facts: ClusterFacts) -> Result<()> {
        let status = self.status().await?;
        if let Err(reason) = may_promote(&status, policy, facts) {
            return Err(Error::PromotionRefused { resource: self.resource.clone(), reason });
        }
        if status.role == super::status::Role::Primary {
            return Ok(());
        }
        if status.disk == super::status::DiskState::UpToDate {
            self.drbdadm(&["primary"]).await
        } else {
            // Allowed above only with a dead peer and the operator's policy: DRBD itself refuses
            // a non-UpToDate disk without --force.
            tracing::warn!(resource = %self.resource, disk = ?status.disk, "promoting a degraded disk: peer is dead and policy allows it");
            self.drbdadm(&["primary", "--force"]).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drbd::promote::PeerKnowledge;
    use pbxha_runner::{Output, ScriptedRunner};

    // Shape of `drbdsetup status --json` from drbd-utils 9 (see status.rs).
    const SECONDARY_UPTODATE: &str = r#"[{"name":"r0","node-id":0,"role":"Secondary","suspended":false,
 "devices":[{"volume":0,"minor":0,"disk-state":"UpToDate"}],
 "connections":[{"peer-node-id":1,"name":"bob","connection-state":"Connecting","peer-role":"Unknown","peer_devices":[]}]}]"#;
    const SECONDARY_OUTDATED: &str = r#"[{"name":"r0","node-id":0,"role":"Secondary","suspended":false,
 "devices":[{"volume":0,"minor":0,"disk-state":"Outdated"}],
 "connections":[{"peer-node-id":1,"name":"bob","connection-state":"Connecting","peer-role":"Unknown","peer_devices":[]}]}]"#;

    fn drbd(r: &Arc<ScriptedRunner>) -> Drbd {
        Drbd::new(r.clone(), "r0", Syntax::V9, 0)
    }

    #[tokio::test]
    async fn commands_are_drbdadm_argv() {
        let r = Arc::new(ScriptedRunner::new());
        r.on(["drbdadm"], Output::ok(""));
        let d = drbd(&r);
        d.create_md().await.unwrap();
        d.up().await.unwrap();
        d.adjust().await.unwrap();
        d.secondary().await.unwrap();
        d.outdate().await.unwrap();
        d.down().await.unwrap();
        assert_eq!(
            r.argvs(),
            [
                "drbdadm create-md --force r0",
                "drbdadm up r0",
                "drbdadm adjust r0",
                "drbdadm secondary r0",
                "drbdadm outdate r0",
                "drbdadm down r0"
            ]
        );
    }

    #[tokio::test]
    async fn promote_up_to_date_runs_primary() {
        let r = Arc::new(ScriptedRunner::new());
        r.on(["drbdsetup", "status"], Output::ok(SECONDARY_UPTODATE));
        r.on(["drbdadm", "primary"], Output::ok(""));
        drbd(&r)
            .promote(PromotePolicy::default(), ClusterFacts { peer: PeerKnowledge::Unknown, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(r.argvs(), ["drbdsetup status --json r0", "drbdadm primary r0"]);
    }

    #[tokio::test]
    async fn promote_outdated_is_refused_without_running_primary() {
        let r = Arc::new(ScriptedRunner::new());
        r.on(["drbdsetup", "status"], Output::ok(SECONDARY_OUTDATED));
        let err = drbd(&r)
            .promote(PromotePolicy::default(), ClusterFacts { peer: PeerKnowledge::Dead, ..Default::default() })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PromotionRefused { .. }), "{err}");
        assert_eq!(r.argvs(), ["drbdsetup status --json r0"]);

        let allow = PromotePolicy { allow_degraded_when_peer_dead: true };
        r.on(["drbdadm", "primary"], Output::ok(""));
        drbd(&r).promote(allow, ClusterFacts { peer: PeerKnowledge::Dead, ..Default::default() }).await.unwrap();
        assert_eq!(r.argvs().last().unwrap(), "drbdadm primary --force r0");
    }

    #[tokio::test]
    async fn failed_drbdadm_is_an_error_with_its_stderr() {
        let r = Arc::new(ScriptedRunner::new());
        // drbdadm's message when the kernel module is missing (drbd-utils 9.22 on this machine).
        r.on(["drbdadm", "up"], Output::failed(20, "Could not connect to 'drbd' generic netlink family"));
        let err = drbd(&r).up().await.unwrap_err().to_string();
        assert!(err.contains("drbdadm up r0") && err.contains("generic netlink"), "{err}");
    }

    #[tokio::test]
    async fn v84_status_comes_from_proc_drbd_by_minor() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("drbd");
        std::fs::write(
            &proc,
            "version: 8.4.11-1 (api:1/proto:86-101)\n 0: cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate C r-----\n 1: cs:StandAlone ro:Secondary/Unknown ds:Outdated/DUnknown   r-----\n",
        )
        .unwrap();
        let r = Arc::new(ScriptedRunner::new());
        let d = Drbd::new(r.clone(), "r1", Syntax::V84, 1).with_proc_drbd(&proc);
        let s = d.status().await.unwrap();
        assert_eq!((s.name.as_str(), &s.disk), ("r1", &super::super::status::DiskState::Outdated));
        let missing = Drbd::new(r, "r7", Syntax::V84, 7).with_proc_drbd(&proc).status().await.unwrap_err();
        assert!(missing.to_string().contains("r7"), "{missing}");
    }
}

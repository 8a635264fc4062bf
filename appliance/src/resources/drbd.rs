//! `drbd` resources: promote on start (only when the replica's promotion rules allow it,
//! with the cluster's view of the peer), demote on stop, Primary means running.

use std::sync::Arc;

use async_trait::async_trait;
use pbxha_conf::Reader;
use pbxha_replica::drbd::conf::Syntax;
use pbxha_replica::drbd::control::Drbd;
use pbxha_replica::drbd::promote::PromotePolicy;
use pbxha_replica::drbd::status::Role;
use serde::Serialize;

use super::{Kind, Parts, Resource, ResourceState};
use crate::fence::DrbdView;
use crate::Error;

/// A DRBD resource (`kind = "drbd"`): promoted on start, demoted on stop.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DrbdConfig {
    /// The resource name in the DRBD config, e.g. `r0`.
    pub resource: String,
    /// The installed DRBD generation (`syntax = "9"` or `"8.4"`): where status is read from.
    pub syntax: Syntax,
    /// The device minor (`/dev/drbdN`, at most 1048575: DRBD's 20-bit minor); 8.4 reports
    /// status by minor only.
    pub minor: u32,
    /// `allow-degraded`: promote a Consistent or Outdated disk when the peer is known dead.
    /// Off by default: older data beats no service only if the operator says so.
    pub allow_degraded: bool,
}

impl Kind for DrbdConfig {
    fn read(s: &mut Reader) -> Option<Self> {
        // Every key is taken before any is judged, so a typo beside a missing key is named too.
        let resource = s.string("resource");
        let syntax = match s.opt_string("syntax").as_deref() {
            Some("9") | None => Syntax::V9,
            Some("8.4") => Syntax::V84,
            Some(other) => s
                .problem("syntax", format!("unknown DRBD syntax `{other}`"), Some("\"9\" or \"8.4\""))
                .unwrap_or(Syntax::V9),
        };
        let minor = s.int_or("minor", 0, 1_048_575, 0);
        let allow_degraded = s.bool_or("allow-degraded", false);
        Some(DrbdConfig { resource: resource?, syntax, minor, allow_degraded })
    }

    fn describe(&self) -> String {
        format!("DRBD resource {}", self.resource)
    }

    fn outlives_daemon(&self) -> bool {
        false
    }

    fn build(&self, name: &str, parts: &Parts) -> Result<Arc<dyn Resource>, Error> {
        Ok(Arc::new(DrbdResource::new(name, self, parts.runner.clone(), parts.drbd_view.clone())))
    }
}

pub struct DrbdResource {
    name: String,
    drbd: Drbd,
    policy: PromotePolicy,
    /// Whether membership declared the peer dead, and whether a split brain is unresolved.
    view: DrbdView,
}

impl DrbdResource {
    pub fn new(name: &str, cfg: &DrbdConfig, runner: Arc<dyn pbxha_runner::Runner>, view: DrbdView) -> Self {
        DrbdResource {
            name: name.to_string(),
            drbd: Drbd::new(runner, cfg.resource.clone(), cfg.syntax, cfg.minor),
            policy: PromotePolicy { allow_degraded_when_peer_dead: cfg.allow_degraded },
            view,
        }
    }

    fn err(&self, e: pbxha_replica::Error) -> Error {
        Error::Resource { resource: self.name.clone(), message: e.to_string() }
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
        // A degraded disk is promoted only when membership declared the peer dead; a peer
        // that is alive and handing over left this disk UpToDate.
        self.drbd.promote(self.policy, self.view.facts()).await.map_err(|e| self.err(e))
    }

    async fn stop(&self) -> Result<(), Error> {
        self.drbd.secondary().await.map_err(|e| self.err(e))
    }

    async fn monitor(&self) -> Result<ResourceState, Error> {
        let status = self.drbd.status().await.map_err(|e| self.err(e))?;
        Ok(if status.role == Role::Primary { ResourceState::Running } else { ResourceState::Stopped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbxha_replica::drbd::conf::Syntax;
    use pbxha_runner::{Output, ScriptedRunner};

    // `drbdsetup status --json` shape from drbd-utils 9 (see replica/src/drbd/status.rs).
    const OUTDATED: &str =
        r#"[{"name":"r0","role":"Secondary","devices":[{"volume":0,"disk-state":"Outdated"}],"connections":[]}]"#;
    const PRIMARY: &str =
        r#"[{"name":"r0","role":"Primary","devices":[{"volume":0,"disk-state":"UpToDate"}],"connections":[]}]"#;

    fn config(allow_degraded: bool) -> DrbdConfig {
        DrbdConfig { resource: "r0".into(), syntax: Syntax::V9, minor: 0, allow_degraded }
    }

    #[tokio::test]
    async fn outdated_disk_is_not_promoted_and_primary_is_running() {
        let r = Arc::new(ScriptedRunner::new());
        r.on(["drbdadm", "adjust"], Output::ok(""));
        r.on(["drbdsetup", "status"], Output::ok(OUTDATED));
        let res = DrbdResource::new("data", &config(false), r.clone(), DrbdView::default());
        let err = res.start().await.unwrap_err().to_string();
        assert!(err.contains("data") && err.contains("refusing to promote"), "{err}");
        assert!(!r.argvs().iter().any(|a| a.starts_with("drbdadm primary")));
        r.on(["drbdsetup", "status"], Output::ok(PRIMARY));
        assert_eq!(res.monitor().await.unwrap(), ResourceState::Running);
    }

    #[tokio::test]
    async fn degraded_promotion_follows_the_cluster_view_of_the_peer() {
        let r = Arc::new(ScriptedRunner::new());
        r.on(["drbdadm", "adjust"], Output::ok(""));
        r.on(["drbdadm", "primary"], Output::ok(""));
        r.on(["drbdsetup", "status"], Output::ok(OUTDATED));
        let fencing = crate::fence::Fencing::default();
        let view = fencing.view().clone();
        let res = DrbdResource::new("data", &config(true), r.clone(), view);
        // Unknown until membership speaks: refused even with allow-degraded.
        let err = res.start().await.unwrap_err().to_string();
        assert!(err.contains("not known to be dead"), "{err}");

        // Membership declares the peer dead (a lone node past initdead).
        let p = crate::fsm::Params {
            node_id: 1,
            node_name: "a".into(),
            peer_id: 2,
            peer_name: "b".into(),
            link_names: vec!["lo".into()],
            interval: std::time::Duration::from_millis(200),
            deadtime: std::time::Duration::from_secs(1),
            warntime: std::time::Duration::from_millis(500),
            initdead: std::time::Duration::ZERO,
            ping_targets: 0,
            auto_failback: false,
            preferred: None,
            failure_timeout: std::time::Duration::from_secs(10),
            drain_timeout: std::time::Duration::ZERO,
            ping_dampen: std::time::Duration::ZERO,
            ping_interval: std::time::Duration::ZERO,
            ping_timeout: std::time::Duration::ZERO,
            on_isolation: Default::default(),
        };
        let t0 = std::time::Instant::now();
        let mut fsm = crate::fsm::Node::new(p, t0);
        fsm.handle(crate::fsm::Event::Connectivity { reachable: 0, total: 0 }, t0);
        fencing.follow(&fsm, t0);
        res.start().await.unwrap();
        assert_eq!(r.argvs().last().unwrap(), "drbdadm primary --force r0");

        // An unresolved split brain blocks even then.
        fsm.handle(crate::fsm::Event::SplitBrain { resource: "r0".into(), report: "local: r0".into() }, t0);
        fencing.follow(&fsm, t0);
        let err = res.start().await.unwrap_err().to_string();
        assert!(err.contains("split brain"), "{err}");
    }
}

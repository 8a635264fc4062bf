//! The resource group: the [`Resource`] trait every kind implements, one module per kind
//! (`service`, `ocf`, `vip`, `pbx`, `drbd`, `filesystem`, `mysql`; [`build_members`] turns
//! the config's `[[resource]]` list into them), and the executor (`engine`) that starts
//! them in order, stops them in reverse, monitors them and restarts them locally before
//! giving up.

pub mod drbd;
pub mod engine;
pub mod filesystem;
pub mod mysql;
pub mod ocf;
pub mod pbx;
pub mod service;
pub mod vip;

pub use engine::{
    spawn_group, GroupHandle, Member, MemberState, Reporter, ResourceAction, ResourceReport, ResourceStatus, Timeouts,
};

use async_trait::async_trait;

use crate::Error;

/// What a monitor found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceState {
    Running,
    Stopped,
}

/// One member of the resource group. Timeouts are applied by the executor, not here.
#[async_trait]
pub trait Resource: Send + Sync {
    /// The configured name, for logs, status and the journal.
    fn name(&self) -> &str;
    /// Idempotent: starting a running resource succeeds.
    async fn start(&self) -> Result<(), Error>;
    /// Idempotent: stopping a stopped resource succeeds.
    async fn stop(&self) -> Result<(), Error>;
    async fn monitor(&self) -> Result<ResourceState, Error>;
    /// Starts after the peer explicitly released the group (its authenticated heartbeat
    /// says its group is stopped). Kinds that first check for a previous holder, such as
    /// the VIP's ARP probe, may skip that check here.
    async fn start_released(&self) -> Result<(), Error> {
        self.start().await
    }
    /// Tell the network again that this node holds the resource (gratuitous ARP for a VIP).
    /// Most kinds have nothing to announce.
    async fn reannounce(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Builds the configured resource group, in config order, ready for [`spawn_group`].
pub fn build_members(
    configs: &[crate::config::ResourceConfig],
    runner: std::sync::Arc<dyn pbxha_runner::Runner>,
    drbd_view: &crate::fence::DrbdView,
) -> Result<Vec<Member>, Error> {
    use crate::config::ResourceKind;
    configs
        .iter()
        .map(|r| {
            let timeouts = Timeouts::from(r);
            let resource: std::sync::Arc<dyn Resource> = match &r.kind {
                ResourceKind::Service(s) => service::build(&r.name, s, timeouts, runner.clone())?,
                ResourceKind::Ocf(o) => ocf::build(&r.name, o, timeouts, runner.clone())?,
                ResourceKind::Vip(v) => std::sync::Arc::new(vip::Vip::new(r.name.clone(), v.clone())),
                ResourceKind::Pbx(p) => pbx::build(&r.name, p, timeouts, runner.clone())?,
                ResourceKind::Drbd(d) => {
                    std::sync::Arc::new(drbd::DrbdResource::new(&r.name, d, runner.clone(), drbd_view.clone()))
                }
                ResourceKind::Filesystem(f) => {
                    std::sync::Arc::new(filesystem::FilesystemResource::new(&r.name, f, runner.clone()))
                }
                ResourceKind::Mysql(m) => mysql::build(&r.name, m, timeouts, runner.clone())?,
            };
            Ok(Member::new(r, resource))
        })
        .collect()
}

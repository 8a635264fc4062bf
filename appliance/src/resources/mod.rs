//! The resource group: the [`Resource`] trait every member implements, one module per kind
//! (`service`, `ocf`, `vip`, `pbx`, `drbd`, `filesystem`, `mysql`), and the executor
//! (`engine`) that starts them in order, stops them in reverse, monitors them and restarts
//! them locally before giving up.
//!
//! A kind's module holds all of it, through [`Kind`]: its settings, how they are read from a
//! `[[resource]]` table, what is checked, how check-config describes it and how it becomes a
//! member ([`build_members`]). The [`kinds!`] line below registers it.

pub mod engine;

pub use engine::{
    spawn_group, GroupHandle, Member, MemberState, Reporter, ResourceAction, ResourceReport, ResourceStatus, Timeouts,
};

use std::sync::Arc;

use async_trait::async_trait;
use pbxha_conf::Reader;
use pbxha_runner::Runner;

use crate::calls::GroupPbx;
use crate::config::Config;
use crate::fence::DrbdView;
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

/// A problem reporter: key relative to the resource's table, message, hint (empty: none).
pub type Report<'a> = &'a mut dyn FnMut(&str, String, &str);

/// What a resource kind brings, all in its own module.
pub trait Kind: Sized {
    /// Reads the kind's own keys of a `[[resource]]` table; the caller finishes it.
    fn read(r: &mut Reader) -> Option<Self>;
    /// What the rest of the config says against it; reads no files. `index` is this
    /// resource's place in `config.resources`.
    fn validate(&self, _config: &Config, _index: usize, _problem: Report) {}
    /// The checks that read the filesystem (see [`Config::check_files`]).
    fn check_files(&self, _problem: Report) {}
    /// What check-config's summary says it is.
    fn describe(&self) -> String;
    /// Whether it may still run, and so serve, once the daemon is gone: a process that
    /// systemd or the agent keeps, not one the daemon owns or state only it keeps up
    /// (see `sentinel::survivors`).
    fn outlives_daemon(&self) -> bool;
    /// The group member named `name`.
    fn build(&self, name: &str, parts: &Parts) -> Result<Arc<dyn Resource>, Error>;
}

/// What a member is built with.
pub struct Parts<'a> {
    pub timeouts: Timeouts,
    pub runner: Arc<dyn Runner>,
    pub drbd_view: &'a DrbdView,
    /// The group's PBX adapter, which its `pbx` member shares with the daemon's call counting.
    pub pbx: &'a GroupPbx,
}

/// Registers the resource kinds, one line each: `module: Variant(Settings) = "kind name"`,
/// where `module` holds `Settings` and its [`Kind`] implementation. Makes the modules and
/// [`ResourceKind`], whose methods hand each call to the kind.
macro_rules! kinds {
    ($($module:ident: $variant:ident($settings:ident) = $name:literal,)*) => {
        $(pub mod $module;)*

        /// A `[[resource]]`'s kind with its own settings.
        #[derive(Clone, Debug, PartialEq, serde::Serialize)]
        #[serde(tag = "kind")]
        pub enum ResourceKind {
            $(#[serde(rename = $name)] $variant($module::$settings),)*
        }

        impl ResourceKind {
            /// Every `kind = "..."`, in registration order.
            pub const NAMES: &[&str] = &[$($name),*];

            pub fn name(&self) -> &'static str {
                match self { $(Self::$variant(_) => $name,)* }
            }

            /// Reads the keys of kind `name`; an unknown kind is a problem at `kind`.
            pub fn read(name: &str, r: &mut Reader) -> Option<Self> {
                match name {
                    $($name => <$module::$settings as Kind>::read(r).map(Self::$variant),)*
                    _ => r.problem(
                        "kind",
                        format!("unknown resource kind `{name}`"),
                        Some(&format!("one of {}", Self::NAMES.join(", "))),
                    ),
                }
            }

            pub fn validate(&self, config: &Config, index: usize, problem: Report) {
                match self { $(Self::$variant(k) => k.validate(config, index, problem),)* }
            }

            pub fn check_files(&self, problem: Report) {
                match self { $(Self::$variant(k) => k.check_files(problem),)* }
            }

            pub fn describe(&self) -> String {
                match self { $(Self::$variant(k) => k.describe(),)* }
            }

            pub fn outlives_daemon(&self) -> bool {
                match self { $(Self::$variant(k) => k.outlives_daemon(),)* }
            }

            pub fn build(&self, name: &str, parts: &Parts) -> Result<Arc<dyn Resource>, Error> {
                match self { $(Self::$variant(k) => k.build(name, parts),)* }
            }
        }
    };
}

kinds! {
    service: Service(ServiceConfig) = "service",
    ocf: Ocf(OcfConfig) = "ocf",
    vip: Vip(VipConfig) = "vip",
    pbx: Pbx(PbxConfig) = "pbx",
    drbd: Drbd(DrbdConfig) = "drbd",
    filesystem: Filesystem(FilesystemConfig) = "filesystem",
    mysql: Mysql(MysqlResourceConfig) = "mysql",
}

/// Builds the configured resource group, in config order, ready for [`spawn_group`].
pub fn build_members(
    configs: &[crate::config::ResourceConfig],
    runner: Arc<dyn Runner>,
    drbd_view: &DrbdView,
    pbx: &GroupPbx,
) -> Result<Vec<Member>, Error> {
    configs
        .iter()
        .map(|r| {
            let parts = Parts { timeouts: Timeouts::from(r), runner: runner.clone(), drbd_view, pbx };
            Ok(Member::new(r, r.kind.build(&r.name, &parts)?))
        })
        .collect()
}

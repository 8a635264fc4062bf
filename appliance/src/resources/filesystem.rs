//! `filesystem` resources: the replica's mount (see pbxha_replica::filesystem).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pbxha_conf::Reader;
use pbxha_replica::filesystem::{Filesystem, FilesystemSpec, DEFAULT_KILL_GRACE};
use serde::Serialize;

use super::{Kind, Parts, Resource, ResourceState};
use crate::Error;

/// The replicated filesystem (`kind = "filesystem"`): mounted on start; on stop its users
/// are killed and it is unmounted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FilesystemConfig {
    pub device: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// `mount -o` options; empty for the defaults.
    pub options: String,
    /// Run `fsck -p` before mounting.
    pub fsck: bool,
}

impl Kind for FilesystemConfig {
    fn read(s: &mut Reader) -> Option<Self> {
        // Every key is taken before any is judged, so a typo beside a missing key is named too.
        let (device, mount_point, fstype) = (s.string("device"), s.string("mount-point"), s.string("fstype"));
        let options = s.opt_string("options").unwrap_or_default();
        let fsck = s.bool_or("fsck", false);
        Some(FilesystemConfig { device: device?.into(), mount_point: mount_point?.into(), fstype: fstype?, options, fsck })
    }

    fn describe(&self) -> String {
        format!("{} on {}", self.device.display(), self.mount_point.display())
    }

    fn outlives_daemon(&self) -> bool {
        false
    }

    fn build(&self, name: &str, parts: &Parts) -> Result<Arc<dyn Resource>, Error> {
        Ok(Arc::new(FilesystemResource::new(name, self, parts.runner.clone())))
    }
}

pub struct FilesystemResource {
    name: String,
    fs: Filesystem,
}

impl FilesystemResource {
    pub fn new(name: &str, cfg: &FilesystemConfig, runner: Arc<dyn pbxha_runner::Runner>) -> Self {
        let spec = FilesystemSpec {
            device: cfg.device.clone(),
            mount_point: cfg.mount_point.clone(),
            fstype: cfg.fstype.clone(),
            options: cfg.options.clone(),
            fsck: cfg.fsck,
            kill_grace: DEFAULT_KILL_GRACE,
        };
        FilesystemResource { name: name.to_string(), fs: Filesystem::new(spec, runner) }
    }

    fn err(&self, e: pbxha_replica::Error) -> Error {
        Error::Resource { resource: self.name.clone(), message: e.to_string() }
    }
}

#[async_trait]
impl Resource for FilesystemResource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self) -> Result<(), Error> {
        self.fs.start().await.map_err(|e| self.err(e))
    }

    async fn stop(&self) -> Result<(), Error> {
        self.fs.stop().await.map_err(|e| self.err(e))
    }

    async fn monitor(&self) -> Result<ResourceState, Error> {
        let running = self.fs.is_running().map_err(|e| self.err(e))?;
        Ok(if running { ResourceState::Running } else { ResourceState::Stopped })
    }
}

//! `filesystem` resources: the replica's mount (see pbxha_replica::filesystem).

use std::sync::Arc;

use async_trait::async_trait;
use pbxha_replica::filesystem::{Filesystem, FilesystemSpec, DEFAULT_KILL_GRACE};

use super::{Resource, ResourceState};
use crate::config::FilesystemConfig;
use crate::Error;

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

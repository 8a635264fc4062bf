//! The resource group: the [`Resource`] trait every kind implements, the kinds that live in
//! this crate (`service`, `ocf`, `vip`), and the executor that starts them in order, stops them
//! in reverse, monitors them and restarts them locally before giving up.

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
    /// Tell the network again that this node holds the resource (gratuitous ARP for a VIP).
    /// Most kinds have nothing to announce.
    async fn reannounce(&self) -> Result<(), Error> {
        Ok(())
    }
}

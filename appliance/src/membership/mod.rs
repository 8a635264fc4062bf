//! Heartbeat membership: authenticated UDP heartbeats over one or more links.
//!
//! Parts: [`packet`] (the signed wire format, pure), [`boot`] (the persisted boot counter that
//! orders the daemon's starts), [`tracker`] (replay protection, sender
//! identity and per-link liveness, pure), [`authkey`] (the shared key file, refused unless
//! private) and [`link`] (the sockets, the sender and one receive task per link feeding
//! [`crate::fsm::Event::Heartbeat`]). Deciding that the peer is dead from silence on all links
//! is the fsm's job; this module only reports what arrived.

pub mod ask;
pub mod authkey;
pub mod boot;
pub mod link;
pub mod packet;
pub mod tracker;

pub use authkey::AuthKey;
pub use link::{Asker, IncomingAsk, LinkSetup, LinkStats, Links, LinksStats};
pub use packet::{decode, encode, Drop, Header, Packet};
pub use tracker::{DropCounters, Tracker, Verdict};

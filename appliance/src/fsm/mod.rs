//! The pure failover state machine.

mod event;

pub use event::*;

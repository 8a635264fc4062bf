//! SIP for pbxha: proving that a PBX's SIP stack answers, and standing in for one.
//!
//! Parts: [`options`] (the OPTIONS client: UDP with RFC 3261 retransmissions, or TCP;
//! responses matched by Via branch and Call-ID), [`verdict`] (the pure rule that turns a
//! probe outcome into alive, overloaded or failed), [`responder`] (a minimal stateless SIP
//! endpoint that answers OPTIONS and names its node, used by `pbxha lab` and the tests),
//! [`wire`] (parsing through rsipstack's maintained rsip fork, which accepts RFC 3261 §7.3.3
//! compact headers, and TCP stream framing), [`engine`] (many targets probed at once with
//! `rise`/`fall` hysteresis, for the daemon), [`hysteresis`] (that `rise`/`fall`, the one
//! the daemon's ping targets and the watchdog's checks use too) and [`Error`], the crate's
//! one error type.
//!
//! The PBX adapters: [`pbx`] (the [`Pbx`] trait, [`Calls`], systemd unit control),
//! [`asterisk`] (`asterisk -rx`) with [`ami`] (Asterisk Manager Interface over TCP),
//! [`freeswitch`] (`fs_cli -x`) and [`drain`] (the call drain before a planned switchover).

pub mod ami;
pub mod asterisk;
pub mod drain;
pub mod engine;
pub mod error;
pub mod freeswitch;
pub mod hysteresis;
pub mod options;
pub mod pbx;
pub mod responder;
pub mod verdict;
pub mod wire;

pub use error::Error;
pub use hysteresis::{Health, Hysteresis};
pub use options::{probe, OptionsResponse, Probe, Transport};
pub use pbx::{Calls, Drain, Pbx, PbxKind};
pub use responder::{Responder, ResponderConfig};
pub use verdict::{verdict, Policy, Verdict};

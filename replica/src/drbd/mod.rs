//! DRBD: configuration files ([`conf`]), status parsing ([`status`], [`events`]), control
//! through the command runner ([`control`]) and the promotion rules ([`promote`]).

pub mod conf;
pub mod control;
pub mod events;
pub mod promote;
pub mod status;

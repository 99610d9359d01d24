//! banger's guest agent: the wire protocol, the guest-side session that
//! serves it, and the host-side client.
//!
//! This crate is compiled into the static guest binary, so it must stay free
//! of host-only dependencies: the daemon depends on it, never the reverse.

pub mod client;
pub mod gitfiles;
pub mod identity;
pub mod init;
pub mod netconf;
pub mod pack;
pub mod ports;
pub mod protocol;
pub mod session;
pub mod sync;
pub mod unpack;
pub mod user;

//! banger's host side: the `banger` CLI and the per-user daemon `bangerd`.
//!
//! See `ARCHITECTURE.md` at the repository root for the map and the
//! invariants.

pub mod accel;
pub mod api;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod disk;
pub mod image;
pub mod install;
pub mod kernel;
pub mod lsp;
pub mod mcp;
pub mod net;
pub mod paths;
pub mod process;
pub mod project;
pub mod spec;
pub mod ssh;
pub mod store;
pub mod tool;
pub mod vmm;
pub mod workspace;

/// An error's message followed by its causes' (`a: b: c`), for errors shown
/// to a user whole.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

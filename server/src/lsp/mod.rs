//! `banger lsp`: the editor backend, a Language Server over stdio.
//!
//! A thin front end of bangerd: every VM operation goes through the
//! daemon's JSON-RPC API, as the CLI's do. It binds the editor's git
//! repository to a sandbox VM, keeps the guest workspace in step with the
//! host (sync on save and on changes seen on disk, coalesced), runs tests
//! and commands there with their output streamed and failures turned into
//! diagnostics, and brings the guest's edits back as one confirmed
//! `workspace/applyEdit`. The protocol is in `docs/lsp.md`.

pub mod detect;
pub mod edits;
pub mod matchers;
mod server;
pub mod settings;

pub use server::{OutputParams, StatusParams, serve};

/// The commands `workspace/executeCommand` takes.
pub const COMMANDS: &[&str] = &[
    "banger.runTests",
    "banger.exec",
    "banger.sync",
    "banger.applyGuestChanges",
    "banger.overwriteGuest",
    "banger.stop",
];

/// The code action kind of "Apply guest changes".
pub const APPLY_KIND: &str = "source.applyGuestChanges";

//! `banger lsp`: the editor backend, a Language Server over stdio.
//!
//! A thin front end of bangerd: every VM operation goes through the
//! daemon's JSON-RPC API, as the CLI's do. It binds the editor's git
//! repository to a sandbox VM, keeps the guest workspace in step with the
//! host (sync on save and on changes seen on disk, coalesced), runs tests
//! and commands there with their output streamed and failures turned into
//! diagnostics, and brings the guest's edits back as one confirmed
//! `workspace/applyEdit`. The protocol is in `docs/lsp.md`.

mod commands;
pub mod detect;
pub mod edits;
mod ext;
mod global_state;
mod handlers;
pub mod matchers;
pub mod places;
mod progress;
mod server;
pub mod settings;
mod sync;

pub use ext::{OutputParams, StatusParams};
pub use server::serve;

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

/// What a request that needs the sandbox says before one is bound.
pub(crate) const NOT_BOUND: &str = "no sandbox is bound to this repository yet: run the tests or a command in the sandbox (banger.runTests, banger.exec) to create and bind one, or name an existing VM with the banger.vm setting";

#[cfg(test)]
mod tests {
    /// Before a sandbox is bound, a request that needs one says how to get
    /// one.
    #[test]
    fn not_bound_says_how_to_bind() {
        for what in ["banger.runTests", "banger.exec", "banger.vm"] {
            assert!(super::NOT_BOUND.contains(what), "{what}");
        }
    }
}

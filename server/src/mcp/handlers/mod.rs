//! What each tool does, by what it handles (the tool declarations, their
//! names, descriptions and schemas, are in `server.rs`).

mod files;
mod review;
mod run;
mod sandbox;

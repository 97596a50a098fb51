//! The `swrouter` package's library part: the command line's definition, shared by the
//! `swrouter` binary and the `docgen` tool that makes its man pages and shell completions.

pub mod cli;

//! rshim: a containerd shim (runtime v2, runc) that removes four known outage classes by
//! construction (docs/bug-classes.md). See the README for the design and the layout.
//!
//! The binary's entry points (`daemon`, `delete`, `flags`, `info`, `logger`, `start`) are the
//! only public modules; `decode` re-exports the parsers the fuzz targets drive. Everything else
//! is private to the crate. `unsafe` is denied crate-wide and allowed only in the modules that
//! make raw syscalls, each with a SAFETY note at the call.

#![deny(unsafe_code)]

mod address;
mod blocking;
mod cgroup;
mod checkpoint;
mod connection;
mod container;
pub mod daemon;
pub mod delete;
mod error;
mod events;
mod exits;
pub mod flags;
pub mod info;
pub mod logger;
mod options;
mod process;
mod reply;
mod rootfs;
mod rpc;
mod server;
mod service;
pub mod start;
mod stdio;
mod sys;

/// The decoding paths of untrusted input, for the fuzz targets (`fuzz/`).
pub mod decode {
    pub use crate::options::RuncOptions;
    pub use crate::rootfs::parse_options;
    pub use crate::start::StartInput;
    pub use crate::stdio::binary_command_line as command_line;
}

pub const NAME: &str = "containerd-shim-rshim-v2";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

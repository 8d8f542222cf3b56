//! rshim: a containerd shim (runtime v2, runc) that removes four known outage classes by
//! construction. See the README for the design.

pub mod address;
pub mod binary_io;
pub mod cgroup;
pub mod checkpoint;
pub mod connection;
pub mod container;
pub mod daemon;
pub mod delete;
pub mod error;
pub mod events;
pub mod exits;
pub mod flags;
pub mod info;
pub mod logger;
pub mod options;
pub mod process;
pub mod rootfs;
pub mod rpc;
pub mod server;
pub mod service;
pub mod start;
pub mod stdio;

pub const NAME: &str = "containerd-shim-rshim-v2";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

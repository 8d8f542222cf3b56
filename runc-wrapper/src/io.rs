//! What runc's own stdin, stdout and stderr are for a call. For create, exec and restore they
//! are the process's (runc hands them on); the caller (the shim's stdio engine) creates those
//! pipes and has their readers running before runc is spawned (bug class 3).

use std::os::fd::OwnedFd;

/// runc's fds 0, 1, 2 for one call: None = /dev/null.
#[derive(Default)]
pub struct RuncStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

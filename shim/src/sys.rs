//! The one raw syscall the shim needs that neither std nor nix offers safely: kill(2) with any
//! signal number (nix's `Signal` has no real-time signals, which the Go shim passes through).

// Unsafe here (denied elsewhere in the crate): the libc call.
#![allow(unsafe_code)]

/// Sends `signal` (0..=64; 0 only checks that `pid` exists) to `pid`.
pub fn kill(pid: i32, signal: i32) -> nix::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(nix::errno::Errno::last())
    }
}

//! The shim's ttrpc server: the listening socket (inherited as fd 3, or `-socket`), clients of
//! another uid or gid refused (SO_PEERCRED) before a byte is read from them, one task per connection
//! (`connection`).
//!
//! Why not the `ttrpc` crate's server (its wire types are still used): containerd sends every
//! call on one connection and ttrpc has no cancel frame, so a Wait containerd gave up on stays
//! pending in the shim for as long as the process lives. The crate's server keeps about 1.7 KB
//! of its own state per pending request; here containerd's Waits are parked on their process
//! (`rpc::park_wait`) for a few dozen bytes each (bug class 1).

// Unsafe here (denied elsewhere in the crate): taking the listening socket inherited as fd 3.
#![allow(unsafe_code)]

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::connection;
use crate::error::{Error, Result};
use crate::service::TaskService;
use crate::start::LISTENER_FD;

/// The listener: `-socket PATH` if given, else the socket containerd's `start` passed as fd 3.
pub fn listener(socket: &str) -> Result<StdUnixListener> {
    let listener = if socket.is_empty() {
        // SAFETY: fd 3 is the listening socket `start` bound and passed to us; we own it.
        let listener = unsafe { StdUnixListener::from_raw_fd(LISTENER_FD) };
        // Inherited without close-on-exec: set it, or every runc (and whatever runc runs)
        // would hold the socket open, and a dead shim would still seem to answer on it.
        nix::fcntl::fcntl(
            LISTENER_FD,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| Error::io("set close-on-exec on the listener", e.into()))?;
        listener
    } else {
        let path = socket.strip_prefix("unix://").unwrap_or(socket);
        let _ = std::fs::remove_file(path);
        StdUnixListener::bind(path).map_err(|e| Error::io(format!("listen on {path}"), e))?
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("set listener non-blocking", e))?;
    Ok(listener)
}

/// The running server; `shutdown` stops it.
pub struct Server {
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Server {
    /// Stops accepting, lets each connection deliver the replies in flight (briefly), closes
    /// them all, and returns when they are gone.
    pub async fn shutdown(&mut self) {
        self.stop.send_replace(true);
        let _ = (&mut self.accept).await;
    }
}

pub async fn serve(listener: StdUnixListener, svc: &Arc<TaskService>) -> Result<Server> {
    let listener =
        UnixListener::from_std(listener).map_err(|e| Error::io("register listener", e))?;
    let (stop, stopped) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(listener, svc.clone(), stopped));
    Ok(Server { stop, accept })
}

async fn accept_loop(
    listener: UnixListener,
    svc: Arc<TaskService>,
    mut stop: watch::Receiver<bool>,
) {
    // The same user and group as the shim, as ttrpc's UnixSocketRequireSameUser checks.
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match stream.peer_cred() {
                    Ok(cred) if cred.uid() == uid && cred.gid() == gid => {
                        connections.spawn(connection::serve(stream, svc.clone(), stop.clone()));
                    }
                    Ok(cred) => log::warn!(
                        "refused ttrpc client pid {:?} uid {} gid {}: only uid {uid} gid {gid} may connect",
                        cred.pid(),
                        cred.uid(),
                        cred.gid()
                    ),
                    Err(e) => log::warn!("refused ttrpc client: no peer credentials: {e}"),
                },
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    while connections.join_next().await.is_some() {}
}

//! The shim's ttrpc server: the listening socket (inherited as fd 3, or `-socket`), with
//! clients of another uid refused (SO_PEERCRED) before ttrpc reads a byte from them.
//!
//! The `ttrpc` crate's server reads requests in one task and writes responses in another, so a
//! client that does not read its responses cannot stop the shim from reading (bug class 2 on
//! the server side); each handler runs in its own task.

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use ttrpc::asynchronous::transport::Listener;
use ttrpc::r#async::Server;

use crate::error::{Error, Result};
use crate::rpc;
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

/// Accepts connections of our own uid only.
fn peer_checked(listener: UnixListener) -> Listener {
    let uid = nix::unistd::geteuid().as_raw();
    let accepted = futures::stream::unfold(listener, move |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match stream.peer_cred() {
                    Ok(cred) if cred.uid() == uid => return Some((Ok(stream), listener)),
                    Ok(cred) => log::warn!(
                        "refused ttrpc client pid {:?} uid {}: only uid {uid} may connect",
                        cred.pid(),
                        cred.uid()
                    ),
                    Err(e) => log::warn!("refused ttrpc client: no peer credentials: {e}"),
                },
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Listener::new(accepted)
}

pub async fn serve(listener: StdUnixListener, svc: &Arc<TaskService>) -> Result<Server> {
    let listener =
        UnixListener::from_std(listener).map_err(|e| Error::io("register listener", e))?;
    let mut server = Server::new()
        .add_listener(peer_checked(listener))
        .register_service(rpc::services(svc));
    server
        .start()
        .await
        .map_err(|e| Error::Internal(format!("start ttrpc server: {e}")))?;
    Ok(server)
}

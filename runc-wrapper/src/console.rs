use std::os::fd::{FromRawFd, OwnedFd};
pub struct ConsoleSocket { _dir: std::path::PathBuf, path: std::path::PathBuf, listener: tokio::net::UnixListener }
impl ConsoleSocket {
    pub fn new() -> std::io::Result<ConsoleSocket> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("pty-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("pty.sock");
        let listener = tokio::net::UnixListener::bind(&path)?;
        Ok(ConsoleSocket { _dir: dir, path, listener })
    }
    pub fn path(&self) -> &std::path::Path { &self.path }
    pub async fn receive(&self, timeout: std::time::Duration) -> Result<OwnedFd, crate::Error> {
        let fut = async {
            let (stream, _) = self.listener.accept().await.map_err(|e| crate::Error::Parse(e.to_string()))?;
            let std = stream.into_std().map_err(|e| crate::Error::Parse(e.to_string()))?;
            std.set_nonblocking(false).ok();
            tokio::task::spawn_blocking(move || {
                use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
                let mut buf = [0u8; 4096];
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
                let msg = recvmsg::<()>(std::os::fd::AsRawFd::as_raw_fd(&std), &mut iov, Some(&mut cmsg), MsgFlags::empty()).map_err(|e| crate::Error::Parse(e.to_string()))?;
                for c in msg.cmsgs().map_err(|e| crate::Error::Parse(e.to_string()))? { if let ControlMessageOwned::ScmRights(fds) = c { if let Some(fd) = fds.first() { return Ok(unsafe { OwnedFd::from_raw_fd(*fd) }); } } }
                Err(crate::Error::Parse("no fd received".into()))
            }).await.map_err(|e| crate::Error::Parse(e.to_string()))?
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| crate::Error::Timeout { command: "console socket".into(), after: timeout })?
    }
}
impl Drop for ConsoleSocket { fn drop(&mut self) { let _ = std::fs::remove_dir_all(&self._dir); } }

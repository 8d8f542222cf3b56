use std::os::fd::OwnedFd;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
#[derive(Default)] pub struct RuncStdio { pub stdin: Option<OwnedFd>, pub stdout: Option<OwnedFd>, pub stderr: Option<OwnedFd> }
type Dest = Box<dyn AsyncWrite + Send + Unpin>;
pub struct ProcessPipes { runc: RuncStdio, stdin: Option<tokio::net::unix::pipe::Sender>, out: Option<oneshot::Sender<Dest>>, err: Option<oneshot::Sender<Dest>>, done: Vec<watch::Receiver<bool>> }
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> { nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Into::into) }
fn drain(r: OwnedFd) -> std::io::Result<(oneshot::Sender<Dest>, watch::Receiver<bool>)> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(r)?;
    let (dtx, mut drx) = oneshot::channel::<Dest>();
    let (done_tx, done_rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut pending: Vec<u8> = Vec::new();
        let mut dest: Option<Dest> = None;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            tokio::select! {
                d = &mut drx, if dest.is_none() => { if let Ok(mut d) = d { let _ = d.write_all(&pending).await; pending.clear(); dest = Some(d); } }
                n = rx.read(&mut buf) => {
                    match n { Ok(0) | Err(_) => break, Ok(n) => match &mut dest { Some(d) => { if d.write_all(&buf[..n]).await.is_err() { break } } None => pending.extend_from_slice(&buf[..n]) } }
                }
            }
        }
        if dest.is_none() { if let Ok(mut d) = drx.await { let _ = d.write_all(&pending).await; dest = Some(d); } }
        if let Some(mut d) = dest { let _ = d.flush().await; }
        let _ = done_tx.send(true);
    });
    Ok((dtx, done_rx))
}
impl ProcessPipes {
    pub fn new(stdin: bool, stdout: bool, stderr: bool, _owner: Option<(u32, u32)>) -> std::io::Result<ProcessPipes> {
        let mut p = ProcessPipes { runc: RuncStdio::default(), stdin: None, out: None, err: None, done: Vec::new() };
        if stdin { let (r, w) = pipe()?; p.runc.stdin = Some(r); p.stdin = Some(tokio::net::unix::pipe::Sender::from_owned_fd(w)?); }
        if stdout { let (r, w) = pipe()?; p.runc.stdout = Some(w); let (t, d) = drain(r)?; p.out = Some(t); p.done.push(d); }
        if stderr { let (r, w) = pipe()?; p.runc.stderr = Some(w); let (t, d) = drain(r)?; p.err = Some(t); p.done.push(d); }
        Ok(p)
    }
    pub fn take_runc_stdio(&mut self) -> RuncStdio { std::mem::take(&mut self.runc) }
    pub fn take_stdin(&mut self) -> Option<tokio::net::unix::pipe::Sender> { self.stdin.take() }
    pub fn attach_stdout(&mut self, dest: Dest) { if let Some(t) = self.out.take() { let _ = t.send(dest); } }
    pub fn attach_stderr(&mut self, dest: Dest) { if let Some(t) = self.err.take() { let _ = t.send(dest); } }
    pub fn drained(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let done = self.done.clone();
        async move { for mut d in done { let _ = d.wait_for(|v| *v).await; } }
    }
}

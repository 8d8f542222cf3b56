//! What a row is (the `FaultRow` trait), what it runs in (`Env`), and how its verdicts become a
//! line of the table (`Outcome`).

use rshim_integration::containerd::{Options, PrivateContainerd};
use rshim_integration::events::EventCapture;
use rshim_integration::Runtime;

use crate::helpers::Cell;

/// Which containerd a row runs against. The rows run in table order, and the shared containerd
/// only moves forward through these: events captured, then not, then stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// The shared containerd, with `ctr events` captured (`Env::events`).
    Shared,
    /// The shared containerd, which the row restarts: the event capture is stopped first.
    SharedRestartable,
    /// A containerd of the row's own making: the shared one is stopped first.
    Own,
}

/// One row of the table: a bug class run against the Go shim and rshim.
pub trait FaultRow {
    /// Its number, as `--rows` names it and the table's scenario column starts.
    fn number(&self) -> u8;
    /// The rest of the scenario column.
    fn title(&self) -> &'static str;
    /// Which containerd it needs.
    fn setup(&self) -> Setup {
        Setup::Shared
    }
    /// Runs the scenario for both shims (usually `both(|rt| ...)`): the row's cells.
    fn measure(&self, env: &mut Env) -> Outcome;
}

/// A measured row: the Go shim's cell (printed, not asserted) and rshim's (asserted).
pub struct Outcome {
    pub go: String,
    pub rshim: String,
    pub rshim_pass: bool,
}

/// Runs `run` for the Go shim, then for rshim; an error becomes the cell's text and fails it.
pub fn both(mut run: impl FnMut(Runtime) -> anyhow::Result<Cell>) -> Outcome {
    let mut cell = |rt| run(rt).unwrap_or_else(|e| (format!("error: {e:#}"), false));
    let go = cell(Runtime::Go);
    let rshim = cell(Runtime::Rshim);
    Outcome {
        go: go.0,
        rshim: rshim.0,
        rshim_pass: rshim.1,
    }
}

/// What the rows run in: the storm's round count, a tokio runtime for the async rows, and the
/// shared containerd with its event capture, started when a row first needs them.
pub struct Env {
    pub rounds: usize,
    // Fields drop in this order: the event capture before its containerd.
    events: Option<EventCapture>,
    containerd: Option<PrivateContainerd>,
    tokio: tokio::runtime::Runtime,
}

impl Env {
    pub fn new(rounds: usize) -> anyhow::Result<Env> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(Env {
            rounds,
            events: None,
            containerd: None,
            tokio,
        })
    }

    /// Brings the shared containerd to what `setup` needs.
    pub fn prepare(&mut self, setup: Setup) -> anyhow::Result<()> {
        if setup != Setup::Shared {
            self.events = None;
        }
        if setup == Setup::Own {
            self.containerd = None;
            return Ok(());
        }
        if self.containerd.is_none() {
            let c = PrivateContainerd::start(Options::default())?;
            c.import_busybox()?;
            self.containerd = Some(c);
        }
        if setup == Setup::Shared && self.events.is_none() {
            self.events = Some(EventCapture::start(&self.containerd().address)?);
        }
        Ok(())
    }

    /// The shared containerd (for rows whose setup is not `Own`).
    pub fn containerd(&self) -> &PrivateContainerd {
        self.containerd
            .as_ref()
            .expect("a row of Setup::Own has no shared containerd")
    }

    pub fn containerd_mut(&mut self) -> &mut PrivateContainerd {
        self.containerd
            .as_mut()
            .expect("a row of Setup::Own has no shared containerd")
    }

    /// The shared containerd's events (for rows of `Setup::Shared`).
    pub fn events(&self) -> &EventCapture {
        self.events
            .as_ref()
            .expect("only rows of Setup::Shared have the event capture")
    }

    pub fn tokio(&self) -> &tokio::runtime::Runtime {
        &self.tokio
    }
}

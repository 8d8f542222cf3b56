//! cgroups: where a container's cgroup is, its metrics for Stats, its OOM kills, and moving the
//! shim itself into `ShimCgroup`.
//!
//! The metrics are read straight from the kernel's files rather than through `cgroups-rs`:
//! its 0.3 line unwraps on cgroup v2 hosts without swap accounting and its later lines pull in
//! a D-Bus stack; the files are few and their formats documented.

mod files;
pub mod metrics_v1;
pub mod metrics_v2;
pub mod oom;
pub mod paths;
mod placement;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

pub use oom::OomWatch;
pub use paths::Cgroup;
pub use placement::add_process;

use crate::error::{Error, Result};

/// The container's metrics as containerd's Stats returns them: an `Any` of
/// `io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`.
pub fn stats(cgroup: &Cgroup) -> Result<Any> {
    let gone = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(format!("cgroup no longer exists: {e}"))
        } else {
            Error::io("read cgroup metrics", e)
        }
    };
    let (type_url, value) = match cgroup {
        Cgroup::V1(_) => {
            if !cgroup.exists() {
                return Err(Error::NotFound("cgroup no longer exists".into()));
            }
            let m = metrics_v1::collect(cgroup).map_err(gone)?;
            ("io.containerd.cgroups.v1.Metrics", m.write_to_bytes())
        }
        Cgroup::V2(dir) => {
            let m = metrics_v2::collect(dir).map_err(gone)?;
            ("io.containerd.cgroups.v2.Metrics", m.write_to_bytes())
        }
    };
    Ok(Any {
        type_url: type_url.to_string(),
        value: value.map_err(|e| Error::Internal(format!("encode metrics: {e}")))?,
        ..Default::default()
    })
}

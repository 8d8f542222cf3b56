//! Checkpoint and restore with CRIU through runc, as the Go shim does them: what containerd's
//! `CheckpointOptions` and a Create with `checkpoint`/`parent_checkpoint` become on runc's
//! command line, and how a failed dump is reported (CRIU's `dump.log` copied into the bundle as
//! `criu-dump.log`, the error naming it).

use std::path::{Path, PathBuf};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::CheckpointOptions;
use runc_wrapper::{CheckpointOpts, CriuOpts, RestoreOpts};

use crate::error::{Error, Result};
use crate::options::RuncOptions;

const CHECKPOINT_OPTIONS_TYPE: &str = "containerd.runc.v1.CheckpointOptions";

/// The `CheckpointOptions` of a Checkpoint request (none: all defaults).
pub fn parse_options(any: Option<&Any>) -> Result<CheckpointOptions> {
    let Some(any) = any.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(CheckpointOptions::new());
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name != CHECKPOINT_OPTIONS_TYPE {
        return Err(Error::InvalidArgument(format!(
            "unsupported checkpoint options type {:?} (expected {CHECKPOINT_OPTIONS_TYPE})",
            any.type_url
        )));
    }
    CheckpointOptions::parse_from_bytes(&any.value)
        .map_err(|e| Error::InvalidArgument(format!("invalid checkpoint options: {e}")))
}

/// Where CRIU works during a dump: the requested work path, else `criu-work` in the bundle
/// (removed afterwards, as in the Go shim).
pub struct WorkDir {
    pub path: PathBuf,
    temporary: bool,
}

impl WorkDir {
    pub fn for_dump(options: &CheckpointOptions, runc: &RuncOptions, bundle: &Path) -> WorkDir {
        let requested = [options.work_path.as_str(), runc.criu_work_path.as_str()]
            .into_iter()
            .find(|p| !p.is_empty());
        match requested {
            Some(p) => WorkDir {
                path: PathBuf::from(p),
                temporary: false,
            },
            None => WorkDir {
                path: bundle.join("criu-work"),
                temporary: true,
            },
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// runc's checkpoint options for a request: the image goes to the request's `path` (or the
/// options' `image_path`, or the runtime's `CriuImagePath`); the container keeps running unless
/// `exit` is set.
pub fn checkpoint_opts(
    request_path: &str,
    options: &CheckpointOptions,
    runc: &RuncOptions,
    work: &Path,
) -> Result<CheckpointOpts> {
    let image = [
        request_path,
        options.image_path.as_str(),
        runc.criu_image_path.as_str(),
    ]
    .into_iter()
    .find(|p| !p.is_empty())
    .ok_or_else(|| Error::InvalidArgument("checkpoint needs an image path".into()))?;
    Ok(CheckpointOpts {
        criu: CriuOpts {
            image_path: Some(PathBuf::from(image)),
            work_path: Some(work.to_path_buf()),
            parent_path: None,
            tcp_established: options.open_tcp,
            external_unix_sockets: options.external_unix_sockets,
            shell_job: options.terminal,
            file_locks: options.file_locks,
            empty_namespaces: options.empty_namespaces.clone(),
            cgroups_mode: Some(options.cgroups_mode.clone()).filter(|m| !m.is_empty()),
        },
        leave_running: !options.exit,
    })
}

/// What a Create with a checkpoint keeps for Start, which restores instead of starting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSpec {
    pub image: PathBuf,
    pub parent: Option<PathBuf>,
    pub work: Option<PathBuf>,
}

impl RestoreSpec {
    pub fn from_create(checkpoint: &str, parent: &str, runc: &RuncOptions) -> Option<RestoreSpec> {
        if checkpoint.is_empty() {
            return None;
        }
        let some = |p: &str| Some(PathBuf::from(p)).filter(|p| !p.as_os_str().is_empty());
        Some(RestoreSpec {
            image: PathBuf::from(checkpoint),
            parent: some(parent),
            work: some(&runc.criu_work_path),
        })
    }

    /// runc's restore options (detached, no subreaper: the shim is the subreaper).
    pub fn restore_opts(&self, bundle: &Path, runc: &RuncOptions) -> RestoreOpts {
        RestoreOpts {
            criu: CriuOpts {
                image_path: Some(self.image.clone()),
                // As the Go shim: CRIU works in CriuWorkPath, else the bundle.
                work_path: Some(self.work.clone().unwrap_or_else(|| bundle.to_path_buf())),
                parent_path: self.parent.clone(),
                ..Default::default()
            },
            detach: true,
            pid_file: Some(bundle.join("init.pid")),
            no_pivot: runc.no_pivot_root,
            no_subreaper: true,
            ..Default::default()
        }
    }
}

/// After a failed dump: CRIU's log copied into the bundle, and the error that names it, in the
/// Go shim's words (`runc did not terminate successfully: exit status N: <runc's first line>
/// path= <log>`), which tools and people already recognise.
pub fn dump_failed(err: runc_wrapper::Error, work: &Path, bundle: &Path) -> Error {
    let copy = bundle.join("criu-dump.log");
    if let Err(e) = std::fs::copy(work.join("dump.log"), &copy) {
        log::warn!("copy CRIU's dump.log to {}: {e}", copy.display());
    }
    let text = match err {
        runc_wrapper::Error::Failed {
            status, message, ..
        } => format!("runc did not terminate successfully: exit status {status}: {message}"),
        timeout @ runc_wrapper::Error::Timeout { .. } => {
            return Error::DeadlineExceeded(format!("{timeout} path= {}", copy.display()))
        }
        other => other.to_string(),
    };
    let first = text.lines().next().unwrap_or_default();
    Error::Internal(format!("{first} path= {}", copy.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(o: &CheckpointOpts) -> String {
        runc_wrapper::args::checkpoint("c1", o).join(" ")
    }

    #[test]
    fn containerds_options_on_runcs_command_line() {
        let runc = RuncOptions::default();
        let all = CheckpointOptions {
            exit: true,
            open_tcp: true,
            external_unix_sockets: true,
            terminal: true,
            file_locks: true,
            empty_namespaces: vec!["network".into()],
            cgroups_mode: "soft".into(),
            ..Default::default()
        };
        let o = checkpoint_opts("/ckpt", &all, &runc, Path::new("/work")).unwrap();
        assert_eq!(
            args(&o),
            "checkpoint --image-path /ckpt --work-path /work --tcp-established --ext-unix-sk \
             --shell-job --file-locks --empty-ns network --manage-cgroups-mode soft c1"
        );
        // Defaults: leave it running; the image path from the options or the runtime.
        let none = CheckpointOptions::new();
        let o = checkpoint_opts("/ckpt", &none, &runc, Path::new("/w")).unwrap();
        assert_eq!(
            args(&o),
            "checkpoint --image-path /ckpt --work-path /w --leave-running c1"
        );
        let runc = RuncOptions {
            criu_image_path: "/images".into(),
            ..Default::default()
        };
        let o = checkpoint_opts("", &none, &runc, Path::new("/w")).unwrap();
        assert!(args(&o).contains("--image-path /images"));
        let err = checkpoint_opts("", &none, &RuncOptions::default(), Path::new("/w"));
        assert!(matches!(err, Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn restore_arguments() {
        let runc = RuncOptions {
            criu_work_path: "/criu-work".into(),
            no_pivot_root: true,
            ..Default::default()
        };
        assert_eq!(RestoreSpec::from_create("", "", &runc), None);
        let spec = RestoreSpec::from_create("/ckpt", "/parent", &runc).unwrap();
        let opts = spec.restore_opts(Path::new("/b"), &runc);
        assert_eq!(
            runc_wrapper::args::restore("c1", Path::new("/b"), &opts).join(" "),
            "restore --bundle /b --image-path /ckpt --work-path /criu-work --parent-path /parent \
             --detach --pid-file /b/init.pid --no-pivot --no-subreaper c1"
        );
    }

    #[test]
    fn options_types() {
        assert_eq!(parse_options(None).unwrap(), CheckpointOptions::new());
        let wrong = Any {
            type_url: "containerd.runc.v1.Options".into(),
            ..Default::default()
        };
        assert!(matches!(
            parse_options(Some(&wrong)),
            Err(Error::InvalidArgument(_))
        ));
        let ok = Any {
            type_url: CHECKPOINT_OPTIONS_TYPE.into(),
            value: CheckpointOptions {
                exit: true,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap(),
            ..Default::default()
        };
        assert!(parse_options(Some(&ok)).unwrap().exit);
    }

    #[test]
    fn work_dir_choice() {
        let bundle = Path::new("/b");
        let none = CheckpointOptions::new();
        let w = WorkDir::for_dump(&none, &RuncOptions::default(), bundle);
        assert_eq!(w.path, Path::new("/b/criu-work"));
        let asked = CheckpointOptions {
            work_path: "/w".into(),
            ..Default::default()
        };
        let w = WorkDir::for_dump(&asked, &RuncOptions::default(), bundle);
        assert_eq!(w.path, Path::new("/w"));
        std::mem::forget(w);
    }
}

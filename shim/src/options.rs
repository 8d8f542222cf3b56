//! Runtime options: decoded from containerd's `Any`, saved in the bundle (`options.json`,
//! `runtime`) so that the `delete` action can find runc after the shim died.

use std::path::{Path, PathBuf};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options as RuncOptionsProto;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// containerd's default runc root; runc state lives in `<root>/<namespace>`.
pub const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";
pub const OPTIONS_FILE: &str = "options.json";
pub const RUNTIME_FILE: &str = "runtime";

/// The runc options containerd may send (`containerd.runc.v1.Options`), with the JSON names the
/// Go shim writes to `options.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuncOptions {
    #[serde(skip_serializing_if = "is_false")]
    pub no_pivot_root: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub no_new_keyring: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub shim_cgroup: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub io_uid: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub io_gid: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub binary_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub root: String,
    #[serde(skip_serializing_if = "is_false")]
    pub systemd_cgroup: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub criu_image_path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub criu_work_path: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";
const LEGACY_RUNC_OPTIONS_TYPE: &str = "containerd.linux.runc.RuncOptions";
/// What CRI (and `ctr --runtime-config-path`) send to a runtime type other than
/// `io.containerd.runc.*`: a TOML file's path (field 2) or its text (field 3).
const GENERIC_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

impl RuncOptions {
    /// Decodes the `options` of a Create request (or the `start` action's stdin). An absent or
    /// empty `Any` means defaults.
    pub fn from_any(any: Option<&Any>) -> Result<RuncOptions> {
        let Some(any) = any.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
            return Ok(RuncOptions::default());
        };
        let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
        match type_name {
            RUNC_OPTIONS_TYPE | LEGACY_RUNC_OPTIONS_TYPE => {
                let p = RuncOptionsProto::parse_from_bytes(&any.value).map_err(|e| {
                    Error::InvalidArgument(format!("invalid runc options ({}): {e}", any.type_url))
                })?;
                Ok(RuncOptions {
                    no_pivot_root: p.no_pivot_root,
                    no_new_keyring: p.no_new_keyring,
                    shim_cgroup: p.shim_cgroup,
                    io_uid: p.io_uid,
                    io_gid: p.io_gid,
                    binary_name: p.binary_name,
                    root: p.root,
                    systemd_cgroup: p.systemd_cgroup,
                    criu_image_path: p.criu_image_path,
                    criu_work_path: p.criu_work_path,
                })
            }
            GENERIC_OPTIONS_TYPE => {
                let (path, body) = decode_generic(&any.value)?;
                let text = match (path.is_empty(), body.is_empty()) {
                    (false, _) => read_options_file(&path)?,
                    (true, false) => String::from_utf8(body)
                        .map_err(|_| Error::InvalidArgument("runtime options body is not UTF-8".into()))?,
                    (true, true) => return Ok(RuncOptions::default()),
                };
                RuncOptions::from_toml(&text)
            }
            other => Err(Error::InvalidArgument(format!(
                "unsupported runtime options type {other:?} (expected {RUNC_OPTIONS_TYPE} or {GENERIC_OPTIONS_TYPE})"
            ))),
        }
    }

    /// The runc options as TOML, with the field names containerd's config uses
    /// (`BinaryName`, `SystemdCgroup`, ...) or their snake_case forms.
    pub fn from_toml(text: &str) -> Result<RuncOptions> {
        let table: toml::Table = text
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("runtime options TOML: {e}")))?;
        let get = |pascal: &str, snake: &str| table.get(pascal).or_else(|| table.get(snake));
        let string = |pascal: &str, snake: &str| -> Result<String> {
            match get(pascal, snake) {
                None => Ok(String::new()),
                Some(toml::Value::String(s)) => Ok(s.clone()),
                Some(v) => Err(Error::InvalidArgument(format!(
                    "runtime option {pascal} must be a string, not a {}",
                    v.type_str()
                ))),
            }
        };
        let boolean = |pascal: &str, snake: &str| -> Result<bool> {
            match get(pascal, snake) {
                None => Ok(false),
                Some(toml::Value::Boolean(b)) => Ok(*b),
                Some(v) => Err(Error::InvalidArgument(format!(
                    "runtime option {pascal} must be a boolean, not a {}",
                    v.type_str()
                ))),
            }
        };
        let number = |pascal: &str, snake: &str| -> Result<u32> {
            match get(pascal, snake) {
                None => Ok(0),
                Some(toml::Value::Integer(n)) => u32::try_from(*n).map_err(|_| {
                    Error::InvalidArgument(format!("runtime option {pascal} out of range: {n}"))
                }),
                Some(v) => Err(Error::InvalidArgument(format!(
                    "runtime option {pascal} must be a number, not a {}",
                    v.type_str()
                ))),
            }
        };
        Ok(RuncOptions {
            no_pivot_root: boolean("NoPivotRoot", "no_pivot_root")?,
            no_new_keyring: boolean("NoNewKeyring", "no_new_keyring")?,
            shim_cgroup: string("ShimCgroup", "shim_cgroup")?,
            io_uid: number("IoUid", "io_uid")?,
            io_gid: number("IoGid", "io_gid")?,
            binary_name: string("BinaryName", "binary_name")?,
            root: string("Root", "root")?,
            systemd_cgroup: boolean("SystemdCgroup", "systemd_cgroup")?,
            criu_image_path: string("CriuImagePath", "criu_image_path")?,
            criu_work_path: string("CriuWorkPath", "criu_work_path")?,
        })
    }

    pub fn binary(&self) -> PathBuf {
        PathBuf::from(if self.binary_name.is_empty() {
            "runc"
        } else {
            &self.binary_name
        })
    }

    /// runc's `--root` for a namespace.
    pub fn runc_root(&self, namespace: &str) -> PathBuf {
        let root = if self.root.is_empty() {
            DEFAULT_RUNC_ROOT
        } else {
            &self.root
        };
        Path::new(root).join(namespace)
    }

    pub fn io_owner(&self) -> Option<(u32, u32)> {
        (self.io_uid != 0 || self.io_gid != 0).then_some((self.io_uid, self.io_gid))
    }

    /// Writes `options.json` and `runtime` (the binary name, as the Go shim does for history's sake).
    pub fn save(&self, bundle: &Path) -> Result<()> {
        let json = serde_json::to_vec(self)
            .map_err(|e| Error::Internal(format!("encode options: {e}")))?;
        write_file(&bundle.join(OPTIONS_FILE), &json)?;
        write_file(&bundle.join(RUNTIME_FILE), self.binary_name.as_bytes())
    }

    /// Reads what `save` wrote; missing files mean defaults.
    pub fn load(bundle: &Path) -> Result<RuncOptions> {
        let mut opts = match std::fs::read(bundle.join(OPTIONS_FILE)) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| {
                Error::InvalidArgument(format!(
                    "invalid {}: {e}",
                    bundle.join(OPTIONS_FILE).display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RuncOptions::default(),
            Err(e) => {
                return Err(Error::io(
                    format!("read {}", bundle.join(OPTIONS_FILE).display()),
                    e,
                ))
            }
        };
        if opts.binary_name.is_empty() {
            if let Ok(name) = std::fs::read_to_string(bundle.join(RUNTIME_FILE)) {
                opts.binary_name = name.trim().to_string();
            }
        }
        Ok(opts)
    }
}

/// Largest runtime options file read (a TOML of a dozen keys).
const MAX_OPTIONS_FILE: u64 = 1 << 20;

/// The options file CRI names: a regular file, read up to `MAX_OPTIONS_FILE` (a path such as
/// /dev/zero must not stall Create or exhaust memory). Opened non-blocking: the open of a
/// FIFO without a writer would otherwise block a runtime worker forever, before the type check.
fn read_options_file(path: &str) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let invalid = |e: String| Error::InvalidArgument(format!("runtime options file {path}: {e}"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| invalid(e.to_string()))?;
    let meta = file.metadata().map_err(|e| invalid(e.to_string()))?;
    if !meta.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    let mut text = String::new();
    file.take(MAX_OPTIONS_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| invalid(e.to_string()))?;
    if text.len() as u64 > MAX_OPTIONS_FILE {
        return Err(invalid(format!("larger than {MAX_OPTIONS_FILE} bytes")));
    }
    Ok(text)
}

/// `runtimeoptions.v1.Options`: (config_path = 2, config_body = 3); type_url = 1 is ignored.
fn decode_generic(bytes: &[u8]) -> Result<(String, Vec<u8>)> {
    let bad = |e: containerd_shim_protos::protobuf::Error| {
        Error::InvalidArgument(format!("invalid runtimeoptions.v1.Options: {e}"))
    };
    let mut input = containerd_shim_protos::protobuf::CodedInputStream::from_bytes(bytes);
    let (mut path, mut body) = (String::new(), Vec::new());
    const CONFIG_PATH: u32 = (2 << 3) | 2; // field 2, length-delimited
    const CONFIG_BODY: u32 = (3 << 3) | 2; // field 3, length-delimited
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(bad)? {
        match tag {
            CONFIG_PATH => path = input.read_string().map_err(bad)?,
            CONFIG_BODY => body = input.read_bytes().map_err(bad)?,
            other => input
                .skip_field(
                    containerd_shim_protos::protobuf::rt::WireType::new(other & 7).ok_or_else(
                        || {
                            Error::InvalidArgument(format!(
                                "invalid runtimeoptions.v1.Options: wire type {}",
                                other & 7
                            ))
                        },
                    )?,
                )
                .map_err(bad)?,
        }
    }
    Ok((path, body))
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_of(opts: &RuncOptionsProto) -> Any {
        Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_runc_options() {
        let mut p = RuncOptionsProto::new();
        p.binary_name = "/usr/local/bin/crun".into();
        p.root = "/run/custom".into();
        p.systemd_cgroup = true;
        p.io_uid = 1000;
        let o = RuncOptions::from_any(Some(&any_of(&p))).unwrap();
        assert_eq!(o.binary(), PathBuf::from("/usr/local/bin/crun"));
        assert_eq!(o.runc_root("k8s.io"), PathBuf::from("/run/custom/k8s.io"));
        assert!(o.systemd_cgroup);
        assert_eq!(o.io_owner(), Some((1000, 0)));
    }

    #[test]
    fn defaults_and_errors() {
        let o = RuncOptions::from_any(None).unwrap();
        assert_eq!(o.binary(), PathBuf::from("runc"));
        assert_eq!(
            o.runc_root("default"),
            PathBuf::from("/run/containerd/runc/default")
        );
        let bad = Any {
            type_url: "example.com/Unknown".into(),
            value: vec![1],
            ..Default::default()
        };
        assert!(matches!(
            RuncOptions::from_any(Some(&bad)),
            Err(Error::InvalidArgument(_))
        ));
        let garbage = Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: vec![0xff, 0xff],
            ..Default::default()
        };
        assert!(matches!(
            RuncOptions::from_any(Some(&garbage)),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn generic_options_point_at_a_toml_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rshim.toml");
        std::fs::write(
            &file,
            "BinaryName = \"/usr/local/bin/crun\"\nSystemdCgroup = true\nio_uid = 7\n",
        )
        .unwrap();
        // ctr --runtime-config-path sends field 2 (config_path).
        let path = file.to_string_lossy();
        let mut value = vec![0x12, path.len() as u8];
        value.extend_from_slice(path.as_bytes());
        let any = Any {
            type_url: GENERIC_OPTIONS_TYPE.into(),
            value,
            ..Default::default()
        };
        let o = RuncOptions::from_any(Some(&any)).unwrap();
        assert_eq!(
            (o.binary_name.as_str(), o.systemd_cgroup, o.io_uid),
            ("/usr/local/bin/crun", true, 7)
        );
        // Field 3: the TOML text itself.
        let body = b"Root = \"/run/r\"";
        let mut value = vec![0x1a, body.len() as u8];
        value.extend_from_slice(body);
        let any = Any {
            type_url: GENERIC_OPTIONS_TYPE.into(),
            value,
            ..Default::default()
        };
        assert_eq!(RuncOptions::from_any(Some(&any)).unwrap().root, "/run/r");
        // Errors say what is wrong.
        let err = RuncOptions::from_toml("SystemdCgroup = \"yes\"").unwrap_err();
        assert!(
            err.to_string().contains("SystemdCgroup must be a boolean"),
            "{err}"
        );
        let missing = Any {
            type_url: GENERIC_OPTIONS_TYPE.into(),
            value: vec![0x12, 2, b'/', b'x'],
            ..Default::default()
        };
        assert!(matches!(
            RuncOptions::from_any(Some(&missing)),
            Err(Error::InvalidArgument(_))
        ));
        // A device instead of a file: refused at once, never read forever.
        let zero = Any {
            type_url: GENERIC_OPTIONS_TYPE.into(),
            value: [&[0x12, 9][..], b"/dev/zero"].concat(),
            ..Default::default()
        };
        let err = RuncOptions::from_any(Some(&zero)).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_fifo_as_options_file_is_refused_without_blocking() {
        // A FIFO nobody writes to: a blocking open would never return. Run in a thread so
        // that a regression fails the test instead of hanging it.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("options.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let path = fifo.to_string_lossy().into_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(
                read_options_file(&path)
                    .map(drop)
                    .map_err(|e| e.to_string()),
            );
        });
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO as the options file blocked");
        assert!(result.unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let o = RuncOptions {
            binary_name: "crun".into(),
            root: "/r".into(),
            ..Default::default()
        };
        o.save(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("runtime")).unwrap(),
            "crun"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("options.json")).unwrap(),
            r#"{"binary_name":"crun","root":"/r"}"#
        );
        assert_eq!(RuncOptions::load(dir.path()).unwrap(), o);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            RuncOptions::load(empty.path()).unwrap(),
            RuncOptions::default()
        );
    }
}

//! Command-line flags as containerd passes them: Go's `flag` package syntax (`-name value`,
//! `-name=value`, `--name` accepted too, boolean flags without a value), then an optional action.

use std::fmt;

/// What the binary was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No action: run the long-lived shim daemon.
    Serve,
    /// `start`: launch (or find) the daemon and print its address.
    Start,
    /// `delete`: clean up after a dead shim and print a `DeleteResponse`.
    Delete,
    /// `-v` / `-version`.
    Version,
    /// `-info`: print the runtime info.
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    pub namespace: String,
    pub id: String,
    /// containerd's gRPC address (`-address`).
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    /// Socket path to serve on instead of the inherited fd 3.
    pub socket: String,
    pub debug: bool,
    pub action: Action,
}

#[derive(Debug, PartialEq, Eq)]
pub struct FlagError(String);

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlagError {}

const BOOL_FLAGS: &[&str] = &["debug", "v", "version", "info"];
const VALUE_FLAGS: &[&str] = &[
    "namespace",
    "id",
    "address",
    "publish-binary",
    "bundle",
    "socket",
];

impl Flags {
    /// Parses the arguments after the program name.
    pub fn parse<I, S>(args: I) -> Result<Flags, FlagError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut flags = Flags {
            namespace: String::new(),
            id: String::new(),
            address: String::new(),
            publish_binary: String::new(),
            bundle: String::new(),
            socket: String::new(),
            debug: false,
            action: Action::Serve,
        };
        let mut version = false;
        let mut info = false;
        let mut args = args.into_iter().map(Into::into);
        let mut positional: Vec<String> = Vec::new();
        while let Some(arg) = args.next() {
            // Go's flag package stops at the first non-flag argument; "--" ends flags.
            if arg == "--" {
                positional.extend(args.by_ref());
                break;
            }
            let Some(stripped) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                positional.push(arg);
                positional.extend(args.by_ref());
                break;
            };
            let (name, inline) = match stripped.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (stripped.to_string(), None),
            };
            if BOOL_FLAGS.contains(&name.as_str()) {
                let value = match inline.as_deref() {
                    None | Some("true") | Some("1") | Some("t") | Some("T") | Some("TRUE") => true,
                    Some("false") | Some("0") | Some("f") | Some("F") | Some("FALSE") => false,
                    Some(other) => {
                        return Err(FlagError(format!(
                            "invalid boolean value {other:?} for -{name}"
                        )))
                    }
                };
                match name.as_str() {
                    "debug" => flags.debug = value,
                    "v" | "version" => version = value,
                    _ => info = value,
                }
                continue;
            }
            if !VALUE_FLAGS.contains(&name.as_str()) {
                return Err(FlagError(format!("flag provided but not defined: -{name}")));
            }
            let value = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| FlagError(format!("flag needs an argument: -{name}")))?,
            };
            match name.as_str() {
                "namespace" => flags.namespace = value,
                "id" => flags.id = value,
                "address" => flags.address = value,
                "publish-binary" => flags.publish_binary = value,
                "bundle" => flags.bundle = value,
                _ => flags.socket = value,
            }
        }
        flags.action = if version {
            Action::Version
        } else if info {
            Action::Info
        } else {
            match positional.first().map(String::as_str) {
                None => Action::Serve,
                Some("start") => Action::Start,
                Some("delete") => Action::Delete,
                Some(other) => return Err(FlagError(format!("unknown action {other:?}"))),
            }
        };
        if matches!(flags.action, Action::Serve | Action::Start | Action::Delete)
            && flags.namespace.is_empty()
        {
            return Err(FlagError("shim namespace cannot be empty".into()));
        }
        Ok(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, FlagError> {
        Flags::parse(args.iter().copied())
    }

    #[test]
    fn containerd_start_command_line() {
        let f = parse(&[
            "-namespace",
            "k8s.io",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "abc",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(f.namespace, "k8s.io");
        assert_eq!(f.address, "/run/containerd/containerd.sock");
        assert_eq!(f.publish_binary, "/usr/bin/containerd");
        assert_eq!(f.id, "abc");
        assert!(f.debug);
        assert_eq!(f.action, Action::Start);
    }

    #[test]
    fn equals_form_and_double_dash() {
        let f = parse(&[
            "--namespace=default",
            "-id=x",
            "-bundle=/b",
            "-debug=false",
            "delete",
        ])
        .unwrap();
        assert_eq!(
            (f.namespace.as_str(), f.id.as_str(), f.bundle.as_str()),
            ("default", "x", "/b")
        );
        assert!(!f.debug);
        assert_eq!(f.action, Action::Delete);
    }

    #[test]
    fn no_action_is_the_daemon() {
        let f = parse(&["-namespace", "n", "-id", "x", "-socket", "/s"]).unwrap();
        assert_eq!(f.action, Action::Serve);
        assert_eq!(f.socket, "/s");
    }

    #[test]
    fn version_needs_no_namespace() {
        assert_eq!(parse(&["-v"]).unwrap().action, Action::Version);
        assert_eq!(parse(&["-version"]).unwrap().action, Action::Version);
        assert_eq!(parse(&["-info"]).unwrap().action, Action::Info);
    }

    #[test]
    fn errors_are_clear() {
        assert_eq!(
            parse(&["-id", "x"]).unwrap_err().to_string(),
            "shim namespace cannot be empty"
        );
        assert!(parse(&["-namespace"])
            .unwrap_err()
            .to_string()
            .contains("needs an argument"));
        assert!(parse(&["-bogus"])
            .unwrap_err()
            .to_string()
            .contains("not defined: -bogus"));
        assert!(parse(&["-namespace", "n", "frobnicate"])
            .unwrap_err()
            .to_string()
            .contains("unknown action"));
        assert!(parse(&["-debug=maybe"])
            .unwrap_err()
            .to_string()
            .contains("invalid boolean"));
    }
}

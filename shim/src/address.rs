//! Where a shim listens: the socket address containerd expects, and the grouping of containers
//! into one shim (pods).

use std::path::Path;

use sha2::{Digest, Sha256};

/// containerd 1.6/1.7 put shim sockets here regardless of their own state directory.
pub const SOCKET_DIR: &str = "/run/containerd/s";

/// Annotations that put several containers into one shim, in order of precedence
/// (containerd's runc v2 shim reads the same two).
pub const GROUP_ANNOTATIONS: &[&str] = &[
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// `unix:///run/containerd/s/<hex sha256(filepath.Join(address, namespace, group))>`, as
/// containerd's `shim.SocketAddress` computes it (Go's `filepath.Join` cleans the path).
pub fn socket_address(
    socket_dir: &str,
    containerd_address: &str,
    namespace: &str,
    group: &str,
) -> String {
    let joined = go_clean(&format!("{containerd_address}/{namespace}/{group}"));
    let digest = Sha256::digest(joined.as_bytes());
    format!("unix://{}/{}", go_clean(socket_dir), hex::encode(digest))
}

/// The path of a `unix://` address.
pub fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// The group a container belongs to: the first grouping annotation in its `config.json`, else
/// its own id.
pub fn group_id(bundle: &Path, id: &str) -> String {
    let Ok(data) = std::fs::read(bundle.join("config.json")) else {
        return id.to_string();
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return id.to_string();
    };
    GROUP_ANNOTATIONS
        .iter()
        .find_map(|key| spec["annotations"][key].as_str().filter(|v| !v.is_empty()))
        .unwrap_or(id)
        .to_string()
}

/// Go's `path.Clean`: collapse `//`, `.` and `..`, no trailing slash.
pub fn go_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_matches_containerd() {
        // sha256("/run/containerd/containerd.sock/default/c1")
        let want = hex::encode(Sha256::digest(
            b"/run/containerd/containerd.sock/default/c1",
        ));
        assert_eq!(
            socket_address(
                SOCKET_DIR,
                "/run/containerd/containerd.sock",
                "default",
                "c1"
            ),
            format!("unix:///run/containerd/s/{want}")
        );
        // filepath.Join cleans: a trailing slash or doubled slash does not change the hash.
        assert_eq!(
            socket_address(
                SOCKET_DIR,
                "/run/containerd//containerd.sock/",
                "default",
                "c1"
            ),
            format!("unix:///run/containerd/s/{want}")
        );
    }

    #[test]
    fn clean_like_go() {
        for (input, want) in [
            ("/a/b/../c", "/a/c"),
            ("a//b/./c/", "a/b/c"),
            ("/../a", "/a"),
            ("", "."),
            ("../../x", "../../x"),
            ("/", "/"),
        ] {
            assert_eq!(go_clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn grouping_annotations_in_order() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(group_id(dir.path(), "c1"), "c1");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod","io.containerd.runc.v2.group":"grp"}}"#,
        )
        .unwrap();
        assert_eq!(group_id(dir.path(), "c1"), "grp");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod"}}"#,
        )
        .unwrap();
        assert_eq!(group_id(dir.path(), "c1"), "pod");
    }
}

//! A busybox OCI image built locally (no registry is reachable): one gzip layer with the
//! static busybox and its applets, packed as an OCI layout tar that `ctr images import` takes.
//! Contents and mtimes are fixed, so the digest is stable.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

pub const IMAGE: &str = "docker.io/rshim/busybox:latest";
/// The CRI sandbox ("pause") image: the same layer, sleeping as its entrypoint.
pub const PAUSE_IMAGE: &str = "docker.io/rshim/pause:latest";
const APPLETS: &[&str] = &[
    "sh",
    "cat",
    "echo",
    "sleep",
    "true",
    "false",
    "ls",
    "ps",
    "id",
    "head",
    "dd",
    "yes",
    "env",
    "printf",
    "wc",
    "kill",
    "top",
    "stty",
    "tty",
    "hostname",
    "mkdir",
    "touch",
    "rm",
    "md5sum",
    "sha256sum",
    "trap",
    "seq",
    "tr",
];

fn header(kind: tar::EntryType, path: &str, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(path).expect("valid path");
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

fn layer(busybox: &Path) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        b.append(
            &header(
                tar::EntryType::Directory,
                dir,
                if dir == "tmp" { 0o1777 } else { 0o755 },
                0,
            ),
            std::io::empty(),
        )?;
    }
    let data = std::fs::read(busybox).with_context(|| format!("read {}", busybox.display()))?;
    b.append(
        &header(
            tar::EntryType::Regular,
            "bin/busybox",
            0o755,
            data.len() as u64,
        ),
        data.as_slice(),
    )?;
    for applet in APPLETS {
        let mut h = header(tar::EntryType::Symlink, &format!("bin/{applet}"), 0o777, 0);
        h.set_link_name("busybox")?;
        h.set_cksum();
        b.append(&h, std::io::empty())?;
    }
    for (path, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
    ] {
        b.append(
            &header(tar::EntryType::Regular, path, 0o644, text.len() as u64),
            text.as_bytes(),
        )?;
    }
    Ok(b.into_inner()?)
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Writes the busybox image archive to `out`.
pub fn build(out: &Path) -> anyhow::Result<()> {
    build_named(
        out,
        IMAGE,
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"}),
    )
}

/// Writes the pause image archive to `out`.
pub fn build_pause(out: &Path) -> anyhow::Result<()> {
    build_named(
        out,
        PAUSE_IMAGE,
        serde_json::json!({"Env": ["PATH=/bin"], "Entrypoint": ["/bin/sleep", "2147483647"], "WorkingDir": "/"}),
    )
}

fn build_named(out: &Path, name: &str, image_config: serde_json::Value) -> anyhow::Result<()> {
    let tar_layer = layer(Path::new("/bin/busybox"))?;
    let diff_id = digest(&tar_layer);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_layer)?;
    let gz_layer = gz.finish()?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&gz_layer), "size": gz_layer.len()}],
    }))?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name, "io.containerd.image.name": name},
        }],
    }))?;
    let mut archive = tar::Builder::new(std::fs::File::create(out)?);
    let mut add = |path: &str, data: &[u8]| {
        archive.append(
            &header(tar::EntryType::Regular, path, 0o644, data.len() as u64),
            data,
        )
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for blob in [&config, &manifest, &gz_layer] {
        add(
            &format!("blobs/sha256/{}", &digest(blob)["sha256:".len()..]),
            blob,
        )?;
    }
    archive.finish()?;
    Ok(())
}

//! The `-info` action: containerd's RuntimeInfo, raw protobuf on stdout.

use std::io::Write;
use std::process::{Command, Stdio};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::types::introspection::RuntimeInfo;
use rshim_tests::shim_binary;

fn info(stdin: &[u8]) -> RuntimeInfo {
    let mut child = Command::new(shim_binary())
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "-info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    RuntimeInfo::parse_from_bytes(&out.stdout).expect("raw RuntimeInfo on stdout")
}

#[test]
fn info_reports_name_version_and_runc_features() {
    let i = info(b"");
    assert_eq!(i.name, "io.containerd.rshim.v2");
    assert!(!i.version.version.is_empty());
    assert_eq!(
        i.features.type_url,
        "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    );
    let features: serde_json::Value = serde_json::from_slice(&i.features.value).unwrap();
    assert!(features["ociVersionMax"].is_string(), "{features}");
    assert!(i.options.is_none());
}

#[test]
fn info_echoes_the_runtime_options_it_was_given() {
    let opts = Options {
        binary_name: "/usr/sbin/runc".into(),
        ..Default::default()
    };
    let any = Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: opts.write_to_bytes().unwrap(),
        ..Default::default()
    };
    let i = info(&any.write_to_bytes().unwrap());
    assert_eq!(i.options.type_url, "containerd.runc.v1.Options");
    assert_eq!(
        Options::parse_from_bytes(&i.options.value)
            .unwrap()
            .binary_name,
        "/usr/sbin/runc"
    );
}

//! The shim's request decoding and translation at the edge of the Task API, on arbitrary
//! bytes: protobuf decoding of each request type, runtime options (runc `Options` and
//! `runtimeoptions.v1.Options`), mount options, exec process specs, update resources and
//! `binary://` URIs. Nothing here touches the system beyond reading a named options file.
#![no_main]

use containerd_shim_protos::api::*;
use libfuzzer_sys::fuzz_target;
use protobuf::Message;
use rshim::decode::RuncOptions;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => {
            if let Ok(r) = CreateTaskRequest::parse_from_bytes(payload) {
                let _ = RuncOptions::from_any(r.options.as_ref());
                for m in &r.rootfs {
                    let _ = rshim::decode::parse_options(&m.options);
                }
                let _ = rshim::decode::command_line(&r.stdout);
            }
        }
        1 => {
            if let Ok(r) = ExecProcessRequest::parse_from_bytes(payload) {
                if let Some(spec) = r.spec.as_ref() {
                    let _ = serde_json::from_slice::<oci_spec::runtime::Process>(&spec.value);
                }
            }
        }
        2 => {
            if let Ok(r) = UpdateTaskRequest::parse_from_bytes(payload) {
                if let Some(res) = r.resources.as_ref() {
                    let _ = serde_json::from_slice::<oci_spec::runtime::LinuxResources>(&res.value);
                }
            }
        }
        3 => {
            let any = protobuf::well_known_types::any::Any {
                type_url: "runtimeoptions.v1.Options".into(),
                value: payload.to_vec(),
                ..Default::default()
            };
            let _ = RuncOptions::from_any(Some(&any));
            if let Ok(text) = std::str::from_utf8(payload) {
                let _ = RuncOptions::from_toml(text);
                let _ = rshim::decode::command_line(text);
            }
        }
        4 => {
            let _ = KillRequest::parse_from_bytes(payload);
            let _ = WaitRequest::parse_from_bytes(payload);
            let _ = StateRequest::parse_from_bytes(payload);
            let _ = DeleteRequest::parse_from_bytes(payload);
            let _ = CheckpointTaskRequest::parse_from_bytes(payload);
            let _ = ResizePtyRequest::parse_from_bytes(payload);
        }
        _ => {
            let options: Vec<String> = payload
                .split(|b| *b == b',')
                .map(|o| String::from_utf8_lossy(o).into_owned())
                .collect();
            let _ = rshim::decode::parse_options(&options);
        }
    }
});

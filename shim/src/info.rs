//! The `-info` action: containerd's `RuntimeInfo` (raw protobuf, not wrapped in an `Any`) on
//! stdout: the runtime's name and version, the runtime options read from stdin, and runc's
//! `features` output (as JSON in an `Any`, the way containerd's typeurl marshals it).

use std::io::Read;
use std::time::Duration;

use anyhow::Context;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use runc_wrapper::monitor::{ExitMonitor, Reaper};
use runc_wrapper::{Runc, RuncConfig};

use crate::options::RuncOptions;

const FEATURES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";
const FEATURES_TIMEOUT: Duration = Duration::from_secs(10);

/// `containerd-shim-<name>-<version>` is runtime `io.containerd.<name>.<version>`: installed
/// as `containerd-shim-runc-v2`, rshim reports itself as the runtime it stands in for.
pub fn runtime_name(binary: &str) -> String {
    let file = binary.rsplit('/').next().unwrap_or(binary);
    match file
        .strip_prefix("containerd-shim-")
        .and_then(|rest| rest.rsplit_once('-'))
    {
        Some((name, version)) => format!("io.containerd.{name}.{version}"),
        None => "io.containerd.rshim.v2".to_string(),
    }
}

pub fn run() -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_end(&mut data)
        .context("read options from stdin")?;
    let options_any = if data.is_empty() {
        None
    } else {
        Some(Any::parse_from_bytes(&data).context("decode options from stdin")?)
    };
    let options =
        RuncOptions::from_any(options_any.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let features = runtime.block_on(async {
        let monitor: std::sync::Arc<dyn ExitMonitor> = Reaper::start();
        let runc = Runc::new(
            RuncConfig {
                binary: options.binary(),
                ..Default::default()
            },
            monitor,
        );
        runc.features(FEATURES_TIMEOUT).await
    })?;

    let argv0 = std::env::args().next().unwrap_or_default();
    let info = RuntimeInfo {
        name: runtime_name(&argv0),
        version: MessageField::some(RuntimeVersion {
            version: crate::VERSION.to_string(),
            revision: option_env!("RSHIM_REVISION")
                .unwrap_or("unknown")
                .to_string(),
            ..Default::default()
        }),
        options: MessageField::from_option(options_any),
        features: MessageField::some(Any {
            type_url: FEATURES_TYPE.into(),
            value: features,
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(info.write_to_bytes()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_follows_the_binary() {
        assert_eq!(
            runtime_name("/usr/local/bin/containerd-shim-rshim-v2"),
            "io.containerd.rshim.v2"
        );
        assert_eq!(
            runtime_name("containerd-shim-runc-v2"),
            "io.containerd.runc.v2"
        );
        assert_eq!(
            runtime_name("/tmp/something-else"),
            "io.containerd.rshim.v2"
        );
    }
}

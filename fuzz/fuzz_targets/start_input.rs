//! The `start` action's stdin (legacy options `Any` or a 2.3 `BootstrapParams`) and the
//! command-line flags containerd passes, on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rshim::flags::Flags;
use rshim::start::StartInput;

fuzz_target!(|data: &[u8]| {
    let args: Vec<String> = data
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let _ = Flags::parse(args.iter());
    let flags = Flags::parse(["-id", "c", "-namespace", "ns", "start"]).expect("valid flags");
    let input = StartInput::parse(data, &flags);
    let _ = input.response("unix:///run/containerd/s/x");
});

//! The README's main job: a private containerd with rshim; a container run, exec'd, killed and
//! deleted; the events it produced shown. Leaves nothing behind.

use std::time::Duration;

use rshim_integration::containerd::{Options, PrivateContainerd};
use rshim_integration::events::EventCapture;
use rshim_integration::image::IMAGE;
use rshim_integration::Runtime;

fn step(what: &str, out: &rshim_integration::ctr::Output) -> anyhow::Result<()> {
    println!("$ {what}");
    for line in out.stdout.lines().chain(out.stderr.lines()) {
        println!("    {line}");
    }
    if out.code != Some(0) {
        anyhow::bail!(
            "{what} failed (exit {:?}, timed out: {})",
            out.code,
            out.timed_out
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let runtime = match std::env::args()
        .skip_while(|a| a != "--runtime")
        .nth(1)
        .as_deref()
    {
        Some("go") => Runtime::Go,
        _ => Runtime::Rshim,
    };
    let rt = runtime.runtime_type();
    println!("starting a private containerd (runtime under demo: {rt})");
    let c = PrivateContainerd::start(Options::default())?;
    println!(
        "containerd at {}; importing a locally built busybox image",
        c.address
    );
    c.import_busybox()?;
    let events = EventCapture::start(&c.address)?;
    let id = "demo";
    step(
        "ctr run -d busybox demo sleep 1000",
        &c.ctr(&["run", "-d", "--runtime", rt, IMAGE, id, "sleep", "1000"]),
    )?;
    step(
        "ctr task exec demo echo hello from exec",
        &c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "hello",
            id,
            "echo",
            "hello from exec",
        ]),
    )?;
    step("ctr task ps demo", &c.ctr(&["task", "ps", id]))?;
    step(
        "ctr task kill -s SIGKILL demo",
        &c.ctr(&["task", "kill", "-s", "SIGKILL", id]),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    step("ctr task ls", &c.ctr(&["task", "ls"]))?;
    step("ctr task delete demo", &c.ctr(&["task", "delete", id]))?;
    step("ctr container rm demo", &c.ctr(&["containers", "rm", id]))?;
    std::thread::sleep(Duration::from_millis(500));
    println!("events published for {id}:");
    for e in events.all().iter().filter(|e| e.container() == Some(id)) {
        println!("    {} {}", e.topic, e.payload);
    }
    drop(events);
    drop(c);
    println!("done: containerd stopped, nothing left behind");
    Ok(())
}

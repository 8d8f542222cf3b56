//! `ctr events` captured in the background, parsed into (topic, container id).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub namespace: String,
    pub topic: String,
    pub payload: serde_json::Value,
    /// When the line was read from `ctr events` (for latency figures).
    pub received: std::time::SystemTime,
}

impl Event {
    /// The container an event is about (`id` for container events, `container_id` for tasks).
    pub fn container(&self) -> Option<&str> {
        self.payload["container_id"]
            .as_str()
            .or_else(|| self.payload["id"].as_str())
    }
}

/// Parses one `ctr events` line: `DATE TIME ZONE NAME NAMESPACE TOPIC JSON`.
pub fn parse_line(line: &str) -> Option<Event> {
    let mut parts = line.splitn(7, ' ');
    let _date = parts.next()?;
    let _time = parts.next()?;
    let _zone = parts.next()?;
    let _utc = parts.next()?;
    let namespace = parts.next()?.to_string();
    let topic = parts.next()?.to_string();
    let payload = parts
        .next()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(serde_json::Value::Null);
    topic.starts_with('/').then_some(Event {
        namespace,
        topic,
        payload,
        received: std::time::SystemTime::now(),
    })
}

pub struct EventCapture {
    child: Child,
    events: Arc<Mutex<Vec<Event>>>,
}

impl EventCapture {
    pub fn start(address: &str) -> std::io::Result<EventCapture> {
        let mut child = Command::new("ctr")
            .args(["--address", address, "events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(e) = parse_line(&line) {
                    sink.lock().unwrap().push(e);
                }
            }
        });
        let capture = EventCapture { child, events };
        capture.wait_subscribed(address)?;
        Ok(capture)
    }

    /// `ctr events` subscribes asynchronously: publish probe events (a namespace created and
    /// removed) until one is seen, bounded, then forget the probes.
    fn wait_subscribed(&self, address: &str) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for attempt in 0.. {
            let name = format!("rshim-events-probe-{}-{attempt}", std::process::id());
            let ctr = |verb: &str| {
                Command::new("ctr")
                    .args(["--address", address, "namespaces", verb, &name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
            };
            ctr("create")?;
            let _ = ctr("remove");
            let seen = || {
                self.events
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|e| e.payload["name"].as_str() == Some(name.as_str()))
            };
            let this_round = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while !seen() && std::time::Instant::now() < this_round {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if seen() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(std::io::Error::other("ctr events saw no event within 30 s"));
            }
        }
        self.events
            .lock()
            .unwrap()
            .retain(|e| !e.topic.starts_with("/namespaces/"));
        Ok(())
    }

    /// Topics seen so far for one container, in order.
    pub fn topics_for(&self, container: &str) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.container() == Some(container))
            .map(|e| e.topic.clone())
            .collect()
    }

    pub fn all(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for EventCapture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ctr_event_lines() {
        let line = r#"2026-11-22 15:26:23.82722209 +0000 UTC default /tasks/start {"container_id":"tty-rshim","pid":19162}"#;
        let e = parse_line(line).unwrap();
        assert_eq!(
            (e.namespace.as_str(), e.topic.as_str(), e.container()),
            ("default", "/tasks/start", Some("tty-rshim"))
        );
        let c = parse_line(r#"2026-11-22 15:26:23.7 +0000 UTC default /containers/create {"id":"x","runtime":{"name":"r"}}"#).unwrap();
        assert_eq!(c.container(), Some("x"));
        assert!(parse_line("garbage").is_none());
    }
}

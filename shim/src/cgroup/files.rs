//! Readers for the kernel's cgroup file formats (single values and flat keyed lists).

use std::collections::HashMap;
use std::path::Path;

/// A file of one unsigned number. `max` (no limit) reads as `u64::MAX`.
pub fn read_u64(path: &Path) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    parse_u64(text.trim()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not a number: {:?}", path.display(), text.trim()),
        )
    })
}

fn parse_u64(value: &str) -> Option<u64> {
    match value {
        "max" => Some(u64::MAX),
        // Some v1 limits are signed (-1 for no limit).
        v => v
            .parse()
            .ok()
            .or_else(|| v.parse::<i64>().ok().map(|n| n as u64)),
    }
}

/// The file's text, or None when it cannot be read (a controller without that file).
pub fn read_optional(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
pub struct Keyed<'a>(HashMap<&'a str, u64>);

impl Keyed<'_> {
    /// The value of `key`, 0 when the kernel does not report it.
    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
}

pub fn flat_keyed(text: &str) -> Keyed<'_> {
    Keyed(
        text.lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(char::is_whitespace)?;
                Some((key, parse_u64(value.trim())?))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_lines_and_limits() {
        let k = flat_keyed("cache 12\nrss  34\nbroken\nlimit max\nneg -1\n");
        assert_eq!((k.get("cache"), k.get("rss"), k.get("absent")), (12, 34, 0));
        assert_eq!(k.get("limit"), u64::MAX);
        assert_eq!(k.get("neg"), u64::MAX);
        assert!(k.has("cache") && !k.has("broken"));
    }
}

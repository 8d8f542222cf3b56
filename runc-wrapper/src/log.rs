//! runc's own error text: the last `"level":"error"` entry of its `--log` JSON written during
//! a call, so errors never read just "exit status 1".

use std::path::Path;

/// The message of the last error entry after byte `offset` of the log file.
pub fn last_error(log: &Path, offset: u64) -> Option<String> {
    let data = std::fs::read(log).ok()?;
    last_error_in(data.get(offset as usize..)?)
}

pub fn last_error_in(entries: &[u8]) -> Option<String> {
    String::from_utf8_lossy(entries)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(String::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_entry_wins_and_garbage_is_skipped() {
        let log = br#"{"level":"info","msg":"starting"}
not json at all
{"level":"error","msg":"first"}
{"level":"warning","msg":"later warning"}
{"level":"error","msg":"exec: \"x\": no such file"}
"#;
        assert_eq!(
            last_error_in(log).as_deref(),
            Some("exec: \"x\": no such file")
        );
        assert_eq!(last_error_in(br#"{"level":"info","msg":"ok"}"#), None);
        assert_eq!(last_error_in(b""), None);
    }

    #[test]
    fn only_entries_of_this_call_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let old = b"{\"level\":\"error\",\"msg\":\"old failure\"}\n";
        std::fs::write(&path, old).unwrap();
        assert_eq!(last_error(&path, old.len() as u64), None);
        assert_eq!(last_error(&path, 0).as_deref(), Some("old failure"));
    }
}

//! Append-only journals of what a process has in flight, one file per process
//! (`<pid>.journal`): a line `+ KEY VALUE` when something starts, `- KEY` when it ends. A
//! process killed at any point leaves a journal whose replay gives what was still open. Used
//! for the process groups of running tries ([`crate::groups`]) and the recorded ends of tries
//! ([`crate::ended`]).
//!
//! Appending to one open file replaces a file created and deleted per try: on ext4 that churn
//! cost more kernel time than starting the task's own process. Lines are written whole by one
//! `write` under a lock, without `fsync`: a killed process loses nothing it wrote (a machine
//! crash may). A journal with nothing open is emptied once it has grown past
//! [`COMPACT_AT`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Size past which a journal with nothing open is emptied.
pub const COMPACT_AT: u64 = 256 * 1024;

/// The journal of this process in a folder.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Opened (and emptied: a predecessor with this pid was replayed before) at the first add.
    file: Option<File>,
    open: usize,
    len: u64,
}

impl Journal {
    /// The journal of this process in `dir` (created if missing); its file is created at the
    /// first [`Journal::add`], so [`leftovers`] can read a predecessor's first.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        Ok(Journal {
            path: dir.join(format!("{}.journal", std::process::id())),
            state: Mutex::new(State::default()),
        })
    }

    /// Notes that `key` (no spaces, no line breaks) is open, with `value` (no line breaks).
    pub fn add(&self, key: &str, value: &str) -> io::Result<()> {
        debug_assert!(!key.contains([' ', '\n']) && !value.contains('\n'));
        let mut st = self.state.lock().expect("journal lock");
        if st.file.is_none() {
            st.file = Some(File::create(&self.path)?);
            st.len = 0;
        }
        let line = format!("+ {key} {value}\n");
        st.file
            .as_mut()
            .expect("opened above")
            .write_all(line.as_bytes())?;
        st.len += line.len() as u64;
        st.open += 1;
        Ok(())
    }

    /// Notes that `key` ended. Best effort: a failed write leaves the entry open, and the next
    /// start treats it as a leftover (which is checked before it is acted on).
    pub fn remove(&self, key: &str) {
        let mut st = self.state.lock().expect("journal lock");
        let State { file, open, len } = &mut *st;
        let Some(f) = file.as_mut() else { return };
        let line = format!("- {key}\n");
        if f.write_all(line.as_bytes()).is_err() {
            return;
        }
        *len += line.len() as u64;
        *open = open.saturating_sub(1);
        if *open == 0 && *len > COMPACT_AT && f.set_len(0).is_ok() && f.rewind().is_ok() {
            *len = 0;
        }
    }
}

/// Open entries of a journal: (key, value), in the order they were added.
pub type Entries = Vec<(String, String)>;

/// The entries still open in the journal at `path`, in the order they were added. A torn last
/// line (a write cut by a crash of the machine) is ignored.
pub fn replay(path: &Path) -> io::Result<Entries> {
    let text = std::fs::read_to_string(path)?;
    // Only whole lines count: a last line without its line break was cut.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut open: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, line) in whole.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("+ ") {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            open.insert(key.to_string(), (i, value.to_string()));
        } else if let Some(key) = line.strip_prefix("- ") {
            open.remove(key);
        }
    }
    let mut entries: Vec<(usize, String, String)> =
        open.into_iter().map(|(k, (i, v))| (i, k, v)).collect();
    entries.sort();
    Ok(entries.into_iter().map(|(_, k, v)| (k, v)).collect())
}

/// The journals in `dir` left by processes that are gone (including an earlier process with
/// this one's id: call this before this process adds anything), each with its open entries.
/// The caller acts on them and then removes the file.
pub fn leftovers(dir: &Path) -> io::Result<Vec<(PathBuf, Entries)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "journal") {
            continue;
        }
        let owner = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u32>().ok());
        if owner.is_some_and(|pid| !crate::process::left_by_gone_process(pid)) {
            continue;
        }
        let entries = replay(&path).unwrap_or_default();
        out.push((path, entries));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_gives_what_is_still_open_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.add("1", "a").unwrap();
        j.add("2", "b c").unwrap();
        j.add("3", "{\"x\": 1}").unwrap();
        j.remove("2");
        let path = dir.path().join(format!("{}.journal", std::process::id()));
        // A torn last line is ignored.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"- 3")
            .unwrap();
        assert_eq!(
            replay(&path).unwrap(),
            vec![
                ("1".to_string(), "a".to_string()),
                ("3".to_string(), "{\"x\": 1}".to_string())
            ]
        );
        // This process's own journal counts as a predecessor's (called before any add).
        assert_eq!(leftovers(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_journal_with_nothing_open_is_emptied_past_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let path = dir.path().join(format!("{}.journal", std::process::id()));
        let value = "v".repeat(1000);
        for i in 0..300 {
            j.add(&i.to_string(), &value).unwrap();
            j.remove(&i.to_string());
        }
        assert!(std::fs::metadata(&path).unwrap().len() < COMPACT_AT + 2048);
        j.add("kept", "1").unwrap();
        for i in 0..300 {
            j.add(&format!("x{i}"), &value).unwrap();
            j.remove(&format!("x{i}"));
        }
        // Not emptied while "kept" is open.
        assert_eq!(
            replay(&path).unwrap(),
            vec![("kept".to_string(), "1".to_string())]
        );
        assert!(std::fs::metadata(&path).unwrap().len() > COMPACT_AT);
    }

    #[test]
    fn journals_of_live_processes_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let live = std::os::unix::process::parent_id();
        std::fs::write(dir.path().join(format!("{live}.journal")), "+ 1 a\n").unwrap();
        std::fs::write(dir.path().join("999999999.journal"), "+ 2 b\n").unwrap();
        let left = leftovers(dir.path()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1, vec![("2".to_string(), "b".to_string())]);
    }
}

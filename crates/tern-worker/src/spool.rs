//! The agent's spool: what it could not deliver while the control plane was out of reach.
//!
//! Layout under the agent's folder: `spool/<ti>-<attempt>.jsonl` holds one attempt's log
//! chunks and result in order, one JSON entry per line; `held/<ti>-<attempt>` marks an attempt
//! the agent took and has not yet reported the end of. A marker without a spooled result after
//! a restart means the agent died while the task ran: [`Spool::open`] spools a failed result
//! for it, so the control plane retries it at once instead of waiting for the lease to run out.
//!
//! The spool is bounded: log chunks beyond `max_bytes` are dropped (and a note says how much
//! was lost); results are always kept.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tern_protocol::{Completion, HeldAttempt, LogChunk};

/// What a `held/` marker holds: the attempt (written when it was claimed), or how it ended
/// (written the moment its process exited).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Marker {
    Ended(Completion),
}

/// One spooled call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    Log(LogChunk),
    Complete(Completion),
}

#[derive(Debug, Default)]
struct AttemptState {
    /// Bytes of log dropped for lack of space.
    dropped: u64,
    /// The next chunk number after the spooled ones.
    next_seq: u64,
}

/// The on-disk spool of one agent. Not synchronised: the owner keeps it behind a lock.
#[derive(Debug)]
pub struct Spool {
    spool_dir: PathBuf,
    held_dir: PathBuf,
    max_bytes: u64,
    bytes: u64,
    attempts: BTreeMap<(i64, String), AttemptState>,
}

/// A file name for an attempt (its token with anything but letters, digits and `-` replaced).
pub(crate) fn file_name(ti_id: i64, attempt: &str) -> String {
    let safe: String = attempt
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{ti_id}-{safe}")
}

fn private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

fn read_entries(path: &Path) -> io::Result<Vec<Entry>> {
    let f = fs::File::open(path)?;
    let mut out = Vec::new();
    for line in io::BufReader::new(f).lines() {
        let line = line?;
        // A line cut short by a crash mid-write is dropped; everything before it is whole.
        if let Ok(e) = serde_json::from_str(&line) {
            out.push(e);
        }
    }
    Ok(out)
}

impl Spool {
    /// Opens (or creates) the spool under `dir` and recovers what a previous run of the agent
    /// left: attempts it held without a result get a failed, retryable result.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        let mut s = Spool {
            spool_dir: dir.join("spool"),
            held_dir: dir.join("held"),
            max_bytes,
            bytes: 0,
            attempts: BTreeMap::new(),
        };
        private_dir(&s.spool_dir)?;
        private_dir(&s.held_dir)?;
        // Attempts whose result is already spooled.
        let mut finished = std::collections::BTreeSet::new();
        for entry in fs::read_dir(&s.spool_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            s.bytes += fs::metadata(&path)?.len();
            let mut key = None;
            let mut state = AttemptState::default();
            for e in read_entries(&path)? {
                match e {
                    Entry::Log(c) => {
                        state.next_seq = state.next_seq.max(c.seq + 1);
                        key = Some((c.ti_id, c.attempt));
                    }
                    Entry::Complete(c) => {
                        finished.insert((c.ti_id, c.attempt.clone()));
                        key = Some((c.ti_id, c.attempt));
                    }
                }
            }
            if let Some(key) = key {
                s.attempts.insert(key, state);
            }
        }
        for (held, ended) in s.markers()? {
            if finished.contains(&(held.ti_id, held.attempt.clone())) {
                continue;
            }
            if let Some(c) = ended {
                // The task had ended; only its report was missing.
                s.append(Entry::Complete(c))?;
            } else {
                s.append(Entry::Complete(Completion {
                    ti_id: held.ti_id,
                    attempt: held.attempt.clone(),
                    success: false,
                    retryable: true,
                    exit_code: None,
                    reason: Some(
                        "interrupted: the agent stopped while the task ran and was restarted"
                            .into(),
                    ),
                    outputs: Default::default(),
                    reschedule_after_ms: None,
                }))?;
            }
        }
        Ok(s)
    }

    fn spool_path(&self, ti_id: i64, attempt: &str) -> PathBuf {
        self.spool_dir
            .join(format!("{}.jsonl", file_name(ti_id, attempt)))
    }

    fn held_path(&self, ti_id: i64, attempt: &str) -> PathBuf {
        self.held_dir.join(file_name(ti_id, attempt))
    }

    /// Marks an attempt as taken by this agent.
    pub fn hold(&mut self, h: &HeldAttempt) -> io::Result<()> {
        fs::write(
            self.held_path(h.ti_id, &h.attempt),
            serde_json::to_vec(h).expect("serialisable"),
        )
    }

    /// Records in the attempt's marker how it ended, before the result is sent: an agent
    /// killed before the control plane has it delivers this result at its next start
    /// instead of failing the attempt.
    pub fn record_end(&mut self, c: &Completion) -> io::Result<()> {
        let path = self.held_path(c.ti_id, &c.attempt);
        if !path.exists() {
            return Ok(());
        }
        let tmp = path.with_extension("tmp");
        fs::write(
            &tmp,
            serde_json::to_vec(&Marker::Ended(c.clone())).expect("serialisable"),
        )?;
        fs::rename(tmp, path)
    }

    /// Forgets an attempt whose end the control plane has received (or refused).
    pub fn release(&mut self, ti_id: i64, attempt: &str) {
        let _ = fs::remove_file(self.held_path(ti_id, attempt));
    }

    /// Attempts marked held, from this run or an earlier one.
    pub fn held_markers(&self) -> io::Result<Vec<HeldAttempt>> {
        Ok(self.markers()?.into_iter().map(|(h, _)| h).collect())
    }

    /// Held attempts with how they ended, if that was recorded.
    fn markers(&self) -> io::Result<Vec<(HeldAttempt, Option<Completion>)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.held_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let bytes = fs::read(&path)?;
            if let Ok(Marker::Ended(c)) = serde_json::from_slice(&bytes) {
                let h = HeldAttempt {
                    ti_id: c.ti_id,
                    attempt: c.attempt.clone(),
                };
                out.push((h, Some(c)));
            } else if let Ok(h) = serde_json::from_slice::<HeldAttempt>(&bytes) {
                out.push((h, None));
            }
        }
        Ok(out)
    }

    /// Whether anything of this attempt waits in the spool (later calls must queue behind it).
    pub fn has(&self, ti_id: i64, attempt: &str) -> bool {
        self.attempts.contains_key(&(ti_id, attempt.to_string()))
    }

    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }

    /// Spooled attempts, oldest first by task instance.
    pub fn attempts(&self) -> Vec<HeldAttempt> {
        self.attempts
            .keys()
            .map(|(ti_id, attempt)| HeldAttempt {
                ti_id: *ti_id,
                attempt: attempt.clone(),
            })
            .collect()
    }

    /// Bytes the spool files take.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends a call to its attempt's file. A log chunk that does not fit is dropped (and
    /// counted); a result always fits.
    pub fn append(&mut self, entry: Entry) -> io::Result<()> {
        let (ti_id, attempt) = match &entry {
            Entry::Log(c) => (c.ti_id, c.attempt.clone()),
            Entry::Complete(c) => (c.ti_id, c.attempt.clone()),
        };
        let mut lines = Vec::new();
        let state = self.attempts.entry((ti_id, attempt.clone())).or_default();
        match &entry {
            Entry::Log(c) => {
                if self.bytes + c.text.len() as u64 > self.max_bytes {
                    state.dropped += c.text.len() as u64;
                    state.next_seq = state.next_seq.max(c.seq + 1);
                    return Ok(());
                }
                state.next_seq = state.next_seq.max(c.seq + 1);
            }
            Entry::Complete(_) if state.dropped > 0 => {
                let note = LogChunk {
                    ti_id,
                    attempt: attempt.clone(),
                    seq: state.next_seq,
                    text: format!(
                        "[tern agent: {} bytes of this log were dropped while the control plane was unreachable: the spool was full]\n",
                        state.dropped
                    ),
                };
                state.next_seq += 1;
                state.dropped = 0;
                lines.push(serde_json::to_string(&Entry::Log(note)).expect("serialisable"));
            }
            Entry::Complete(_) => {}
        }
        lines.push(serde_json::to_string(&entry).expect("serialisable"));
        let mut text = lines.join("\n");
        text.push('\n');
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.spool_path(ti_id, &attempt))?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        self.bytes += text.len() as u64;
        Ok(())
    }

    /// The spooled calls of an attempt, in order.
    pub fn entries(&self, ti_id: i64, attempt: &str) -> io::Result<Vec<Entry>> {
        match read_entries(&self.spool_path(ti_id, attempt)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            other => other,
        }
    }

    /// Keeps only `rest` of an attempt's calls (the others were delivered); none removes the
    /// attempt from the spool.
    pub fn keep(&mut self, ti_id: i64, attempt: &str, rest: &[Entry]) -> io::Result<()> {
        let path = self.spool_path(ti_id, attempt);
        let old = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        self.bytes = self.bytes.saturating_sub(old);
        if rest.is_empty() {
            self.attempts.remove(&(ti_id, attempt.to_string()));
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let mut text = String::new();
        for e in rest {
            text.push_str(&serde_json::to_string(e).expect("serialisable"));
            text.push('\n');
        }
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, &text)?;
        fs::rename(&tmp, &path)?;
        self.bytes += text.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, text: &str) -> Entry {
        Entry::Log(LogChunk {
            ti_id: 7,
            attempt: "ab-7".into(),
            seq,
            text: text.into(),
        })
    }

    #[test]
    fn a_restart_turns_a_held_attempt_without_result_into_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            s.hold(&HeldAttempt {
                ti_id: 7,
                attempt: "ab-7".into(),
            })
            .unwrap();
            s.append(chunk(0, "line\n")).unwrap();
        }
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        let entries = s.entries(7, "ab-7").unwrap();
        assert_eq!(entries.len(), 2);
        match &entries[1] {
            Entry::Complete(c) => {
                assert!(!c.success && c.retryable);
                assert!(c.reason.as_deref().unwrap().contains("restarted"));
            }
            other => panic!("expected a result, got {other:?}"),
        }
        assert!(s.has(7, "ab-7"));
    }

    #[test]
    fn a_restart_delivers_the_recorded_end_of_a_finished_attempt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            s.hold(&HeldAttempt {
                ti_id: 7,
                attempt: "ab-7".into(),
            })
            .unwrap();
            // The command ended; the agent died before reporting it.
            s.record_end(&Completion {
                ti_id: 7,
                attempt: "ab-7".into(),
                success: true,
                retryable: false,
                exit_code: Some(0),
                reason: None,
                outputs: Default::default(),
                reschedule_after_ms: None,
            })
            .unwrap();
        }
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        let entries = s.entries(7, "ab-7").unwrap();
        match &entries[..] {
            [Entry::Complete(c)] => assert!(c.success && c.exit_code == Some(0)),
            other => panic!("expected the recorded result, got {other:?}"),
        }
        assert_eq!(s.held_markers().unwrap().len(), 1);
    }

    #[test]
    fn a_full_spool_drops_logs_but_keeps_the_result_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 64).unwrap();
        s.append(chunk(0, "short\n")).unwrap();
        s.append(chunk(1, &"x".repeat(100))).unwrap();
        s.append(Entry::Complete(Completion {
            ti_id: 7,
            attempt: "ab-7".into(),
            success: true,
            retryable: true,
            exit_code: Some(0),
            reason: None,
            outputs: Default::default(),
            reschedule_after_ms: None,
        }))
        .unwrap();
        let entries = s.entries(7, "ab-7").unwrap();
        assert_eq!(entries.len(), 3, "{entries:?}");
        match &entries[1] {
            Entry::Log(c) => {
                assert!(c.text.contains("100 bytes"), "{}", c.text);
                assert_eq!(c.seq, 2);
            }
            other => panic!("{other:?}"),
        }
        s.keep(7, "ab-7", &entries[2..]).unwrap();
        assert_eq!(s.entries(7, "ab-7").unwrap().len(), 1);
        s.keep(7, "ab-7", &[]).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }
}

//! What a long-running process keeps resident: the pages of its own program that only its
//! start, or a burst of work now over, used are let go.
//!
//! A server's start runs code that never runs again (settings, migrations, the first load of
//! every DAG file, the router's construction), and the kernel maps the 64 KiB around every page
//! of code it touches: measured on an idle `standalone` with 200 DAGs, most of the resident code
//! was the start's. [`let_go_of_program_pages`] drops this process's mappings of its program's
//! read-only segments (code and constants); the pages stay in the page cache, so what runs
//! next maps them again at once, without reading the disk, and only what runs from then on
//! counts as the process's memory. Only mappings that hold no private copy of any page (no
//! `Anonymous` memory in `/proc/self/smaps`) and cannot be written are dropped, so nothing is
//! lost: a dropped page reads back as the file's, which is what it held. With glibc the free
//! memory at the top of the heap and in the arenas goes back to the system too.
//!
//! A burst of work leaves the same behind (the code that ran tasks, the heap they grew), so a
//! process that called [`start_is_over`] lets go again once no attempt has run for
//! [`QUIET`] ([`attempt_runs`] marks an attempt's life): as its runtime's blocking threads go
//! after a burst, an idle process keeps nothing of it. Work that comes later maps the code it
//! needs again from the page cache, a few hundred page faults.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How long no attempt must have run before a process lets go of what the last burst left.
pub const QUIET: Duration = Duration::from_secs(2);

/// Whether this process lets go of its code pages when quiet (set by [`start_is_over`]).
static RELEASES_WHEN_QUIET: AtomicBool = AtomicBool::new(false);
/// Attempts running in this process.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Moves at every attempt's start: a release planned before it is called off.
static STARTS: AtomicU64 = AtomicU64::new(0);
/// Releases made after bursts (for tests).
static BURSTS_RELEASED: AtomicU64 = AtomicU64::new(0);

/// Called by a long-running command once its start is over: [`let_go_of_program_pages`], with the
/// outcome on the debug log (a failure costs only memory); from then on the process also lets
/// go after each burst of attempts, once quiet for [`QUIET`].
pub fn start_is_over() {
    release("the start's");
    RELEASES_WHEN_QUIET.store(true, Ordering::Relaxed);
}

fn release(what: &str) {
    match let_go_of_program_pages() {
        Ok(bytes) => tracing::debug!("let go of {bytes} bytes of mappings of {what} code"),
        Err(e) => tracing::debug!("could not let go of {what} code pages: {e}"),
    }
}

/// An attempt running in this process, until dropped.
pub struct AttemptRuns(());

/// Marks an attempt running until the value is dropped. When the last running attempt ends in
/// a process that called [`start_is_over`], within a Tokio runtime, a release is planned for
/// [`QUIET`] later, and made then unless an attempt started meanwhile.
pub fn attempt_runs() -> AttemptRuns {
    STARTS.fetch_add(1, Ordering::SeqCst);
    RUNNING.fetch_add(1, Ordering::SeqCst);
    AttemptRuns(())
}

impl Drop for AttemptRuns {
    fn drop(&mut self) {
        // Read first: an attempt that starts from now on calls the planned release off.
        let starts = STARTS.load(Ordering::SeqCst);
        if RUNNING.fetch_sub(1, Ordering::SeqCst) != 1
            || !RELEASES_WHEN_QUIET.load(Ordering::Relaxed)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(QUIET).await;
            if STARTS.load(Ordering::SeqCst) == starts {
                // Reading smaps and trimming the heap are blocking calls.
                let _ = tokio::task::spawn_blocking(|| {
                    release("the last burst's");
                    BURSTS_RELEASED.fetch_add(1, Ordering::SeqCst);
                })
                .await;
            }
        });
    }
}

/// A read-only mapping of the program's file that holds no private copy of a page.
#[derive(Debug, PartialEq, Eq)]
struct Segment {
    start: usize,
    end: usize,
}

/// Lets go of the pages of this process's program mapped so far, and of free heap memory;
/// returns how many bytes of mappings were dropped.
pub fn let_go_of_program_pages() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut dropped = 0;
    for segment in droppable_segments(&smaps, &exe.to_string_lossy()) {
        let len = segment.end - segment.start;
        // SAFETY: the range is a whole mapping of this process's program that cannot be
        // written and holds no private page (see `droppable_segments`): dropping it changes
        // no byte a thread can read, only which pages are mapped until touched again.
        let rc =
            unsafe { libc::madvise(segment.start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if rc == 0 {
            dropped += len;
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    Ok(dropped)
}

/// The mappings in `smaps` (the text of `/proc/PID/smaps`) of the file at `path` (as
/// `/proc/PID/exe` names it) that are neither writable nor hold anonymous (privately copied)
/// memory.
fn droppable_segments(smaps: &str, path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    // The mapping whose field lines follow, while it may be dropped.
    let mut current: Option<Segment> = None;
    for line in smaps.lines() {
        if let Some((range, perms, file)) = mapping_header(line) {
            out.extend(current.take());
            let read_only = perms.starts_with('r') && perms.as_bytes().get(1) == Some(&b'-');
            current = (file == path && read_only).then_some(range);
        } else if line
            .strip_prefix("Anonymous:")
            .is_some_and(|kib| kib.trim() != "0 kB")
        {
            current = None;
        }
    }
    out.extend(current);
    out
}

/// A mapping's first line in smaps (`start-end perms offset major:minor inode path`): its
/// range, permissions and path (empty for anonymous memory); `None` for a field line.
fn mapping_header(line: &str) -> Option<(Segment, &str, &str)> {
    let mut rest = line;
    let mut field = || {
        let (head, tail) = rest
            .trim_start()
            .split_once(' ')
            .unwrap_or((rest.trim_start(), ""));
        rest = tail;
        head
    };
    let (start, end) = field().split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = field();
    let (_offset, device, _inode) = (field(), field(), field());
    if perms.len() != 4 || !device.contains(':') {
        return None;
    }
    Some((Segment { start, end }, perms, rest.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5555a000-5555b000 r--p 00000000 fd:01 42 /usr/bin/tern
Rss:                   4 kB
Anonymous:             0 kB
5555b000-5555f000 r-xp 00001000 fd:01 42 /usr/bin/tern
Rss:                  16 kB
Anonymous:             0 kB
5555f000-55560000 r--p 00005000 fd:01 42 /usr/bin/tern
Anonymous:             4 kB
55560000-55561000 rw-p 00006000 fd:01 42 /usr/bin/tern
Anonymous:             0 kB
7f000000-7f001000 r-xp 00000000 fd:01 77 /usr/lib/libc.so.6
Anonymous:             0 kB
7f002000-7f003000 rw-p 00000000 00:00 0
Anonymous:             4 kB
";

    #[test]
    fn only_the_programs_unwritten_read_only_mappings_are_dropped() {
        assert_eq!(
            droppable_segments(SMAPS, "/usr/bin/tern"),
            vec![
                Segment {
                    start: 0x5555a000,
                    end: 0x5555b000
                },
                Segment {
                    start: 0x5555b000,
                    end: 0x5555f000
                },
            ],
            "the relocated read-only segment (private pages), the writable one and other \
             files' mappings stay"
        );
        assert!(droppable_segments(SMAPS, "/usr/bin/ter").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_let_go_once_no_attempt_started_for_the_quiet_time() {
        RELEASES_WHEN_QUIET.store(true, Ordering::SeqCst);
        let released = || BURSTS_RELEASED.load(Ordering::SeqCst);
        let (a, b) = (attempt_runs(), attempt_runs());
        drop(a);
        tokio::time::sleep(QUIET * 2).await;
        assert_eq!(released(), 0, "an attempt still runs");
        drop(b);
        tokio::time::sleep(QUIET / 2).await;
        // Starts before the release planned at `b`'s end: calls it off.
        drop(attempt_runs());
        tokio::time::sleep(QUIET / 2 + Duration::from_millis(10)).await;
        // Time for a release made anyway to finish on its blocking thread.
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(10));
            tokio::task::yield_now().await;
        }
        assert_eq!(released(), 0, "an attempt started within the quiet time");
        tokio::time::sleep(QUIET).await;
        // The release itself runs on a blocking thread, in real time.
        for _ in 0..500 {
            if released() > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            tokio::task::yield_now().await;
        }
        assert_eq!(
            released(),
            1,
            "quiet for the quiet time after the last attempt"
        );
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(released(), 1, "one release for one burst");
    }

    /// The resident size of this process's read-only mappings of its program, in kB.
    fn resident_program_kib() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut total = 0;
        let mut counting = false;
        for line in smaps.lines() {
            if let Some((_, perms, path)) = mapping_header(line) {
                counting = path == exe.to_string_lossy() && !perms.contains('w');
            } else if let (true, Some(kib)) = (counting, line.strip_prefix("Rss:")) {
                total += kib.trim().trim_end_matches(" kB").parse::<u64>().unwrap();
            }
        }
        total
    }

    #[test]
    fn this_process_runs_on_after_its_code_was_dropped() {
        let before = resident_program_kib();
        let dropped = let_go_of_program_pages().unwrap();
        let after = resident_program_kib();
        assert!(
            dropped > 0,
            "the test binary's own code is found in its smaps"
        );
        assert!(
            after < before,
            "resident program pages {before} kB before, {after} kB after"
        );
        // Code and constants read back from the file: formatting, collections, threads.
        let text = format!("{:?}", (1..50).map(|i| i * i).collect::<Vec<u64>>());
        let expected = text.len();
        let worker = std::thread::spawn(move || text.len());
        assert_eq!(worker.join().unwrap(), expected);
        assert_eq!(format!("{:?}", [1, 4, 9]), "[1, 4, 9]");
    }
}

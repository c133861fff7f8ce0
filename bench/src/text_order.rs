//! `text-order`: writes the linker's symbol ordering file for the `tern` binary
//! (`crates/tern/text-order.txt`, read by `crates/tern/build.rs`): the functions an idle
//! `standalone` with the 200 DAGs of the `memory` workload has run, so that a build lays them
//! out next to each other: first those it ran once idle (after it let go of its code,
//! `tern_worker::resident`, these are what stays resident), then those of the burst of the
//! DAGs' first runs, then those only its start ran, each group in its present order.
//!
//! Why: the kernel maps the 64 KiB around every page of code a process touches (fault-around),
//! and the functions a server runs lie scattered over the 35 MB of text, so most of the text
//! stays resident although a quarter of it runs (BENCHMARKS.md, thirteenth round). Which pages
//! were touched is read without fault-around blurring it: the binary is copied, its copy's
//! pages are dropped from the page cache and the disk's readahead is off while it runs, so a
//! page is in memory only if some process of it touched that page (fault-around maps only pages
//! already cached). Changing the readahead needs root; it is set back when the workload ends.
//!
//! Only names that are unique in the binary are written: the linker orders every function of a
//! given name, and a name the release profile's code units copy many times would bring all its
//! copies. Run it on the build that is shipped (`--profile dist`, one code unit), whose names
//! are stable from build to build while the dependencies and the compiler stay the same.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use object::{Object, ObjectSymbol, SymbolKind};

/// Where the ordering file goes, relative to the repository.
pub const ORDER_FILE: &str = "crates/tern/text-order.txt";

const PAGE: u64 = 4096;

/// Runs the scenario on `tern` (built with `--profile dist`) and writes [`ORDER_FILE`].
pub fn generate(tern: &Path) -> anyhow::Result<()> {
    let dir = crate::scratch::folder()?;
    let exe = dir.path().join("tern");
    std::fs::copy(tern, &exe).with_context(|| format!("copying {}", tern.display()))?;
    drop_cached_pages(&exe)?;
    let touched = {
        let _readahead = ReadaheadOff::on_disk_of(dir.path())?;
        touched_text_pages(&exe, dir.path())?
    };
    let binary = std::fs::read(&exe)?;
    let file = object::File::parse(&*binary)?;
    let mut names: Vec<String> = Vec::new();
    let mut written = std::collections::HashSet::new();
    let mut report = Vec::new();
    for (phase, pages) in [
        ("idle", &touched.idle),
        ("the burst of runs", &touched.burst),
        ("the start", &touched.start),
    ] {
        let (functions, bytes) = functions_on_pages(&file, pages)?;
        let new: Vec<String> = functions
            .into_iter()
            .filter(|n| written.insert(n.clone()))
            .collect();
        report.push(format!(
            "{phase}: {} pages ({:.1} MB); the functions on them {:.1} MB, {} not listed before",
            pages.len(),
            (pages.len() as u64 * PAGE) as f64 / 1e6,
            bytes as f64 / 1e6,
            new.len()
        ));
        names.extend(new);
    }
    std::fs::write(ORDER_FILE, names.join("\n") + "\n")?;
    println!(
        "text-order: {} functions written to {ORDER_FILE}, those run once idle first, then \
         those of the burst of runs, then the start's; pages touched by phase:\n  {}",
        names.len(),
        report.join("\n  ")
    );
    Ok(())
}

/// Pages of the text (virtual page numbers from the file's first mapping) a run touched, by
/// phase.
struct Touched {
    /// Until the start was over.
    start: BTreeSet<u64>,
    /// From then until the runs' burst was over.
    burst: BTreeSet<u64>,
    /// Once idle.
    idle: BTreeSet<u64>,
}

/// Whether `tern` was laid out by [`ORDER_FILE`]: how many of its functions the binary has,
/// their size, and the span of text they lie in (about their size when laid out together, most
/// of the text when not). Printed by `memory` beside its figure.
pub fn layout(tern: &Path) -> anyhow::Result<String> {
    let Ok(wanted) = std::fs::read_to_string(ORDER_FILE) else {
        return Ok(format!("no {ORDER_FILE}"));
    };
    let wanted: std::collections::HashSet<&str> = wanted.lines().collect();
    let binary = std::fs::read(tern)?;
    let file = object::File::parse(&*binary)?;
    let (mut found, mut bytes, mut lo, mut hi) = (0, 0, u64::MAX, 0);
    for s in file.symbols().filter(|s| s.kind() == SymbolKind::Text) {
        if s.name().is_ok_and(|n| wanted.contains(n)) {
            found += 1;
            bytes += s.size();
            lo = lo.min(s.address());
            hi = hi.max(s.address() + s.size());
        }
    }
    Ok(format!(
        "{found} of the {} functions of {ORDER_FILE} ({:.1} MB) lie in {:.1} MB of text",
        wanted.len(),
        bytes as f64 / 1e6,
        hi.saturating_sub(lo) as f64 / 1e6
    ))
}

/// Writes back `file`'s dirty pages and drops its pages from the page cache.
fn drop_cached_pages(file: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(file)?;
    f.sync_all()?;
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    anyhow::ensure!(
        rc == 0,
        "posix_fadvise: {}",
        std::io::Error::from_raw_os_error(rc)
    );
    Ok(())
}

/// The readahead of a block device set to 0 until dropped, then back to what it was.
struct ReadaheadOff {
    setting: PathBuf,
    before: String,
}

impl ReadaheadOff {
    /// For the disk that holds `dir` (its whole device where `dir` is on a partition).
    fn on_disk_of(dir: &Path) -> anyhow::Result<Self> {
        let dev = std::fs::metadata(dir)?.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let mut device = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))
            .with_context(|| format!("no block device {major}:{minor} under /sys/dev/block"))?;
        if device.join("partition").exists() {
            device.pop();
        }
        let setting = device.join("queue/read_ahead_kb");
        let before = std::fs::read_to_string(&setting)
            .with_context(|| format!("reading {}", setting.display()))?;
        std::fs::write(&setting, "0").with_context(|| {
            format!(
                "turning readahead off in {} (text-order needs root)",
                setting.display()
            )
        })?;
        Ok(Self { setting, before })
    }
}

impl Drop for ReadaheadOff {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.setting, self.before.trim()) {
            eprintln!(
                "could not set {} back to {}: {e}",
                self.setting.display(),
                self.before.trim()
            );
        }
    }
}

/// Runs `exe standalone` with the `memory` workload's 200 DAGs until idle and returns the pages
/// of its text it or its children touched in each phase of its life. With readahead off and
/// the cache dropped, a page is cached only if touched: each time the process lets go of its
/// code (its start is over; its burst of runs is over), the pages then cached are those of the
/// phase that ends, and the cache is dropped again; the idle phase's are those resident at the
/// end.
fn touched_text_pages(exe: &Path, dir: &Path) -> anyhow::Result<Touched> {
    let dags = dir.join("dags");
    crate::write_many(&dags, 200, 10)?;
    let mut child = Command::new(exe)
        .args(["standalone", "--port", "0", "--no-examples", "--home"])
        .arg(dir.join("home"))
        .arg("--dags")
        .arg(&dags)
        .env("TERN_LOG", "warn,tern_worker::resident=debug")
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let (let_go, let_go_seen) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    // Reads the log to its end (the child must never block on a full pipe), telling each time
    // the process let go of its code.
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("let go of") {
                let _ = let_go.send(());
            }
        }
    });
    let phases = (|| -> anyhow::Result<Touched> {
        let mut ended = Vec::new();
        for phase in ["its start", "the burst of the 200 runs"] {
            let_go_seen
                .recv_timeout(Duration::from_secs(20))
                .with_context(|| format!("standalone did not log the end of {phase}"))?;
            ended.push(cached_pages(exe)?);
            drop_cached_pages(exe)?;
        }
        // Idle for a while: timers, the scheduler's passes, the folder's watch.
        std::thread::sleep(Duration::from_secs(5));
        let mut idle = BTreeSet::new();
        let family = std::iter::once(child.id()).chain(crate::children_of(child.id()));
        for pid in family {
            idle.extend(resident_exec_pages(pid, exe)?);
        }
        anyhow::ensure!(
            !idle.is_empty(),
            "no page of {} was resident",
            exe.display()
        );
        let burst = ended.pop().expect("two phases");
        let start = ended.pop().expect("two phases");
        Ok(Touched { start, burst, idle })
    })();
    child.kill()?;
    child.wait()?;
    phases
}

/// The pages of `exe`'s executable segments in the page cache, as virtual page numbers. Reads
/// the whole file afterwards (so the cache holds all of it then).
fn cached_pages(exe: &Path) -> anyhow::Result<BTreeSet<u64>> {
    let file = std::fs::File::open(exe)?;
    let len = file.metadata()?.len() as usize;
    use std::os::fd::AsRawFd;
    // SAFETY: a read-only shared mapping of a file nobody writes while it exists; only
    // `mincore` looks at it, and it is unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    anyhow::ensure!(
        map != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    let mut cached = vec![0u8; len.div_ceil(PAGE as usize)];
    // SAFETY: `cached` has one byte per page of the mapping.
    let rc = unsafe { libc::mincore(map, len, cached.as_mut_ptr()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: the mapping made above, not used after this.
    unsafe { libc::munmap(map, len) };
    anyhow::ensure!(rc == 0, "mincore: {err}");
    // Read only now: reading the file brings all of it into the page cache.
    let binary = std::fs::read(exe)?;
    let elf = object::File::parse(&*binary)?;
    let mut out = BTreeSet::new();
    for segment in elf.segments() {
        use object::ObjectSegment;
        let (offset, size) = segment.file_range();
        let executable = matches!(
            segment.flags(),
            object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0
        );
        if !executable || size == 0 {
            continue;
        }
        for page in offset / PAGE..=(offset + size - 1) / PAGE {
            if cached.get(page as usize).is_some_and(|b| b & 1 == 1) {
                // File page → virtual page: the segment's address minus its offset.
                out.insert(page + (segment.address() - offset) / PAGE);
            }
        }
    }
    Ok(out)
}

/// The resident pages of `exe`'s executable mappings in process `pid`, as file-relative
/// virtual page numbers (address minus the load base, divided by the page size).
fn resident_exec_pages(pid: u32, exe: &Path) -> anyhow::Result<Vec<u64>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let exe = exe.to_string_lossy();
    let mine: Vec<(u64, u64, bool, u64)> = maps
        .lines()
        .filter(|l| l.ends_with(&*exe))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (lo, hi) = parts.next()?.split_once('-')?;
            let perms = parts.next()?;
            let offset = u64::from_str_radix(parts.next()?, 16).ok()?;
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
                perms.contains('x'),
                offset,
            ))
        })
        .collect();
    // The first mapping (file offset 0) starts at the load base: lld puts the first segment at
    // virtual address 0.
    let base = mine
        .iter()
        .find(|m| m.3 == 0)
        .map(|m| m.0)
        .context("the binary's first mapping was not found")?;
    let mut pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut out = Vec::new();
    for &(lo, hi, exec, _) in &mine {
        if !exec {
            continue;
        }
        use std::io::{Read, Seek, SeekFrom};
        let n = ((hi - lo) / PAGE) as usize;
        let mut entries = vec![0u8; n * 8];
        pagemap.seek(SeekFrom::Start(lo / PAGE * 8))?;
        pagemap.read_exact(&mut entries)?;
        for (i, entry) in entries.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(entry.try_into().expect("8 bytes"));
            if e >> 63 == 1 {
                out.push((lo - base) / PAGE + i as u64);
            }
        }
    }
    Ok(out)
}

/// The names of the functions of `file` on any of `pages` (virtual page numbers), unique in the
/// binary, in address order; and their size in bytes.
fn functions_on_pages(
    file: &object::File,
    pages: &BTreeSet<u64>,
) -> anyhow::Result<(Vec<String>, u64)> {
    let functions: Vec<(u64, u64, &str)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?)))
        .collect();
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for (_, _, name) in &functions {
        *copies.entry(name).or_default() += 1;
    }
    let mut chosen: Vec<(u64, u64, &str)> = functions
        .into_iter()
        .filter(|(addr, size, name)| {
            copies[name] == 1
                && pages
                    .range(addr / PAGE..=(addr + size - 1) / PAGE)
                    .next()
                    .is_some()
        })
        .collect();
    chosen.sort();
    let bytes = chosen.iter().map(|c| c.1).sum();
    Ok((chosen.into_iter().map(|c| c.2.to_string()).collect(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_functions_chosen_lie_on_the_pages_and_have_no_copies() {
        let binary = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let file = object::File::parse(&*binary).unwrap();
        let mut functions: Vec<(u64, u64, String)> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .map(|s| (s.address(), s.size(), s.name().unwrap().to_string()))
            .collect();
        functions.sort();
        let mut copies: HashMap<&str, usize> = HashMap::new();
        for f in &functions {
            *copies.entry(&f.2).or_default() += 1;
        }
        assert!(
            copies.values().any(|&n| n > 1),
            "the test binary has names with copies"
        );
        // Every page of the text: every function without copies, in address order.
        let every: BTreeSet<u64> = functions
            .iter()
            .flat_map(|(a, s, _)| a / PAGE..=(a + s - 1) / PAGE)
            .collect();
        let (names, _) = functions_on_pages(&file, &every).unwrap();
        let unique: Vec<&str> = functions
            .iter()
            .filter(|f| copies[f.2.as_str()] == 1)
            .map(|f| f.2.as_str())
            .collect();
        assert_eq!(names, unique);
        // One page: only functions that touch it.
        let page = functions[functions.len() / 2].0 / PAGE;
        let (names, _) = functions_on_pages(&file, &BTreeSet::from([page])).unwrap();
        assert!(!names.is_empty());
        for name in &names {
            let (a, s, _) = functions.iter().find(|f| &f.2 == name).unwrap();
            assert!(
                a / PAGE <= page && page <= (a + s - 1) / PAGE,
                "{name} is not on page {page}"
            );
        }
    }
}

//! Reading the DAG folder: the folder walk, evaluating each file hermetically, `load()` of
//! helper files and `python(script=...)` files (both confined to the DAG folder), and turning
//! Starlark errors and recorded problems into [`ImportError`]s.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use starlark::codemap::CodeMap;
use starlark::environment::{FrozenModule, Module};
use starlark::eval::{Evaluator, FileLoader};
use starlark::syntax::{AstModule, Dialect};
use starlark::PrintHandler;
use tern_core::DagSpec;

use crate::builtins::{globals, EvalCtx};
use crate::draft::{KindDraft, Problem, Shared};
use crate::validate::build_dag;
use crate::ImportError;

/// Upper bound on function calls plus loop iterations per file (guards against runaway loops;
/// a 10,000-task DAG needs a few tens of thousands).
const MAX_TICKS: u64 = 10_000_000;

/// Deepest bracket nesting a file may use (the parser recurses on it).
const MAX_NESTING: usize = 100;

/// Most operations one expression may chain (see [`check_shape`]).
const MAX_CHAIN: usize = 5_000;

/// Largest DAG file (or loaded file) accepted.
pub(crate) const MAX_SOURCE: usize = 10 << 20;

/// Starlark heap limit per file evaluation (best effort: checked periodically).
const MAX_HEAP: usize = 512 << 20;

pub(crate) fn dialect() -> Dialect {
    Dialect {
        enable_top_level_stmt: true,
        enable_f_strings: true,
        ..Dialect::Standard
    }
}

/// The folder part of a relative path (`""` for a file at the root).
fn parent_dir(rel: &str) -> &str {
    rel.rfind('/').map(|i| &rel[..i]).unwrap_or("")
}

/// Resolves `path`, as written in a DAG file in folder `base_dir` (relative to the DAG folder),
/// to a normalised path relative to the DAG folder. `//x` is relative to the DAG folder itself.
/// Refuses absolute paths and paths that leave the DAG folder.
pub(crate) fn resolve_rel(base_dir: &str, path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    let outside = || "the path points outside the DAG folder".to_string();
    let (base, rest) = match path.strip_prefix("//") {
        Some(rest) => ("", rest),
        None if path.starts_with('/') || path.contains('\\') || path.contains(':') => {
            return Err("the path is not relative; write it relative to the file's folder, or start it with `//` for the DAG folder".into())
        }
        None => (base_dir, path),
    };
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for comp in rest.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(outside());
                }
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("the path names no file".into());
    }
    Ok(parts.join("/"))
}

/// Why a file inside the DAG folder could not be read.
enum ReadError {
    NotFound,
    Outside,
    Io(String),
}

/// State shared by every file evaluated in one load: the folder and the frozen helper modules.
pub(crate) struct Session {
    root: PathBuf,
    root_canon: PathBuf,
    modules: RefCell<HashMap<String, FrozenModule>>,
    loading: RefCell<Vec<String>>,
}

impl Session {
    pub(crate) fn new(root: &Path) -> Session {
        Session {
            root: root.to_path_buf(),
            root_canon: fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
            modules: RefCell::default(),
            loading: RefCell::default(),
        }
    }

    /// Reads `rel` (normalised, relative to the DAG folder), refusing symlinks out of it.
    fn read(&self, rel: &str) -> Result<String, ReadError> {
        let path = self.root.join(rel);
        let canon = fs::canonicalize(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ReadError::NotFound,
            _ => ReadError::Io(e.to_string()),
        })?;
        if !canon.starts_with(&self.root_canon) {
            return Err(ReadError::Outside);
        }
        // Only regular files, and only up to the size limit, checked before anything is read:
        // opening a FIFO would block the load forever, and a huge (or sparse) file must not be
        // read into memory to find out it is too large.
        let meta = fs::metadata(&canon).map_err(|e| ReadError::Io(e.to_string()))?;
        if !meta.is_file() {
            return Err(ReadError::Io(
                "not a regular file (a FIFO, socket or device cannot be read as a DAG file)".into(),
            ));
        }
        if meta.len() > MAX_SOURCE as u64 {
            return Err(ReadError::Io(format!(
                "the file is larger than {} MiB",
                MAX_SOURCE >> 20
            )));
        }
        let mut text = String::new();
        use std::io::Read;
        fs::File::open(&canon)
            .and_then(|f| f.take(MAX_SOURCE as u64 + 1).read_to_string(&mut text))
            .map_err(|e| ReadError::Io(e.to_string()))?;
        Ok(text)
    }

    /// Evaluates one file; with `freeze`, returns its frozen module for `load()`.
    fn evaluate(
        &self,
        rel: &str,
        source: String,
        state: &Shared,
        freeze: bool,
    ) -> starlark::Result<Option<FrozenModule>> {
        check_shape(rel, &source)?;
        let ast = AstModule::parse(rel, source, &dialect())?;
        let loader = ModuleLoader {
            session: self,
            dir: parent_dir(rel).to_string(),
        };
        let ctx = EvalCtx {
            state: state.clone(),
        };
        Module::with_temp_heap(|module| {
            {
                let mut eval = Evaluator::new(&module);
                eval.extra = Some(&ctx);
                eval.set_loader(&loader);
                eval.set_print_handler(&DiscardPrints);
                eval.set_max_tick_count(MAX_TICKS)
                    .map_err(starlark::Error::new_other)?;
                eval.set_max_heap_size(MAX_HEAP)
                    .map_err(starlark::Error::new_other)?;
                eval.eval_module(ast, globals())?;
            }
            if freeze {
                Ok(Some(module.freeze().map_err(|e| {
                    starlark::Error::new_other(anyhow!("cannot freeze module `{rel}`: {e:?}"))
                })?))
            } else {
                Ok(None)
            }
        })
    }

    /// Evaluates DAG file `rel` and validates what it declares. A panic inside (a bug, in
    /// Starlark or here) becomes an import error of that file instead of ending the load.
    pub(crate) fn process_file(&self, rel: &str) -> (Vec<DagSpec>, Vec<ImportError>) {
        let run = std::panic::AssertUnwindSafe(|| self.process_file_inner(rel));
        std::panic::catch_unwind(run).unwrap_or_else(|panic| {
            self.loading.borrow_mut().clear();
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let error = ImportError {
                file: rel.to_string(),
                line: 0,
                message: format!("internal error while loading this file: {what}"),
            };
            (vec![], vec![error])
        })
    }

    fn process_file_inner(&self, rel: &str) -> (Vec<DagSpec>, Vec<ImportError>) {
        let err = |line: u32, message: String| ImportError {
            file: rel.to_string(),
            line,
            message,
        };
        let source = match self.read(rel) {
            Ok(s) => s,
            Err(ReadError::NotFound) => {
                return (
                    vec![],
                    vec![err(0, "file not found in the DAG folder".into())],
                )
            }
            Err(ReadError::Outside) => {
                return (
                    vec![],
                    vec![err(
                        0,
                        "the file resolves outside the DAG folder (symlink?)".into(),
                    )],
                )
            }
            Err(ReadError::Io(e)) => return (vec![], vec![err(0, format!("cannot read: {e}"))]),
        };
        let state = Shared::new(rel);
        self.loading.borrow_mut().push(rel.to_string());
        let result = self.evaluate(rel, source, &state, false);
        self.loading.borrow_mut().pop();
        let st = state.take();

        let mut errors = Vec::new();
        let mut broken = vec![false; st.dags.len()];
        for p in st.problems {
            if let Some(d) = p.dag {
                broken[d] = true;
            }
            errors.push(problem_error(p, rel));
        }
        if let Err(e) = result {
            // State after a failed evaluation is partial: report, load nothing from the file.
            errors.push(from_starlark(&e, rel));
            sort_errors(&mut errors, rel);
            return (vec![], errors);
        }

        let mut dags = st.dags;
        let base = parent_dir(rel);
        for (di, d) in dags.iter_mut().enumerate() {
            for t in &mut d.tasks {
                let KindDraft::Python {
                    code,
                    script,
                    requirements,
                    requirements_file,
                    ..
                } = &mut t.kind
                else {
                    continue;
                };
                // Files a python task names, relative to its DAG file and inside the folder.
                let read_rel = |what: &str, file: &str| {
                    resolve_rel(base, file)
                        .map_err(|m| format!("{what} `{file}`: {m}"))
                        .and_then(|path| match self.read(&path) {
                            Ok(content) => Ok((path, content)),
                            Err(ReadError::NotFound) => Err(format!(
                                "{what} `{file}` not found (looked for `{path}` in the DAG folder)"
                            )),
                            Err(ReadError::Outside) => {
                                Err(format!("{what} `{file}` resolves outside the DAG folder"))
                            }
                            Err(ReadError::Io(e)) => {
                                Err(format!("cannot read {what} `{file}`: {e}"))
                            }
                        })
                };
                let mut found_problems = Vec::new();
                if code.is_none() {
                    if let Some(s) = script.as_mut() {
                        match read_rel("script", s) {
                            Ok((path, content)) => {
                                *code = Some(content);
                                *s = path;
                            }
                            Err(m) => found_problems.push(m),
                        }
                    }
                }
                if let Some(file) = requirements_file.take() {
                    match read_rel("requirements_file", &file).and_then(|(_, text)| {
                        crate::requirements::parse_file(&text)
                            .map_err(|m| format!("requirements_file `{file}`: {m}"))
                    }) {
                        Ok(reqs) => requirements.extend(reqs),
                        Err(m) => found_problems.push(m),
                    }
                }
                for m in found_problems {
                    broken[di] = true;
                    errors.push(problem_error(
                        Problem {
                            loc: t.loc.clone(),
                            main_line: t.main_line,
                            message: format!("task `{}`: {m}", t.id),
                            dag: Some(di),
                        },
                        rel,
                    ));
                }
            }
        }

        let mut specs = Vec::new();
        for (di, d) in dags.iter().enumerate() {
            match build_dag(d, rel) {
                Ok(spec) if !broken[di] => specs.push(spec),
                Ok(_) => {}
                Err(found) => errors.extend(found.into_iter().map(|p| problem_error(p, rel))),
            }
        }
        sort_errors(&mut errors, rel);
        (specs, errors)
    }
}

/// Refuses sources whose shape would make the recursive parser and compiler exhaust the stack
/// or take quadratic time, before they see them: brackets nested deeper than [`MAX_NESTING`],
/// or more than [`MAX_CHAIN`] operators chained in one expression (counted along the open
/// brackets; commas and new statements reset the count). Strings and comments are skipped.
/// Real DAG files are far below both limits.
fn check_shape(rel: &str, source: &str) -> starlark::Result<()> {
    const KEYWORDS: &[&[u8]] = &[
        b"not", b"and", b"or", b"if", b"else", b"lambda", b"in", b"is", b"for",
    ];
    let fail = |line: usize, message: String| {
        let codemap = CodeMap::new(rel.to_string(), source.to_string());
        let span = codemap.line_span(line.saturating_sub(1));
        starlark::Error::new_spanned(starlark::ErrorKind::Other(anyhow!(message)), span, &codemap)
    };
    if source.len() > MAX_SOURCE {
        return Err(fail(
            1,
            format!("the file is larger than {} MiB", MAX_SOURCE >> 20),
        ));
    }
    let b = source.as_bytes();
    // Operators chained at each open bracket level; [0] is the statement level.
    let mut chain: Vec<usize> = vec![0];
    let mut total = 0usize;
    let (mut line, mut i) = (1usize, 0usize);
    while i < b.len() {
        let mut ops = 0;
        match b[i] {
            b'\n' => {
                line += 1;
                if chain.len() == 1 {
                    total -= chain[0];
                    chain[0] = 0;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            q @ (b'"' | b'\'') => {
                let triple = b[i..].starts_with(&[q, q, q]);
                i += if triple { 3 } else { 1 };
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 1,
                        b'\n' => {
                            line += 1;
                            if !triple {
                                break;
                            }
                        }
                        c if c == q && (!triple || b[i..].starts_with(&[q, q, q])) => {
                            i += if triple { 2 } else { 0 };
                            break;
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                chain.push(0);
                if chain.len() > MAX_NESTING + 1 {
                    return Err(fail(
                        line,
                        format!("brackets nested deeper than {MAX_NESTING} levels; split the expression"),
                    ));
                }
            }
            b')' | b']' | b'}' => {
                if chain.len() > 1 {
                    total -= chain.pop().unwrap_or(0);
                }
                ops = 1;
            }
            b',' | b';' => {
                let top = chain.last_mut().expect("never empty");
                total -= *top;
                *top = 0;
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'|' | b'&' | b'^' | b'~' | b'<' | b'>' | b'='
            | b'!' | b'.' | b':' => ops = 1,
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if KEYWORDS.contains(&&b[start..i]) {
                    ops = 1;
                } else {
                    continue;
                }
                i -= 1;
            }
            _ => {}
        }
        if ops > 0 {
            *chain.last_mut().expect("never empty") += ops;
            total += ops;
            if total > MAX_CHAIN {
                return Err(fail(
                    line,
                    format!("expression too long: more than {MAX_CHAIN} chained operations; build it in a loop instead"),
                ));
            }
        }
        i += 1;
    }
    Ok(())
}

/// A recorded problem as an import error; one inside a loaded file says where it was called
/// from in the evaluated file.
fn problem_error(p: Problem, main: &str) -> ImportError {
    let mut message = p.message;
    if p.loc.file != main {
        message.push_str(&format!(" (called from {main}:{})", p.main_line));
    }
    ImportError {
        file: p.loc.file,
        line: p.loc.line,
        message,
    }
}

/// The evaluated file's own errors first, by line; then errors in files it loaded.
fn sort_errors(errors: &mut [ImportError], main: &str) {
    errors
        .sort_by(|a, b| (a.file != main, &a.file, a.line).cmp(&(b.file != main, &b.file, b.line)));
}

/// Converts a Starlark error raised while evaluating `main` (or a file it loaded).
fn from_starlark(e: &starlark::Error, main: &str) -> ImportError {
    let mut message = e
        .without_diagnostic()
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let frames = &e.call_stack().frames;
    let span = e
        .span()
        .cloned()
        .or_else(|| frames.iter().rev().find_map(|f| f.location.clone()));
    let (file, line) = match &span {
        Some(s) => (
            s.filename().to_string(),
            u32::try_from(s.resolve_span().begin.line + 1).unwrap_or(0),
        ),
        None => (main.to_string(), 0),
    };
    if file != main {
        let called_from = frames
            .iter()
            .filter_map(|f| f.location.as_ref())
            .find(|l| l.filename() == main);
        match called_from {
            Some(l) => message.push_str(&format!(
                " (called from {main}:{})",
                l.resolve_span().begin.line + 1
            )),
            None => message.push_str(&format!(" (in a file loaded by {main})")),
        }
    }
    ImportError {
        file,
        line,
        message,
    }
}

struct DiscardPrints;

impl PrintHandler for DiscardPrints {
    fn println(&self, _text: &str) -> starlark::Result<()> {
        Ok(())
    }
}

/// Resolves `load()` statements of one file: relative to its folder, inside the DAG folder.
struct ModuleLoader<'s> {
    session: &'s Session,
    dir: String,
}

impl FileLoader for ModuleLoader<'_> {
    fn load(&self, path: &str) -> starlark::Result<FrozenModule> {
        let fail = |m: String| starlark::Error::new_other(anyhow!("load(\"{path}\"): {m}"));
        let rel = resolve_rel(&self.dir, path).map_err(fail)?;
        if !rel.ends_with(".star") {
            return Err(fail("only `.star` files can be loaded".into()));
        }
        if let Some(m) = self.session.modules.borrow().get(&rel) {
            return Ok(m.clone());
        }
        {
            let loading = self.session.loading.borrow();
            if let Some(at) = loading.iter().position(|f| *f == rel) {
                let mut chain = loading[at..].to_vec();
                chain.push(rel.clone());
                return Err(fail(format!("load cycle: {}", chain.join(" -> "))));
            }
        }
        let source = match self.session.read(&rel) {
            Ok(s) => s,
            Err(ReadError::NotFound) => {
                return Err(fail(format!("file `{rel}` not found in the DAG folder")))
            }
            Err(ReadError::Outside) => {
                return Err(fail(format!("`{rel}` resolves outside the DAG folder")))
            }
            Err(ReadError::Io(e)) => return Err(fail(format!("cannot read `{rel}`: {e}"))),
        };
        // DAGs a loaded file declares at its top level belong to that file's own evaluation,
        // not to the loading file: they go to a separate state that is dropped.
        let state = Shared::new(&rel);
        self.session.loading.borrow_mut().push(rel.clone());
        let result = self.session.evaluate(&rel, source, &state, true);
        self.session.loading.borrow_mut().pop();
        let module = result?.expect("evaluate(freeze = true) returns the module");
        self.session
            .modules
            .borrow_mut()
            .insert(rel, module.clone());
        Ok(module)
    }
}

/// Every `*.star` file under `root`, relative and `/`-separated, sorted; names starting with `.`
/// or `_` (files and folders) are skipped, as are symlinked folders. Unreadable entries become
/// errors.
pub(crate) fn walk(root: &Path) -> (Vec<String>, Vec<ImportError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                errors.push(ImportError {
                    file: rel.clone(),
                    line: 0,
                    message: format!("cannot read folder `{}`: {e}", dir.display()),
                });
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    errors.push(ImportError {
                        file: rel.clone(),
                        line: 0,
                        message: format!("cannot list folder: {e}"),
                    });
                    continue;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                errors.push(ImportError {
                    file: rel.clone(),
                    line: 0,
                    message: format!(
                        "skipped {:?}: the name is not valid UTF-8",
                        entry.file_name()
                    ),
                });
                continue;
            };
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            let child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push((entry.path(), child));
            } else if name.ends_with(".star") && (ft.is_file() || entry.path().is_file()) {
                files.push(child);
            }
        }
    }
    files.sort();
    (files, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalised_and_confined() {
        assert_eq!(resolve_rel("a/b", "c.star").unwrap(), "a/b/c.star");
        assert_eq!(resolve_rel("a/b", "../c.star").unwrap(), "a/c.star");
        assert_eq!(resolve_rel("a/b", "./x/../c.star").unwrap(), "a/b/c.star");
        assert_eq!(resolve_rel("a/b", "//lib/c.star").unwrap(), "lib/c.star");
        assert!(resolve_rel("a", "../../c.star").is_err());
        assert!(resolve_rel("", "../c.star").is_err());
        assert!(resolve_rel("", "/etc/passwd").is_err());
        assert!(resolve_rel("", "").is_err());
        assert!(resolve_rel("", "a/..").is_err());
    }
}

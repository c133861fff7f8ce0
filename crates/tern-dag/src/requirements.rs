//! A python task's `requirements`: pip requirement specifiers (`pandas==2.2.3`,
//! `requests>=2,<3`, `pkg[extra]~=1.4`), as a list or a `requirements.txt` in the DAG folder.
//! Options (`-r`, `--index-url`, `-e`) are refused: where packages come from is the agent's
//! setting, not a DAG file's.

/// Checks one specifier.
pub(crate) fn check(req: &str) -> Result<(), String> {
    let r = req.trim();
    if r.is_empty() {
        return Err("a requirement is empty".into());
    }
    if r.starts_with('-') {
        return Err(format!(
            "requirement {r:?} is a pip option; list package specifiers only (e.g. \"pandas==2.2.3\")"
        ));
    }
    if r.contains(['\n', '\r']) || !r.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "requirement {r:?} is not a package specifier (e.g. \"pandas==2.2.3\")"
        ));
    }
    Ok(())
}

/// The specifiers of a requirements file: one per line, `#` comments and blank lines skipped.
pub(crate) fn parse_file(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        check(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        out.push(line.to_string());
    }
    Ok(out)
}

/// Checks `python_version`: `major.minor`, such as `3.12`.
pub(crate) fn check_python_version(v: &str) -> Result<(), String> {
    let ok = v.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.chars().all(|c| c.is_ascii_digit())
            && b.chars().all(|c| c.is_ascii_digit())
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`python_version` must be major.minor such as \"3.12\", got {v:?}"
        ))
    }
}

//! Isolation settings: the `container` task kind and the `sandbox` of shell and python tasks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The fields of a `container` task: an image run with podman (or docker) where the task is
/// routed, its logs streamed like any task's, its exit code deciding success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerTask {
    /// Image reference, e.g. `localhost/etl:1.4` or `docker.io/library/python:3.12`.
    pub image: String,
    /// Replaces the image's entrypoint when not empty (templated).
    #[serde(default)]
    pub command: Vec<String>,
    /// Arguments after the entrypoint (templated).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables inside the container; values are templated.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Host folders or files mounted into the container.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Memory limit as the runtime reads it (`512m`, `2g`).
    #[serde(default)]
    pub memory: Option<String>,
    /// CPU limit in cores (`"0.5"`, `"2"`), as text: a float does not survive the flattened
    /// JSON form of task kinds.
    #[serde(default)]
    pub cpus: Option<String>,
    /// Give the container a network; off by default.
    #[serde(default)]
    pub network: bool,
    /// `podman` or `docker`; by default podman when installed, else docker.
    #[serde(default)]
    pub runtime: Option<String>,
}

/// A bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path on the machine running the task (templated).
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

impl Mount {
    /// Parses `"SOURCE:TARGET"` or `"SOURCE:TARGET:ro"` (or `:rw`).
    pub fn parse(s: &str) -> Result<Mount, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            _ => {
                return Err(format!(
                    "mount {s:?} must read \"/host/path:/container/path\" with an optional \":ro\""
                ))
            }
        };
        if !target.starts_with('/') || !(source.starts_with('/') || source.starts_with("{{")) {
            return Err(format!("mount {s:?}: both paths must be absolute"));
        }
        Ok(Mount {
            source: source.to_string(),
            target: target.to_string(),
            read_only,
        })
    }
}

/// Runs a shell or python task under bubblewrap: the system read-only, a private `/tmp`, no
/// network unless allowed, and only the task's working folder and `writable` paths writable.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sandbox {
    /// Keep the network (off by default).
    #[serde(default)]
    pub network: bool,
    /// Absolute paths the task may write besides its working folder.
    #[serde(default)]
    pub writable: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_and_reject_relative_paths() {
        assert_eq!(
            Mount::parse("/data/in:/in:ro").unwrap(),
            Mount {
                source: "/data/in".into(),
                target: "/in".into(),
                read_only: true
            }
        );
        assert!(!Mount::parse("/a:/b").unwrap().read_only);
        assert!(Mount::parse("data:/in").unwrap_err().contains("absolute"));
        assert!(Mount::parse("/a").unwrap_err().contains("/host/path"));
    }
}

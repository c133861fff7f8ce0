//! Azurite, the Azure Storage emulator (npm package `azurite`), for tests: its blob service on a
//! free loopback port, data in memory, the well-known development account `devstoreaccount1`.
//!
//! `azurite-blob` is looked up in `TERN_AZURITE` (the path of the executable), then in the
//! cache folder `scripts/test` installs it into (`$XDG_CACHE_HOME` or `~/.cache`, then
//! `tern-test/azurite/node_modules/.bin/azurite-blob`), then on `PATH`. [`Azurite::start`]
//! fails, saying how to install it, when it is not installed.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;

/// The development account of every Azure Storage emulator.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Its published key.
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    _dir: tempfile::TempDir,
}

/// Where `azurite-blob` is, if anywhere.
pub fn executable() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TERN_AZURITE") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(c) = cache {
        let p = c.join("tern-test/azurite/node_modules/.bin/azurite-blob");
        if p.exists() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("azurite-blob"))
        .find(|p| p.exists())
}

impl Azurite {
    /// Starts the blob service with container `datalake`. A test that needs Azurite fails when
    /// it is not installed (`scripts/test` installs it with npm): a missing emulator is never a
    /// silent pass.
    pub fn start() -> Azurite {
        let Some(exe) = executable() else {
            panic!(
                "azurite-blob not found: install it with `npm install --prefix ~/.cache/tern-test/azurite azurite` (scripts/test does), or set TERN_AZURITE"
            );
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(&exe)
            .args([
                "--inMemoryPersistence",
                "--extentMemoryLimit",
                "512",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ])
            // Azurite writes nothing with in-memory persistence; run it in a folder of its own
            // all the same.
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end so that Azurite never blocks on a full pipe.
            let mut sent = false;
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(url) = line.split("listens on http://").nth(1) {
                        let _ = tx.send(url.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "Azurite ({}) did not start within 60 s (its errors are above)",
                    exe.display()
                );
            }
        };
        let a = Azurite {
            child,
            addr,
            _dir: dir,
        };
        a.create_container("datalake");
        a
    }

    /// The account's blob endpoint (path style).
    pub fn endpoint(&self) -> String {
        format!("http://{}/{ACCOUNT}", self.addr)
    }

    /// The connection URI of `container` with account key `key` (percent-encoded).
    pub fn uri(&self, container: &str, key: &str) -> String {
        let key: String = key
            .chars()
            .map(|c| match c {
                '/' => "%2F".to_string(),
                '+' => "%2B".to_string(),
                '=' => "%3D".to_string(),
                c => c.to_string(),
            })
            .collect();
        format!(
            "azure://{ACCOUNT}:{key}@{container}?endpoint={}",
            self.endpoint()
        )
    }

    /// Sends a request signed with the account key (Shared Key); returns status and body.
    fn request(&self, method: &str, path_and_query: &str) -> (u16, String) {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut params: Vec<(&str, &str)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        params.sort();
        let mut resource = format!("/{ACCOUNT}{path}");
        for (k, v) in params {
            resource.push_str(&format!("\n{}:{v}", k.to_ascii_lowercase()));
        }
        let to_sign = format!(
            "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .expect("key");
        let sig = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            to_sign.as_bytes(),
        );
        let auth = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
        let mut s = std::net::TcpStream::connect(&self.addr).expect("connect to Azurite");
        write!(
            s,
            "{method} {path_and_query} HTTP/1.1\r\nHost: {}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {ACCOUNT}:{auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .expect("write to Azurite");
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("read from Azurite");
        let answer = String::from_utf8_lossy(&answer).to_string();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, answer)
    }

    /// Creates a container.
    pub fn create_container(&self, name: &str) {
        let (status, answer) = self.request("PUT", &format!("/{ACCOUNT}/{name}?restype=container"));
        assert_eq!(status, 201, "create container {name}: {answer}");
    }

    /// The names of the committed blobs of `container`, from a listing.
    pub fn blobs(&self, container: &str) -> Vec<String> {
        let (status, answer) = self.request(
            "GET",
            &format!("/{ACCOUNT}/{container}?comp=list&restype=container"),
        );
        assert_eq!(status, 200, "list {container}: {answer}");
        answer
            .split("<Name>")
            .skip(1)
            .filter_map(|s| s.split("</Name>").next())
            .map(str::to_string)
            .collect()
    }

    /// The names of the blobs of `container` with uncommitted blocks only (uploads that were
    /// started and never completed).
    pub fn uncommitted(&self, container: &str) -> Vec<String> {
        let (status, answer) = self.request(
            "GET",
            &format!("/{ACCOUNT}/{container}?comp=list&include=uncommittedblobs&restype=container"),
        );
        assert_eq!(status, 200, "list {container}: {answer}");
        let all: Vec<String> = answer
            .split("<Name>")
            .skip(1)
            .filter_map(|s| s.split("</Name>").next())
            .map(str::to_string)
            .collect();
        let committed = self.blobs(container);
        all.into_iter().filter(|b| !committed.contains(b)).collect()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

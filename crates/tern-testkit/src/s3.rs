//! An S3-compatible server for tests (s3s-fs, SigV4 enforced with the access key `AKTEST`):
//! buckets are sub-folders of a temporary folder, which holds a `datalake` bucket at start.
//! It serves on loopback inside the test's runtime, or on an address inside a network
//! namespace (for the remote-site tests) from a thread of its own.

use std::path::PathBuf;

/// The secret key the server accepts for `AKTEST`.
pub const SECRET: &str = "secret-key-test";

pub struct S3 {
    root: tempfile::TempDir,
    endpoint: String,
    /// Set to true to stop serving: the listener and every open connection close.
    stop: tokio::sync::watch::Sender<bool>,
}

fn service(root: &std::path::Path) -> s3s::service::S3Service {
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single("AKTEST", SECRET));
    b.build()
}

async fn serve(
    listener: tokio::net::TcpListener,
    service: s3s::service::S3Service,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let service = service.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(socket), service);
            // A stopped server drops its kept-alive connections too, as a dead one would.
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}

fn new_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join("datalake")).expect("bucket folder");
    root
}

impl S3 {
    /// Serves on 127.0.0.1 from the current tokio runtime.
    pub async fn start() -> S3 {
        let root = new_root();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(serve(listener, service(root.path()), rx));
        S3 {
            root,
            endpoint,
            stop: tx,
        }
    }

    /// Stops serving (connections are refused, open ones close) and keeps the objects.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Serves again, on the same address and with the same objects, after [`S3::stop`] (from
    /// the current tokio runtime).
    pub async fn resume(&mut self) {
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        let start = std::time::Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => break l,
                Err(_) if start.elapsed() < std::time::Duration::from_secs(5) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot listen on {addr} again: {e}"),
            }
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(serve(listener, service(self.root.path()), rx));
        self.stop = tx;
    }

    /// Serves on `ip` inside network namespace `netns` (as made by `ip netns add`), from a
    /// thread with its own runtime. Needs root.
    pub fn start_in_netns(netns: &str, ip: &str) -> S3 {
        let root = new_root();
        let (path, ip) = (format!("/var/run/netns/{netns}"), ip.to_string());
        // A socket belongs to the namespace of the thread that creates it.
        let listener = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            std::net::TcpListener::bind((ip.as_str(), 0)).expect("bind in the namespace")
        })
        .join()
        .expect("the binding thread");
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let svc = service(root.path());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                serve(listener, svc, rx).await;
            });
        });
        S3 {
            root,
            endpoint,
            stop: tx,
        }
    }

    /// The connection URI of `bucket` with secret key `secret`.
    pub fn uri(&self, bucket: &str, secret: &str) -> String {
        format!(
            "s3://AKTEST:{secret}@{bucket}?endpoint={}&region=us-east-1",
            self.endpoint
        )
    }

    /// The files of multipart uploads that were started and neither completed nor aborted
    /// (s3s-fs keeps them beside the buckets: `.upload-ID.json`, `.upload_id-ID.part-N`).
    pub fn pending_uploads(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .expect("the server's folder")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".upload"))
            .collect()
    }

    /// Where object `key` of `bucket` is stored on disk.
    pub fn object(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

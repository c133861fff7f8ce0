//! Object stores of exports: an S3-compatible bucket (`s3://bucket?endpoint=…&region=…`, the
//! access key as login and the secret key as password) or a local folder (`file:///folder`),
//! through the `object_store` crate, with timeouts on every call. Objects appear whole or not
//! at all: an export into a local folder is written to a temporary file beside the object and
//! renamed into place (no copy), an S3 upload is a multipart upload completed only after the
//! last part.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::error::{from_object_store, DataError};
use crate::connections::Connection;

/// Part size of multipart uploads (S3's minimum is 5 MiB).
const PART: usize = 8 * 1024 * 1024;

/// An object store and a description of it for logs (no secret).
pub struct Lake {
    pub store: Arc<dyn ObjectStore>,
    pub describe: String,
    /// `s3://bucket/` or `file:///folder/`: prefix of object URLs.
    pub url_prefix: String,
    /// The folder of a `file://` lake.
    local_root: Option<std::path::PathBuf>,
}

/// The file an export is written to before it becomes the object.
pub enum Spool {
    /// An unnamed temporary file (it cannot outlive the task), uploaded when complete.
    Upload(std::fs::File),
    /// A temporary file in the folder of the object (removed if the export fails), renamed
    /// into place when complete.
    InPlace {
        file: tempfile::NamedTempFile,
        dest: std::path::PathBuf,
    },
}

impl Spool {
    /// The file to write to.
    pub fn file(&self) -> &std::fs::File {
        match self {
            Spool::Upload(f) => f,
            Spool::InPlace { file, .. } => file.as_file(),
        }
    }
}

fn spool_err(e: impl std::fmt::Display) -> DataError {
    DataError::transient(format!("cannot create a spool file: {e}"))
}

fn object_path(to: &str) -> Result<ObjectPath, DataError> {
    ObjectPath::parse(to.trim_start_matches('/'))
        .map_err(|e| DataError::permanent(format!("bad object path {to:?}: {e}")))
}

fn query_param(uri: &url::Url, key: &str) -> Option<String> {
    uri.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.to_string())
}

impl Lake {
    pub fn open(c: &Connection) -> Result<Lake, DataError> {
        crate::http_transport::install_crypto_provider();
        let url = url::Url::parse(&c.uri)
            .map_err(|e| DataError::permanent(format!("connection {:?}: {e}", c.name)))?;
        match c.conn_type.as_str() {
            "s3" => {
                let bucket = c.host.clone().ok_or_else(|| {
                    DataError::permanent(format!(
                        "connection {:?} names no bucket: write s3://BUCKET?endpoint=…&region=…",
                        c.name
                    ))
                })?;
                let endpoint = query_param(&url, "endpoint");
                let region = query_param(&url, "region").unwrap_or_else(|| "us-east-1".into());
                // Every request has a deadline: `timeout` in the URI, 60 s by default.
                let timeout = match query_param(&url, "timeout") {
                    None => Duration::from_secs(60),
                    Some(t) => tern_core::parse_duration(&t).map_err(|e| {
                        DataError::permanent(format!("connection {:?}: timeout: {e}", c.name))
                    })?,
                };
                let options = object_store::ClientOptions::new()
                    .with_connect_timeout(timeout.min(Duration::from_secs(10)))
                    .with_timeout(timeout)
                    .with_allow_http(endpoint.as_deref().is_some_and(|e| e.starts_with("http:")));
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&bucket)
                    .with_region(&region)
                    .with_client_options(options)
                    .with_retry(object_store::RetryConfig {
                        max_retries: 2,
                        retry_timeout: (timeout * 3).min(Duration::from_secs(180)),
                        ..Default::default()
                    });
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
                }
                if let (Some(k), Some(s)) = (&c.login, &c.password) {
                    b = b.with_access_key_id(k).with_secret_access_key(s);
                }
                let store = b
                    .build()
                    .map_err(|e| from_object_store(&format!("connection {:?}", c.name), e))?;
                Ok(Lake {
                    store: Arc::new(store),
                    describe: format!(
                        "bucket {bucket} at {}",
                        endpoint.unwrap_or_else(|| format!("AWS {region}"))
                    ),
                    url_prefix: format!("s3://{bucket}/"),
                    local_root: None,
                })
            }
            "file" => {
                let dir = url.to_file_path().map_err(|_| {
                    DataError::permanent(format!(
                        "connection {:?}: write file:///absolute/folder",
                        c.name
                    ))
                })?;
                std::fs::create_dir_all(&dir).map_err(|e| {
                    DataError::permanent(format!("cannot create {}: {e}", dir.display()))
                })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| from_object_store(&format!("connection {:?}", c.name), e))?;
                Ok(Lake {
                    store: Arc::new(store),
                    describe: format!("folder {}", dir.display()),
                    url_prefix: format!("file://{}/", dir.display()),
                    local_root: Some(dir),
                })
            }
            other => Err(DataError::permanent(format!(
                "connection {:?} is of type {other}: an export target must be s3:// or file://",
                c.name
            ))),
        }
    }

    /// Checks that the target can be reached with its credentials (the bucket exists, the key
    /// is accepted) before any row is read.
    pub async fn check(&self, to: &str) -> Result<(), DataError> {
        let dir = to.trim_start_matches('/').rsplit_once('/').map(|(d, _)| d);
        let prefix = dir.map(ObjectPath::from);
        self.store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| from_object_store(&format!("cannot reach {}", self.describe), e))
    }

    /// A spool file for object `to`: in a local lake, beside the object (so that publishing
    /// it is a rename); otherwise an unnamed temporary file.
    pub fn spool(&self, to: &str) -> Result<Spool, DataError> {
        let path = object_path(to)?;
        match &self.local_root {
            None => tempfile::tempfile().map(Spool::Upload).map_err(spool_err),
            Some(root) => {
                let dest = root.join(path.as_ref());
                let dir = dest.parent().unwrap_or(root);
                std::fs::create_dir_all(dir).map_err(spool_err)?;
                let file = tempfile::Builder::new()
                    .prefix(".tern-export-")
                    .suffix(".part")
                    // As a file the store itself would write (a temporary file is 0600).
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
                    .tempfile_in(dir)
                    .map_err(spool_err)?;
                Ok(Spool::InPlace { file, dest })
            }
        }
    }

    /// Makes the complete spool file object `to`; returns its size.
    pub async fn publish(&self, spool: Spool, to: &str) -> Result<u64, DataError> {
        match spool {
            Spool::Upload(mut file) => {
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(0))
                    .map_err(|e| DataError::transient(format!("spool file: {e}")))?;
                self.upload(file, to).await
            }
            Spool::InPlace { file, dest } => {
                let size = file
                    .as_file()
                    .metadata()
                    .map_err(|e| DataError::transient(format!("spool file: {e}")))?
                    .len();
                file.persist(&dest).map_err(|e| {
                    DataError::transient(format!("cannot write {}: {e}", dest.display()))
                })?;
                Ok(size)
            }
        }
    }

    /// Uploads the (rewound) spool file `from` as object `to`; returns its size.
    async fn upload(&self, from: std::fs::File, to: &str) -> Result<u64, DataError> {
        let path = object_path(to)?;
        let mut file = tokio::fs::File::from_std(from);
        let size = file
            .metadata()
            .await
            .map_err(|e| DataError::transient(format!("cannot read the spool file: {e}")))?
            .len();
        let context = format!("cannot write {}{to}", self.url_prefix);
        if size as usize <= PART {
            let mut buf = Vec::with_capacity(size as usize);
            file.read_to_end(&mut buf)
                .await
                .map_err(|e| DataError::transient(format!("cannot read the spool file: {e}")))?;
            self.store
                .put(&path, PutPayload::from(buf))
                .await
                .map_err(|e| from_object_store(&context, e))?;
            return Ok(size);
        }
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| from_object_store(&context, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(DataError::transient(format!(
                        "cannot read the spool file: {e}"
                    )));
                }
            };
            if n == 0 {
                break;
            }
            // Keep at most two parts in flight: memory stays flat whatever the size.
            if let Err(e) = writer.wait_for_capacity(2).await {
                return Err(from_object_store(&context, e));
            }
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map_err(|e| from_object_store(&context, e))?;
        Ok(size)
    }
}

impl Lake {
    /// The path of object `path`, or with `prefix` of the first object whose path starts with
    /// it; `None` when there is none.
    pub async fn find(&self, path: &str, prefix: bool) -> Result<Option<String>, DataError> {
        use futures::StreamExt;
        let context = format!("cannot look in {}", self.describe);
        let trimmed = path.trim_start_matches('/');
        if prefix {
            // Listing takes whole path segments: list the folder part, filter on the rest.
            let (dir, _) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
            let dir = (!dir.is_empty()).then(|| ObjectPath::from(dir));
            let mut list = self.store.list(dir.as_ref());
            while let Some(item) = list.next().await {
                let meta = item.map_err(|e| from_object_store(&context, e))?;
                if meta.location.as_ref().starts_with(trimmed) {
                    return Ok(Some(meta.location.to_string()));
                }
            }
            return Ok(None);
        }
        let object = ObjectPath::parse(trimmed)
            .map_err(|e| DataError::permanent(format!("bad object path {path:?}: {e}")))?;
        match self.store.head(&object).await {
            Ok(meta) => Ok(Some(meta.location.to_string())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(from_object_store(&context, e)),
        }
    }
}

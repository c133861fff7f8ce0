//! Object stores of exports: an S3-compatible bucket (`s3://bucket?endpoint=…&region=…`, the
//! access key as login and the secret key as password), an Azure Blob Storage container
//! (`azure://account:key@container?endpoint=…`) or a local folder (`file:///folder`),
//! through the `object_store` crate, with timeouts on every call. Objects appear whole or not
//! at all: an export into a local folder is written to a temporary file beside the object and
//! renamed into place (no copy); an export to S3 or Azure is uploaded while the query runs, as a
//! multipart upload completed only after the last part and aborted on any failure (see
//! [`super::upload`]).

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::io::Write;
use std::task::Poll;

use super::error::{from_object_store, DataError};
use super::upload::Upload;
use crate::connections::Connection;

/// An object store and a description of it for logs (no secret).
pub struct Lake {
    pub store: Arc<dyn ObjectStore>,
    pub describe: String,
    /// `s3://bucket/` or `file:///folder/`: prefix of object URLs.
    pub url_prefix: String,
    /// The folder of a `file://` lake.
    local_root: Option<std::path::PathBuf>,
}

/// Where an export is being written before it becomes the object.
pub enum Pending {
    /// Streamed to the object store while the query runs (see [`Upload`]).
    Upload(Upload),
    /// A temporary file in the folder of the object (removed if the export fails), renamed
    /// into place when complete.
    InPlace {
        file: tempfile::NamedTempFile,
        dest: std::path::PathBuf,
    },
}

impl Pending {
    /// Hands sealed parts on (see [`Upload::poll_ready`]); always ready for a local file.
    pub fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), DataError>> {
        match self {
            Pending::Upload(u) => u.poll_ready(cx),
            Pending::InPlace { .. } => Poll::Ready(Ok(())),
        }
    }

    /// Drops a failed export: aborts the upload (and waits for it) or removes the temporary
    /// file. Returns the upload's own error when it was the cause of the failure.
    pub async fn abort(self) -> Option<DataError> {
        match self {
            Pending::Upload(u) => u.abort().await,
            Pending::InPlace { .. } => None,
        }
    }
}

fn spool_err(e: impl std::fmt::Display) -> DataError {
    DataError::transient(format!("cannot create a temporary file: {e}"))
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

/// A connection whose settings the object store refuses (e.g. a key that is not base64): no
/// retry can help.
fn bad_config(c: &Connection, e: object_store::Error) -> DataError {
    DataError::permanent(format!("connection {:?}: {e}", c.name))
}

/// The HTTP settings of a cloud store: every request has a deadline (`timeout` in the URI, 60 s
/// by default; connecting at most 10 s) and is tried up to 3 times within 3 × the deadline
/// (at most 180 s).
fn client_options(
    c: &Connection,
    url: &url::Url,
    endpoint: Option<&str>,
) -> Result<(object_store::ClientOptions, object_store::RetryConfig), DataError> {
    let timeout = match query_param(url, "timeout") {
        None => Duration::from_secs(60),
        Some(t) => tern_core::parse_duration(&t)
            .map_err(|e| DataError::permanent(format!("connection {:?}: timeout: {e}", c.name)))?,
    };
    let options = object_store::ClientOptions::new()
        .with_connect_timeout(timeout.min(Duration::from_secs(10)))
        .with_timeout(timeout)
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http:")));
    let retry = object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: (timeout * 3).min(Duration::from_secs(180)),
        ..Default::default()
    };
    Ok((options, retry))
}

impl Lake {
    /// The object store of a setting written as a URI (`s3://KEY:SECRET@BUCKET/PREFIX?…`,
    /// `azure://ACCOUNT:KEY@CONTAINER/PREFIX`, `file:///folder`) named `setting` in errors, and
    /// the folder it points at inside the store, without slashes at either end (empty for the
    /// store's root; a `file://` URI's path is the folder itself).
    pub fn open_uri(uri: &str, setting: &str) -> Result<(Lake, String), DataError> {
        let cfg = crate::connections::ConnectionConfig {
            uri: uri.to_string(),
            extra: Default::default(),
        };
        let name = setting.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let conn = Connection::parse(&name, &format!("setting {setting}"), &cfg)
            .map_err(|e| DataError::permanent(e.message))?;
        if !matches!(conn.conn_type.as_str(), "s3" | "azure" | "file") {
            return Err(DataError::permanent(format!(
                "a {}:// URI is not an object store; write s3://KEY:SECRET@BUCKET/PREFIX?endpoint=…&region=…, azure://ACCOUNT:KEY@CONTAINER/PREFIX or file:///folder",
                conn.conn_type
            )));
        }
        let prefix = match conn.conn_type.as_str() {
            "file" => String::new(),
            _ => conn
                .schema
                .clone()
                .unwrap_or_default()
                .trim_matches('/')
                .to_string(),
        };
        Ok((Lake::open(&conn)?, prefix))
    }

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
                let (options, retry) = client_options(c, &url, endpoint.as_deref())?;
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&bucket)
                    .with_region(&region)
                    .with_client_options(options)
                    .with_retry(retry);
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
                }
                if let (Some(k), Some(s)) = (&c.login, &c.password) {
                    b = b.with_access_key_id(k).with_secret_access_key(s);
                }
                let store = b.build().map_err(|e| bad_config(c, e))?;
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
            "azure" => {
                let container = c.host.clone().ok_or_else(|| {
                    DataError::permanent(format!(
                        "connection {:?} names no container: write azure://ACCOUNT:KEY@CONTAINER",
                        c.name
                    ))
                })?;
                let account = c
                    .login
                    .clone()
                    .or_else(|| query_param(&url, "account"))
                    .ok_or_else(|| {
                        DataError::permanent(format!(
                            "connection {:?} names no storage account: write azure://ACCOUNT:KEY@CONTAINER",
                            c.name
                        ))
                    })?;
                let endpoint = query_param(&url, "endpoint");
                let (options, retry) = client_options(c, &url, endpoint.as_deref())?;
                let mut b = object_store::azure::MicrosoftAzureBuilder::new()
                    .with_account(&account)
                    .with_container_name(&container)
                    .with_client_options(options)
                    .with_retry(retry);
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(k) = &c.password {
                    b = b.with_access_key(k);
                }
                let store = b.build().map_err(|e| bad_config(c, e))?;
                Ok(Lake {
                    store: Arc::new(store),
                    describe: format!(
                        "container {container} of account {account} at {}",
                        endpoint.unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"))
                    ),
                    url_prefix: format!("azure://{container}/"),
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
                "connection {:?} is of type {other}: an export target must be s3://, azure:// or file://",
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

    /// Starts writing object `to`: returns the writer of its bytes (unbuffered: the format
    /// writers buffer) and what to publish or abort at the end. A local lake writes beside
    /// the object (so that publishing it is a rename); other stores get the bytes while the
    /// query runs.
    pub fn create(&self, to: &str) -> Result<(Box<dyn Write + Send>, Pending), DataError> {
        let path = object_path(to)?;
        match &self.local_root {
            None => {
                let context = format!("cannot write {}{}", self.url_prefix, path);
                let (upload, writer) = Upload::start(self.store.clone(), path, context);
                Ok((Box::new(writer), Pending::Upload(upload)))
            }
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
                let out = file.as_file().try_clone().map_err(spool_err)?;
                Ok((Box::new(out), Pending::InPlace { file, dest }))
            }
        }
    }

    /// Makes the complete export object `to` (everything written must have been flushed);
    /// returns its size.
    pub async fn publish(&self, pending: Pending) -> Result<u64, DataError> {
        match pending {
            Pending::Upload(u) => u.finish().await,
            Pending::InPlace { file, dest } => {
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

/// Objects read whole, by size and range, and listed under a folder (task logs, DAG bundles).
impl Lake {
    /// The size of object `path`; `None` when there is none.
    pub async fn size_of(&self, path: &str) -> Result<Option<u64>, DataError> {
        let object = object_path(path)?;
        match self.store.head(&object).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(from_object_store(
                &format!("cannot read {}{object}", self.url_prefix),
                e,
            )),
        }
    }

    /// Bytes `range` of object `path` (the range must lie within it).
    pub async fn read_range(
        &self,
        path: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, DataError> {
        let object = object_path(path)?;
        let bytes = self.store.get_range(&object, range).await.map_err(|e| {
            from_object_store(&format!("cannot read {}{object}", self.url_prefix), e)
        })?;
        Ok(bytes.to_vec())
    }

    /// The whole object `path`.
    pub async fn read_whole(&self, path: &str) -> Result<Vec<u8>, DataError> {
        let object = object_path(path)?;
        let context = format!("cannot read {}{object}", self.url_prefix);
        let got = self
            .store
            .get(&object)
            .await
            .map_err(|e| from_object_store(&context, e))?;
        let bytes = got
            .bytes()
            .await
            .map_err(|e| from_object_store(&context, e))?;
        Ok(bytes.to_vec())
    }

    /// Every object under folder `prefix` (all depths), as (path, fingerprint): the entity tag,
    /// or the size and time where the store has none. Sorted by path.
    pub async fn list_under(&self, prefix: &str) -> Result<Vec<(String, String)>, DataError> {
        use futures::StreamExt;
        let trimmed = prefix.trim_matches('/');
        let dir = (!trimmed.is_empty()).then(|| ObjectPath::from(trimmed));
        let context = format!("cannot list {}{trimmed}", self.url_prefix);
        let mut list = self.store.list(dir.as_ref());
        let mut out = Vec::new();
        while let Some(item) = list.next().await {
            let meta = item.map_err(|e| from_object_store(&context, e))?;
            let print = meta.e_tag.clone().unwrap_or_else(|| {
                format!("{}-{}", meta.size, meta.last_modified.timestamp_millis())
            });
            out.push((meta.location.to_string(), print));
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::ConnectionConfig;

    fn open(uri: &str) -> Result<Lake, DataError> {
        let cfg = ConnectionConfig {
            uri: uri.to_string(),
            extra: Default::default(),
        };
        Lake::open(&Connection::parse("lake", "test", &cfg).unwrap())
    }

    #[test]
    fn targets_that_are_not_object_stores_are_refused_with_the_way_out() {
        // (gs:// is refused when the connection is read: see `connections`.)
        let pg = open("postgres://u@h/db").err().unwrap().to_string();
        assert!(pg.contains("must be s3://, azure:// or file://"), "{pg}");
    }
}

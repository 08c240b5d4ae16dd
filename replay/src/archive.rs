//! Opening an archive: an object store, a prefix inside it, and a layout.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};
use crate::layout::ArchiveLayout;

/// A topic archive in object storage.
#[derive(Clone)]
pub struct Archive {
    /// The URL it was opened from.
    pub url: String,
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The prefix inside the store under which the layout's keys live.
    pub prefix: Path,
    /// How keys map to topics, partitions and offsets.
    pub layout: Arc<dyn ArchiveLayout>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("url", &self.url).field("layout", &self.layout.name()).finish()
    }
}

impl Archive {
    /// Opens the archive at `url`:
    /// - `file:///dir` or a plain path: a local directory (created if missing);
    /// - `s3://bucket/prefix`: S3, configured from the `AWS_*` environment (endpoint, region, keys,
    ///   `AWS_ALLOW_HTTP`), with object_store's retries for transient failures;
    /// - `memory://name`: an in-process store shared by every `Archive` of that name (tests).
    pub fn open(url: &str) -> Result<Archive> {
        Self::open_layout(url, Some("kappa"), None)
    }

    /// Opens the archive at `url` (as [`Archive::open`]) with the layout named (`kappa`, `tansu`),
    /// or, with `None`, the layout its keys show. `cluster` picks a Tansu cluster.
    ///
    /// An Iceberg table may be given by one of its metadata files
    /// (`.../table/metadata/v3.metadata.json`): the archive is the table's location, and that file
    /// is the metadata read.
    pub fn open_layout(url: &str, layout: Option<&str>, cluster: Option<&str>) -> Result<Archive> {
        let (url, metadata_file) = match url.rsplit_once("/metadata/") {
            Some((table, file)) if file.ends_with(".metadata.json") && !file.contains('/') => {
                (table, Some(format!("metadata/{file}")))
            }
            _ => (url, None),
        };
        let invalid = |reason: String| Error::InvalidUrl { url: url.to_string(), reason };
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket name: use s3://BUCKET/PREFIX".into()));
            }
            kappa_engine::install_tls_provider();
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_policy())
                .build()
                .map_err(|e| invalid(format!("{e}; set AWS_ENDPOINT, AWS_REGION and credentials")))?;
            (Arc::new(store), Path::from(prefix))
        } else if let Some(name) = url.strip_prefix("memory://") {
            (memory_store(name), Path::default())
        } else {
            let dir = match url.strip_prefix("file://") {
                Some(path) => PathBuf::from(path),
                None if !url.contains("://") => PathBuf::from(url),
                None => return Err(invalid("unknown scheme: use file://, s3:// or memory://".into())),
            };
            std::fs::create_dir_all(&dir).map_err(|e| invalid(format!("cannot create directory: {e}")))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| invalid(format!("cannot open directory: {e}")))?;
            (Arc::new(store), Path::default())
        };
        let layout =
            runtime().block_on(crate::layout::choose(store.as_ref(), &prefix, url, layout, cluster, metadata_file))?;
        Ok(Archive { url: url.to_string(), store, prefix, layout })
    }

    /// This archive, replaying an Iceberg table that may have lost records (deleted or upserted
    /// rows, dropped invalid records) with a warning instead of refusing it. An error for any
    /// other layout.
    pub fn allowing_lossy_tables(self) -> Result<Archive> {
        if let Some(layout) = self.layout.allowing_lossy() {
            return Ok(Archive { layout, ..self });
        }
        Err(Error::InvalidUrl {
            url: self.url.clone(),
            reason: format!(
                "--allow-lossy-table applies to Iceberg tables only; this archive has layout `{}`",
                self.layout.name()
            ),
        })
    }

    /// The whole object `key`.
    pub async fn fetch(&self, key: &Path) -> Result<bytes::Bytes> {
        get_bytes(self.store.as_ref(), key).await
    }

    /// Bytes `range` of the object `key` (fewer if the object ends first).
    pub async fn fetch_range(&self, key: &Path, range: std::ops::Range<u64>) -> Result<bytes::Bytes> {
        if range.is_empty() {
            return Ok(bytes::Bytes::new());
        }
        self.store.get_range(key, range).await.map_err(|source| Error::ObjectStore { object: key.to_string(), source })
    }

    /// The names of the "directories" directly under `dir`.
    pub async fn list_dirs(&self, dir: &Path) -> Result<Vec<String>> {
        let listing = self
            .store
            .list_with_delimiter(Some(dir))
            .await
            .map_err(|source| Error::ObjectStore { object: dir.to_string(), source })?;
        Ok(listing.common_prefixes.iter().filter_map(|p| p.filename().map(String::from)).collect())
    }

    /// The numbered "directories" directly under `dir` (partitions, in every layout), sorted.
    pub async fn list_numbered_dirs(&self, dir: &Path) -> Result<Vec<i32>> {
        let mut out: Vec<i32> = self.list_dirs(dir).await?.iter().filter_map(|f| f.parse().ok()).collect();
        out.sort();
        Ok(out)
    }

    /// Every object under `dir`, at any depth.
    pub async fn list_objects(&self, dir: &Path) -> Result<Vec<object_store::ObjectMeta>> {
        use futures::TryStreamExt;
        self.store
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(|source| Error::ObjectStore { object: dir.to_string(), source })
    }

    /// The key `relative` under this archive's prefix.
    pub fn key(&self, relative: &str) -> Path {
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_string()).collect();
        parts.extend(relative.split('/').filter(|s| !s.is_empty()).map(String::from));
        Path::from_iter(parts)
    }
}

/// The whole object `key` of `store`, an error naming it if the store fails.
pub(crate) async fn get_bytes(store: &dyn ObjectStore, key: &Path) -> Result<bytes::Bytes> {
    let object = key.to_string();
    store
        .get(key)
        .await
        .map_err(|source| Error::ObjectStore { object: object.clone(), source })?
        .bytes()
        .await
        .map_err(|source| Error::ObjectStore { object, source })
}

/// Retries for transient object-store failures. object_store's default gives up after about two
/// seconds when connections are refused (its backoff is randomised from zero); a store restarting
/// or failing over takes longer, so back off up to 5 s between tries, for up to 3 minutes.
fn retry_policy() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(200),
            max_backoff: std::time::Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 40,
        retry_timeout: std::time::Duration::from_secs(180),
    }
}

fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    stores.entry(name.to_string()).or_insert_with(|| Arc::new(InMemory::new())).clone()
}

/// The runtime that drives object-store requests for replay and archiving: two threads, so fetches
/// overlap with each other and with the dataflow workers.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kappa-io")
            .enable_all()
            .build()
            .expect("cannot start the I/O runtime")
    })
}

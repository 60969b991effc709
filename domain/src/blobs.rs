//! Where uploaded audio lives: a small store trait with a local-directory implementation (the
//! embedded default and single-host deployments). An object store would implement the same
//! three calls.

use std::path::{Path, PathBuf};

use async_trait_free::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob key {0:?} is not valid")]
    BadKey(String),
    #[error("blob {0} does not exist")]
    NotFound(String),
    #[error("blob store I/O at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Stores bytes under a key made of `[A-Za-z0-9._-]` and `/`-separated parts.
pub trait BlobStore: Send + Sync {
    /// Writes the blob durably (it is on disk when this returns) and atomically (a reader
    /// never sees half of it).
    fn put<'a>(&'a self, key: &'a str, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), BlobError>>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, BlobError>>;
    /// Deleting a blob that is not there is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BlobError>>;
}

/// Blobs as files under one directory.
#[derive(Debug, Clone)]
pub struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBlobs { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        let valid = !key.is_empty()
            && key.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            });
        if !valid {
            return Err(BlobError::BadKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl BlobStore for LocalBlobs {
    fn put<'a>(&'a self, key: &'a str, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            let dir = path.parent().unwrap_or(&self.root).to_path_buf();
            let bytes = bytes.to_vec();
            tokio::task::spawn_blocking(move || -> Result<(), BlobError> {
                use std::io::Write;
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                let tmp =
                    path.with_extension(format!("tmp-{}", hex::encode(rand::random::<[u8; 6]>())));
                let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
                file.write_all(&bytes).map_err(io(&tmp))?;
                file.sync_all().map_err(io(&tmp))?;
                std::fs::rename(&tmp, &path).map_err(io(&path))?;
                // The rename is durable only once the directory entry is.
                std::fs::File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(&dir))
            })
            .await
            .map_err(|e| BlobError::Io {
                path: key.to_string(),
                source: std::io::Error::other(e),
            })?
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, BlobError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::read(&path).await {
                Ok(bytes) => Ok(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(BlobError::NotFound(key.to_string()))
                }
                Err(e) => Err(io(&path)(e)),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(&path)(e)),
            }
        })
    }
}

mod async_trait_free {
    /// A boxed future, so the trait stays object-safe without a macro crate.
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_reads_back_what_was_put_and_is_gone_after_delete() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalBlobs::new(dir.path());
        store.put("audio/c1/s1.wav", b"RIFF").await.expect("put");
        assert_eq!(store.get("audio/c1/s1.wav").await.expect("get"), b"RIFF");
        store.delete("audio/c1/s1.wav").await.expect("delete");
        assert!(matches!(
            store.get("audio/c1/s1.wav").await,
            Err(BlobError::NotFound(_))
        ));
        store
            .delete("audio/c1/s1.wav")
            .await
            .expect("deleting twice is fine");
    }

    #[tokio::test]
    async fn keys_cannot_leave_the_store_directory() {
        let store = LocalBlobs::new("/tmp/voxline-blobs-test");
        for key in ["../etc/passwd", "/abs", "a//b", "a/./b", "a b", ""] {
            assert!(
                matches!(store.get(key).await, Err(BlobError::BadKey(_))),
                "{key}"
            );
        }
    }
}

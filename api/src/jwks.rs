//! An identity provider's public keys (a JWKS document) for RS256/ES256 tokens: read from a
//! file or fetched from a URL, cached, and re-read when a token names a `kid` the cache does
//! not know (key rotation) — at most once per [`MIN_REFRESH`], so a stream of forged `kid`s
//! cannot turn into a stream of fetches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use tokio::sync::RwLock;

/// The shortest time between two reads of the document.
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Keys are re-read this often even when every `kid` is known (revocations).
const MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS {source_name}: {message}")]
    Unavailable {
        source_name: String,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub enum JwksSource {
    Url(String),
    File(std::path::PathBuf),
}

impl JwksSource {
    fn name(&self) -> String {
        match self {
            JwksSource::Url(u) => u.clone(),
            JwksSource::File(p) => p.display().to_string(),
        }
    }
}

struct Cached {
    keys: Vec<(Option<String>, DecodingKey)>,
    read_at: Option<Instant>,
}

#[derive(Clone)]
pub struct Jwks {
    source: JwksSource,
    http: Option<reqwest::Client>,
    cache: Arc<RwLock<Cached>>,
}

impl Jwks {
    pub fn new(source: JwksSource) -> Self {
        let http = match &source {
            JwksSource::Url(_) => {
                // reqwest uses the process's rustls provider (ring, the one TLS stack); make
                // sure it is installed when this runs outside the binary (tests, tools).
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .ok()
            }
            JwksSource::File(_) => None,
        };
        Jwks {
            source,
            http,
            cache: Arc::new(RwLock::new(Cached {
                keys: Vec::new(),
                read_at: None,
            })),
        }
    }

    /// The key for `kid` (or the only key, for tokens without a `kid`), re-reading the
    /// document when it is unknown or the cache is old.
    pub async fn key(&self, kid: Option<&str>) -> Result<Option<DecodingKey>, JwksError> {
        {
            let cache = self.cache.read().await;
            let fresh = cache.read_at.is_some_and(|t| t.elapsed() < MAX_AGE);
            if fresh && let Some(key) = find(&cache.keys, kid) {
                return Ok(Some(key));
            }
            if cache.read_at.is_some_and(|t| t.elapsed() < MIN_REFRESH) {
                return Ok(find(&cache.keys, kid));
            }
        }
        let mut cache = self.cache.write().await;
        // Another request may have refreshed while this one waited for the lock.
        if cache.read_at.is_none_or(|t| t.elapsed() >= MIN_REFRESH) {
            match self.read().await {
                Ok(keys) => {
                    cache.keys = keys;
                    cache.read_at = Some(Instant::now());
                }
                Err(e) if cache.read_at.is_some() => {
                    // Keep serving the keys we have; try again after MIN_REFRESH.
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys");
                    cache.read_at = Some(Instant::now());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(find(&cache.keys, kid))
    }

    async fn read(&self) -> Result<Vec<(Option<String>, DecodingKey)>, JwksError> {
        let fail = |message: String| JwksError::Unavailable {
            source_name: self.source.name(),
            message,
        };
        let text = match &self.source {
            JwksSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| fail(e.to_string()))?,
            JwksSource::Url(url) => {
                let client = self
                    .http
                    .as_ref()
                    .ok_or_else(|| fail("no HTTP client".into()))?;
                let response = client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if !response.status().is_success() {
                    return Err(fail(format!("answered {}", response.status())));
                }
                response.text().await.map_err(|e| fail(e.to_string()))?
            }
        };
        let set: JwkSet =
            serde_json::from_str(&text).map_err(|e| fail(format!("not a JWKS document: {e}")))?;
        Ok(set
            .keys
            .iter()
            // Only public keys: a symmetric key in a JWKS would let anyone who reads the
            // document sign tokens.
            .filter(|jwk| {
                matches!(
                    jwk.algorithm,
                    AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_)
                )
            })
            .filter_map(|jwk| {
                DecodingKey::from_jwk(jwk)
                    .inspect_err(|e| tracing::warn!(kid = ?jwk.common.key_id, error = %e, "unusable JWK skipped"))
                    .ok()
                    .map(|key| (jwk.common.key_id.clone(), key))
            })
            .collect())
    }
}

fn find(keys: &[(Option<String>, DecodingKey)], kid: Option<&str>) -> Option<DecodingKey> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|(k, _)| k.as_deref() == Some(kid))
            .map(|(_, key)| key.clone()),
        None if keys.len() == 1 => Some(keys[0].1.clone()),
        None => None,
    }
}

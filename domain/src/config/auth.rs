//! How the API checks the bearer tokens of its callers.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthSettings {
    /// HS256 shared secret (as Supabase issues); see `secrets::jwt_secret`.
    pub jwt_secret: String,
    /// RS256/ES256 tokens: the identity provider's JWKS document, from a URL or a file (at
    /// most one). Keys are cached and the document re-read when a token names an unknown `kid`.
    pub jwks_url: String,
    pub jwks_file: String,
    /// When set, tokens must carry this `iss` / `aud`.
    pub issuer: String,
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
}

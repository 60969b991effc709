//! Zero-trust baseline: every `/api` request carries a JWT (HS256). The token names the
//! profile (`sub`), its company and role; extractors turn it into a [`Caller`] or refuse.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// What a profile may do: `member` of a company, `admin` of a company, `operator` of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            other => Err(format!(
                "unknown role \"{other}\" (member, admin or operator)"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The profile.
    pub sub: String,
    pub company_id: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub exp: i64,
    #[serde(default)]
    pub iat: i64,
}

impl Claims {
    /// The audit entry of `action` on `target`, done by this caller in its own company.
    pub fn audit_entry<'a>(
        &'a self,
        action: &'a str,
        target: &'a str,
        details: serde_json::Value,
    ) -> voxline_domain::audit::AuditEntry<'a> {
        voxline_domain::audit::AuditEntry {
            actor: &self.sub,
            actor_role: self.role.as_str(),
            company_id: Some(&self.company_id),
            action,
            target,
            details,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    /// The identity provider's keys could not be read (not the caller's fault).
    #[error(transparent)]
    Keys(#[from] crate::jwks::JwksError),
}

/// Checking tokens: HS256 with the shared secret, and RS256/ES256 with the identity
/// provider's JWKS when configured. Minting (the `token` command, tests) is HS256 only.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwks: Option<crate::jwks::Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl Keys {
    pub fn hs256(secret: &str) -> Self {
        Keys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            jwks: None,
            issuer: None,
            audience: None,
            leeway: 30,
        }
    }

    /// The shared secret plus what `[auth]` configures (JWKS, issuer, audience, leeway).
    pub fn from_settings(secret: &str, auth: &voxline_domain::config::AuthSettings) -> Self {
        let source = if !auth.jwks_url.is_empty() {
            Some(crate::jwks::JwksSource::Url(auth.jwks_url.clone()))
        } else if !auth.jwks_file.is_empty() {
            Some(crate::jwks::JwksSource::File(auth.jwks_file.clone().into()))
        } else {
            None
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Keys {
            jwks: source.map(crate::jwks::Jwks::new),
            issuer: some(&auth.issuer),
            audience: some(&auth.audience),
            leeway: auth.leeway_secs,
            ..Keys::hs256(secret)
        }
    }

    pub fn mint(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp", "sub"];
        required.extend(self.issuer.as_ref().map(|_| "iss"));
        required.extend(self.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        validation
    }

    /// Checks the signature (the algorithm decides which key: HS256 → the secret, RS256 and
    /// ES256 → the JWKS key named by `kid`), `exp`/`nbf` with the leeway, and `iss`/`aud` when
    /// configured. Any other algorithm is refused.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let key = match header.alg {
            Algorithm::HS256 => self.decoding.clone(),
            Algorithm::RS256 | Algorithm::ES256 => {
                let Some(jwks) = &self.jwks else {
                    return Err(TokenError::Invalid);
                };
                jwks.key(header.kid.as_deref())
                    .await?
                    .ok_or(TokenError::Invalid)?
            }
            _ => return Err(TokenError::Invalid),
        };
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation(header.alg))
            .map(|t| t.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).field("Authorization")
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be \"Bearer <token>\""))?;
        let claims = state.keys.verify(token.trim()).await.map_err(|e| match e {
            TokenError::Keys(e) => {
                tracing::error!(error = %e, "cannot check tokens: the identity provider's keys are unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth_unavailable",
                    "tokens cannot be checked right now; try again shortly",
                )
                .retry_after(5)
            }
            other => unauthorized(&other.to_string()),
        })?;
        record_profile(state, &claims).await?;
        Ok(Caller(claims))
    }
}

/// Profiles (with the company, email and role their token named) this process has recorded,
/// so only a profile's first request — or the first after its claims change — writes.
#[derive(Debug, Default)]
pub struct SeenProfiles(
    std::sync::Mutex<std::collections::HashSet<(String, String, String, String)>>,
);

impl SeenProfiles {
    /// Forgets an erased profile, so the next valid token records it again.
    pub fn forget(&self, profile: &str) {
        if let Ok(mut set) = self.0.lock() {
            set.retain(|(id, ..)| id != profile);
        }
    }
}

/// Bounds the memory of [`SeenProfiles`]; past it the set starts over (a few extra upserts).
const SEEN_PROFILES_MAX: usize = 100_000;

/// Creates the caller's profile on first sight of a valid token (and refreshes its email and
/// role). A token that names a profile of another company is refused: a profile belongs to one
/// company for good.
async fn record_profile(state: &AppState, claims: &Claims) -> Result<(), ApiError> {
    let key = (
        claims.sub.clone(),
        claims.company_id.clone(),
        claims.email.clone().unwrap_or_default(),
        claims.role.as_str().to_string(),
    );
    let seen = |set: &std::collections::HashSet<_>| set.contains(&key);
    if state.seen_profiles.0.lock().is_ok_and(|set| seen(&set)) {
        return Ok(());
    }
    let profile = voxline_domain::profiles::Profile {
        id: claims.sub.clone(),
        company_id: claims.company_id.clone(),
        email: claims.email.clone(),
        role: claims.role.as_str().to_string(),
    };
    let same_company = voxline_domain::profiles::upsert_seen(&state.db, &profile).await?;
    if !same_company {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "profile_company_mismatch",
            "this profile belongs to another company",
        )
        .field("Authorization"));
    }
    if let Ok(mut set) = state.seen_profiles.0.lock() {
        if set.len() >= SEEN_PROFILES_MAX {
            set.clear();
        }
        set.insert(key);
    }
    Ok(())
}

/// A caller with the platform `operator` role (the `/api/admin` routes).
#[derive(Debug, Clone)]
pub struct Operator(pub Claims);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Caller(claims) = Caller::from_request_parts(parts, state).await?;
        if claims.role != Role::Operator {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route needs the operator role",
            ));
        }
        Ok(Operator(claims))
    }
}

//! Role-play tickets: what voxline signs when it issues a role-play, and what the ElevenLabs
//! post-call webhook takes a session's identity from. A ticket is an HS256 JWT with its own
//! audience, signed with a key derived from the service's JWT secret (so it can never pass as
//! an API token, nor an API token as a ticket), naming the role-play, the profile, the
//! company, the session kind and title, and when it expires. Single use is the database's
//! part (`voxline_domain::roleplays::use_ticket`).

use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The `aud` of every ticket.
const AUDIENCE: &str = "voxline-roleplay";
/// What the ticket key is derived with from the JWT secret.
const KEY_LABEL: &[u8] = b"voxline role-play ticket key v1";

/// What a ticket says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// The role-play's id.
    pub rid: String,
    /// The profile the session will belong to.
    pub sub: String,
    pub company: String,
    pub kind: String,
    pub title: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    pub aud: String,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("the role-play ticket has expired")]
    Expired,
    #[error("the role-play ticket is not one voxline signed")]
    Forged,
}

impl TicketError {
    /// The error code a refusal carries.
    pub fn code(&self) -> &'static str {
        match self {
            TicketError::Expired => "ticket_expired",
            TicketError::Forged => "ticket_invalid",
        }
    }
}

/// Signs and checks tickets.
#[derive(Clone)]
pub struct TicketKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TicketKeys {
    /// Keys derived from the service's JWT secret (HMAC-SHA256 of a fixed label).
    pub fn from_secret(secret: &str) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(KEY_LABEL);
        let key = mac.finalize().into_bytes();
        TicketKeys {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
        }
    }

    pub fn sign(&self, claims: &TicketClaims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// Checks the signature, the audience and the expiry (no leeway: the expiry is ours).
    pub fn verify(&self, ticket: &str) -> Result<TicketClaims, TicketError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        jsonwebtoken::decode::<TicketClaims>(ticket, &self.decoding, &validation)
            .map(|t| t.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TicketError::Expired,
                _ => TicketError::Forged,
            })
    }
}

impl TicketClaims {
    pub fn new(rid: &str, profile: &str, company: &str, kind: &str, title: &str, exp: i64) -> Self {
        TicketClaims {
            rid: rid.into(),
            sub: profile.into(),
            company: company.into(),
            kind: kind.into(),
            title: title.into(),
            exp,
            aud: AUDIENCE.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> TicketClaims {
        TicketClaims::new("rp1", "ann", "acme", "sales", "Cold call", exp)
    }

    fn later() -> i64 {
        chrono::Utc::now().timestamp() + 3_600
    }

    #[test]
    fn a_signed_ticket_verifies_and_says_what_it_was_signed_with() {
        let keys = TicketKeys::from_secret("s3cret");
        let ticket = keys.sign(&claims(later())).expect("sign");
        assert_eq!(keys.verify(&ticket).expect("valid").rid, "rp1");
    }

    #[test]
    fn an_expired_a_foreign_or_an_altered_ticket_is_refused() {
        let keys = TicketKeys::from_secret("s3cret");
        let expired = keys
            .sign(&claims(chrono::Utc::now().timestamp() - 1))
            .expect("sign");
        assert_eq!(keys.verify(&expired), Err(TicketError::Expired));
        let foreign = TicketKeys::from_secret("another")
            .sign(&claims(later()))
            .expect("sign");
        assert_eq!(keys.verify(&foreign), Err(TicketError::Forged));
        let mut altered = keys.sign(&claims(later())).expect("sign");
        altered.insert(altered.len() / 2, 'x');
        assert_eq!(keys.verify(&altered), Err(TicketError::Forged));
        assert_eq!(keys.verify("not a ticket"), Err(TicketError::Forged));
    }

    #[test]
    fn an_api_token_signed_with_the_jwt_secret_is_no_ticket() {
        // The same claims signed with the raw JWT secret (how API tokens are signed).
        let raw = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(later()),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .expect("sign");
        assert_eq!(
            TicketKeys::from_secret("s3cret").verify(&raw),
            Err(TicketError::Forged)
        );
    }
}

//! Tokens from an identity provider: RS256 and ES256 checked against its JWKS (a file or a
//! URL, re-read when a token names a new `kid`), `iss`/`aud` enforced when configured, and
//! everything else refused with 401. Keys are made per run with the `openssl` CLI.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backend, TestDb, start_api};

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A private key (PEM) and its public JWK.
struct TestKey {
    pem: Vec<u8>,
    jwk: Value,
    alg: Algorithm,
}

fn rsa_key(dir: &Path, kid: &str) -> TestKey {
    let path = dir.join(format!("{kid}.pem"));
    let path = path.to_str().expect("utf-8 path");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        path,
    ]);
    let modulus =
        String::from_utf8(openssl(&["rsa", "-in", path, "-noout", "-modulus"])).expect("text");
    let hex_n = modulus.trim().trim_start_matches("Modulus=");
    let n = hex::decode(hex_n).expect("hex modulus");
    TestKey {
        pem: std::fs::read(path).expect("pem"),
        jwk: json!({ "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                     "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB" }),
        alg: Algorithm::RS256,
    }
}

fn ec_key(dir: &Path, kid: &str) -> TestKey {
    let path = dir.join(format!("{kid}.pem"));
    let path = path.to_str().expect("utf-8 path");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path,
    ]);
    let der = openssl(&["pkey", "-in", path, "-pubout", "-outform", "DER"]);
    // The public point closes the DER: 0x04 || x (32 bytes) || y (32 bytes).
    let point = &der[der.len() - 65..];
    assert_eq!(point[0], 4, "an uncompressed point");
    TestKey {
        pem: std::fs::read(path).expect("pem"),
        jwk: json!({ "kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                     "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]) }),
        alg: Algorithm::ES256,
    }
}

fn sign(key: &TestKey, kid: Option<&str>, extra: Value) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({ "sub": "ann", "company_id": "acme", "role": "member", "exp": now + 600, "iat": now });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let mut header = Header::new(key.alg);
    header.kid = kid.map(str::to_string);
    let encoding = match key.alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&key.pem),
        _ => EncodingKey::from_ec_pem(&key.pem),
    }
    .expect("a signing key");
    jsonwebtoken::encode(&header, &claims, &encoding).expect("sign")
}

async fn status(base: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{base}/api/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
        .status()
}

#[tokio::test]
async fn rs256_and_es256_tokens_from_the_jwks_file_are_accepted_and_forgeries_are_not() {
    let keys_dir = tempfile::tempdir().expect("dir");
    let rsa = rsa_key(keys_dir.path(), "rsa-1");
    let ec = ec_key(keys_dir.path(), "ec-1");
    let stranger = rsa_key(keys_dir.path(), "rsa-1-impostor");
    let jwks = keys_dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [rsa.jwk, ec.jwk] }).to_string()).expect("write");
    let layer = format!(
        "[auth]\njwks_file = \"{}\"\nissuer = \"https://id.example.com/\"\naudience = \"voxline\"\n",
        jwks.display()
    );
    let Some(t) = TestDb::new(Backend::Sqlite, &[&layer]).await else {
        return;
    };
    let base = start_api(&t).await;
    let good = json!({ "iss": "https://id.example.com/", "aud": "voxline" });

    assert_eq!(
        status(&base, &sign(&rsa, Some("rsa-1"), good.clone())).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&base, &sign(&ec, Some("ec-1"), good.clone())).await,
        StatusCode::OK
    );
    // Signed by a key that is not in the JWKS, though it claims a known kid.
    assert_eq!(
        status(&base, &sign(&stranger, Some("rsa-1"), good.clone())).await,
        StatusCode::UNAUTHORIZED
    );
    // Wrong issuer, wrong audience, no audience.
    let wrong_iss = json!({ "iss": "https://evil.example.com/", "aud": "voxline" });
    assert_eq!(
        status(&base, &sign(&rsa, Some("rsa-1"), wrong_iss)).await,
        StatusCode::UNAUTHORIZED
    );
    let wrong_aud = json!({ "iss": "https://id.example.com/", "aud": "other-app" });
    assert_eq!(
        status(&base, &sign(&rsa, Some("rsa-1"), wrong_aud)).await,
        StatusCode::UNAUTHORIZED
    );
    let no_aud = json!({ "iss": "https://id.example.com/" });
    assert_eq!(
        status(&base, &sign(&rsa, Some("rsa-1"), no_aud)).await,
        StatusCode::UNAUTHORIZED
    );
    // Not yet valid (nbf a day ahead, beyond the leeway), and expired.
    let now = chrono::Utc::now().timestamp();
    let future = json!({ "iss": "https://id.example.com/", "aud": "voxline", "nbf": now + 86_400 });
    assert_eq!(
        status(&base, &sign(&rsa, Some("rsa-1"), future)).await,
        StatusCode::UNAUTHORIZED
    );
    let expired = json!({ "iss": "https://id.example.com/", "aud": "voxline", "exp": now - 3_600 });
    let response = reqwest::Client::new()
        .get(format!("{base}/api/sessions"))
        .bearer_auth(sign(&rsa, Some("rsa-1"), expired))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["message"], "token expired");
    // An unsigned token ("alg": "none") is never accepted.
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(
            json!({ "sub": "ann", "company_id": "acme", "role": "operator",
            "exp": now + 600, "iss": "https://id.example.com/", "aud": "voxline" })
            .to_string()
        )
    );
    assert_eq!(status(&base, &unsigned).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_rotated_key_is_fetched_from_the_jwks_url_when_a_token_names_it() {
    let keys_dir = tempfile::tempdir().expect("dir");
    let old = rsa_key(keys_dir.path(), "2026-old");
    let new = ec_key(keys_dir.path(), "2026-new");
    // The identity provider's JWKS endpoint: the old key first, both after the rotation.
    let document = Arc::new(std::sync::Mutex::new(json!({ "keys": [old.jwk] })));
    let fetches = Arc::new(AtomicUsize::new(0));
    let app = {
        let (document, fetches) = (document.clone(), fetches.clone());
        axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (document, fetches) = (document.clone(), fetches.clone());
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let body = document.lock().map(|d| d.clone()).unwrap_or(Value::Null);
                    axum::Json(body)
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let jwks_url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let layer = format!("[auth]\njwks_url = \"{jwks_url}\"\n");
    let Some(t) = TestDb::new(Backend::Sqlite, &[&layer]).await else {
        return;
    };
    let base = start_api(&t).await;
    assert_eq!(
        status(&base, &sign(&old, Some("2026-old"), json!({}))).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&base, &sign(&old, Some("2026-old"), json!({}))).await,
        StatusCode::OK
    );
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "known keys come from the cache"
    );

    if let Ok(mut d) = document.lock() {
        *d = json!({ "keys": [old.jwk, new.jwk] });
    }
    // A kid the cache does not know: one refresh may be spent on it (after the minimum
    // interval); until then the token is refused, never accepted with a guess.
    let token = sign(&new, Some("2026-new"), json!({}));
    support::eventually(
        "the rotated key is picked up",
        std::time::Duration::from_secs(20),
        || {
            let (base, token) = (base.clone(), token.clone());
            async move { status(&base, &token).await == StatusCode::OK }
        },
    )
    .await;
    let fetched = fetches.load(Ordering::SeqCst);
    assert!(
        fetched <= 3,
        "refreshes are rate-limited, not one per request: {fetched}"
    );
}

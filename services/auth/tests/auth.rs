//! Acceptance tests for token minting, verification and the interceptor.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tonic::service::Interceptor;
use tonic_types::StatusExt;
use touchstone_auth::{
    AgencyScope, AuthConfig, AuthError, AuthInterceptor, Caller, DevKey, ERROR_DOMAIN, Role,
    TokenRequest, Verifier,
};

const RSA_KEY: &str = include_str!("data/rsa-test-key.pem");
const RSA_JWKS: &str = include_str!("data/rsa-test-jwks.json");
const RSA_KID: &str = "rsa-test-1";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

struct Dev {
    _dir: tempfile::TempDir,
    key: DevKey,
    pem: String,
    verifier: Arc<Verifier>,
}

fn dev() -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let key = DevKey::load_or_create(dir.path()).unwrap();
    let pem = std::fs::read_to_string(dir.path().join("dev-signing-key.pem")).unwrap();
    let verifier = Verifier::from_jwks_json(AuthConfig::dev(dir.path()), &key.jwks_json()).unwrap();
    Dev {
        _dir: dir,
        key,
        pem,
        verifier,
    }
}

impl Dev {
    /// Signs arbitrary claims with the development key, for tokens `mint` refuses to make.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key.kid().to_owned());
        let key = EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

fn base_claims() -> Value {
    json!({
        "sub": "user-1",
        "iss": DevKey::ISSUER,
        "aud": DevKey::AUDIENCE,
        "exp": now() + 600,
        "iat": now(),
        "agency": "agency-a",
        "roles": ["officer"],
    })
}

fn officer() -> TokenRequest {
    TokenRequest::new(
        "user-1",
        Some("agency-a".into()),
        vec![Role::Officer, Role::SeniorOfficer],
    )
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn assert_no_token_in(err: &AuthError, token: &str) {
    let shown = format!("{err} {err:?}");
    for part in token.split('.').filter(|p| p.len() > 8) {
        assert!(!shown.contains(part), "error message leaks token: {shown}");
    }
}

#[tokio::test]
async fn dev_token_verifies_through_jwks_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = DevKey::load_or_create(dir.path()).unwrap();
    let verifier = Verifier::new(AuthConfig::dev(dir.path())).await.unwrap();
    let token = key.mint(&officer()).unwrap();
    let caller = verifier.verify(&token).unwrap();
    assert_eq!(caller.subject, "user-1");
    assert_eq!(caller.agency.as_deref(), Some("agency-a"));
    assert_eq!(caller.agencies, AgencyScope::Own);
    assert!(caller.has_role(Role::Officer) && caller.has_role(Role::SeniorOfficer));
    assert!(!caller.has_role(Role::HubAdmin));
    assert!(caller.acts_in("agency-a"));
    assert!(!caller.acts_in("agency-b"));
}

#[test]
fn dev_key_is_created_once_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevKey::load_or_create(dir.path()).unwrap();
    let jwks_path = DevKey::jwks_path(dir.path());
    assert_eq!(jwks_path, dir.path().join("dev-jwks.json"));
    assert_eq!(
        std::fs::read_to_string(&jwks_path).unwrap(),
        first.jwks_json()
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("dev-signing-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    std::fs::remove_file(&jwks_path).unwrap();
    let second = DevKey::load_or_create(dir.path()).unwrap();
    assert_eq!(second.kid(), first.kid());
    assert_eq!(second.jwks_json(), first.jwks_json());
    assert_eq!(
        std::fs::read_to_string(&jwks_path).unwrap(),
        first.jwks_json()
    );

    // A token from the first instance verifies with the reloaded key's JWKS.
    let token = first.mint(&officer()).unwrap();
    let verifier =
        Verifier::from_jwks_json(AuthConfig::dev(dir.path()), &second.jwks_json()).unwrap();
    verifier.verify(&token).unwrap();

    let jwks: Value = serde_json::from_str(&first.jwks_json()).unwrap();
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kid"], first.kid());
    assert!(
        jwk.get("d").is_none(),
        "JWKS must not contain the private key"
    );
    assert!(!format!("{first:?}").contains("PRIVATE"));
}

#[test]
fn different_dirs_get_different_keys() {
    let a = dev();
    let b = dev();
    assert_ne!(a.key.kid(), b.key.kid());
    let token = a.key.mint(&officer()).unwrap();
    assert!(matches!(
        b.verifier.verify(&token),
        Err(AuthError::UnknownKey)
    ));
}

#[test]
fn corrupt_key_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dev-signing-key.pem"), "not a key").unwrap();
    let err = DevKey::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, AuthError::DevKey(_)), "{err}");
}

#[test]
fn mint_rejects_bad_requests() {
    let d = dev();
    let mut t = officer();
    t.subject.clear();
    assert!(matches!(d.key.mint(&t), Err(AuthError::InvalidRequest(_))));
    let mut t = officer();
    t.ttl = Duration::ZERO;
    assert!(matches!(d.key.mint(&t), Err(AuthError::InvalidRequest(_))));
    let mut t = officer();
    t.agencies = Some(vec!["a".into(), "*".into()]);
    assert!(matches!(d.key.mint(&t), Err(AuthError::InvalidRequest(_))));
}

#[test]
fn agency_scopes_round_trip() {
    let d = dev();
    let mut t = TokenRequest::new("hub-1", None, vec![Role::HubAdmin]);
    t.agencies = Some(vec!["*".into()]);
    let caller = d.verifier.verify(&d.key.mint(&t).unwrap()).unwrap();
    assert_eq!(caller.agency, None);
    assert_eq!(caller.agencies, AgencyScope::All);
    assert!(caller.acts_in("any-agency"));

    t.agencies = Some(vec!["b".into(), "c".into()]);
    let caller = d.verifier.verify(&d.key.mint(&t).unwrap()).unwrap();
    assert_eq!(
        caller.agencies,
        AgencyScope::List(vec!["b".into(), "c".into()])
    );
    assert!(caller.acts_in("c") && !caller.acts_in("a"));
}

#[test]
fn expired_token_is_rejected() {
    let d = dev();
    let mut claims = base_claims();
    claims["exp"] = json!(now() - 3600);
    let token = d.sign(&claims);
    let err = d.verifier.verify(&token).unwrap_err();
    assert!(matches!(err, AuthError::Expired), "{err}");
    assert_eq!(err.reason(), "TOKEN_EXPIRED");
    assert_no_token_in(&err, &token);
}

#[test]
fn leeway_tolerates_small_skew() {
    let d = dev();
    let mut claims = base_claims();
    claims["exp"] = json!(now() - 5);
    d.verifier.verify(&d.sign(&claims)).unwrap();
}

#[test]
fn not_yet_valid_token_is_rejected() {
    let d = dev();
    let mut claims = base_claims();
    claims["nbf"] = json!(now() + 3600);
    let err = d.verifier.verify(&d.sign(&claims)).unwrap_err();
    assert!(matches!(err, AuthError::NotYetValid), "{err}");
}

#[test]
fn wrong_audience_is_rejected() {
    let d = dev();
    let mut t = officer();
    t.audience = "someone-else".into();
    let err = d.verifier.verify(&d.key.mint(&t).unwrap()).unwrap_err();
    assert!(matches!(err, AuthError::WrongAudience), "{err}");

    let mut claims = base_claims();
    claims["aud"] = json!(["other", "another"]);
    let err = d.verifier.verify(&d.sign(&claims)).unwrap_err();
    assert!(matches!(err, AuthError::WrongAudience), "{err}");

    // An audience list that includes ours is fine.
    claims["aud"] = json!(["other", DevKey::AUDIENCE]);
    d.verifier.verify(&d.sign(&claims)).unwrap();
}

#[test]
fn wrong_issuer_is_rejected() {
    let d = dev();
    let mut t = officer();
    t.issuer = "https://evil.example".into();
    let err = d.verifier.verify(&d.key.mint(&t).unwrap()).unwrap_err();
    assert!(matches!(err, AuthError::WrongIssuer), "{err}");
}

#[test]
fn missing_required_claims_are_rejected() {
    let d = dev();
    for claim in ["exp", "iss", "aud", "sub"] {
        let mut claims = base_claims();
        claims.as_object_mut().unwrap().remove(claim);
        let err = d.verifier.verify(&d.sign(&claims)).unwrap_err();
        assert!(
            matches!(&err, AuthError::MissingClaim(c) if *c == claim),
            "{claim}: {err}"
        );
        assert_eq!(err.reason(), "TOKEN_INVALID");
    }
}

#[test]
fn malformed_claims_are_rejected() {
    let d = dev();
    // A non-numeric exp counts as absent.
    let mut claims = base_claims();
    claims["exp"] = json!("tomorrow");
    let err = d.verifier.verify(&d.sign(&claims)).unwrap_err();
    assert!(matches!(err, AuthError::MissingClaim("exp")), "{err}");

    let cases = [
        ("sub", json!("")),
        ("sub", json!(42)),
        ("roles", json!("officer")),
        ("agencies", json!("agency-b")),
        ("agencies", json!(7)),
    ];
    for (claim, value) in cases {
        let mut claims = base_claims();
        claims[claim] = value.clone();
        let err = d.verifier.verify(&d.sign(&claims)).unwrap_err();
        assert!(
            matches!(err, AuthError::InvalidClaims(_)),
            "{claim}={value}: {err}"
        );
    }
}

#[test]
fn unknown_roles_are_ignored_and_empty_agency_is_none() {
    let d = dev();
    let mut claims = base_claims();
    claims["roles"] = json!(["officer", "superuser", "Officer", "analyst"]);
    claims["agency"] = json!("");
    let caller = d.verifier.verify(&d.sign(&claims)).unwrap();
    assert_eq!(
        caller.roles.into_iter().collect::<Vec<_>>(),
        vec![Role::Officer, Role::Analyst]
    );
    assert_eq!(caller.agency, None);

    claims.as_object_mut().unwrap().remove("roles");
    assert!(
        d.verifier
            .verify(&d.sign(&claims))
            .unwrap()
            .roles
            .is_empty()
    );
}

#[test]
fn alg_none_is_rejected() {
    let d = dev();
    let payload = b64(&base_claims());
    for header in [
        json!({"alg": "none"}),
        json!({"alg": "none", "typ": "JWT", "kid": d.key.kid()}),
        json!({"alg": "None", "kid": d.key.kid()}),
    ] {
        let token = format!("{}.{}.", b64(&header), payload);
        let err = d.verifier.verify(&token).unwrap_err();
        assert_eq!(err.reason(), "TOKEN_INVALID", "{header}: {err}");
    }
}

#[test]
fn hs256_signed_with_public_key_is_rejected() {
    let d = dev();
    let jwks: Value = serde_json::from_str(&d.key.jwks_json()).unwrap();
    let jwk = &jwks["keys"][0];
    let mut sec1 = vec![4u8];
    sec1.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
    sec1.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
    // Whatever bytes an attacker guesses the verifier uses as "the key", HS256 is refused.
    let jwks_text = d.key.jwks_json();
    let secrets: [&[u8]; 2] = [&sec1, jwks_text.as_bytes()];
    for secret in secrets {
        for kid in [Some(d.key.kid().to_owned()), None] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid;
            let token =
                jsonwebtoken::encode(&header, &base_claims(), &EncodingKey::from_secret(secret))
                    .unwrap();
            let err = d.verifier.verify(&token).unwrap_err();
            assert!(
                matches!(err, AuthError::AlgorithmNotAllowed | AuthError::UnknownKey),
                "{err}"
            );
        }
    }
}

#[test]
fn unknown_or_missing_kid_is_rejected() {
    let d = dev();
    let key = EncodingKey::from_ec_pem(d.pem.as_bytes()).unwrap();
    for kid in [Some("no-such-key".to_owned()), None] {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid;
        let token = jsonwebtoken::encode(&header, &base_claims(), &key).unwrap();
        let err = d.verifier.verify(&token).unwrap_err();
        assert!(matches!(err, AuthError::UnknownKey), "{err}");
    }
}

#[test]
fn forged_signatures_are_rejected() {
    let d = dev();
    let other = dev();
    // Signed by another key but claiming our kid.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(d.key.kid().to_owned());
    let forged = jsonwebtoken::encode(
        &header,
        &base_claims(),
        &EncodingKey::from_ec_pem(other.pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        d.verifier.verify(&forged),
        Err(AuthError::BadSignature)
    ));

    // A genuine token with an altered payload (escalated roles).
    let token = d.key.mint(&officer()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = base_claims();
    claims["roles"] = json!(["hub_admin"]);
    claims["agencies"] = json!("*");
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let err = d.verifier.verify(&tampered).unwrap_err();
    assert!(matches!(err, AuthError::BadSignature), "{err}");
    assert_no_token_in(&err, &tampered);

    // Truncated signature.
    let truncated = &token[..token.len() - 10];
    assert!(d.verifier.verify(truncated).is_err());
}

#[test]
fn critical_header_extensions_are_rejected() {
    let d = dev();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(d.key.kid().to_owned());
    header.crit = Some(vec!["exp-ext".into()]);
    let token = jsonwebtoken::encode(
        &header,
        &base_claims(),
        &EncodingKey::from_ec_pem(d.pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        d.verifier.verify(&token),
        Err(AuthError::Malformed)
    ));
}

#[test]
fn garbage_never_panics() {
    let d = dev();
    let long = "a".repeat(100_000);
    let inputs = [
        "",
        ".",
        "..",
        "...",
        "a.b.c",
        "a.b",
        "eyJ.eyJ.sig",
        "\u{0}\u{1}.\u{2}",
        "ééé.ééé.ééé",
        &long,
        "eyJhbGciOiJFUzI1NiJ9.e30.",
        "eyJhbGciOiJFUzI1NiIsImtpZCI6MX0.e30.AA",
    ];
    for input in inputs {
        assert!(d.verifier.verify(input).is_err(), "{input:?}");
    }
}

#[test]
fn rs256_jwks_works() {
    let cfg = AuthConfig {
        issuer: "https://idp.example".into(),
        audience: "touchstone".into(),
        jwks_file: None,
        jwks_url: None,
        leeway_secs: 30,
    };
    let verifier = Verifier::from_jwks_json(cfg, RSA_JWKS).unwrap();
    let key = EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap();
    let claims = json!({
        "sub": "svc-1", "iss": "https://idp.example", "aud": "touchstone",
        "exp": now() + 600, "roles": ["service"], "agencies": "*",
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(RSA_KID.into());
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let caller = verifier.verify(&token).unwrap();
    assert_eq!(caller.subject, "svc-1");
    assert!(caller.has_role(Role::Service));
    assert_eq!(caller.agencies, AgencyScope::All);

    // The RSA key verifies RS256 only, whatever the header asks for.
    for alg in [Algorithm::RS384, Algorithm::PS256, Algorithm::RS512] {
        let mut header = Header::new(alg);
        header.kid = Some(RSA_KID.into());
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert!(
            matches!(verifier.verify(&token), Err(AuthError::AlgorithmNotAllowed)),
            "{alg:?}"
        );
    }
    // HS256 keyed with the public key material.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(RSA_KID.into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(RSA_JWKS.as_bytes()),
    )
    .unwrap();
    assert!(matches!(
        verifier.verify(&token),
        Err(AuthError::AlgorithmNotAllowed)
    ));
}

#[test]
fn mixed_jwks_keeps_usable_keys_only() {
    let d = dev();
    let dev_jwks: Value = serde_json::from_str(&d.key.jwks_json()).unwrap();
    let rsa_jwks: Value = serde_json::from_str(RSA_JWKS).unwrap();
    let mut rsa_as_ps = rsa_jwks["keys"][0].clone();
    rsa_as_ps["kid"] = json!("rsa-ps");
    rsa_as_ps["alg"] = json!("PS256");
    let mut rsa_enc = rsa_jwks["keys"][0].clone();
    rsa_enc["kid"] = json!("rsa-enc");
    rsa_enc["use"] = json!("enc");
    let mut rsa_no_kid = rsa_jwks["keys"][0].clone();
    rsa_no_kid.as_object_mut().unwrap().remove("kid");
    let mixed = json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "EC", "kid": "bad-point", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        {"something": "else"},
        rsa_as_ps,
        rsa_enc,
        rsa_no_kid,
        rsa_jwks["keys"][0].clone(),
        dev_jwks["keys"][0].clone(),
    ]});
    let verifier = Verifier::from_jwks_json(
        AuthConfig::dev(Path::new("/nonexistent")),
        &mixed.to_string(),
    )
    .unwrap();
    verifier.verify(&d.key.mint(&officer()).unwrap()).unwrap();
    let shown = format!("{verifier:?}");
    assert!(shown.contains(RSA_KID) && shown.contains(d.key.kid()));
    assert!(!shown.contains("rsa-ps") && !shown.contains("hmac") && !shown.contains("rsa-enc"));

    let only_unusable = json!({"keys": [{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}]});
    assert!(matches!(
        Verifier::from_jwks_json(AuthConfig::dev(Path::new("/x")), &only_unusable.to_string()),
        Err(AuthError::JwksInvalid(_))
    ));
    assert!(matches!(
        Verifier::from_jwks_json(AuthConfig::dev(Path::new("/x")), "not json"),
        Err(AuthError::JwksInvalid(_))
    ));
}

#[tokio::test]
async fn config_needs_exactly_one_source() {
    let mut cfg = AuthConfig::dev(Path::new("/x"));
    cfg.jwks_file = None;
    assert!(matches!(
        Verifier::new(cfg.clone()).await,
        Err(AuthError::Config(_))
    ));
    cfg.jwks_file = Some("/x/dev-jwks.json".into());
    cfg.jwks_url = Some("http://127.0.0.1:1/jwks".into());
    assert!(matches!(
        Verifier::new(cfg).await,
        Err(AuthError::Config(_))
    ));

    let missing = AuthConfig::dev(Path::new("/definitely/not/here"));
    assert!(matches!(
        Verifier::new(missing).await,
        Err(AuthError::Io { .. })
    ));

    let mut empty_issuer = AuthConfig::dev(Path::new("/x"));
    empty_issuer.issuer.clear();
    assert!(matches!(
        Verifier::from_jwks_json(empty_issuer, RSA_JWKS),
        Err(AuthError::Config(_))
    ));
}

/// Serves whatever JWKS the test currently holds, counting requests.
async fn jwks_server(body: Arc<Mutex<String>>, hits: Arc<AtomicUsize>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let body = body.lock().unwrap().clone();
            hits.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut read = Vec::new();
                while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}/jwks.json")
}

#[tokio::test]
async fn url_source_refreshes_on_unknown_kid_at_most_every_30s() {
    let rotated = dev();
    let body = Arc::new(Mutex::new(RSA_JWKS.to_owned()));
    let hits = Arc::new(AtomicUsize::new(0));
    let url = jwks_server(Arc::clone(&body), Arc::clone(&hits)).await;

    let cfg = AuthConfig {
        jwks_file: None,
        jwks_url: Some(url),
        ..AuthConfig::dev(Path::new("/x"))
    };
    let verifier = Verifier::new(cfg).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // The identity provider rotates to a new key.
    *body.lock().unwrap() = rotated.key.jwks_json();
    let token = rotated.key.mint(&officer()).unwrap();
    assert!(matches!(
        verifier.verify(&token),
        Err(AuthError::UnknownKey)
    ));

    let mut ok = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if verifier.verify(&token).is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "refreshed key set was not picked up");
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // Further unknown kids within 30 s do not hit the server again.
    let stranger = dev();
    let stray = stranger.key.mint(&officer()).unwrap();
    for _ in 0..5 {
        assert!(matches!(
            verifier.verify(&stray),
            Err(AuthError::UnknownKey)
        ));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

fn request_with(auth: Option<&str>) -> tonic::Request<()> {
    let mut req = tonic::Request::new(());
    if let Some(value) = auth {
        req.metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    req
}

fn rejection_reason(result: Result<tonic::Request<()>, tonic::Status>) -> String {
    let status = result.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let info = status.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(info.domain, ERROR_DOMAIN);
    info.reason
}

#[test]
fn interceptor_rejects_missing_header() {
    let d = dev();
    let mut interceptor = AuthInterceptor::new(Arc::clone(&d.verifier));
    assert_eq!(
        rejection_reason(interceptor.call(request_with(None))),
        "TOKEN_MISSING"
    );
}

#[test]
fn interceptor_rejects_bad_scheme_and_bad_tokens() {
    let d = dev();
    let mut interceptor = AuthInterceptor::new(Arc::clone(&d.verifier));
    let token = d.key.mint(&officer()).unwrap();
    for value in [
        format!("Basic {token}"),
        token.clone(),
        "Bearer".to_owned(),
        "Bearer not-a-jwt".to_owned(),
    ] {
        assert_eq!(
            rejection_reason(interceptor.call(request_with(Some(&value)))),
            "TOKEN_INVALID",
            "{value}"
        );
    }

    let mut claims = base_claims();
    claims["exp"] = json!(now() - 3600);
    let expired = d.sign(&claims);
    let status = interceptor
        .call(request_with(Some(&format!("Bearer {expired}"))))
        .unwrap_err();
    assert!(!status.message().contains(&expired));
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "TOKEN_EXPIRED"
    );
}

#[test]
fn interceptor_puts_caller_into_extensions() {
    let d = dev();
    let interceptor = AuthInterceptor::new(Arc::clone(&d.verifier));
    let mut cloned = interceptor.clone();
    let token = d.key.mint(&officer()).unwrap();
    for value in [format!("Bearer {token}"), format!("bearer {token}")] {
        let req = cloned.call(request_with(Some(&value))).unwrap();
        let caller = Caller::from_request(&req).unwrap();
        assert_eq!(caller.subject, "user-1");
        assert_eq!(caller.agency.as_deref(), Some("agency-a"));
        assert!(caller.has_role(Role::SeniorOfficer));
    }
}

#[test]
fn caller_absent_without_interceptor() {
    let req = tonic::Request::new(());
    let status = Caller::from_request(&req).unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[test]
fn a_remembered_token_still_expires() {
    let d = dev();
    let verifier = Verifier::from_jwks_json(
        AuthConfig {
            leeway_secs: 0,
            ..AuthConfig::dev(d._dir.path())
        },
        &d.key.jwks_json(),
    )
    .unwrap();
    let mut t = officer();
    t.ttl = std::time::Duration::from_secs(1);
    let token = d.key.mint(&t).unwrap();
    let first = verifier.verify(&token).unwrap();
    let again = verifier.verify(&token).unwrap();
    assert_eq!(first.subject, again.subject);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let err = verifier.verify(&token).unwrap_err();
    assert!(matches!(err, AuthError::Expired), "{err}");
    // A tampered copy of a remembered token is still checked in full.
    let fresh = d.key.mint(&officer()).unwrap();
    verifier.verify(&fresh).unwrap();
    let mut tampered = fresh.clone();
    tampered.pop();
    tampered.push(if fresh.ends_with('A') { 'B' } else { 'A' });
    assert!(verifier.verify(&tampered).is_err());
}

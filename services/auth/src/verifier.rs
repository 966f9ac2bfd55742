//! Verification of bearer tokens against a JSON Web Key Set loaded from a file or URL.
//!
//! Each key's algorithm is fixed when the key set is loaded (RSA keys verify RS256 only,
//! P-256 keys ES256 only); a token's header can only name that algorithm or be refused, which
//! rules out `none`, HMAC-with-a-public-key and similar confusions.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::caller::{AgencyScope, Caller, Role};
use crate::devkey::DevKey;
use crate::error::AuthError;

/// Longer tokens are refused before any parsing; real ones are a few kilobytes at most.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Caps configured leeway: large values would accept long-expired tokens (and overflow the
/// library's timestamp arithmetic).
const MAX_LEEWAY_SECS: u64 = 3600;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where the verification keys come from and which issuer and audience tokens must name.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// Tolerated clock skew for `exp` and `nbf`, capped at one hour.
    pub leeway_secs: u64,
}

impl AuthConfig {
    /// Settings that accept tokens minted by the [`DevKey`] in `dir`.
    pub fn dev(dir: &Path) -> Self {
        AuthConfig {
            issuer: DevKey::ISSUER.to_owned(),
            audience: DevKey::AUDIENCE.to_owned(),
            jwks_file: Some(DevKey::jwks_path(dir)),
            jwks_url: None,
            leeway_secs: 30,
        }
    }
}

#[derive(Clone)]
struct KeyEntry {
    alg: Algorithm,
    key: DecodingKey,
}

type KeyMap = HashMap<String, KeyEntry>;

/// Verifies bearer tokens; cheap to share behind an `Arc`.
pub struct Verifier {
    issuer: String,
    audience: String,
    leeway: u64,
    // Swapped as a whole on refresh so that readers never see a half-updated set.
    keys: Arc<RwLock<Arc<KeyMap>>>,
    refresher: Option<Refresher>,
    // Tokens already verified, by SHA-256 of the token, with their expiry: a
    // caller sends the same token on every call, and checking an ES256 or RS256
    // signature costs far more than the call itself. Cleared when keys change.
    verified: Arc<Mutex<VerifiedTokens>>,
}

/// Verified tokens by SHA-256, with the caller and the `exp` they carry.
type VerifiedTokens = HashMap<[u8; 32], (Caller, u64)>;

/// Most verified tokens remembered; past it the cache starts afresh.
const VERIFIED_CACHE_MAX: usize = 10_000;

struct Refresher {
    url: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    last_attempt: Mutex<Option<Instant>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<String> = self.current_keys().keys().cloned().collect();
        kids.sort();
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("kids", &kids)
            .field("jwks_url", &self.refresher.as_ref().map(|r| r.url.as_str()))
            .finish()
    }
}

impl Verifier {
    /// Loads the key set from `jwks_file` or `jwks_url` (exactly one must be set). A URL
    /// source is fetched again in the background when a token names an unknown key, at most
    /// once per 30 seconds (the first such refresh may follow the initial load at once), so
    /// rotated keys are picked up without a restart. Fails if the source cannot be read or
    /// holds no usable key.
    pub async fn new(mut cfg: AuthConfig) -> Result<Arc<Verifier>, AuthError> {
        match (cfg.jwks_file.take(), cfg.jwks_url.take()) {
            (Some(path), None) => {
                let json = tokio::fs::read_to_string(&path)
                    .await
                    .map_err(|e| AuthError::io("reading JWKS file", &path, e))?;
                Self::build(cfg, &json, None)
            }
            (None, Some(url)) => {
                // Refreshes are spawned from `verify`, which may run outside the runtime.
                let runtime = tokio::runtime::Handle::try_current()
                    .map_err(|_| AuthError::Config("a JWKS URL needs a Tokio runtime".into()))?;
                // reqwest is built without a TLS provider of its own; ring is the
                // process-wide one (a second install is a harmless no-op).
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| AuthError::JwksFetch(e.without_url().to_string()))?;
                let json = fetch_jwks(&client, &url).await?;
                let refresher = Refresher {
                    url,
                    client,
                    runtime,
                    last_attempt: Mutex::new(None),
                };
                Self::build(cfg, &json, Some(refresher))
            }
            _ => Err(AuthError::Config(
                "exactly one of jwks_file and jwks_url must be set".into(),
            )),
        }
    }

    /// Builds a verifier from key-set JSON; `jwks_file` and `jwks_url` in `cfg` are ignored
    /// and the keys are never refreshed.
    pub fn from_jwks_json(cfg: AuthConfig, json: &str) -> Result<Arc<Verifier>, AuthError> {
        Self::build(cfg, json, None)
    }

    fn build(
        cfg: AuthConfig,
        json: &str,
        refresher: Option<Refresher>,
    ) -> Result<Arc<Verifier>, AuthError> {
        if cfg.issuer.is_empty() || cfg.audience.is_empty() {
            return Err(AuthError::Config("issuer and audience must be set".into()));
        }
        let keys = parse_jwks(json)?;
        Ok(Arc::new(Verifier {
            issuer: cfg.issuer,
            audience: cfg.audience,
            leeway: cfg.leeway_secs.min(MAX_LEEWAY_SECS),
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            refresher,
            verified: Arc::new(Mutex::new(HashMap::new())),
        }))
    }

    /// Checks signature, `iss`, `aud`, `exp` (required), `nbf` and `sub` (required), and
    /// returns the caller the token describes.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        if token.is_empty() {
            return Err(AuthError::TokenMissing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let digest: [u8; 32] = {
            use sha2::{Digest, Sha256};
            Sha256::digest(token.as_bytes()).into()
        };
        if let Some(caller) = self.cached(&digest) {
            return Ok(caller);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        // RFC 7515 requires refusing critical extensions we do not implement (all of them).
        if header.crit.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(AuthError::Malformed);
        }
        let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
        let keys = self.current_keys();
        let Some(entry) = keys.get(kid) else {
            self.schedule_refresh();
            return Err(AuthError::UnknownKey);
        };
        if header.alg != entry.alg {
            return Err(AuthError::AlgorithmNotAllowed);
        }

        let mut validation = Validation::new(entry.alg);
        validation.leeway = self.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        // Without making iss and aud required, the library accepts tokens that omit them.
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);

        let data = jsonwebtoken::decode::<TokenClaims>(token, &entry.key, &validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let exp = data
            .claims
            .exp
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let caller = data.claims.into_caller()?;
        let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= VERIFIED_CACHE_MAX {
            cache.clear();
        }
        cache.insert(digest, (caller.clone(), exp));
        Ok(caller)
    }

    /// A token verified before and not yet expired (without leeway: a cached
    /// entry never outlives the token's own `exp`).
    fn cached(&self, digest: &[u8; 32]) -> Option<Caller> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.get(digest) {
            Some((caller, exp)) if *exp > now => Some(caller.clone()),
            Some(_) => {
                cache.remove(digest);
                None
            }
            None => None,
        }
    }

    fn current_keys(&self) -> Arc<KeyMap> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn schedule_refresh(&self) {
        let Some(r) = &self.refresher else {
            return;
        };
        {
            let mut last = r
                .last_attempt
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let client = r.client.clone();
        let url = r.url.clone();
        let keys = Arc::clone(&self.keys);
        let verified = Arc::clone(&self.verified);
        r.runtime.spawn(async move {
            match fetch_jwks(&client, &url).await.and_then(|j| parse_jwks(&j)) {
                Ok(map) => {
                    let count = map.len();
                    *keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
                    verified
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clear();
                    tracing::info!(keys = count, "refreshed JWKS");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the current keys");
                }
            }
        });
    }
}

async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<String, AuthError> {
    let fetch_err = |e: reqwest::Error| AuthError::JwksFetch(e.without_url().to_string());
    let mut resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(fetch_err)?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(fetch_err)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(AuthError::JwksFetch("response is larger than 1 MiB".into()));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| AuthError::JwksInvalid("response is not UTF-8".into()))
}

fn parse_jwks(json: &str) -> Result<KeyMap, AuthError> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_str(json)
        .map_err(|_| AuthError::JwksInvalid("not a JSON Web Key Set".into()))?;
    let mut map = KeyMap::new();
    // One odd key (another algorithm, an encryption key) must not disable the others.
    for (index, value) in raw.keys.into_iter().enumerate() {
        match key_entry(value) {
            Ok((kid, entry)) => match map.entry(kid) {
                Entry::Vacant(slot) => {
                    slot.insert(entry);
                }
                Entry::Occupied(existing) => {
                    let kid = existing.key();
                    tracing::warn!(index, kid, "JWKS has a duplicate kid; keeping the first");
                }
            },
            Err(reason) => tracing::warn!(index, reason, "skipping JWKS key"),
        }
    }
    if map.is_empty() {
        return Err(AuthError::JwksInvalid(
            "no usable RS256 or ES256 (P-256) signing key with a kid".into(),
        ));
    }
    Ok(map)
}

fn key_entry(value: serde_json::Value) -> Result<(String, KeyEntry), &'static str> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "not a JWK")?;
    let kid = jwk
        .common
        .key_id
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or("no kid")?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("not a signature key");
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Err("key_ops does not allow verify");
    }
    let declared = jwk.common.key_algorithm;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            if !matches!(declared, None | Some(KeyAlgorithm::RS256)) {
                return Err("RSA key for an algorithm other than RS256");
            }
            let n = URL_SAFE_NO_PAD
                .decode(&p.n)
                .map_err(|_| "bad RSA modulus")?;
            let e = URL_SAFE_NO_PAD
                .decode(&p.e)
                .map_err(|_| "bad RSA exponent")?;
            let n_len = n.iter().skip_while(|b| **b == 0).count();
            if !(256..=512).contains(&n_len) {
                return Err("RSA modulus must be 2048 to 4096 bits");
            }
            if e.is_empty() || e.len() > 8 {
                return Err("bad RSA exponent");
            }
            Ok((
                kid,
                KeyEntry {
                    alg: Algorithm::RS256,
                    key: DecodingKey::from_rsa_raw_components(&n, &e),
                },
            ))
        }
        AlgorithmParameters::EllipticCurve(p) => {
            if p.curve != EllipticCurve::P256 {
                return Err("EC key on a curve other than P-256");
            }
            if !matches!(declared, None | Some(KeyAlgorithm::ES256)) {
                return Err("P-256 key for an algorithm other than ES256");
            }
            let x = URL_SAFE_NO_PAD.decode(&p.x).map_err(|_| "bad EC x")?;
            let y = URL_SAFE_NO_PAD.decode(&p.y).map_err(|_| "bad EC y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("bad EC point size");
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            // Refuse points not on the curve now rather than failing every token later.
            p256::PublicKey::from_sec1_bytes(&point).map_err(|_| "EC point not on P-256")?;
            Ok((
                kid,
                KeyEntry {
                    alg: Algorithm::ES256,
                    // Despite its name this takes the SEC1 point, as `from_ec_components` does.
                    key: DecodingKey::from_ec_der(&point),
                },
            ))
        }
        _ => Err("unsupported key type (only RSA and EC P-256)"),
    }
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(match c.as_str() {
            "exp" => "exp",
            "iss" => "iss",
            "aud" => "aud",
            "sub" => "sub",
            "nbf" => "nbf",
            _ => "required",
        }),
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::InvalidClaims("a claim is missing or has the wrong type")
        }
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
        _ => AuthError::Malformed,
    }
}

/// The claims Touchstone reads; `exp`, `iss`, `aud` and `nbf` are checked by the library.
#[derive(Deserialize)]
struct TokenClaims {
    // Checked by jsonwebtoken (required, not past; a non-number counts as
    // missing); kept to bound the cache entry.
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    agency: Option<String>,
    #[serde(default)]
    agencies: Option<AgenciesClaim>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AgenciesClaim {
    Star(String),
    List(Vec<String>),
}

impl TokenClaims {
    fn into_caller(self) -> Result<Caller, AuthError> {
        let subject = self
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::InvalidClaims("empty subject"))?;
        let agencies = match self.agencies {
            None => AgencyScope::Own,
            Some(AgenciesClaim::Star(s)) if s == "*" => AgencyScope::All,
            Some(AgenciesClaim::Star(_)) => {
                return Err(AuthError::InvalidClaims("agencies must be a list or \"*\""));
            }
            Some(AgenciesClaim::List(list)) => {
                let list: Vec<String> = list.into_iter().filter(|a| !a.is_empty()).collect();
                if list.is_empty() {
                    AgencyScope::Own
                } else {
                    AgencyScope::List(list)
                }
            }
        };
        Ok(Caller {
            subject,
            agency: self.agency.filter(|a| !a.is_empty()),
            agencies,
            roles: self
                .roles
                .unwrap_or_default()
                .iter()
                .filter_map(|r| Role::parse(r))
                .collect(),
        })
    }
}

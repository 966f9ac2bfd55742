//! The development signing key behind `touchstone up` and `touchstone token`: a P-256 key
//! kept on disk next to the local data, with a JWKS file that local services verify against.

use std::fmt;
use std::io::{ErrorKind as IoErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::Serialize;

use crate::caller::Role;
use crate::error::AuthError;

const KEY_FILE: &str = "dev-signing-key.pem";
const JWKS_FILE: &str = "dev-jwks.json";
/// Characters of the RFC 7638 thumbprint used as kid: enough to tell keys apart, short
/// enough to read in logs.
const KID_LEN: usize = 16;

/// A local ES256 signing key. Only for development: whoever can read the key file can mint
/// any token, so production verifies against an identity provider's JWKS instead.
pub struct DevKey {
    encoding: EncodingKey,
    kid: String,
    jwks: String,
}

impl fmt::Debug for DevKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What to put into a minted token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub subject: String,
    pub agency: Option<String>,
    /// `Some(vec!["*".into()])` means all agencies.
    pub agencies: Option<Vec<String>>,
    pub roles: Vec<Role>,
    pub ttl: Duration,
    pub issuer: String,
    pub audience: String,
}

impl TokenRequest {
    /// A one-hour token with the development issuer and audience.
    pub fn new(subject: impl Into<String>, agency: Option<String>, roles: Vec<Role>) -> Self {
        TokenRequest {
            subject: subject.into(),
            agency,
            agencies: None,
            roles,
            ttl: Duration::from_secs(3600),
            issuer: DevKey::ISSUER.to_owned(),
            audience: DevKey::AUDIENCE.to_owned(),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum AgenciesOut<'a> {
    All(&'static str),
    List(&'a [String]),
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    agency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agencies: Option<AgenciesOut<'a>>,
    roles: Vec<&'static str>,
}

impl DevKey {
    pub const ISSUER: &'static str = "touchstone-dev";
    pub const AUDIENCE: &'static str = "touchstone";

    /// Loads `<dir>/dev-signing-key.pem` (PKCS#8 P-256) or, on first run, creates it with
    /// mode 0600. Also (re)writes `<dir>/dev-jwks.json` when it is missing or does not match
    /// the key, so the two files cannot drift apart.
    pub fn load_or_create(dir: &Path) -> Result<DevKey, AuthError> {
        std::fs::create_dir_all(dir).map_err(|e| AuthError::io("creating", dir, e))?;
        let key_path = dir.join(KEY_FILE);
        let secret = match read_key(&key_path)? {
            Some(secret) => secret,
            None => create_key(&key_path)?,
        };
        let dev = DevKey::from_secret(&secret)?;
        let jwks_path = Self::jwks_path(dir);
        let current = match std::fs::read_to_string(&jwks_path) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == IoErrorKind::NotFound => None,
            Err(e) => return Err(AuthError::io("reading", jwks_path, e)),
        };
        if current.as_deref() != Some(dev.jwks.as_str()) {
            write_replace(&jwks_path, dev.jwks.as_bytes())?;
        }
        Ok(dev)
    }

    pub fn jwks_path(dir: &Path) -> PathBuf {
        dir.join(JWKS_FILE)
    }

    /// The public key set (one key) in the form `dev-jwks.json` holds.
    pub fn jwks_json(&self) -> String {
        self.jwks.clone()
    }

    /// The key id that minted tokens carry in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs an ES256 token with this key's kid.
    pub fn mint(&self, t: &TokenRequest) -> Result<String, AuthError> {
        if t.subject.is_empty() {
            return Err(AuthError::InvalidRequest("subject must not be empty"));
        }
        if t.issuer.is_empty() || t.audience.is_empty() {
            return Err(AuthError::InvalidRequest("issuer and audience must be set"));
        }
        if t.ttl.as_secs() == 0 {
            return Err(AuthError::InvalidRequest("ttl must be at least one second"));
        }
        let agencies = match t.agencies.as_deref() {
            None => None,
            Some([star]) if star == "*" => Some(AgenciesOut::All("*")),
            Some(list) if list.iter().any(|a| a == "*" || a.is_empty()) => {
                return Err(AuthError::InvalidRequest(
                    "agencies must be [\"*\"] alone or a list of agency ids",
                ));
            }
            Some(list) => Some(AgenciesOut::List(list)),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AuthError::Signing)?
            .as_secs();
        let mut roles: Vec<&'static str> = t.roles.iter().map(Role::as_str).collect();
        roles.sort_unstable();
        roles.dedup();
        let claims = MintClaims {
            sub: &t.subject,
            iss: &t.issuer,
            aud: &t.audience,
            exp: now.saturating_add(t.ttl.as_secs()),
            iat: now,
            agency: t.agency.as_deref().filter(|a| !a.is_empty()),
            agencies,
            roles,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|_| AuthError::Signing)
    }

    fn from_secret(secret: &p256::SecretKey) -> Result<DevKey, AuthError> {
        let der = secret
            .to_pkcs8_der()
            .map_err(|_| AuthError::DevKey("could not encode the key"))?;
        let encoding = EncodingKey::from_ec_der(der.as_bytes());

        let point = secret.public_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err(AuthError::DevKey("public key is not an affine point"));
        };
        let mut jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x: URL_SAFE_NO_PAD.encode(x),
                y: URL_SAFE_NO_PAD.encode(y),
            }),
        };
        let thumbprint = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| AuthError::DevKey("could not compute the key thumbprint"))?;
        let kid: String = thumbprint.chars().take(KID_LEN).collect();
        jwk.common = CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::ES256),
            key_id: Some(kid.clone()),
            ..CommonParameters::default()
        };
        let mut jwks = serde_json::to_string_pretty(&JwkSet { keys: vec![jwk] })
            .map_err(|_| AuthError::DevKey("could not encode the JWKS"))?;
        jwks.push('\n');
        Ok(DevKey {
            encoding,
            kid,
            jwks,
        })
    }
}

fn read_key(path: &Path) -> Result<Option<p256::SecretKey>, AuthError> {
    let pem = match std::fs::read_to_string(path) {
        Ok(pem) => p256::elliptic_curve::zeroize::Zeroizing::new(pem),
        Err(e) if e.kind() == IoErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuthError::io("reading", path, e)),
    };
    warn_if_readable_by_others(path);
    p256::SecretKey::from_pkcs8_pem(&pem)
        .map(Some)
        .map_err(|_| AuthError::DevKey("key file is not a PKCS#8 P-256 private key"))
}

fn create_key(path: &Path) -> Result<p256::SecretKey, AuthError> {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| AuthError::DevKey("could not encode the key"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        // Another process (a second `touchstone up`) created it first: use that key.
        Err(e) if e.kind() == IoErrorKind::AlreadyExists => {
            return read_key(path)?.ok_or(AuthError::DevKey("key file vanished while loading"));
        }
        Err(e) => return Err(AuthError::io("creating", path, e)),
    };
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| AuthError::io("writing", path, e))?;
    tracing::info!(path = %path.display(), "created development signing key");
    Ok(secret)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "development signing key is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Writes via a temporary file and rename so readers never see a half-written JWKS.
fn write_replace(path: &Path, contents: &[u8]) -> Result<(), AuthError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, contents).map_err(|e| AuthError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        AuthError::io("replacing", path, e)
    })
}

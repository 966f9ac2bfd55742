//! Master and per-agency data keys: key wrapping, sealing and opening of field values, and
//! blind indexes.

use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;

use crate::CryptoError;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const VERSION: u8 = 1;

/// HKDF-Expand `info` for the blind-index subkey; a new label (not a new key) is the way to
/// get a second independent index family should one ever be needed.
const BLIND_INDEX_INFO: &[u8] = b"touchstone/blind-index/v1";

type HmacSha256 = Hmac<Sha256>;

/// Overwrites key bytes when a key is dropped. Best effort: without the `zeroize` crate the
/// compiler may still have left copies elsewhere, but the owned buffer does not linger.
fn wipe(bytes: &mut [u8; KEY_LEN]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

fn random_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut key);
    key
}

/// The configured master key that wraps every agency's data key.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_LEN]);

impl MasterKey {
    /// Parses a 32-byte key from base64 (standard or URL-safe alphabet, padding optional;
    /// surrounding whitespace ignored, as keys often come from files or env vars).
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let s = s.trim();
        let decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(s).ok())
            .ok_or(CryptoError::KeyEncoding)?;
        let key: [u8; KEY_LEN] =
            decoded
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::KeyLength {
                    expected: KEY_LEN,
                    actual: decoded.len(),
                })?;
        Ok(Self(key))
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        Self(random_key())
    }

    /// Standard padded base64, the form `from_base64` reads back.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// HMAC label of a key's id, so that the id reveals nothing usable about the key.
const KEY_ID_INFO: &[u8] = b"touchstone/key-id/v1";

/// One agency's AES-256 key for its personal-data fields, plus any older keys of the agency
/// that values stored earlier were sealed with (kept to open those values, never to seal).
#[derive(Clone)]
pub struct DataKey {
    key: [u8; KEY_LEN],
    /// Derived once so that hashing for search never uses the encryption key directly.
    index_key: [u8; KEY_LEN],
    older: Vec<DataKey>,
}

impl DataKey {
    /// A fresh random data key.
    pub fn generate() -> Self {
        Self::from_bytes(random_key())
    }

    fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        // HKDF-Expand (RFC 5869) with the data key as PRK and a single output block: the
        // data key is already uniformly random, so the extract step adds nothing.
        let mut mac = hmac_with(&key);
        mac.update(BLIND_INDEX_INFO);
        mac.update(&[1]);
        let index_key: [u8; KEY_LEN] = mac.finalize().into_bytes().into();
        Self {
            key,
            index_key,
            older: Vec::new(),
        }
    }

    /// This key, also opening values sealed with `older` keys (and their searches matching
    /// blind indexes made with them). Sealing and new indexes still use this key alone.
    pub fn with_older(mut self, older: Vec<DataKey>) -> Self {
        self.older = older.into_iter().filter(|o| o.key != self.key).collect();
        self
    }

    /// A short public identifier of the key (not of its older keys): 16 hex digits of an HMAC
    /// under the key, so equal keys are recognised across databases without comparing them.
    pub fn id(&self) -> String {
        let mut mac = hmac_with(&self.key);
        mac.update(KEY_ID_INFO);
        to_hex(&mac.finalize().into_bytes()[..8])
    }

    /// AES-256-GCM wrap of this key under `master`, bound to `agency` so a wrapped key copied
    /// to another agency's row fails to unwrap.
    pub fn wrap(&self, master: &MasterKey, agency: &str) -> Vec<u8> {
        seal_with(&master.0, agency.as_bytes(), &self.key)
    }

    /// Reverses [`DataKey::wrap`].
    pub fn unwrap(master: &MasterKey, agency: &str, wrapped: &[u8]) -> Result<Self, CryptoError> {
        let mut plain = open_with(&master.0, agency.as_bytes(), wrapped).map_err(|e| match e {
            CryptoError::Decrypt => CryptoError::Unwrap,
            other => other,
        })?;
        if plain.len() != KEY_LEN {
            return Err(CryptoError::Malformed);
        }
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&plain);
        plain.fill(0);
        Ok(Self::from_bytes(key))
    }

    /// Encrypts `plaintext` with a random 96-bit nonce; `aad` ties the result to its row and
    /// field (e.g. `"agency/clients/id/field"`), so a value moved elsewhere fails to open.
    ///
    /// Random nonces keep the collision risk negligible up to about 2^32 values per key,
    /// far above what one agency's fields reach.
    ///
    /// # Panics
    ///
    /// Only if `plaintext` or `aad` exceeds the AES-GCM limit of 2^36 bytes (64 GiB), which
    /// no field value can reach through a gRPC message.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.key, aad, plaintext)
    }

    /// Decrypts a value from [`DataKey::seal`]; fails unless key (this one or an older one),
    /// `aad` and bytes all match.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match open_with(&self.key, aad, sealed) {
            Err(CryptoError::Decrypt) => self
                .older
                .iter()
                .find_map(|o| open_with(&o.key, aad, sealed).ok())
                .ok_or(CryptoError::Decrypt),
            other => other,
        }
    }

    /// HMAC-SHA256 over `kind || 0x00 || normalised` under the blind-index subkey, as
    /// lowercase hex. `kind` (e.g. `"email"`) keeps equal values of different kinds apart;
    /// it is a fixed label from code and must not contain NUL. Callers pass values through
    /// [`crate::normalise`] first so that trivially different spellings still match.
    pub fn blind_index(&self, kind: &str, normalised: &str) -> String {
        let mut mac = hmac_with(&self.index_key);
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(normalised.as_bytes());
        to_hex(&mac.finalize().into_bytes())
    }

    /// [`DataKey::blind_index`] under this key, then under each older key: what a lookup
    /// must match so that values indexed before a key repair are still found.
    pub fn blind_indexes(&self, kind: &str, normalised: &str) -> Vec<String> {
        std::iter::once(self)
            .chain(self.older.iter())
            .map(|k| k.blind_index(kind, normalised))
            .collect()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        wipe(&mut self.key);
        wipe(&mut self.index_key);
    }
}

fn hmac_with(key: &[u8; KEY_LEN]) -> HmacSha256 {
    // RFC 2104 zero-pads keys shorter than the 64-byte block, so padding here yields the same
    // MAC while using the infallible fixed-size constructor instead of `new_from_slice`.
    let mut block = hmac::digest::Key::<HmacSha256>::default();
    block[..KEY_LEN].copy_from_slice(key);
    <HmacSha256 as KeyInit>::new(&block)
}

fn versioned_aad(aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + aad.len());
    full.push(VERSION);
    full.extend_from_slice(aad);
    full
}

fn seal_with(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(&(*key).into());
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let aad = versioned_aad(aad);
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("AES-GCM input within 2^36 bytes");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

fn open_with(key: &[u8; KEY_LEN], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (&version, rest) = sealed.split_first().ok_or(CryptoError::Malformed)?;
    if version != VERSION {
        return Err(CryptoError::UnsupportedVersion(version));
    }
    let (nonce, ciphertext) = rest
        .split_at_checked(NONCE_LEN)
        .ok_or(CryptoError::Malformed)?;
    if ciphertext.len() < TAG_LEN {
        return Err(CryptoError::Malformed);
    }
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Malformed)?;
    let cipher = Aes256Gcm::new(&(*key).into());
    let aad = versioned_aad(aad);
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Decrypt)
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn master_key_base64_round_trip() {
        let key = MasterKey::generate();
        let text = key.to_base64();
        let back = MasterKey::from_base64(&format!("  {text}\n")).unwrap();
        assert_eq!(back.0, key.0);
        let url_no_pad = URL_SAFE_NO_PAD.encode(key.0);
        assert_eq!(MasterKey::from_base64(&url_no_pad).unwrap().0, key.0);
    }

    #[test]
    fn master_key_rejects_bad_input() {
        assert_eq!(
            MasterKey::from_base64("not base64!").unwrap_err(),
            CryptoError::KeyEncoding
        );
        assert_eq!(
            MasterKey::from_base64(&STANDARD.encode([7u8; 16])).unwrap_err(),
            CryptoError::KeyLength {
                expected: 32,
                actual: 16
            }
        );
        assert!(MasterKey::from_base64("").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let master = MasterKey::from_base64(&STANDARD.encode([0xabu8; 32])).unwrap();
        let data = DataKey::from_bytes([0xcdu8; 32]);
        assert_eq!(format!("{master:?}"), "MasterKey([redacted])");
        assert_eq!(format!("{data:?}"), "DataKey([redacted])");
    }

    #[test]
    fn seal_open_round_trip() {
        let key = DataKey::generate();
        let aad = b"agency-a/clients/c1/email";
        for plaintext in [&b""[..], b"x", "Zoë O'Brien".as_bytes(), &[0u8; 1000]] {
            let sealed = key.seal(aad, plaintext);
            assert_eq!(sealed.len(), 1 + NONCE_LEN + plaintext.len() + TAG_LEN);
            assert_eq!(sealed[0], VERSION);
            assert_eq!(key.open(aad, &sealed).unwrap(), plaintext);
        }
    }

    #[test]
    fn seal_uses_fresh_nonces() {
        let key = DataKey::generate();
        assert_ne!(key.seal(b"a", b"same"), key.seal(b"a", b"same"));
    }

    #[test]
    fn open_fails_with_wrong_aad_or_key() {
        let key = DataKey::generate();
        let sealed = key.seal(b"agency-a/clients/c1/name", b"Ada");
        assert_eq!(
            key.open(b"agency-a/clients/c2/name", &sealed),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            DataKey::generate().open(b"agency-a/clients/c1/name", &sealed),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn open_detects_tampering_and_garbage() {
        let key = DataKey::generate();
        let aad = b"row";
        let sealed = key.seal(aad, b"personal data");
        for i in 1..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(key.open(aad, &bad), Err(CryptoError::Decrypt), "byte {i}");
        }
        let mut bad = sealed.clone();
        bad[0] = 2;
        assert_eq!(key.open(aad, &bad), Err(CryptoError::UnsupportedVersion(2)));
        assert_eq!(
            key.open(aad, &sealed[..sealed.len() - 1]),
            Err(CryptoError::Decrypt)
        );
        for len in 0..(1 + NONCE_LEN + TAG_LEN) {
            let mut short = vec![0u8; len];
            if let Some(first) = short.first_mut() {
                *first = VERSION;
            }
            assert_eq!(
                key.open(aad, &short),
                Err(CryptoError::Malformed),
                "len {len}"
            );
        }
    }

    #[test]
    fn wrap_unwrap_round_trip() {
        let master = MasterKey::generate();
        let key = DataKey::generate();
        let wrapped = key.wrap(&master, "agency-a");
        assert_eq!(wrapped.len(), 1 + NONCE_LEN + KEY_LEN + TAG_LEN);
        let back = DataKey::unwrap(&master, "agency-a", &wrapped).unwrap();
        assert_eq!(back.key, key.key);
        assert_eq!(back.index_key, key.index_key);
        let sealed = key.seal(b"r", b"v");
        assert_eq!(back.open(b"r", &sealed).unwrap(), b"v");
    }

    #[test]
    fn unwrap_fails_for_other_agency_master_or_tampering() {
        let master = MasterKey::generate();
        let wrapped = DataKey::generate().wrap(&master, "agency-a");
        assert_eq!(
            DataKey::unwrap(&master, "agency-b", &wrapped).unwrap_err(),
            CryptoError::Unwrap
        );
        assert_eq!(
            DataKey::unwrap(&MasterKey::generate(), "agency-a", &wrapped).unwrap_err(),
            CryptoError::Unwrap
        );
        let mut bad = wrapped.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        assert_eq!(
            DataKey::unwrap(&master, "agency-a", &bad).unwrap_err(),
            CryptoError::Unwrap
        );
        assert_eq!(
            DataKey::unwrap(&master, "agency-a", &[]).unwrap_err(),
            CryptoError::Malformed
        );
    }

    #[test]
    fn unwrap_rejects_wrong_length_key_material() {
        let master = MasterKey::generate();
        let not_a_key = seal_with(&master.0, b"agency-a", &[1u8; 16]);
        assert_eq!(
            DataKey::unwrap(&master, "agency-a", &not_a_key).unwrap_err(),
            CryptoError::Malformed
        );
    }

    #[test]
    fn blind_index_is_stable_and_separated() {
        let key = DataKey::from_bytes([9u8; 32]);
        let a = key.blind_index("email", "ada@example.org");
        assert_eq!(a, key.blind_index("email", "ada@example.org"));
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(a, key.blind_index("phone", "ada@example.org"));
        assert_ne!(a, key.blind_index("email", "ada@example.com"));
        assert_ne!(
            a,
            DataKey::generate().blind_index("email", "ada@example.org")
        );
        // The separator keeps (kind, value) splits apart.
        assert_ne!(key.blind_index("ab", "c"), key.blind_index("a", "bc"));
    }

    #[test]
    fn blind_index_survives_wrapping() {
        let master = MasterKey::generate();
        let key = DataKey::generate();
        let back = DataKey::unwrap(&master, "x", &key.wrap(&master, "x")).unwrap();
        assert_eq!(
            key.blind_index("email", "a@b.c"),
            back.blind_index("email", "a@b.c")
        );
    }

    #[test]
    fn blind_index_subkey_differs_from_encryption_key() {
        let key = DataKey::from_bytes([3u8; 32]);
        assert_ne!(key.key, key.index_key);
        // A plain HMAC under the data key itself must not equal the index.
        let mut direct = hmac_with(&key.key);
        direct.update(b"email\0a@b.c");
        assert_ne!(
            to_hex(&direct.finalize().into_bytes()),
            key.blind_index("email", "a@b.c")
        );
    }

    #[test]
    fn hmac_padding_matches_slice_constructor() {
        let key = [0x5au8; 32];
        let mut padded = hmac_with(&key);
        padded.update(b"message");
        let mut sliced = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
        sliced.update(b"message");
        assert_eq!(
            padded.finalize().into_bytes(),
            sliced.finalize().into_bytes()
        );
    }

    #[test]
    fn older_keys_open_old_values_but_never_seal() {
        let old = DataKey::generate();
        let sealed_before = old.seal(b"row", b"Ada");
        let current = DataKey::generate();
        assert_eq!(
            current.open(b"row", &sealed_before),
            Err(CryptoError::Decrypt)
        );
        let both = current.clone().with_older(vec![old.clone()]);
        assert_eq!(both.open(b"row", &sealed_before).unwrap(), b"Ada");
        // New values are sealed with the current key only.
        let sealed_now = both.seal(b"row", b"Bea");
        assert_eq!(current.open(b"row", &sealed_now).unwrap(), b"Bea");
        assert_eq!(old.open(b"row", &sealed_now), Err(CryptoError::Decrypt));
        // The wrong associated data still fails with every key.
        assert_eq!(
            both.open(b"other", &sealed_before),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(both.id(), current.id());
        assert_ne!(current.id(), old.id());
        assert_eq!(
            both.blind_indexes("email", "a@b.c"),
            [
                current.blind_index("email", "a@b.c"),
                old.blind_index("email", "a@b.c")
            ]
        );
        // The current key listed as older adds nothing.
        assert_eq!(
            current
                .clone()
                .with_older(vec![current.clone()])
                .blind_indexes("k", "v")
                .len(),
            1
        );
    }

    #[test]
    fn key_id_is_stable_and_short() {
        let master = MasterKey::generate();
        let key = DataKey::generate();
        let back = DataKey::unwrap(&master, "a", &key.wrap(&master, "a")).unwrap();
        assert_eq!(key.id(), back.id());
        assert_eq!(key.id().len(), 16);
    }

    #[test]
    fn hex_encoding() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}

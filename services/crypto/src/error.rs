//! Errors of the crypto crate; messages name what failed, never key or plaintext material.

/// Why a key could not be loaded or a value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The text is not base64 (standard or URL-safe, padded or not).
    #[error("key is not valid base64")]
    KeyEncoding,
    /// The decoded key has the wrong size.
    #[error("key must be {expected} bytes, got {actual}")]
    KeyLength { expected: usize, actual: usize },
    /// The input is too short or otherwise not in the sealed or wrapped format.
    #[error("sealed value is malformed")]
    Malformed,
    /// The format version byte is not one this build understands.
    #[error("unsupported sealed value version {0}")]
    UnsupportedVersion(u8),
    /// Authentication failed: wrong key, wrong associated data, or the bytes were altered.
    #[error("decryption failed: wrong key or associated data, or the value was tampered with")]
    Decrypt,
    /// A wrapped data key failed to unwrap: wrong master key, wrong agency, or altered bytes.
    #[error("data key could not be unwrapped: wrong master key or agency, or it was tampered with")]
    Unwrap,
}

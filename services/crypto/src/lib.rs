//! Field-level encryption of personal data: per-agency data keys wrapped by a master key,
//! AES-256-GCM sealing bound to the row a value belongs to, and keyed hashes (blind indexes)
//! for exact-match search over encrypted fields.
//!
//! Formats (version 1):
//! - sealed value: `0x01 || nonce (12) || ciphertext || tag (16)`, associated data
//!   `0x01 || aad`;
//! - wrapped data key: `0x01 || nonce (12) || encrypted key (32) || tag (16)`, associated
//!   data `0x01 || agency id`.
//!
//! The version byte is authenticated as well as stored, so a later format cannot be passed
//! off as this one.

mod error;
mod keys;
pub mod normalise;

pub use error::CryptoError;
pub use keys::{DataKey, MasterKey};

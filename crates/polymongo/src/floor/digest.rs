//! SHA-256 digests as the library writes them (migration checksums, archive files):
//! lowercase hex.

use sha2::{Digest, Sha256};

/// `digest` as 64 lowercase hex digits.
pub(crate) fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(digest.len() * 2);
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The SHA-256 of `bytes`, as [`hex`].
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

//! Sealing secrets at rest: ChaCha20-Poly1305 (ring's AEAD) under
//! `store.encryption_key`, a fresh random nonce per record, and the app's name as
//! associated data, so that a sealed record cannot be moved to another app's name
//! (or altered) without being refused.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::config::EncryptionKey;

/// Seals and opens records with one key.
pub struct Sealer {
    key: LessSafeKey,
}

/// Why a sealed record could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the sealed record is not valid base64 or too short")]
    Malformed,
    #[error("the sealed record does not open with store.encryption_key (another key, or altered)")]
    WrongKey,
}

impl Sealer {
    pub fn new(key: &EncryptionKey) -> Self {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key.0)
            .expect("a 32-byte key is valid for ChaCha20-Poly1305");
        Self {
            key: LessSafeKey::new(unbound),
        }
    }

    /// `plaintext` sealed for `name`: base64 of nonce, ciphertext and tag.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .expect("sealing a record this small cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// Opens what [`seal`](Self::seal) made for `name`.
    ///
    /// # Errors
    /// [`OpenError`] when the text is not a sealed record, or was sealed with another key
    /// or for another name, or altered.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let mut in_out = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut in_out)
            .map_err(|_| OpenError::WrongKey)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&EncryptionKey([byte; 32]))
    }

    #[test]
    fn a_sealed_record_opens_for_its_name_only_and_hides_its_text() {
        let sealer = sealer(7);
        let sealed = sealer.seal("shop1", br#"{"secret":"s3cr3t-value"}"#);
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(
            sealer.open("shop1", &sealed).unwrap(),
            br#"{"secret":"s3cr3t-value"}"#
        );
        assert!(matches!(
            sealer.open("shop2", &sealed),
            Err(OpenError::WrongKey)
        ));
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let sealer = sealer(7);
        assert_ne!(sealer.seal("a", b"same"), sealer.seal("a", b"same"));
    }

    #[test]
    fn another_key_or_an_altered_record_is_refused() {
        let sealed = sealer(7).seal("a", b"text");
        assert!(matches!(
            sealer(8).open("a", &sealed),
            Err(OpenError::WrongKey)
        ));
        let mut bytes = STANDARD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            sealer(7).open("a", &STANDARD.encode(bytes)),
            Err(OpenError::WrongKey)
        ));
        assert!(matches!(
            sealer(7).open("a", "not base64!"),
            Err(OpenError::Malformed)
        ));
        assert!(matches!(
            sealer(7).open("a", "AAAA"),
            Err(OpenError::Malformed)
        ));
    }
}

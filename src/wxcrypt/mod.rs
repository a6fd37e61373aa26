//! WeChat's message encryption (消息加解密), as the Open Platform (第三方平台) uses it for
//! authorisation events: `component_verify_ticket`, `authorized`, `unauthorized`...
//!
//! The scheme (WECHAT-API.md, "Open Platform, more detail"):
//! - the 43-character EncodingAESKey plus `=` is the base64 of a 32-byte AES key;
//! - plaintext = 16 random bytes, the XML's length as a 4-byte big-endian number, the
//!   XML, then the appid it is meant for;
//! - PKCS#7 padding to a multiple of 32 bytes (not AES's 16), AES-256-CBC with the first
//!   16 key bytes as IV, base64;
//! - `msg_signature` = SHA-1 of token, timestamp, nonce and the base64 text, sorted and
//!   joined, in lowercase hex.
//!
//! CBC has no integrity of its own, so [`MsgCrypt::open`] checks the signature (in
//! constant time) before it decrypts anything: a forger without the token learns
//! nothing from padding or length errors.
//!
//! The server opens what WeChat pushes; the simulator seals what it pushes with the same
//! code, and the tests check both against Tencent's published sample.

#[cfg(test)]
mod tests;
mod xml;

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

pub use xml::{parse_fields, to_xml};

/// Largest envelope [`MsgCrypt::open`] reads. WeChat's authorisation events are well
/// under 2 KiB; 64 KiB leaves room for any message type while bounding the work a
/// stranger can make the event endpoint do.
pub const MAX_BODY: usize = 64 * 1024;

/// Largest XML document [`parse_fields`] reads (the decrypted message, or an envelope).
pub const MAX_XML: usize = 64 * 1024;

/// The fields of a WeChat XML message: each direct child of `<xml>` by name, with its
/// text. Sorted, so [`to_xml`] writes them in a stable order.
pub type Fields = std::collections::BTreeMap<String, String>;

/// Length of an EncodingAESKey as the WeChat console shows it.
const KEY_CHARS: usize = 43;
/// AES-256.
const KEY_BYTES: usize = 32;
/// WeChat pads to 32-byte blocks, not AES's 16.
const PAD_BLOCK: usize = 32;
/// The random prefix of every plaintext.
const RANDOM_LEN: usize = 16;
/// Random prefix plus the 4-byte length.
const HEADER_LEN: usize = RANDOM_LEN + 4;
/// How much of a wrong appid an error repeats: enough to recognise it, never a flood.
const SHOWN_APPID: usize = 64;

type Encryptor = cbc::Encryptor<aes::Aes256>;
type Decryptor = cbc::Decryptor<aes::Aes256>;

/// Base64 as WeChat writes it, accepting non-zero trailing bits. A console-generated
/// EncodingAESKey is 43 random letters and digits, so its last character usually
/// carries bits a strict decoder refuses (Tencent's sample key ends in `C`).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Why a token, EncodingAESKey or appid can't make a [`MsgCrypt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 43 characters long.
    #[error("EncodingAESKey must be 43 characters (as the WeChat console shows it), got {0}")]
    Length(usize),
    /// Not base64.
    #[error("EncodingAESKey is not base64: use the 43 letters and digits the WeChat console shows")]
    NotBase64,
    /// The message Token is empty.
    #[error("the message Token is empty: use the Token set in the WeChat console")]
    EmptyToken,
    /// The appid is empty.
    #[error("the appid is empty: messages name the appid they are meant for")]
    EmptyAppId,
}

/// Why a message could not be opened or decrypted. Every variant means "refuse it";
/// the messages say which check failed, for logs and for the 400 the sender gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// The envelope is bigger than [`MAX_BODY`].
    #[error("message body is larger than {} KiB", MAX_BODY / 1024)]
    BodyTooLarge,
    /// The outer `<xml><Encrypt>..</Encrypt></xml>` is malformed or lacks `<Encrypt>`.
    #[error("bad message envelope: {0}")]
    BadEnvelope(String),
    /// `msg_signature` does not match token, timestamp, nonce and ciphertext.
    #[error("msg_signature does not match (wrong Token, or the message was altered)")]
    BadSignature,
    /// Not base64, not whole AES blocks, bad padding or lengths, or not UTF-8.
    #[error("bad ciphertext: {0}")]
    BadCiphertext(String),
    /// Decrypted (or addressed) for another appid.
    #[error("message is for appid {found:?}, expected {expected:?}")]
    WrongAppId {
        /// Ours.
        expected: String,
        /// The one the message carries (cut to 64 characters).
        found: String,
    },
    /// The decrypted message is not XML we accept.
    #[error("bad XML: {0}")]
    BadXml(String),
}

/// One account's message crypto: its Token, AES key and appid.
///
/// Debug shows the appid only: the token and key are secrets.
#[derive(Clone)]
pub struct MsgCrypt {
    token: String,
    key: [u8; KEY_BYTES],
    appid: String,
}

impl std::fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

impl MsgCrypt {
    /// Crypto for `appid` with the console's message Token and EncodingAESKey.
    ///
    /// # Errors
    /// A [`KeyError`] naming what is wrong: the key's length or alphabet, or an empty
    /// token or appid.
    pub fn new(token: &str, encoding_aes_key: &str, appid: &str) -> Result<MsgCrypt, KeyError> {
        let chars = encoding_aes_key.chars().count();
        if chars != KEY_CHARS {
            return Err(KeyError::Length(chars));
        }
        if token.is_empty() {
            return Err(KeyError::EmptyToken);
        }
        if appid.is_empty() {
            return Err(KeyError::EmptyAppId);
        }
        let bytes = BASE64
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| KeyError::NotBase64)?;
        // 43 base64 characters and one '=' always decode to 32 bytes.
        let key = <[u8; KEY_BYTES]>::try_from(bytes.as_slice()).map_err(|_| KeyError::NotBase64)?;
        Ok(MsgCrypt {
            token: token.to_owned(),
            key,
            appid: appid.to_owned(),
        })
    }

    /// The appid messages are sealed for and checked against.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// WeChat's `msg_signature`: SHA-1 over token, timestamp, nonce and the ciphertext,
    /// sorted and concatenated, in lowercase hex.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypted: &str) -> String {
        let mut parts = [self.token.as_str(), timestamp, nonce, encrypted];
        parts.sort_unstable();
        let mut sha = Sha1::new();
        for part in parts {
            sha.update(part.as_bytes());
        }
        hex(&sha.finalize())
    }

    /// Encrypts `xml` for our appid with the given 16 random bytes (the caller picks
    /// them, so tests can be exact); returns the base64 ciphertext.
    pub fn encrypt(&self, xml: &str, random: [u8; 16]) -> String {
        let mut plain = Vec::with_capacity(HEADER_LEN + xml.len() + self.appid.len() + PAD_BLOCK);
        plain.extend_from_slice(&random);
        // A message over 4 GiB can't be framed; no WeChat message comes near, and
        // `open` refuses anything over MAX_BODY long before.
        let len = u32::try_from(xml.len()).unwrap_or(u32::MAX);
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(xml.as_bytes());
        plain.extend_from_slice(self.appid.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        // `pad` is 1..=32, so it fits a byte.
        plain.resize(plain.len() + pad, pad as u8);
        let (blocks, rest) = aes::Block::slice_as_chunks_mut(&mut plain);
        debug_assert!(rest.is_empty(), "padded to a multiple of 32");
        Encryptor::new(&self.key.into(), &self.iv().into()).encrypt_blocks(blocks);
        BASE64.encode(&plain)
    }

    /// Decrypts a base64 ciphertext and checks that it was meant for our appid.
    ///
    /// Use [`MsgCrypt::open`] for what arrives over the network: it checks the
    /// signature first.
    ///
    /// # Errors
    /// [`CryptError::BadCiphertext`] for bad base64, blocks, padding, lengths or UTF-8;
    /// [`CryptError::WrongAppId`] when the trailing appid is not ours.
    pub fn decrypt(&self, encrypted: &str) -> Result<String, CryptError> {
        let bad = |why: &str| CryptError::BadCiphertext(why.to_owned());
        if encrypted.len() > MAX_BODY {
            return Err(bad("longer than a message can be"));
        }
        let mut data = BASE64
            .decode(encrypted.trim())
            .map_err(|e| CryptError::BadCiphertext(format!("not base64: {e}")))?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(bad("not a whole number of AES blocks"));
        }
        let (blocks, _) = aes::Block::slice_as_chunks_mut(&mut data);
        Decryptor::new(&self.key.into(), &self.iv().into()).decrypt_blocks(blocks);
        let pad = usize::from(data[data.len() - 1]);
        if !(1..=PAD_BLOCK).contains(&pad) || pad > data.len() {
            return Err(bad("bad padding"));
        }
        let content_len = data.len() - pad;
        if data[content_len..].iter().any(|&b| usize::from(b) != pad) {
            return Err(bad("bad padding"));
        }
        let content = &data[..content_len];
        let Some(header) = content.get(RANDOM_LEN..HEADER_LEN) else {
            return Err(bad("too short"));
        };
        let xml_len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let xml_end = usize::try_from(xml_len)
            .ok()
            .and_then(|n| n.checked_add(HEADER_LEN))
            .filter(|&end| end <= content.len())
            .ok_or_else(|| bad("the message length runs past the end"))?;
        let found = &content[xml_end..];
        if found != self.appid.as_bytes() {
            let found: String = String::from_utf8_lossy(found)
                .chars()
                .take(SHOWN_APPID)
                .collect();
            return Err(CryptError::WrongAppId {
                expected: self.appid.clone(),
                found,
            });
        }
        String::from_utf8(content[HEADER_LEN..xml_end].to_vec())
            .map_err(|_| bad("the message is not UTF-8"))
    }

    /// Opens what WeChat POSTs to an event URL: checks the size, parses the envelope,
    /// checks `msg_signature` against its `<Encrypt>` in constant time, decrypts, checks
    /// the envelope's `<AppId>` (when present) and the plaintext's appid, and parses the
    /// message into [`Fields`].
    ///
    /// # Errors
    /// The [`CryptError`] of the first check that failed.
    pub fn open(
        &self,
        timestamp: &str,
        nonce: &str,
        msg_signature: &str,
        body: &[u8],
    ) -> Result<Fields, CryptError> {
        if body.len() > MAX_BODY {
            return Err(CryptError::BodyTooLarge);
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| CryptError::BadEnvelope("the body is not UTF-8".to_owned()))?;
        let envelope = parse_fields(text).map_err(|e| match e {
            CryptError::BadXml(why) => CryptError::BadEnvelope(why),
            other => other,
        })?;
        let encrypted = envelope
            .get("Encrypt")
            .filter(|e| !e.is_empty())
            .ok_or_else(|| CryptError::BadEnvelope("no <Encrypt> element".to_owned()))?;
        let expected = self.signature(timestamp, nonce, encrypted);
        let given = msg_signature.trim().to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(CryptError::BadSignature);
        }
        if let Some(addressed) = envelope.get("AppId")
            && addressed != &self.appid
        {
            return Err(CryptError::WrongAppId {
                expected: self.appid.clone(),
                found: addressed.chars().take(SHOWN_APPID).collect(),
            });
        }
        let inner = self.decrypt(encrypted)?;
        if inner.len() > MAX_XML {
            return Err(CryptError::BadXml(format!(
                "the message is larger than {} KiB",
                MAX_XML / 1024
            )));
        }
        parse_fields(&inner)
    }

    /// Seals `inner_xml` the way WeChat pushes an authorisation event: returns the
    /// envelope `<xml><AppId>..</AppId><Encrypt>..</Encrypt></xml>` and its
    /// `msg_signature` for the query string.
    pub fn seal(
        &self,
        inner_xml: &str,
        timestamp: &str,
        nonce: &str,
        random: [u8; 16],
    ) -> (String, String) {
        let encrypted = self.encrypt(inner_xml, random);
        let signature = self.signature(timestamp, nonce, &encrypted);
        let envelope = Fields::from([
            ("AppId".to_owned(), self.appid.clone()),
            ("Encrypt".to_owned(), encrypted),
        ]);
        (to_xml(&envelope), signature)
    }

    /// CBC's IV: the first 16 bytes of the key, as WeChat defines it.
    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.key[..16]);
        iv
    }
}

/// Lowercase hex of a digest.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(40), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

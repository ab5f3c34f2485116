//! Web Push payload encryption (RFC 8291 over the `aes128gcm` content coding of RFC 8188).
//!
//! Each message gets a fresh application-server key pair and salt. The key is derived from an
//! ECDH agreement (P-256) with the browser's subscription key and the subscription's auth
//! secret (HKDF-SHA256), and the payload is sealed with AES-128-GCM in one record. Only the
//! browser that made the subscription can read it; the push service in between sees bytes.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use rand::RngCore;
use sha2::Sha256;

/// Bytes of an uncompressed P-256 public key (`0x04 || x || y`), the subscription's `p256dh`.
pub const PUBLIC_KEY_BYTES: usize = 65;

/// Bytes of the subscription's `auth` secret.
pub const AUTH_SECRET_BYTES: usize = 16;

/// The record size written in the header: one record holds the whole message.
const RECORD_SIZE: u32 = 4096;

/// Bytes before the ciphertext: salt (16), record size (4), key id length (1), key id (65).
const HEADER_BYTES: usize = 16 + 4 + 1 + PUBLIC_KEY_BYTES;

/// Bytes of the AES-GCM tag.
const TAG_BYTES: usize = 16;

/// The longest payload: push services accept 4096 bytes of body, which holds the header, the
/// payload, its one-byte padding delimiter and the tag (RFC 8291 section 4).
pub const MAX_PAYLOAD_BYTES: usize = 4096 - HEADER_BYTES - 1 - TAG_BYTES;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncryptionError {
    #[error("the payload is {0} bytes; a push message holds at most {MAX_PAYLOAD_BYTES}")]
    TooLong(usize),
    #[error("the encryption failed")]
    Cipher,
}

/// A random P-256 secret key. `rand` 0.9 fills the bytes (p256 0.13 speaks an older `rand_core`);
/// a draw outside the curve's order, about one in 2^32, is drawn again.
pub fn random_secret_key() -> SecretKey {
    loop {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        if let Ok(key) = SecretKey::from_slice(&bytes) {
            return key;
        }
    }
}

/// The uncompressed SEC1 bytes of a public key.
pub fn public_key_bytes(key: &PublicKey) -> [u8; PUBLIC_KEY_BYTES] {
    let point = key.to_encoded_point(false);
    let mut bytes = [0u8; PUBLIC_KEY_BYTES];
    bytes.copy_from_slice(point.as_bytes());
    bytes
}

/// Encrypts `payload` for a subscription with a fresh key pair and salt; the result is the
/// request body, sent with `Content-Encoding: aes128gcm`.
pub fn encrypt(
    payload: &[u8],
    subscription_key: &PublicKey,
    auth_secret: &[u8; AUTH_SECRET_BYTES],
) -> Result<Vec<u8>, EncryptionError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    encrypt_with(payload, subscription_key, auth_secret, &random_secret_key(), &salt)
}

/// [`encrypt`] with a given application-server key and salt (the RFC's example fixes both).
pub fn encrypt_with(
    payload: &[u8],
    subscription_key: &PublicKey,
    auth_secret: &[u8; AUTH_SECRET_BYTES],
    server_key: &SecretKey,
    salt: &[u8; 16],
) -> Result<Vec<u8>, EncryptionError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(EncryptionError::TooLong(payload.len()));
    }
    let server_public = public_key_bytes(&server_key.public_key());
    let subscription_public = public_key_bytes(subscription_key);
    let shared = p256::ecdh::diffie_hellman(server_key.to_nonzero_scalar(), subscription_key.as_affine());

    // IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info" || 0x00 || ua_public || as_public, 32)
    let mut key_info = Vec::with_capacity(14 + 2 * PUBLIC_KEY_BYTES);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(&subscription_public);
    key_info.extend_from_slice(&server_public);
    let mut input_key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth_secret), shared.raw_secret_bytes())
        .expand(&key_info, &mut input_key)
        .map_err(|_| EncryptionError::Cipher)?;

    // The content-encryption key and nonce of RFC 8188, salted per message.
    let content = Hkdf::<Sha256>::new(Some(salt), &input_key);
    let mut content_key = [0u8; 16];
    let mut nonce = [0u8; 12];
    content.expand(b"Content-Encoding: aes128gcm\0", &mut content_key).map_err(|_| EncryptionError::Cipher)?;
    content.expand(b"Content-Encoding: nonce\0", &mut nonce).map_err(|_| EncryptionError::Cipher)?;

    // One record, so it is the last: the payload is followed by the delimiter 0x02, no padding.
    let mut padded = Vec::with_capacity(payload.len() + 1);
    padded.extend_from_slice(payload);
    padded.push(2);
    let cipher = Aes128Gcm::new_from_slice(&content_key).map_err(|_| EncryptionError::Cipher)?;
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: &padded, aad: b"" })
        .map_err(|_| EncryptionError::Cipher)?;

    let mut body = Vec::with_capacity(HEADER_BYTES + sealed.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(PUBLIC_KEY_BYTES as u8);
    body.extend_from_slice(&server_public);
    body.extend_from_slice(&sealed);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn decode(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    /// RFC 8291 section 5 (the example of appendix A): fixed keys and salt give exactly the
    /// message printed there.
    #[test]
    fn the_rfc_8291_example_encrypts_to_the_published_message() {
        let server_key = SecretKey::from_slice(&decode("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(public_key_bytes(&server_key.public_key())),
            "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
        );
        let subscription_key = PublicKey::from_sec1_bytes(&decode(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        ))
        .unwrap();
        let auth_secret: [u8; 16] = decode("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap();
        let salt: [u8; 16] = decode("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(
            b"When I grow up, I want to be a watermelon",
            &subscription_key,
            &auth_secret,
            &server_key,
            &salt,
        )
        .unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6Tlz\
             AC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn a_payload_too_long_for_one_message_is_refused() {
        let key = random_secret_key().public_key();
        let long = vec![b'a'; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(encrypt(&long, &key, &[0; 16]), Err(EncryptionError::TooLong(MAX_PAYLOAD_BYTES + 1)));
        let body = encrypt(&long[1..], &key, &[0; 16]).unwrap();
        assert_eq!(body.len(), 4096);
    }
}

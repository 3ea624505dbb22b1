//! HMAC-SHA256, the one keyed hash in caregraph: purpose keys derived from a secret, Jitsi room
//! names, Ethora's derived keys and passwords, and webhook signatures.

use hmac::{Hmac, Mac};
use sha2::Sha256;

fn mac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(message);
    mac
}

/// The lowercase hex of HMAC-SHA256(`key`, `message`).
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    hex::encode(mac(key, message).finalize().into_bytes())
}

/// Whether `signature` (hex, either case, surrounding blanks ignored) is HMAC-SHA256(`key`,
/// `message`), compared in constant time.
pub fn verify_hex(key: &[u8], message: &[u8], signature: &str) -> bool {
    match hex::decode(signature.trim()) {
        Ok(given) => mac(key, message).verify_slice(&given).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hex_matches_rfc_4231_test_case_2() {
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_signature_holds_only_for_its_key_and_message() {
        let sig = hmac_hex(b"k", b"m");
        assert!(verify_hex(b"k", b"m", &sig.to_uppercase()));
        assert!(!verify_hex(b"other", b"m", &sig));
        assert!(!verify_hex(b"k", b"m2", &sig));
        assert!(!verify_hex(b"k", b"m", "not hex"));
    }
}

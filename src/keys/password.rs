//! EIP-2335 password processing: NFKD normalisation, then removal of the C0, C1 and DEL
//! control codes (so a trailing newline in a password file is harmless).

use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

pub fn normalise(password: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(password.len()));
    let mut buf = [0u8; 4];
    for c in password.nfkd() {
        let cp = c as u32;
        if cp <= 0x1f || (0x7f..=0x9f).contains(&cp) {
            continue;
        }
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    buf.fill(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip2335_example_password() {
        let pw = "𝔱𝔢𝔰𝔱𝔭𝔞𝔰𝔰𝔴𝔬𝔯𝔡🔑";
        assert_eq!(hex::encode(&*normalise(pw)), "7465737470617373776f7264f09f9491");
    }

    #[test]
    fn strips_control_codes_keeps_spaces() {
        assert_eq!(&*normalise("pass word\n"), b"pass word");
        assert_eq!(&*normalise("a\u{7f}b\u{85}c\r\n"), b"abc");
    }
}

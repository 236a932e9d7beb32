//! Just enough DER to read a SubjectPublicKeyInfo (the body of a PEM `PUBLIC KEY` block) for
//! the two key types we verify with, and the RSA component checks shared with JWKS loading.
//!
//! ring verifies RSA from the modulus and exponent and Ed25519 from the raw 32-byte point, but
//! takes neither from SPKI; parsing the few fixed structures here lets us check key sizes when
//! the config is loaded instead of failing on the first login.

/// A public key pulled out of an SPKI structure or a JWK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PublicKey {
    /// Modulus and public exponent, big-endian without leading zeros (as ring wants them).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519([u8; 32]),
}

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-Ed25519, 1.3.101.112 (RFC 8410).
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Smallest and largest RSA modulus in bytes, matching ring's RSA_PKCS1_2048_8192_SHA256
/// (RFC 7518 also requires at least 2048 bits for RS256).
const RSA_MIN_BYTES: usize = 256;
const RSA_MAX_BYTES: usize = 1024;

/// Cursor over DER input; every read is bounds-checked and reports a short reason.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Reads one element with the expected tag and returns its contents.
    fn read(&mut self, tag: u8) -> Result<&'a [u8], &'static str> {
        let (&found, rest) = self.0.split_first().ok_or("truncated DER")?;
        if found != tag {
            return Err("unexpected DER element");
        }
        let (&first, rest) = rest.split_first().ok_or("truncated DER")?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            // Long form with one or two length bytes covers every key we accept (an RSA-8192
            // SPKI is about 1.1 KB); indefinite lengths are not DER.
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 2 {
                return Err("unsupported DER length");
            }
            let (bytes, rest) = rest.split_at_checked(count).ok_or("truncated DER")?;
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, rest)
        };
        let (contents, rest) = rest.split_at_checked(len).ok_or("truncated DER")?;
        self.0 = rest;
        Ok(contents)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn finish(&self) -> Result<(), &'static str> {
        if self.is_empty() {
            Ok(())
        } else {
            Err("trailing data after DER structure")
        }
    }
}

/// Parses a DER SubjectPublicKeyInfo holding an RSA or Ed25519 public key.
pub(super) fn parse_spki(der: &[u8]) -> Result<PublicKey, &'static str> {
    let mut outer = Reader(der);
    let spki = outer.read(TAG_SEQUENCE)?;
    outer.finish()?;
    let mut fields = Reader(spki);
    let algorithm = fields.read(TAG_SEQUENCE)?;
    let bits = fields.read(TAG_BIT_STRING)?;
    fields.finish()?;
    let (&unused_bits, key) = bits.split_first().ok_or("empty public key")?;
    if unused_bits != 0 {
        return Err("public key BIT STRING has unused bits");
    }
    let mut algorithm = Reader(algorithm);
    let oid = algorithm.read(TAG_OID)?;
    if oid == OID_RSA_ENCRYPTION {
        // Parameters are NULL (or, from some encoders, absent).
        if !algorithm.is_empty() && !algorithm.read(TAG_NULL)?.is_empty() {
            return Err("RSA algorithm parameters are not NULL");
        }
        algorithm.finish()?;
        // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (RFC 8017).
        let mut outer = Reader(key);
        let sequence = outer.read(TAG_SEQUENCE)?;
        outer.finish()?;
        let mut ints = Reader(sequence);
        let n = ints.read(TAG_INTEGER)?;
        let e = ints.read(TAG_INTEGER)?;
        ints.finish()?;
        rsa_key(n, e)
    } else if oid == OID_ED25519 {
        // RFC 8410: the parameters are absent.
        algorithm.finish()?;
        let point: [u8; 32] = key
            .try_into()
            .map_err(|_| "Ed25519 public key is not 32 bytes")?;
        Ok(PublicKey::Ed25519(point))
    } else {
        Err("unsupported key type (only RSA and Ed25519 public keys are accepted)")
    }
}

/// Checks RSA components the way ring will at verification time (2048 to 8192 bits, odd
/// modulus, odd exponent from 3 to 2^33 - 1), after dropping leading zero bytes that DER
/// INTEGERs and some JWKS writers add.
pub(super) fn rsa_key(n: &[u8], e: &[u8]) -> Result<PublicKey, &'static str> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    if n.len() < RSA_MIN_BYTES {
        return Err("RSA modulus is shorter than 2048 bits");
    }
    if n.len() > RSA_MAX_BYTES {
        return Err("RSA modulus is longer than 8192 bits");
    }
    if n.last().is_none_or(|last| last & 1 == 0) {
        return Err("RSA modulus is even");
    }
    if e.len() > 5 {
        return Err("RSA exponent is too large");
    }
    let exponent = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if exponent < 3 || exponent & 1 == 0 || exponent > (1 << 33) - 1 {
        return Err("RSA exponent must be odd, at least 3 and below 2^33");
    }
    Ok(PublicKey::Rsa {
        n: n.to_vec(),
        e: e.to_vec(),
    })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn truncated_and_odd_der_is_refused_without_panics() {
        let ed = {
            let mut der = vec![
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21,
            ];
            der.push(0);
            der.extend_from_slice(&[7u8; 32]);
            der
        };
        assert_eq!(parse_spki(&ed), Ok(PublicKey::Ed25519([7u8; 32])));
        for cut in 0..ed.len() {
            assert!(parse_spki(&ed[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let mut trailing = ed.clone();
        trailing.push(0);
        assert!(parse_spki(&trailing).is_err());
        // Indefinite and oversized length forms.
        assert!(parse_spki(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(parse_spki(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_spki(&[0x30, 0x82, 0xff, 0xff]).is_err());
    }

    #[test]
    fn rsa_component_limits() {
        let mut n = vec![0u8; 256];
        n[0] = 0xc5;
        n[255] = 0x01;
        assert!(rsa_key(&n, &[1, 0, 1]).is_ok());
        // A leading zero byte (DER INTEGER sign byte) is dropped.
        let mut signed = vec![0u8];
        signed.extend_from_slice(&n);
        assert_eq!(rsa_key(&signed, &[0, 1, 0, 1]), rsa_key(&n, &[1, 0, 1]));
        assert!(rsa_key(&n[1..], &[1, 0, 1]).is_err(), "2040 bits");
        assert!(rsa_key(&vec![0xff; 1025], &[1, 0, 1]).is_err(), "8200 bits");
        let mut even = n.clone();
        even[255] = 0x02;
        assert!(rsa_key(&even, &[1, 0, 1]).is_err());
        assert!(rsa_key(&n, &[1]).is_err());
        assert!(rsa_key(&n, &[4]).is_err());
        assert!(rsa_key(&n, &[]).is_err());
        assert!(rsa_key(&n, &[2, 0, 0, 0, 1]).is_err());
        assert!(rsa_key(&n, &[1, 0, 0, 0, 0, 1]).is_err());
        assert!(rsa_key(&[], &[]).is_err());
    }
}

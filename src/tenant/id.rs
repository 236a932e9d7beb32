//! [`TenantId`]: the tenant identifier, a ULID validated and normalised to upper case.
//!
//! The id ends up inside SQL the proxy sends (`SET app.tenant_id = '…'`), so it is validated
//! against a closed alphabet rather than escaped: a value that is exactly 26 Crockford base32
//! characters cannot contain a quote, a backslash, a NUL or whitespace, and cannot be two
//! spellings of the same tenant (lower case input is normalised to upper case).

use std::fmt;
use std::str::FromStr;

/// Length of a ULID in characters (128 bits in base32, 5 bits per character).
const ULID_LEN: usize = 26;

/// A validated tenant id: 26 upper-case Crockford base32 characters, first one `0`..=`7`.
///
/// Stored inline as ASCII bytes so it is `Copy` and comparisons never allocate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantId([u8; ULID_LEN]);

/// Why a string is not a tenant id. The messages never echo the input, which may be hostile
/// (control characters, log injection) and ends up in client-visible errors and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    /// Not exactly 26 bytes long (this includes the empty string).
    #[error("tenant id must be a 26-character ULID (got {0} bytes)")]
    Length(usize),
    /// A character outside Crockford base32 (`I`, `L`, `O`, `U`, punctuation, whitespace, …).
    #[error("tenant id must be a 26-character ULID (invalid character at position {0})")]
    InvalidChar(usize),
    /// The first character is above `7`, so the value would not fit in 128 bits.
    #[error("tenant id must be a 26-character ULID (first character must be 0-7)")]
    Overflow,
}

impl TenantId {
    /// Validates `s` as a ULID and normalises it to upper case.
    ///
    /// Crockford's decoding leniency (reading `I`/`L` as `1` and `O` as `0`) is deliberately not
    /// applied: accepting several spellings of one id would make ids compare unequal as strings
    /// in the database while meaning the same tenant.
    pub fn parse(s: &str) -> Result<TenantId, TenantIdError> {
        let bytes = s.as_bytes();
        let mut out = [0u8; ULID_LEN];
        if bytes.len() != ULID_LEN {
            return Err(TenantIdError::Length(bytes.len()));
        }
        for (index, (slot, &b)) in out.iter_mut().zip(bytes).enumerate() {
            let upper = b.to_ascii_uppercase();
            if !is_crockford(upper) {
                return Err(TenantIdError::InvalidChar(index));
            }
            *slot = upper;
        }
        if out[0] > b'7' {
            return Err(TenantIdError::Overflow);
        }
        Ok(TenantId(out))
    }

    /// The id's ASCII characters (without the UTF-8 check of [`Self::as_str`]).
    pub fn as_bytes(&self) -> &[u8; ULID_LEN] {
        &self.0
    }

    /// The 128 bits the id spells (Crockford base32, most significant character first).
    pub fn to_u128(&self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |acc, &c| (acc << 5) | u128::from(crockford_value(c)))
    }

    /// The id as upper-case ASCII, ready to be quoted into SQL or logged.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored, so this conversion cannot fail; the fallback keeps
        // the function total without `unsafe`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A validated character's value: its place in `0-9A-Z` without I, L, O and U.
fn crockford_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        // Each of I, L, O and U below `c` shifts its value down by one.
        _ => {
            c - b'A' + 10
                - (c > b'I') as u8
                - (c > b'L') as u8
                - (c > b'O') as u8
                - (c > b'U') as u8
        }
    }
}

/// Crockford base32 upper-case alphabet: digits and letters except I, L, O and U.
fn is_crockford(b: u8) -> bool {
    b.is_ascii_digit() || (b.is_ascii_uppercase() && !matches!(b, b'I' | b'L' | b'O' | b'U'))
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Prints the bare id: it is not secret, and logs (`?tenant`) read better without a wrapper.
impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantId {
    type Err = TenantIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

    #[test]
    fn to_u128_reads_the_ids_bits() {
        let zero: TenantId = "00000000000000000000000000".parse().unwrap();
        assert_eq!(zero.to_u128(), 0);
        let max: TenantId = "7ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse().unwrap();
        assert_eq!(max.to_u128(), u128::MAX);
        let alphabet: TenantId = "0123456789ABCDEFGHJKMNPQRS".parse().unwrap();
        // Each character is its index in the alphabet: 0, 1, ..., 25.
        let expected = (0..26u128).fold(0u128, |acc, d| (acc << 5) | d);
        assert_eq!(alphabet.to_u128(), expected);
        let tail: TenantId = "00000000000000000000TVWXYZ".parse().unwrap();
        assert_eq!(
            tail.to_u128() & 0x3FFF_FFFF,
            (26 << 25) | (27 << 20) | (28 << 15) | (29 << 10) | (30 << 5) | 31
        );
    }

    #[test]
    fn accepts_and_normalises() {
        let id = TenantId::parse(ID).unwrap();
        assert_eq!(id.as_str(), ID);
        assert_eq!(id.to_string(), ID);
        assert_eq!(format!("{id:?}"), ID);
        let lower = TenantId::parse(&ID.to_ascii_lowercase()).unwrap();
        assert_eq!(lower, id);
        assert_eq!(ID.parse::<TenantId>().unwrap(), id);
        assert!(TenantId::parse("7ZZZZZZZZZZZZZZZZZZZZZZZZZ").is_ok());
        assert!(TenantId::parse("00000000000000000000000000").is_ok());
    }

    #[test]
    fn rejects_bad_lengths() {
        for s in [
            "",
            "01ARZ3NDEKTSV4RRFFQ69G5FA",
            "01ARZ3NDEKTSV4RRFFQ69G5FAVX",
        ] {
            assert_eq!(TenantId::parse(s), Err(TenantIdError::Length(s.len())));
        }
        // 26 characters but more bytes: multi-byte characters are not Crockford.
        let s = "é1ARZ3NDEKTSV4RRFFQ69G5FA";
        assert!(TenantId::parse(s).is_err());
    }

    #[test]
    fn rejects_bad_characters() {
        for (i, bad) in [
            "I", "L", "O", "U", "i", "l", "o", "u", "'", "\"", "\0", " ", "\n", "-", "\\", "é",
        ]
        .iter()
        .enumerate()
        {
            let pos = 1 + i % 20;
            let mut s = ID.to_string();
            s.replace_range(pos..pos + 1, bad);
            if s.len() == 26 {
                assert_eq!(
                    TenantId::parse(&s),
                    Err(TenantIdError::InvalidChar(pos)),
                    "{s:?}"
                );
            } else {
                assert!(TenantId::parse(&s).is_err(), "{s:?}");
            }
        }
    }

    #[test]
    fn rejects_overflow_and_explains() {
        let e = TenantId::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ").unwrap_err();
        assert_eq!(e, TenantIdError::Overflow);
        for e in [e, TenantIdError::Length(0), TenantIdError::InvalidChar(3)] {
            assert!(e
                .to_string()
                .starts_with("tenant id must be a 26-character ULID"));
        }
    }
}

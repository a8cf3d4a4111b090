//! Allocation units (`byte * 2^20`, `MegaBytes`, `MB`, ...) and size numbers.

use crate::error::{OvfError, Result};

/// Bytes per unit for an allocation-units string, in every spelling real files use:
/// programmatic units (`byte`, `byte * 2^20`, `byte*2^30`, `byte * 10^3`, `byte * 1024`)
/// and the words early writers used (`KiloBytes`, `MegaBytes`, `GigaBytes`, `KB`, `MB`,
/// `GB`, `MiB`, ...; binary multiples, as those writers meant).
pub fn bytes_per_unit(units: &str) -> Result<u64> {
    let norm: String = units
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let bad = |reason: &str| OvfError::value("allocation units", units, reason);
    match norm.as_str() {
        "byte" | "bytes" | "b" => return Ok(1),
        "kilobyte" | "kilobytes" | "kb" | "kib" | "kbyte" | "kbytes" => return Ok(1 << 10),
        "megabyte" | "megabytes" | "mb" | "mib" | "mbyte" | "mbytes" => return Ok(1 << 20),
        "gigabyte" | "gigabytes" | "gb" | "gib" | "gbyte" | "gbytes" => return Ok(1 << 30),
        "terabyte" | "terabytes" | "tb" | "tib" => return Ok(1 << 40),
        _ => {}
    }
    let rest = norm
        .strip_prefix("bytes*")
        .or_else(|| norm.strip_prefix("byte*"))
        .ok_or_else(|| bad("not a byte unit"))?;
    let mut total: u64 = 1;
    for factor in rest.split('*') {
        let f = match factor.split_once('^') {
            Some((base, exp)) => {
                let base: u64 = base.parse().map_err(|_| bad("bad base"))?;
                let exp: u32 = exp.parse().map_err(|_| bad("bad exponent"))?;
                base.checked_pow(exp).ok_or_else(|| bad("overflows u64"))?
            }
            None => factor.parse().map_err(|_| bad("bad factor"))?,
        };
        if f == 0 {
            return Err(bad("zero factor"));
        }
        total = total.checked_mul(f).ok_or_else(|| bad("overflows u64"))?;
    }
    Ok(total)
}

/// Parses a declared size: a non-negative integer that fits in u64. Negative numbers,
/// garbage and overflow are refused with the reason.
pub fn parse_size(what: &str, value: &str) -> Result<u64> {
    let v = value.trim();
    if v.is_empty() {
        return Err(OvfError::size(what, value, "empty"));
    }
    if v.starts_with('-') {
        return Err(OvfError::size(what, value, "negative"));
    }
    let digits = v.strip_prefix('+').unwrap_or(v);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OvfError::size(what, value, "not a decimal integer"));
    }
    digits
        .parse::<u64>()
        .map_err(|_| OvfError::size(what, value, "overflows u64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling() {
        for (u, n) in [
            ("byte * 2^20", 1u64 << 20),
            ("byte*2^30", 1 << 30),
            ("MegaBytes", 1 << 20),
            ("MB", 1 << 20),
            ("byte", 1),
            ("bytes * 10^3", 1000),
            ("byte * 1024", 1024),
            ("KiloBytes", 1024),
            ("GigaBytes", 1 << 30),
        ] {
            assert_eq!(bytes_per_unit(u).unwrap(), n, "{u}");
        }
        assert!(bytes_per_unit("hertz * 10^6").is_err());
        assert!(bytes_per_unit("byte * 2^99").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("s", " 42 ").unwrap(), 42);
        for bad in [
            "-1",
            "-9223372036854775809",
            "abcd",
            "18446744073709551616",
            "",
        ] {
            assert!(
                matches!(parse_size("s", bad), Err(OvfError::InvalidSize { .. })),
                "{bad}"
            );
        }
    }
}

//! Stable unit hashing: the same unit gets the same bucket on every replica and every restart.
//! GrowthBook's hash (32-bit FNV-1a), so assignments agree with what teams already run: rollouts
//! hash units to their share with it, and experiments will too.

/// 32-bit FNV-1a over the UTF-16 code units of `s` (as GrowthBook's JavaScript SDK hashes).
pub fn fnv1a32(s: &str) -> u32 {
    s.encode_utf16().fold(0x811c_9dc5u32, |h, c| (h ^ u32::from(c)).wrapping_mul(16_777_619))
}

/// GrowthBook's `hash(seed, value, version)`: a bucket in [0, 1). Version 2 (the default of new
/// experiments) hashes twice to spread similar seeds; version 1 is the older formula. Other
/// versions: `None`.
pub fn bucket(seed: &str, value: &str, version: u32) -> Option<f64> {
    match version {
        2 => Some(f64::from(fnv1a32(&fnv1a32(&format!("{seed}{value}")).to_string()) % 10_000) / 10_000.0),
        1 => Some(f64::from(fnv1a32(&format!("{value}{seed}")) % 1_000) / 1_000.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_values() {
        // The FNV-1a 32-bit reference values (offset basis for the empty string).
        assert_eq!(fnv1a32(""), 0x811c_9dc5);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
        assert_eq!(fnv1a32("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn buckets_are_in_range_and_versioned() {
        for i in 0..1000 {
            let b = bucket("seed", &format!("user-{i}"), 2).unwrap();
            assert!((0.0..1.0).contains(&b));
        }
        assert_eq!(bucket("s", "u", 3), None);
    }

    /// GrowthBook's published SDK cases (../shared/vectors/growthbook), when the checkout has
    /// them beside it; CI does (`CASCADE_REQUIRE_SHARED=1`), and fails without them.
    #[test]
    fn agrees_with_growthbook_published_cases() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors/growthbook/growthbook-extracted.json");
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                assert!(
                    std::env::var_os("CASCADE_REQUIRE_SHARED").is_none(),
                    "CI must have GrowthBook's cases at {path}: {e}"
                );
                eprintln!("SKIPPED: GrowthBook's cases are not at {path} ({e})");
                return;
            }
        };
        let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
        let hash = cases["hash"].as_array().unwrap();
        assert!(!hash.is_empty());
        for case in hash {
            let (seed, value, version) =
                (case[0].as_str().unwrap(), case[1].as_str().unwrap(), case[2].as_u64().unwrap() as u32);
            assert_eq!(bucket(seed, value, version), case[3].as_f64(), "{case}");
        }
    }
}

//! Target URLs and token patterns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polysocket_common::target::{Target, glob_match, normalize_pattern};

fuzz_target!(|input: (&str, &str)| {
    let (raw, pattern) = input;
    if let Ok(target) = Target::parse(raw) {
        // Normalizing is idempotent, and a URL matches itself and `*`.
        let again = Target::parse(target.as_str()).expect("a normalized target parses");
        assert_eq!(again.as_str(), target.as_str());
        assert!(target.as_str().starts_with("ws://") || target.as_str().starts_with("wss://"));
        assert!(glob_match(target.as_str(), target.as_str()));
        assert!(glob_match("*", target.as_str()));
        let _ = glob_match(&normalize_pattern(pattern), target.as_str());
    }
});

//! Target URLs and token patterns: whatever a stranger puts in a target,
//! a host wildcard admits only hosts under its domain, an exact host only
//! itself, and a path wildcard only paths under its prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polysocket_common::pattern::TargetPattern;
use polysocket_common::target::Target;

fuzz_target!(|input: (&str, &str)| {
    let (raw, tail) = input;
    // Any pattern at all parses or is refused, and never panics matching.
    let written = TargetPattern::parse(tail);
    let Ok(target) = Target::parse(raw) else { return };
    // Normalizing is idempotent, and a normalized target is its own pattern.
    let again = Target::parse(target.as_str()).expect("a normalized target parses");
    assert_eq!(again.as_str(), target.as_str());
    assert!(target.as_str().starts_with("ws://") || target.as_str().starts_with("wss://"));
    assert!(TargetPattern::parse("*").unwrap().matches(&target));
    if let Ok(own) = TargetPattern::parse(target.as_str()) {
        assert!(own.matches(&target), "{} must admit itself", target.as_str());
    }
    if let Ok(pattern) = written {
        let _ = pattern.matches(&target);
    }

    // The fuzzer's text as the rest of a pattern behind a fixed host.
    let host = target.host();
    if let Ok(below) = TargetPattern::parse(&format!("ws://*.example.com:*{tail}"))
        && below.matches(&target)
    {
        let labels = host.strip_suffix(".example.com").expect("admitted hosts end in .example.com");
        assert!(!labels.is_empty() && !labels.split('.').any(str::is_empty), "{host}");
    }
    if let Ok(exact) = TargetPattern::parse(&format!("ws://example.com:*{tail}"))
        && exact.matches(&target)
    {
        assert_eq!(host, "example.com");
    }
    let under = TargetPattern::parse("ws://*:*/api/*").unwrap();
    if under.matches(&target) {
        let (_, authority_on) = target.as_str().split_once("://").expect("checked above");
        let path = &authority_on[authority_on.find('/').expect("a normalized target has a path")..];
        assert!(path.starts_with("/api/"), "{path}");
        let path = path.split('?').next().unwrap_or_default().to_ascii_lowercase();
        assert!(!path.contains("%2f") && !path.contains("%5c"), "{path}");
    }
});

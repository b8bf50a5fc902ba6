//! Query strings and JSONP callbacks, as every endpoint parses them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polysocket_common::jsonp::{self, Callback};
use std::collections::HashMap;

fuzz_target!(|query: &str| {
    if let Ok((params, callback)) = jsonp::parse_query::<HashMap<String, String>>(query, |p| p.get("cb").map(String::as_str)) {
        if let Some(callback) = callback {
            // A callback that passed is one that parses again, and is short.
            assert_eq!(Callback::parse(callback.as_str()).as_ref(), Ok(&callback));
            assert!(callback.as_str().len() <= jsonp::MAX_CALLBACK_LEN);
            let body = jsonp::jsonp_body(&callback, &jsonp::to_script_safe_json(&params));
            assert!(body.starts_with("/**/"));
            assert!(!body.contains(['\u{2028}', '\u{2029}', '<']));
        }
    }
});

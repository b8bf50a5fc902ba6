//! `/s` requests: query parameters, content types and bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polysocket_common::jsonp;
use polysocketd::routes::{SendParams, SendRequest, send_request};

fuzz_target!(|input: (bool, &str, &str, &[u8])| {
    let (post, content_type, query, body) = input;
    let Ok((params, _)) = jsonp::parse_query::<SendParams>(query, |_| None) else { return };
    if let Ok(SendRequest::Close(Some(reason))) =
        send_request(post, content_type, params, bytes::Bytes::copy_from_slice(body))
    {
        // Only codes a client may send, with a reason that fits a close frame.
        let code = u16::from(reason.code);
        assert!(code == 1000 || (3000..=4999).contains(&code));
        assert!(reason.description.is_none_or(|r| r.len() <= 123));
    }
});

//! Several messages in one `/s` request: whatever a batch holds, a GET query
//! or a POST form of it gives back exactly its messages, in order, or a
//! refusal, never part of it.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use libfuzzer_sys::fuzz_target;
use polysocket_common::jsonp;
use polysocketd::routes::{MAX_BATCH, SendParams, SendRequest, send_request};
use polysocketd::socket::Outgoing;

fuzz_target!(|input: (bool, Vec<(bool, String)>, Option<u64>)| {
    let (post, messages, seq) = input;
    let mut pairs = Vec::new();
    let mut expected = Vec::new();
    for (binary, data) in &messages {
        if *binary {
            pairs.push(("t", "b".to_owned()));
            pairs.push(("d", BASE64.encode(data)));
            expected.push(Outgoing::Binary(data.clone().into_bytes().into()));
        } else {
            pairs.push(("t", "t".to_owned()));
            pairs.push(("d", data.clone()));
            expected.push(Outgoing::Text(data.clone()));
        }
    }
    if let Some(seq) = seq {
        pairs.push(("seq", seq.to_string()));
    }
    let encoded = serde_urlencoded::to_string(&pairs).expect("pairs encode");
    let request = if post {
        send_request(true, "application/x-www-form-urlencoded", SendParams::default(), encoded.into_bytes().into())
    } else {
        let Ok((params, _)) = jsonp::parse_query::<SendParams>(&encoded, |_| None) else { return };
        send_request(false, "", params, bytes::Bytes::new())
    };
    let valid = !messages.is_empty() && messages.len() <= MAX_BATCH && seq.is_none_or(|s| s >= 1);
    match request {
        Ok(SendRequest::Message(send)) => {
            assert!(valid, "accepted a batch of {} with seq {seq:?}", messages.len());
            assert_eq!(send.messages, expected);
            assert_eq!(send.seq, seq);
            assert!(!send.more);
        }
        Ok(SendRequest::Close(_)) => panic!("a batch of t and b became a close"),
        Err(_) => assert!(!valid, "refused a valid batch of {}", messages.len()),
    }
});

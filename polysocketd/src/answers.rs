//! Large poll answers, kept encoded for polls that ask for the same
//! messages again.
//!
//! Messages are numbered and never change, so a socket's answer for seqs
//! `first..=last`, with one callback and one encoding, is always the same
//! bytes. A client whose answer was lost asks again from the same `ack`; a
//! hostile one asks again and again, from many connections at once.
//! Encoding (script-safe JSON, then gzip) is the costly part of a poll, so
//! the few latest large answers are kept and served again as they are.

use actix_web::HttpResponse;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use bytes::Bytes;
use polysocket_common::jsonp::Callback;
use polysocket_common::wire::ClientMessage;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Answers carrying less message data are cheap to encode again.
const MIN_MESSAGE_BYTES: usize = 16 * 1024;
const MAX_ENTRIES: usize = 32;
const MAX_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerKey {
    socket: String,
    first: u64,
    last: u64,
    callback: Option<String>,
    /// As the poll handler decides it: `None` when the daemon never gzips.
    gzip: Option<bool>,
}

impl AnswerKey {
    /// The key of an answer worth keeping: numbered messages, enough of them.
    pub fn of(
        socket: &str,
        messages: &[ClientMessage],
        callback: Option<&Callback>,
        gzip: Option<bool>,
    ) -> Option<Self> {
        let seq = |message: &ClientMessage| match message {
            ClientMessage::Text { seq, .. } | ClientMessage::Binary { seq, .. } | ClientMessage::Close { seq, .. } => {
                Some(*seq)
            }
            ClientMessage::Heartbeat => None,
        };
        let size: usize = messages
            .iter()
            .map(|message| match message {
                ClientMessage::Text { data, .. } | ClientMessage::Binary { data, .. } => data.len(),
                _ => 0,
            })
            .sum();
        if size < MIN_MESSAGE_BYTES {
            return None;
        }
        Some(AnswerKey {
            socket: socket.to_owned(),
            first: seq(messages.first()?)?,
            last: seq(messages.last()?)?,
            callback: callback.map(|c| c.as_str().to_owned()),
            gzip,
        })
    }
}

struct Kept {
    key: AnswerKey,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
pub struct AnswerCache {
    kept: Mutex<VecDeque<Kept>>,
}

impl AnswerCache {
    /// The answer kept under `key`, as a response of its own.
    pub fn get(&self, key: &AnswerKey) -> Option<HttpResponse> {
        let kept = self.kept.lock().expect("answer cache lock");
        let found = kept.iter().find(|kept| kept.key == *key)?;
        let mut response = HttpResponse::with_body(found.status, BoxBody::new(found.body.clone()));
        *response.headers_mut() = found.headers.clone();
        Some(response)
    }

    /// Keeps a copy of `response` under `key` (dropping the oldest beyond
    /// the bounds) and returns it.
    pub fn keep(&self, key: AnswerKey, response: HttpResponse) -> HttpResponse {
        let (head, body) = response.into_parts();
        let body = match body.try_into_bytes() {
            Ok(body) => body,
            Err(streaming) => return head.set_body(streaming),
        };
        if body.len() <= MAX_BYTES / 4 {
            let mut kept = self.kept.lock().expect("answer cache lock");
            kept.retain(|kept| kept.key != key);
            kept.push_back(Kept { key, status: head.status(), headers: head.headers().clone(), body: body.clone() });
            while kept.len() > MAX_ENTRIES || kept.iter().map(|kept| kept.body.len()).sum::<usize>() > MAX_BYTES {
                kept.pop_front();
            }
        }
        head.set_body(BoxBody::new(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(from: u64, count: u64, size: usize) -> Vec<ClientMessage> {
        (from..from + count).map(|seq| ClientMessage::Text { seq, data: "x".repeat(size) }).collect()
    }

    #[test]
    fn a_large_answer_is_served_again_for_the_same_messages_callback_and_encoding_only() {
        let cache = AnswerCache::default();
        let callback = Callback::parse("cb").unwrap();
        let batch = messages(1, 4, 8 * 1024);
        let key = AnswerKey::of("s1", &batch, Some(&callback), Some(true)).expect("large enough to keep");
        let response = HttpResponse::Ok().insert_header(("content-type", "application/javascript")).body("cb([1])");
        let served = cache.keep(key.clone(), response);
        assert_eq!(served.status(), StatusCode::OK);
        let again = cache.get(&key).expect("kept");
        assert_eq!(again.headers().get("content-type").unwrap(), "application/javascript");
        assert_eq!(again.into_body().try_into_bytes().unwrap(), Bytes::from_static(b"cb([1])"));
        for other in [
            AnswerKey::of("s2", &batch, Some(&callback), Some(true)),
            AnswerKey::of("s1", &messages(2, 4, 8 * 1024), Some(&callback), Some(true)),
            AnswerKey::of("s1", &batch, None, Some(true)),
            AnswerKey::of("s1", &batch, Some(&callback), Some(false)),
        ] {
            assert!(cache.get(&other.unwrap()).is_none());
        }
        assert_eq!(AnswerKey::of("s1", &messages(1, 4, 10), Some(&callback), None), None, "small: not kept");
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = AnswerCache::default();
        for i in 0..(MAX_ENTRIES as u64 * 2) {
            let key = AnswerKey::of("s", &messages(i, 1, 32 * 1024), None, None).unwrap();
            cache.keep(key, HttpResponse::Ok().body(vec![0u8; 1 << 20]));
        }
        let kept = cache.kept.lock().unwrap();
        assert!(kept.len() <= MAX_ENTRIES && kept.iter().map(|k| k.body.len()).sum::<usize>() <= MAX_BYTES);
    }
}

//! JSON, JSONP and frame response encoding.
//!
//! Every answer the bridge gives to a client goes through [`reply`], so the
//! hardening (strict callbacks, `/**/` prefix, `nosniff`, `no-store`, escaped
//! line separators) cannot be forgotten by a single handler.

use actix_web::http::StatusCode;
use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS,
};
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

/// Longest callback name accepted; long enough for namespaced callbacks such as
/// `PolySocket.callbacks.c1234567`, short enough to keep URLs small.
pub const MAX_CALLBACK_LEN: usize = 64;

/// A validated JSONP callback: a dotted path of JavaScript identifiers.
///
/// Anything richer (brackets, parentheses, quotes) would let a third party
/// page inject script through the callback name, so it is refused outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback(String);

/// Why a callback name was refused. The refused name is never echoed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("invalid callback: must be 1-64 characters")]
    Length,
    #[error("invalid callback: must be a JavaScript identifier path like a.b_c.$d")]
    Syntax,
}

impl Callback {
    pub fn parse(name: &str) -> Result<Self, CallbackError> {
        if name.is_empty() || name.len() > MAX_CALLBACK_LEN {
            return Err(CallbackError::Length);
        }
        let valid_part = |part: &str| {
            let mut chars = part.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        };
        if name.split('.').all(valid_part) { Ok(Callback(name.to_owned())) } else { Err(CallbackError::Syntax) }
    }

    /// Parses an optional `cb` parameter: absent or empty means a plain JSON
    /// answer (curl), present means it must be valid.
    pub fn parse_optional(name: Option<&str>) -> Result<Option<Self>, CallbackError> {
        match name {
            None | Some("") => Ok(None),
            Some(name) => Self::parse(name).map(Some),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serializes `value` to JSON that is also safe to embed in a script:
/// U+2028/U+2029 are line terminators in older JavaScript engines, and `<`
/// escaped keeps `</script>` inert if a page ever inlines the payload.
pub fn to_script_safe_json<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_string(value).expect("wire types always serialize");
    if !json.contains(['<', '\u{2028}', '\u{2029}']) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            // These characters only ever occur inside JSON strings, where a
            // \u escape means exactly the same character.
            '<' => out.push_str("\\u003c"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The body of a JSONP answer: `/**/cb(<json>);`. The leading comment defeats
/// content-sniffing attacks that rely on the body starting with the callback.
pub fn jsonp_body(callback: &Callback, json: &str) -> String {
    let mut body = String::with_capacity(callback.0.len() + json.len() + 8);
    body.push_str("/**/");
    body.push_str(&callback.0);
    body.push('(');
    body.push_str(json);
    body.push_str(");");
    body
}

/// How a request is answered: JSON (curl, XMLHttpRequest), JSONP (a script
/// element), or a frame: an HTML page that hands the JSON to the page that
/// framed it, for a form posted into a hidden iframe (a batch too big for a
/// script's URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Json,
    Jsonp(Callback),
    Frame,
}

impl Answer {
    pub fn callback(&self) -> Option<&Callback> {
        match self {
            Answer::Jsonp(callback) => Some(callback),
            _ => None,
        }
    }
}

impl From<Option<Callback>> for Answer {
    fn from(callback: Option<Callback>) -> Self {
        callback.map_or(Answer::Json, Answer::Jsonp)
    }
}

/// The frame's only script may run; nothing may load. The body has no `<`
/// of its own (see [`frame_body`]), so no other script can be in it.
const FRAME_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'";

/// The body of a frame answer: a page whose script posts the JSON, as a
/// string (IE8-9 post nothing else), to the window that framed it. To any
/// origin: an answer says only whether a send was taken, and the window
/// that framed it is the one that posted the form. `json` is script-safe
/// (no `<`), and its string literal stays so.
pub fn frame_body(json: &str) -> String {
    let literal = serde_json::to_string(json).expect("a string serializes");
    format!("<!DOCTYPE html><meta charset=\"utf-8\"><script>parent.postMessage({literal},\"*\")</script>")
}

/// Builds the HTTP answer, in the form the request asked for.
pub fn reply<T: Serialize>(status: StatusCode, answer: &Answer, value: &T) -> HttpResponse {
    let json = to_script_safe_json(value);
    let mut builder = HttpResponseBuilder::new(status);
    builder
        .insert_header((X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")));
    match answer {
        Answer::Jsonp(callback) => builder
            .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/javascript; charset=utf-8")))
            .body(jsonp_body(callback, &json)),
        Answer::Frame => builder
            .insert_header((CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")))
            .insert_header((CONTENT_SECURITY_POLICY, HeaderValue::from_static(FRAME_POLICY)))
            .body(frame_body(&json)),
        Answer::Json => builder.insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json"))).body(json),
    }
}

/// Longest query string accepted. A legacy browser's URLs stay under about
/// 2 KB (long messages go in `more=1` pieces, or in a POST body).
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Whether every name and value of a urlencoded form (or query string) is
/// UTF-8 once decoded. The form parser replaces invalid bytes with U+FFFD,
/// which would turn a client's bad text into different text instead of an error.
pub fn form_is_utf8(form: &[u8]) -> bool {
    // `+` (a space) is ASCII either way, so it is left as it is; decoding
    // borrows unless the part has escapes. Every /s and /j request comes here.
    form.split(|&b| b == b'&' || b == b'=').all(|part| percent_encoding::percent_decode(part).decode_utf8().is_ok())
}

/// Why a request's query cannot even be answered in JSONP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query string too long: at most 16 KiB; send long messages in pieces or in a POST body")]
    TooLong,
    #[error("malformed query string")]
    Malformed,
    #[error("malformed query string: not UTF-8")]
    NotUtf8,
    /// A form body (`POST /create`) over the query bound.
    #[error("request body too big: at most 16 KiB")]
    BodyTooBig,
    /// A form body not all there within the body timeout.
    #[error("request body too slow")]
    SlowBody,
    #[error("request body could not be read")]
    UnreadableBody,
    #[error(transparent)]
    Callback(#[from] CallbackError),
}

impl QueryError {
    /// The plain-text answer: nothing the client sent is echoed.
    pub fn response(&self) -> HttpResponse {
        let status = match self {
            QueryError::TooLong => StatusCode::URI_TOO_LONG,
            QueryError::BodyTooBig => StatusCode::PAYLOAD_TOO_LARGE,
            QueryError::SlowBody => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        };
        HttpResponseBuilder::new(status)
            .insert_header((X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
            .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .content_type("text/plain; charset=utf-8")
            .body(self.to_string())
    }
}

/// Parses a query string and its `cb` parameter: the two things that must be
/// right before any answer can be encoded for the client.
pub fn parse_query<T: DeserializeOwned>(
    query: &str,
    callback_of: impl Fn(&T) -> Option<&str>,
) -> Result<(T, Option<Callback>), QueryError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong);
    }
    if !form_is_utf8(query.as_bytes()) {
        return Err(QueryError::NotUtf8);
    }
    let params: T = serde_urlencoded::from_str(query).map_err(|_| QueryError::Malformed)?;
    let callback = Callback::parse_optional(callback_of(&params))?;
    Ok((params, callback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_identifier_paths() {
        for name in ["cb", "_", "$", "a.b.c", "jQuery123_456", "PolySocket.cb.$1", "a1$_.b2"] {
            assert!(Callback::parse(name).is_ok(), "{name} should be accepted");
        }
    }

    #[test]
    fn refuses_anything_else() {
        for name in ["1a", "a..b", ".a", "a.", "a b", "alert(1)", "a[0]", "a-b", "a;b", "é", "a.1b", "</script>"] {
            assert_eq!(Callback::parse(name), Err(CallbackError::Syntax), "{name}");
        }
        assert_eq!(Callback::parse(""), Err(CallbackError::Length));
        assert_eq!(Callback::parse(&"a".repeat(65)), Err(CallbackError::Length));
        assert!(Callback::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn optional_callback_absent_or_empty_means_json() {
        assert_eq!(Callback::parse_optional(None), Ok(None));
        assert_eq!(Callback::parse_optional(Some("")), Ok(None));
        assert!(Callback::parse_optional(Some("x(")).is_err());
    }

    #[test]
    fn escapes_line_separators_and_angle_brackets() {
        let json = to_script_safe_json(&serde_json::json!({"d": "a\u{2028}b\u{2029}</script>"}));
        assert_eq!(json, r#"{"d":"a\u2028b\u2029\u003c/script>"}"#);
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["d"], "a\u{2028}b\u{2029}</script>");
    }

    #[test]
    fn invalid_utf8_is_refused_not_replaced() {
        assert!(form_is_utf8(b"t=t&d=h%C3%A9llo+world"));
        assert!(!form_is_utf8(b"t=t&d=%ff"));
        assert!(!form_is_utf8(b"d=%C3"));
        let parsed = parse_query::<std::collections::HashMap<String, String>>("d=%ff", |_| None);
        assert_eq!(parsed.unwrap_err(), QueryError::NotUtf8);
    }

    #[test]
    fn queries_are_bounded() {
        let long = format!("d={}", "x".repeat(MAX_QUERY_BYTES));
        let parsed = parse_query::<std::collections::HashMap<String, String>>(&long, |_| None);
        assert_eq!(parsed.unwrap_err(), QueryError::TooLong);
        assert_eq!(QueryError::TooLong.response().status(), StatusCode::URI_TOO_LONG);
        assert_eq!(QueryError::Malformed.response().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_frame_answer_is_a_page_that_posts_its_json_and_loads_nothing() {
        let response = reply(StatusCode::CREATED, &Answer::Frame, &serde_json::json!({"ok": true}));
        assert_eq!(response.status(), StatusCode::CREATED);
        let header = |name| response.headers().get(name).unwrap().to_str().unwrap().to_owned();
        assert_eq!(header(CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(CONTENT_SECURITY_POLICY), FRAME_POLICY);
        assert_eq!(header(X_CONTENT_TYPE_OPTIONS), "nosniff");
        let body = actix_web::body::MessageBody::try_into_bytes(response.into_body()).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"<!DOCTYPE html><meta charset="utf-8"><script>parent.postMessage("{\"ok\":true}","*")</script>"#
        );
    }

    #[test]
    fn jsonp_body_has_comment_prefix() {
        let cb = Callback::parse("my.cb").unwrap();
        assert_eq!(jsonp_body(&cb, r#"{"ok":true}"#), r#"/**/my.cb({"ok":true});"#);
    }
}

/// The encoding checked by a real JavaScript engine: for arbitrary strings,
/// evaluating the JSONP body in node hands the callback the exact original.
#[cfg(test)]
mod javascript_engine {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Evaluates every body in node, each as a separate script, with a
    /// callback that records its argument; returns what each call received.
    fn evaluate_in_node(bodies: &[String]) -> Vec<String> {
        let program = r#"
            const vm = require("vm");
            const bodies = JSON.parse(require("fs").readFileSync(0, "utf8"));
            const seen = bodies.map((body) => {
                let got = null;
                // A JSONP body calls back; a frame's script posts a string.
                const parent = { postMessage: (text, origin) => { if (origin === "*") got = JSON.parse(text); } };
                vm.runInNewContext(body, { ps: { cb: (value) => { got = value; } }, parent });
                return got.messages[0].data;
            });
            // Lone surrogates cannot occur (the input is UTF-8), so JSON output is exact.
            process.stdout.write(JSON.stringify(seen));
        "#;
        let mut node = Command::new("node")
            .args(["-e", program])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node is needed for this test");
        node.stdin.take().unwrap().write_all(serde_json::to_string(bodies).unwrap().as_bytes()).unwrap();
        let output = node.wait_with_output().unwrap();
        assert!(output.status.success(), "node failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("node printed JSON")
    }

    fn json_for(data: &str) -> String {
        to_script_safe_json(&serde_json::json!({"ok": true, "messages": [{"type": "text", "seq": 1, "data": data}]}))
    }

    fn body_for(data: &str) -> String {
        jsonp_body(&Callback::parse("ps.cb").unwrap(), &json_for(data))
    }

    /// The script of a frame answer, as the page it is in would run it.
    fn frame_script_for(data: &str) -> String {
        let page = frame_body(&json_for(data));
        let script = page.split_once("<script>").and_then(|(_, rest)| rest.strip_suffix("</script>"));
        script.expect("a frame is one script").to_owned()
    }

    /// Strings rich in what breaks naive JSONP: line separators, script end
    /// tags, quotes, backslashes, NUL and other controls, astral characters.
    fn hostile_text() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            Just("\u{2028}".to_owned()),
            Just("\u{2029}".to_owned()),
            Just("</script>".to_owned()),
            Just("<!--".to_owned()),
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            Just("\u{0}".to_owned()),
            Just("\\u2028".to_owned()),
            // Escaped lone surrogates stay text: they must not become characters.
            Just("\\ud800".to_owned()),
            Just("\\udfff\\ud83d".to_owned()),
            Just("😀".to_owned()),
            any::<char>().prop_map(String::from),
            "[\\x00-\\x1f]".prop_map(String::from),
        ];
        prop::collection::vec(pieces, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn node_sees_exactly_what_was_sent(texts in prop::collection::vec(hostile_text(), 1..8)) {
            let bodies: Vec<String> = texts.iter().map(|t| body_for(t)).collect();
            let frames: Vec<String> = texts.iter().map(|t| frame_script_for(t)).collect();
            for body in bodies.iter().chain(&frames) {
                // Nothing that ends a script or a line in old engines survives raw.
                let raw = body.contains(['\u{2028}', '\u{2029}', '<']);
                prop_assert!(!raw, "unescaped separator or '<' in {:?}", body);
            }
            prop_assert_eq!(evaluate_in_node(&bodies), texts.clone());
            prop_assert_eq!(evaluate_in_node(&frames), texts);
        }
    }
}

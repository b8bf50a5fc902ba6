//! A small HTTP client for tests: requests go to a loopback port whatever
//! the `Host` is (so `{uniq}.d1.localhost` works without DNS), and answers
//! are checked for the JSONP hardening before their JSON is returned.

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// An HTTP answer, fully read (and gunzipped, when it came gzipped).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: String,
    /// The body's size as it came over the wire.
    pub wire_bytes: usize,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Checks the JSONP envelope and headers, and returns the JSON inside.
    pub fn jsonp(&self, callback: &str) -> Value {
        assert_eq!(self.header("content-type"), "application/javascript; charset=utf-8", "{self:?}");
        assert_eq!(self.header("x-content-type-options"), "nosniff");
        assert_eq!(self.header("cache-control"), "no-store");
        let prefix = format!("/**/{callback}(");
        let json = self
            .body
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(");"))
            .unwrap_or_else(|| panic!("not a JSONP body for {callback}: {:?}", self.body));
        serde_json::from_str(json).unwrap_or_else(|e| panic!("invalid JSON in {:?}: {e}", self.body))
    }

    /// Checks a plain JSON answer and returns it.
    pub fn json(&self) -> Value {
        assert_eq!(self.header("content-type"), "application/json", "{self:?}");
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("invalid JSON in {:?}: {e}", self.body))
    }
}

/// A response read as it arrives (a streaming `/j`), gunzipped chunk by
/// chunk when it comes gzipped.
pub struct Streamed {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    body: awc::ClientResponse,
    buffered: Vec<u8>,
    gunzip: Option<flate2::write::GzDecoder<Vec<u8>>>,
    /// What has come over the wire so far.
    pub wire_bytes: usize,
}

impl Streamed {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The next piece of the body up to and without `separator`, or `None`
    /// once the response has ended; panics if nothing comes for 10 s.
    pub async fn next_until(&mut self, separator: &str) -> Option<String> {
        let separator = separator.as_bytes();
        loop {
            if let Some(at) = self.buffered.windows(separator.len()).position(|w| w == separator) {
                let piece: Vec<u8> = self.buffered.drain(..at + separator.len()).take(at).collect();
                return Some(String::from_utf8(piece).expect("UTF-8 stream"));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut self.body))
                .await
                .expect("the stream went silent for 10 s");
            match chunk {
                Some(Ok(bytes)) => {
                    self.wire_bytes += bytes.len();
                    match &mut self.gunzip {
                        Some(gunzip) => {
                            // Only what this chunk completes: nothing may need a later one.
                            std::io::Write::write_all(gunzip, &bytes).expect("valid gzip");
                            std::io::Write::flush(gunzip).expect("valid gzip");
                            self.buffered.append(gunzip.get_mut());
                        }
                        None => self.buffered.extend_from_slice(&bytes),
                    }
                }
                Some(Err(_)) | None => {
                    assert!(self.buffered.is_empty(), "the stream ended mid-message: {:?}", self.buffered);
                    return None;
                }
            }
        }
    }

    /// The next NDJSON line, parsed.
    pub async fn next_line(&mut self) -> Option<Value> {
        let line = self.next_until("\n").await?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("invalid NDJSON line {line:?}: {e}")))
    }

    /// The next Server-Sent Events block, as written.
    pub async fn next_event(&mut self) -> Option<String> {
        self.next_until("\n\n").await
    }
}

/// A client bound to one server address.
#[derive(Clone)]
pub struct Http {
    client: awc::Client,
    addr: SocketAddr,
}

impl Http {
    pub fn new(port: u16) -> Self {
        // Long polls take up to the poll ttl; the client must outlast them.
        // Pooled connections are dropped well before the server's 5 s
        // keep-alive ends them, so a request never races a closing socket.
        let connector = awc::Connector::new().limit(0).conn_keep_alive(Duration::from_secs(2));
        let client = awc::Client::builder().connector(connector).timeout(Duration::from_secs(60)).finish();
        Http { client, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    fn url(&self, host: Option<&str>, path_and_query: &str) -> String {
        let host = host.map(str::to_owned).unwrap_or_else(|| self.addr.to_string());
        format!("http://{host}{path_and_query}")
    }

    /// GET with extra headers; `host` names a virtual host (e.g. a socket's fqdn).
    pub async fn get(&self, host: Option<&str>, path_and_query: &str, headers: &[(&str, &str)]) -> Reply {
        self.try_get(host, path_and_query, headers).await.expect("GET failed")
    }

    /// A GET whose connection may fail, for clients that retry.
    pub async fn try_get(
        &self,
        host: Option<&str>,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, awc::error::SendRequestError> {
        let mut request = self.client.get(self.url(host, path_and_query)).address(self.addr);
        for &(name, value) in headers {
            request = request.insert_header((name, value));
        }
        Ok(read(request.send().await?).await)
    }

    /// A GET whose body is read as it arrives, with no timeout on it.
    pub async fn stream(&self, host: Option<&str>, path_and_query: &str, headers: &[(&str, &str)]) -> Streamed {
        let client = awc::Client::builder().disable_timeout().finish();
        let mut request = client.get(self.url(host, path_and_query)).address(self.addr);
        for &(name, value) in headers {
            request = request.insert_header((name, value));
        }
        let body = request.send().await.expect("GET failed");
        let gzipped = body.headers().get("content-encoding").is_some_and(|v| v == "gzip");
        Streamed {
            status: body.status().as_u16(),
            headers: body.headers().clone(),
            body,
            buffered: Vec::new(),
            gunzip: gzipped.then(|| flate2::write::GzDecoder::new(Vec::new())),
            wire_bytes: 0,
        }
    }

    /// A request with any method and no body, e.g. to see what a route refuses.
    pub async fn request(&self, method: awc::http::Method, host: Option<&str>, path_and_query: &str) -> Reply {
        let request = self.client.request(method, self.url(host, path_and_query)).address(self.addr);
        read(request.send().await.expect("request failed")).await
    }

    /// Whether `GET path` answers 200; a refused connection counts as no,
    /// so this can be polled while a server starts.
    pub async fn answers_ok(&self, path: &str) -> bool {
        let request = self.client.get(self.url(None, path)).address(self.addr);
        matches!(request.send().await, Ok(response) if response.status().as_u16() == 200)
    }

    /// Waits until `GET path` answers 200, panicking after `within`.
    pub async fn wait_until_ok(&self, path: &str, within: Duration) {
        crate::eventually(&format!("{path} on {}", self.addr), within, || async {
            self.answers_ok(path).await.then_some(())
        })
        .await
    }

    /// Waits until `/metrics` has the line `metric` (e.g. `polysocket_polls_waiting 1`),
    /// so a test knows the server reached a state instead of sleeping.
    pub async fn wait_for_metric(&self, metric: &str) {
        crate::eventually(&format!("{metric} on {}", self.addr), Duration::from_secs(10), || async {
            let reply = self.try_get(None, "/metrics", &[]).await.ok()?;
            reply.body.lines().any(|line| line == metric).then_some(())
        })
        .await
    }

    pub async fn post(&self, host: Option<&str>, path_and_query: &str, content_type: &str, body: Vec<u8>) -> Reply {
        self.try_post(host, path_and_query, content_type, body).await.expect("POST failed")
    }

    /// A POST whose connection may legitimately fail (the server may answer
    /// early and close while a large body is still being sent).
    pub async fn try_post(
        &self,
        host: Option<&str>,
        path_and_query: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Reply, awc::error::SendRequestError> {
        let request = self
            .client
            .post(self.url(host, path_and_query))
            .address(self.addr)
            .insert_header(("content-type", content_type));
        Ok(read(request.send_body(body).await?).await)
    }
}

async fn read<S>(mut response: awc::ClientResponse<S>) -> Reply
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    let wire = response.body().limit(64 << 20).await.expect("read body");
    let mut body = Vec::new();
    if response.headers().get("content-encoding").is_some_and(|v| v == "gzip") {
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&wire[..]), &mut body).expect("valid gzip");
    } else {
        body = wire.to_vec();
    }
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: String::from_utf8(body).expect("UTF-8 body"),
        wire_bytes: wire.len(),
    }
}

/// Builds a query string (`a=1&b=x%20y`) from pairs.
pub fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("string pairs always encode")
}

//! Owns reading a streaming request body of concatenated JSON objects as it arrives (the
//! bodies of `/v3/watch` and `/v3/lease/keepalive`, etcd's client-streaming calls through
//! grpc-gateway): each object is handed on once it is whole, while the body stays open.

use std::collections::VecDeque;

use actix_web::web;
use futures_util::StreamExt;

use crate::api::ApiError;

/// The objects of a request body, in order, as they arrive.
pub(super) struct JsonObjects {
    payload: web::Payload,
    /// Bytes received and not yet taken as whole objects.
    buf: Vec<u8>,
    ends: ObjectEnds,
    /// Objects parsed from the last whole run, not handed out yet; an error ends the run.
    parsed: VecDeque<Result<serde_json::Value, ApiError>>,
    /// Largest object (and largest unfinished object) accepted, in bytes.
    limit: usize,
    /// Makes the error for a body that is not concatenated JSON objects.
    malformed: fn(String) -> ApiError,
    ended: bool,
}

impl JsonObjects {
    /// Reads `payload`, refusing an object over `limit` bytes; `malformed` names what is wrong
    /// with a body that is not JSON objects (each route's own error).
    pub(super) fn new(payload: web::Payload, limit: usize, malformed: fn(String) -> ApiError) -> Self {
        Self {
            payload,
            buf: Vec::new(),
            ends: ObjectEnds::default(),
            parsed: VecDeque::new(),
            limit,
            malformed,
            ended: false,
        }
    }

    /// The next object; `None` once the body has ended cleanly. After an error nothing more
    /// is read: the error is the last item.
    pub(super) async fn next(&mut self) -> Option<Result<serde_json::Value, ApiError>> {
        loop {
            if let Some(item) = self.parsed.pop_front() {
                if item.is_err() {
                    self.end();
                }
                return Some(item);
            }
            if self.ended {
                return None;
            }
            let chunk = match self.payload.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return self.fail(ApiError::Body(e.to_string())),
                None => {
                    self.ended = true;
                    // A half-written object at the end is an error.
                    if !self.buf.iter().all(u8::is_ascii_whitespace) {
                        return self.fail(ApiError::TruncatedBody);
                    }
                    return None;
                }
            };
            self.buf.extend_from_slice(&chunk);
            let whole = match self.ends.scan(&self.buf, self.malformed) {
                Ok(whole) => whole,
                Err(e) => {
                    // The whole objects before the bad bytes still count; nothing after them
                    // is read.
                    self.parse(self.ends.whole);
                    self.parsed.push_back(Err(e));
                    self.ended = true;
                    continue;
                }
            };
            if whole > 0 {
                self.parse(whole);
                self.ends.consumed(whole);
            } else if self.buf.len() > self.limit {
                return self.fail(watchkv::Error::RequestTooLarge.into());
            }
        }
    }

    /// Parses the whole objects in the first `whole` bytes into `parsed` (up to the first that
    /// fails) and takes them off the buffer (the scan's own count is the caller's to move).
    fn parse(&mut self, whole: usize) {
        let mut start = 0;
        let mut values = serde_json::Deserializer::from_slice(&self.buf[..whole]).into_iter::<serde_json::Value>();
        while let Some(value) = values.next() {
            let end = values.byte_offset();
            let item = match value {
                Ok(_) if end - start > self.limit => Err(watchkv::Error::RequestTooLarge.into()),
                Ok(v) => Ok(v),
                Err(e) => Err((self.malformed)(e.to_string())),
            };
            start = end;
            let failed = item.is_err();
            self.parsed.push_back(item);
            if failed {
                break;
            }
        }
        self.buf.drain(..whole);
    }

    fn fail(&mut self, error: ApiError) -> Option<Result<serde_json::Value, ApiError>> {
        self.end();
        Some(Err(error))
    }

    /// Nothing more is read or handed out.
    fn end(&mut self) {
        self.ended = true;
        self.parsed.clear();
        self.buf = Vec::new();
    }
}

/// A top-level JSON `null`.
const NULL: &[u8] = b"null";

/// Where the whole request objects at the front of a growing body end, found by looking at each
/// byte once (brackets, and strings with their escapes), so that a request arriving in many
/// small chunks is parsed once when it is whole, not again from its start at every chunk.
#[derive(Debug, Default)]
struct ObjectEnds {
    /// Bytes of the buffer looked at so far.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Bytes of a top-level `null` seen so far: protojson reads `null` as the empty message,
    /// which etcd's gateway forwards (and etcd's watch ignores) like `{}`.
    null_seen: usize,
    /// Bytes at the front of the buffer that are whole objects (and whitespace).
    whole: usize,
}

impl ObjectEnds {
    /// Looks at what was appended to `buf` since the last call; returns how many bytes at its
    /// front are whole objects.
    ///
    /// # Errors
    /// `malformed` for anything but an object at the top level.
    fn scan(&mut self, buf: &[u8], malformed: fn(String) -> ApiError) -> Result<usize, ApiError> {
        for (i, &b) in buf.iter().enumerate().skip(self.scanned) {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            if self.depth == 0 && (self.null_seen > 0 || b == b'n') {
                if b != NULL[self.null_seen] {
                    return Err(malformed(format!("a request is a JSON object, not one starting with {:?}", 'n')));
                }
                self.null_seen += 1;
                if self.null_seen == NULL.len() {
                    self.null_seen = 0;
                    self.whole = i + 1;
                }
                continue;
            }
            if self.depth == 0 && b != b'{' && !b.is_ascii_whitespace() {
                return Err(malformed(format!(
                    "a request is a JSON object, not one starting with {:?}",
                    char::from(b)
                )));
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.whole = i + 1;
                    }
                }
                _ => {}
            }
        }
        self.scanned = buf.len();
        Ok(self.whole)
    }

    /// `n` bytes (whole objects) were taken off the front of the buffer.
    fn consumed(&mut self, n: usize) {
        self.scanned -= n;
        self.whole -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distinct counts of whole bytes the scan reports while `body` grows a byte at a time.
    fn ends_fed_a_byte_at_a_time(body: &[u8]) -> Vec<usize> {
        let mut ends = ObjectEnds::default();
        let mut seen = Vec::new();
        for n in 1..=body.len() {
            let whole = ends.scan(&body[..n], ApiError::Malformed).expect("requests");
            if seen.last() != Some(&whole) {
                seen.push(whole);
            }
        }
        seen
    }

    /// Fed a byte at a time, the scan finds each object's end once it is whole, whatever its
    /// strings hold.
    #[test]
    fn object_ends_are_found_a_byte_at_a_time() {
        let first = br#" {"create_request":{"key":"e30=","x":"}{\"]"}} "#;
        let second = br#"{"cancel_request":{"watch_id":"1"}}"#;
        let body: Vec<u8> = [&first[..], &second[..]].concat();
        // The first object ends before its trailing space; the second at the end.
        assert_eq!(ends_fed_a_byte_at_a_time(&body), vec![0, first.len() - 1, body.len()]);
        let value: serde_json::Value = serde_json::from_slice(&body[..first.len() - 1]).expect("whole");
        assert_eq!(value["create_request"]["x"], "}{\"]");

        // Taking whole objects off the front keeps the scan where it was.
        let mut ends = ObjectEnds::default();
        let mut buf = body[..first.len() + 5].to_vec();
        let whole = ends.scan(&buf, ApiError::Malformed).expect("objects");
        buf.drain(..whole);
        ends.consumed(whole);
        buf.extend_from_slice(&body[first.len() + 5..]);
        assert_eq!(ends.scan(&buf, ApiError::Malformed).expect("objects"), buf.len());
    }

    #[test]
    fn anything_but_an_object_or_null_at_the_top_is_refused_at_once() {
        for body in [&b"[1]"[..], b" 7", b"\"x\"", b"{} nul{}", b"nothing", b"{} true"] {
            let refused = ObjectEnds::default().scan(body, ApiError::InvalidWatchRequest);
            assert!(matches!(refused, Err(ApiError::InvalidWatchRequest(_))), "{body:?}: {refused:?}");
        }
    }

    /// protojson reads a top-level `null` as the empty message: it is a whole request, found
    /// also when it arrives a byte at a time.
    #[test]
    fn a_null_is_a_whole_request() {
        let body = b"{} null\n{\"progress_request\":{}}";
        assert_eq!(ends_fed_a_byte_at_a_time(body), vec![0, 2, 7, body.len()]);
    }
}

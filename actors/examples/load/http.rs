//! HTTP/1.1 to the JSON gateway: pooled `awc` clients for unary calls (puts, `/metrics`), and a
//! response decoder for the raw watch streams, which `awc` cannot drive both ways.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Buf as _, BytesMut};

use crate::server::Server;

pub fn http_client(pool: usize) -> awc::Client {
    http_client_timeout(pool, Duration::from_secs(10))
}

pub fn http_client_timeout(pool: usize, timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .limit(pool)
                .conn_keep_alive(Duration::from_secs(120))
                .conn_lifetime(Duration::from_secs(600)),
        )
        .timeout(timeout)
        .disable_redirects()
        .finish()
}

/// One unary POST; the body is read to the end so that the connection goes back to the pool.
pub async fn post(client: &awc::Client, url: &str, body: String) -> Result<(), String> {
    post_for_body(client, url, body).await.map(drop)
}

/// One unary POST, returning the answer's body.
pub async fn post_for_body(client: &awc::Client, url: &str, body: String) -> Result<String, String> {
    let mut resp = client
        .post(url)
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let bytes = resp.body().limit(1 << 20).await.map_err(|e| format!("body: {e}"))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub fn put_body(key: &[u8], value: &[u8]) -> String {
    format!(r#"{{"key":"{}","value":"{}"}}"#, B64.encode(key), B64.encode(value))
}

/// The watcher-group, victim and write-batch lines of watchkv's `/metrics`, on one line.
pub async fn watchkv_metrics(server: &Server) -> String {
    let client = http_client(1);
    let url = format!("{}/metrics", server.base);
    let Ok(mut resp) = client.get(&url).send().await else {
        return "(unavailable)".into();
    };
    let Ok(body) = resp.body().limit(1 << 20).await else {
        return "(unavailable)".into();
    };
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            ["watchers", "victim", "write_batch", "events_sent", "responses_sent"].iter().any(|k| l.contains(k))
        })
        .map(|l| l.trim_start_matches("watchkv_").to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decodes one HTTP/1.1 response (interim 1xx heads, then a chunked, sized or close-delimited
/// body) as bytes arrive.
#[derive(Default)]
pub struct HttpDecoder {
    pub raw: BytesMut,
    pub body: Vec<u8>,
    state: DecState,
    pub status: Option<u16>,
    pub got_continue: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum DecState {
    #[default]
    Head,
    ChunkSize,
    ChunkData(usize),
    ChunkCrlf,
    Sized(usize),
    UntilClose,
    Done,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl HttpDecoder {
    pub fn advance(&mut self) -> Result<(), String> {
        loop {
            match self.state {
                DecState::Head => {
                    let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                        if self.raw.len() > 64 * 1024 {
                            return Err("response head too large".into());
                        }
                        return Ok(());
                    };
                    let head = self.raw.split_to(end + 4);
                    let text = String::from_utf8_lossy(&head);
                    let mut lines = text.split("\r\n");
                    let status_line = lines.next().unwrap_or("");
                    let code: u16 = status_line
                        .split(' ')
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
                    if (100..200).contains(&code) {
                        self.got_continue |= code == 100;
                        continue;
                    }
                    self.status = Some(code);
                    let (mut chunked, mut len) = (false, None);
                    for l in lines {
                        if let Some((k, v)) = l.split_once(':') {
                            let k = k.trim().to_ascii_lowercase();
                            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                                chunked = true;
                            } else if k == "content-length" {
                                len = v.trim().parse::<usize>().ok();
                            }
                        }
                    }
                    self.state = if chunked {
                        DecState::ChunkSize
                    } else if let Some(n) = len {
                        DecState::Sized(n)
                    } else {
                        DecState::UntilClose
                    };
                }
                DecState::ChunkSize => {
                    let Some(end) = find(&self.raw, b"\r\n") else {
                        return Ok(());
                    };
                    let line = self.raw.split_to(end + 2);
                    let hex = String::from_utf8_lossy(&line[..end]);
                    let hex = hex.split(';').next().unwrap_or("").trim();
                    let n = usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {hex:?}"))?;
                    self.state = if n == 0 { DecState::Done } else { DecState::ChunkData(n) };
                }
                DecState::ChunkData(n) => {
                    let Some(left) = self.body_bytes(n) else {
                        return Ok(());
                    };
                    self.state = if left == 0 { DecState::ChunkCrlf } else { DecState::ChunkData(left) };
                }
                DecState::ChunkCrlf => {
                    if self.raw.len() < 2 {
                        return Ok(());
                    }
                    self.raw.advance(2);
                    self.state = DecState::ChunkSize;
                }
                DecState::Sized(n) => {
                    let Some(left) = self.body_bytes(n) else {
                        return Ok(());
                    };
                    self.state = if left == 0 { DecState::Done } else { DecState::Sized(left) };
                }
                DecState::UntilClose => {
                    self.body.extend_from_slice(&self.raw);
                    self.raw.clear();
                    return Ok(());
                }
                DecState::Done => return Ok(()),
            }
        }
    }

    /// Moves up to `n` received bytes into the body and returns how many of the `n` are still to
    /// come; `None` when nothing has been received.
    fn body_bytes(&mut self, n: usize) -> Option<usize> {
        if self.raw.is_empty() {
            return None;
        }
        let k = n.min(self.raw.len());
        self.body.extend_from_slice(&self.raw[..k]);
        self.raw.advance(k);
        Some(n - k)
    }

    /// Takes every complete line of the body (as one string), leaving any partial line.
    pub fn take_lines(&mut self) -> Result<String, String> {
        let Some(last) = self.body.iter().rposition(|&b| b == b'\n') else {
            return Ok(String::new());
        };
        let rest = self.body.split_off(last + 1);
        let lines = std::mem::replace(&mut self.body, rest);
        String::from_utf8(lines).map_err(|e| format!("response body is not UTF-8: {e}"))
    }
}

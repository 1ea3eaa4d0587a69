//! Owns the connection adapter that lets clients which send a URL as HTTP/2's `:authority` reach
//! the gRPC services.
//!
//! etcdctl 3.4 dials each endpoint of `endpoint status`, `endpoint hashkv` and `snapshot save`
//! with the endpoint as written, so with `--endpoints=http://127.0.0.1:2379` every request on
//! that connection carries `:authority: http://127.0.0.1:2379`. grpc-go's server ignores the
//! value; the `h2` crate checks it and resets the stream with `PROTOCOL_ERROR`, which etcdctl
//! prints as "stream terminated by RST_STREAM". `h2` has no setting for this, so the adapter
//! sits between the socket and `h2`:
//!
//! - it reads the connection's first header block (decoding HPACK needs the whole block). When
//!   its `:authority` is absent or valid, as with every other client, the adapter steps aside
//!   for the rest of the connection and costs nothing more;
//! - otherwise (grpc-go keeps one authority for a connection's life) it re-encodes every header
//!   block of the connection with the authority's host and port (`http://127.0.0.1:2379` →
//!   `127.0.0.1:2379`), or without `:authority` when nothing valid remains. It decodes with the
//!   client's dynamic table and encodes literals only (never indexed), so `h2`'s table stays
//!   empty and both sides agree whatever the client indexes.
//!
//! Frames other than HEADERS and CONTINUATION pass unchanged; the server's direction is never
//! touched. What the adapter holds is bounded as `h2` bounds it: a frame longer than
//! `h2` accepts, or a dynamic-table size above the one `h2` allows, hands the connection to `h2`
//! (which refuses it); a header block over [`MAX_HEADER_BLOCK`], gathered or decoded, ends the
//! connection with an error, so neither a flood of CONTINUATION frames nor HPACK references that
//! expand a few bytes into kilobytes make the adapter hold more.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// HTTP/2's client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame header.
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The largest frame the adapter writes: HTTP/2's initial `SETTINGS_MAX_FRAME_SIZE`, which
/// every server accepts.
const MAX_FRAME_PAYLOAD: usize = 16 * 1024;
/// How much the adapter buffers while it looks for the first header block before it gives up
/// looking and steps aside (a client sends its first request within its first few frames).
const SNIFF_LIMIT: usize = 256 * 1024;
/// Bytes read from the socket at a time while rewriting.
const READ_CHUNK: usize = 16 * 1024;
/// HPACK's dynamic table size that `h2` allows a client: the initial
/// `SETTINGS_HEADER_TABLE_SIZE`, which the server never raises.
const HPACK_TABLE_SIZE: usize = 4096;
/// The largest header block the adapter gathers or writes, encoded or decoded (decoded size
/// counted as HTTP/2 counts a header list: each field's name and value plus 32 octets). Four
/// times `h2`'s own limit (hyper's default `max_header_list_size`, 16 KiB), so that `h2` still
/// answers a request a little over its limit itself; past it the connection ends.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The most CONTINUATION frames one header block may take: empty ones add no bytes, and h2's
/// own count of them never sees the client's frames, only the adapter's.
const MAX_CONTINUATIONS: usize = 64;

/// Where the adapter is in the connection.
enum Mode {
    /// Looking for the first header block.
    Sniffing,
    /// Re-encoding header blocks with `decoder`, the client's HPACK state.
    Rewriting { decoder: Box<Decoder<'static>>, block: HeaderBlock },
    /// Out of the way: bytes go straight from the socket to `h2`.
    PassThrough,
}

/// A header block being gathered from a HEADERS frame and its CONTINUATIONs.
#[derive(Default)]
struct HeaderBlock {
    /// Stream id, END_STREAM and the priority fields of the HEADERS frame.
    started: Option<BlockStart>,
    fragment: Vec<u8>,
    /// CONTINUATION frames taken into this block.
    continuations: usize,
}

#[derive(Clone, Copy)]
struct BlockStart {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
}

/// An HTTP/2 server connection whose first header block decides whether its `:authority`
/// values need rewriting; see the module documentation.
pub struct AuthorityFix<IO> {
    io: IO,
    mode: Mode,
    /// Bytes read from the client and not yet examined.
    input: BytesMut,
    /// Bytes ready for `h2`.
    output: BytesMut,
    /// Where socket reads land while the adapter examines the connection.
    scratch: Vec<u8>,
    eof: bool,
    /// Why the connection ends, once `output` (what came before) has been handed on.
    failed: Option<io::Error>,
    /// The client preface went on to `h2` while sniffing (with the frames before the first
    /// header block): `input` starts after it.
    preface_passed: bool,
}

impl<IO> AuthorityFix<IO> {
    /// Wraps a server-side connection that has not been read from yet.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            mode: Mode::Sniffing,
            input: BytesMut::new(),
            output: BytesMut::new(),
            scratch: Vec::new(),
            eof: false,
            failed: None,
            preface_passed: false,
        }
    }

    /// Whether the adapter re-encodes this connection's header blocks (for tests and logs).
    pub fn is_rewriting(&self) -> bool {
        matches!(self.mode, Mode::Rewriting { .. })
    }

    /// Examines what has been read: decides the mode once the first header block is complete,
    /// and while rewriting turns every complete frame into output.
    ///
    /// # Errors
    /// `InvalidData` for a header block larger than [`MAX_HEADER_BLOCK`].
    fn process(&mut self) -> io::Result<()> {
        if matches!(self.mode, Mode::Sniffing) {
            match first_block_needs_rewrite(&self.input, self.preface_passed) {
                Sniff::NeedMore if !self.eof && self.input.len() < SNIFF_LIMIT => {
                    // The whole frames before the first header block (SETTINGS, WINDOW_UPDATE, a
                    // keep-alive PING of a client connected before its first call) go to h2 at
                    // once, which must answer them: they carry no HPACK state. Held, a client's
                    // PING went unanswered and it dropped the connection as dead.
                    let ready = before_first_block(&self.input, self.preface_passed);
                    if ready > 0 {
                        self.output.put(self.input.split_to(ready));
                        self.preface_passed = true;
                    }
                    return Ok(());
                }
                Sniff::Rewrite(start) => {
                    // Frames before the first header block (preface, SETTINGS, WINDOW_UPDATE)
                    // go on as they are.
                    self.output.put(self.input.split_to(start));
                    tracing::debug!("gRPC connection sends a URL as :authority; rewriting its header blocks");
                    self.mode = Mode::Rewriting { decoder: Box::new(client_decoder()), block: HeaderBlock::default() };
                }
                Sniff::NeedMore | Sniff::Valid => {
                    self.output.put(self.input.split());
                    self.mode = Mode::PassThrough;
                    return Ok(());
                }
            }
        }
        let Mode::Rewriting { decoder, block } = &mut self.mode else {
            return Ok(());
        };
        // Stops after a block's worth of output, so HPACK references that expand do not pile
        // up here before h2 reads them; the rest waits in `input`.
        while self.output.len() < MAX_HEADER_BLOCK {
            let Some((kind, flags, stream_id, len)) = frame_header(&self.input) else { break };
            if len > MAX_FRAME_PAYLOAD {
                // Longer than h2's SETTINGS_MAX_FRAME_SIZE: h2 refuses it (FRAME_SIZE_ERROR)
                // without the adapter buffering it first.
                self.give_up(BytesMut::new());
                return Ok(());
            }
            if self.input.len() < FRAME_HEADER_LEN + len {
                break;
            }
            let frame = self.input.split_to(FRAME_HEADER_LEN + len);
            match kind {
                FRAME_HEADERS | FRAME_CONTINUATION => {
                    if block.fragment.len() + len > MAX_HEADER_BLOCK || block.continuations > MAX_CONTINUATIONS {
                        return Err(header_block_too_large());
                    }
                    let Some(()) = block.add(kind, flags, stream_id, &frame[FRAME_HEADER_LEN..]) else {
                        // Not a frame sequence HTTP/2 allows: let h2 see it and refuse it.
                        self.give_up(frame);
                        return Ok(());
                    };
                    if flags & FLAG_END_HEADERS != 0 {
                        let Some(start) = block.started.take() else { unreachable_block() };
                        let fragment = std::mem::take(&mut block.fragment);
                        block.continuations = 0;
                        match rewrite_block(decoder, &fragment) {
                            Ok(encoded) => write_header_frames(&mut self.output, start, &encoded),
                            Err(Rewrite::TooLarge) => return Err(header_block_too_large()),
                            Err(Rewrite::Undecodable) => {
                                // h2 will answer COMPRESSION_ERROR itself.
                                write_header_frames(&mut self.output, start, &fragment);
                                self.give_up(BytesMut::new());
                                return Ok(());
                            }
                        }
                    }
                }
                _ => self.output.put(frame),
            }
        }
        Ok(())
    }

    /// Stops rewriting: `pending` and everything after it go to `h2` unchanged.
    fn give_up(&mut self, pending: BytesMut) {
        self.output.put(pending);
        self.output.put(self.input.split());
        self.mode = Mode::PassThrough;
    }
}

/// The error that ends a connection whose header block passes [`MAX_HEADER_BLOCK`].
fn header_block_too_large() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "HTTP/2 header block larger than 64 KiB or 64 CONTINUATION frames")
}

/// An HPACK decoder for a client's header blocks, refusing a dynamic table larger than `h2`
/// allows.
fn client_decoder() -> Decoder<'static> {
    let mut decoder = Decoder::new();
    decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
    decoder
}

/// The size of a header field as HTTP/2 counts it toward a header list (RFC 9113 §6.5.2).
fn field_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// Never reached: a block is started by the HEADERS frame `HeaderBlock::add` accepted first.
fn unreachable_block() -> ! {
    unreachable!("an END_HEADERS frame completes a block its HEADERS frame started")
}

impl HeaderBlock {
    /// Adds a HEADERS or CONTINUATION frame's fragment; `None` when the frame cannot be part of
    /// a block here (a CONTINUATION without a HEADERS, a HEADERS inside a block, bad padding).
    fn add(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Option<()> {
        if kind == FRAME_CONTINUATION {
            let start = self.started?;
            if start.stream_id != stream_id {
                return None;
            }
            self.fragment.extend_from_slice(payload);
            self.continuations += 1;
            return Some(());
        }
        if self.started.is_some() {
            return None;
        }
        let mut body = payload;
        let mut pad = 0;
        if flags & FLAG_PADDED != 0 {
            pad = usize::from(*body.first()?);
            body = &body[1..];
        }
        let priority = if flags & FLAG_PRIORITY != 0 {
            let fields: [u8; 5] = body.get(..5)?.try_into().ok()?;
            body = &body[5..];
            Some(fields)
        } else {
            None
        };
        let fragment = body.get(..body.len().checked_sub(pad)?)?;
        self.started = Some(BlockStart { stream_id, end_stream: flags & FLAG_END_STREAM != 0, priority });
        self.fragment.extend_from_slice(fragment);
        Some(())
    }
}

/// Kind, flags, stream id and payload length of the frame at the start of `input`.
fn frame_header(input: &[u8]) -> Option<(u8, u8, u32, usize)> {
    let h = input.get(..FRAME_HEADER_LEN)?;
    let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
    let stream_id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    Some((h[3], h[4], stream_id, len))
}

/// What the first header block says about the connection.
enum Sniff {
    /// The block is not complete yet.
    NeedMore,
    /// No rewriting needed (or the stream is not HTTP/2 as expected: h2 will say so).
    Valid,
    /// The block's `:authority` is not one `h2` accepts; rewriting starts at this offset.
    Rewrite(usize),
}

/// How many bytes at the front of `input` are the client preface (unless it went on already)
/// and whole frames before the connection's first header block.
fn before_first_block(input: &[u8], preface_passed: bool) -> usize {
    let mut at = match (preface_passed, input.starts_with(PREFACE)) {
        (true, _) => 0,
        (false, true) => PREFACE.len(),
        (false, false) => return 0,
    };
    while let Some((kind, _, _, len)) = frame_header(&input[at..]) {
        if kind == FRAME_HEADERS || kind == FRAME_CONTINUATION || input.len() < at + FRAME_HEADER_LEN + len {
            break;
        }
        at += FRAME_HEADER_LEN + len;
    }
    at
}

/// Finds the connection's first header block in `input` (which starts with the client preface
/// unless it went on already) and checks its `:authority`.
fn first_block_needs_rewrite(input: &[u8], preface_passed: bool) -> Sniff {
    let mut at = 0;
    if !preface_passed {
        if input.len() < PREFACE.len() {
            return if PREFACE.starts_with(input) { Sniff::NeedMore } else { Sniff::Valid };
        }
        if !input.starts_with(PREFACE) {
            return Sniff::Valid;
        }
        at = PREFACE.len();
    }
    let mut block_start = None;
    let mut block = HeaderBlock::default();
    while let Some((kind, flags, stream_id, len)) = frame_header(&input[at..]) {
        let Some(payload) = input.get(at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + len) else {
            return Sniff::NeedMore;
        };
        if kind == FRAME_HEADERS || kind == FRAME_CONTINUATION {
            block_start.get_or_insert(at);
            if block.add(kind, flags, stream_id, payload).is_none() {
                return Sniff::Valid;
            }
            if flags & FLAG_END_HEADERS != 0 {
                let mut decoder = client_decoder();
                let mut authority_ok = true;
                let mut list_size = 0usize;
                let decoded = decoder.decode_with_cb(&block.fragment, |name, value| {
                    list_size = list_size.saturating_add(field_size(&name, &value));
                    if list_size <= MAX_HEADER_BLOCK && &*name == b":authority" {
                        authority_ok &= valid_authority(&value);
                    }
                });
                // A block too large to examine is h2's to refuse.
                return match (decoded, block_start) {
                    (Ok(()), Some(start)) if !authority_ok && list_size <= MAX_HEADER_BLOCK => Sniff::Rewrite(start),
                    _ => Sniff::Valid,
                };
            }
        } else if block_start.is_some() {
            // HTTP/2 allows nothing between a HEADERS frame and its CONTINUATIONs.
            return Sniff::Valid;
        }
        at += FRAME_HEADER_LEN + len;
    }
    Sniff::NeedMore
}

/// Whether `h2` accepts `value` as an `:authority` (it parses it as a URI authority).
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// The authority to send instead of a URL-shaped one: its host and port, when those are valid.
fn repaired_authority(value: &[u8]) -> Option<&[u8]> {
    let text = std::str::from_utf8(value).ok()?;
    let after_scheme = text.split_once("://").map_or(text, |(_, rest)| rest);
    let host_port = after_scheme.split(['/', '?', '#']).next()?;
    valid_authority(host_port.as_bytes()).then_some(host_port.as_bytes())
}

/// Why a header block was not re-encoded.
enum Rewrite {
    /// The block does not decode (or resizes the table beyond what h2 allows).
    Undecodable,
    /// The decoded header list is larger than [`MAX_HEADER_BLOCK`].
    TooLarge,
}

/// Decodes a header block with the client's HPACK state and encodes it again with a repaired
/// `:authority`, as literals that `h2` does not index.
fn rewrite_block(decoder: &mut Decoder<'static>, fragment: &[u8]) -> Result<Vec<u8>, Rewrite> {
    let mut encoded = Vec::with_capacity(fragment.len() + 64);
    let mut list_size = 0usize;
    decoder
        .decode_with_cb(fragment, |name, value| {
            list_size = list_size.saturating_add(field_size(&name, &value));
            if list_size > MAX_HEADER_BLOCK {
                // The connection ends once the block is decoded; nothing more is written.
                return;
            }
            if &*name == b":authority" && !valid_authority(&value) {
                if let Some(repaired) = repaired_authority(&value) {
                    encode_literal(&mut encoded, &name, repaired);
                }
                // Nothing valid left: the request goes without an authority, which HTTP/2
                // allows and the services never read.
                return;
            }
            encode_literal(&mut encoded, &name, &value);
        })
        .map_err(|_| Rewrite::Undecodable)?;
    if list_size > MAX_HEADER_BLOCK {
        return Err(Rewrite::TooLarge);
    }
    Ok(encoded)
}

/// Appends a "literal header field never indexed" with a literal name (RFC 7541 §6.2.3):
/// neither side's dynamic table changes, and headers the client marked sensitive stay so.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    // Writing into a Vec cannot fail.
    let _ = loona_hpack::encoder::encode_integer_into(0, 4, 0x10, out);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    // Length with the Huffman bit clear, then the raw octets.
    let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out);
    out.extend_from_slice(s);
}

/// Writes `block` as a HEADERS frame followed by CONTINUATION frames as needed.
fn write_header_frames(out: &mut BytesMut, start: BlockStart, block: &[u8]) {
    let priority_len = start.priority.map_or(0, |p| p.len());
    let first_len = block.len().min(MAX_FRAME_PAYLOAD - priority_len);
    let (first, mut rest) = block.split_at(first_len);
    let mut flags = if start.end_stream { FLAG_END_STREAM } else { 0 };
    if start.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    put_frame_header(out, priority_len + first.len(), FRAME_HEADERS, flags, start.stream_id);
    if let Some(priority) = start.priority {
        out.put_slice(&priority);
    }
    out.put_slice(first);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME_PAYLOAD));
        rest = after;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        put_frame_header(out, chunk.len(), FRAME_CONTINUATION, flags, start.stream_id);
        out.put_slice(chunk);
    }
}

fn put_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: u32) {
    // `len` is at most MAX_FRAME_PAYLOAD, well inside the 24-bit length field.
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.put_slice(&len[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id);
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(error) = this.failed.take() {
                return Poll::Ready(Err(error));
            }
            if matches!(this.mode, Mode::PassThrough) {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            if !this.input.is_empty() && matches!(this.mode, Mode::Rewriting { .. }) {
                // Frames already read go first.
                this.failed = this.process().err();
                if !this.output.is_empty() || this.failed.is_some() || matches!(this.mode, Mode::PassThrough) {
                    continue;
                }
            }
            if this.eof {
                // Whatever is left (a partial frame) is h2's to judge.
                if this.input.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let rest = this.input.split();
                this.output.put(rest);
                continue;
            }
            this.scratch.resize(READ_CHUNK, 0);
            let mut chunk = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut chunk))?;
            let n = chunk.filled().len();
            this.input.put_slice(&this.scratch[..n]);
            if n == 0 {
                this.eof = true;
            }
            this.failed = this.process().err();
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A client's bytes: the preface, a SETTINGS frame, then one HEADERS frame per header list,
    /// encoded by a real HPACK encoder (Huffman strings, dynamic-table indexing).
    fn client_bytes(requests: &[Vec<(&[u8], &[u8])>], padded: bool) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_slice(PREFACE);
        put_frame_header(&mut out, 0, 0x4, 0, 0);
        let mut encoder = loona_hpack::Encoder::new();
        for (i, headers) in requests.iter().enumerate() {
            let block = encoder.encode(headers.iter().map(|(n, v)| (*n, *v)));
            let stream_id = u32::try_from(2 * i + 1).unwrap_or(1);
            if padded {
                let mut payload = vec![3u8];
                payload.extend_from_slice(&block);
                payload.extend_from_slice(&[0, 0, 0]);
                put_frame_header(&mut out, payload.len(), FRAME_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, stream_id);
                out.put_slice(&payload);
            } else {
                // Split in two to exercise CONTINUATION.
                let (a, b) = block.split_at(block.len() / 2);
                put_frame_header(&mut out, a.len(), FRAME_HEADERS, 0, stream_id);
                out.put_slice(a);
                put_frame_header(&mut out, b.len(), FRAME_CONTINUATION, FLAG_END_HEADERS, stream_id);
                out.put_slice(b);
            }
            // A DATA frame between requests passes unchanged.
            put_frame_header(&mut out, 2, 0x0, FLAG_END_STREAM, stream_id);
            out.put_slice(b"ok");
        }
        out.to_vec()
    }

    fn request(authority: &'static [u8]) -> Vec<(&'static [u8], &'static [u8])> {
        vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
    }

    /// Reads everything the adapter hands on, fed `input` a few bytes at a time.
    async fn through_adapter(input: Vec<u8>, chunk: usize) -> (Vec<u8>, bool) {
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in input.chunks(chunk) {
                client.write_all(piece).await.expect("write to the duplex pipe");
            }
        });
        let mut adapter = AuthorityFix::new(server);
        let mut out = Vec::new();
        adapter.read_to_end(&mut out).await.expect("read through the adapter");
        writer.await.expect("writer task");
        let rewriting = adapter.is_rewriting();
        (out, rewriting)
    }

    /// Decodes every header block of `bytes` (as h2 would) and returns the header lists and
    /// the DATA payloads, in order.
    /// One decoded header list: `(name, value)` pairs.
    type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

    fn decode_frames(bytes: &[u8]) -> (Vec<HeaderList>, Vec<Vec<u8>>) {
        assert!(bytes.starts_with(PREFACE));
        let mut at = PREFACE.len();
        let mut decoder = Decoder::new();
        let mut lists = Vec::new();
        let mut data = Vec::new();
        let mut block = HeaderBlock::default();
        while let Some((kind, flags, stream_id, len)) = frame_header(&bytes[at..]) {
            let payload = &bytes[at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + len];
            match kind {
                FRAME_HEADERS | FRAME_CONTINUATION => {
                    block.add(kind, flags, stream_id, payload).expect("a valid header frame sequence");
                    if flags & FLAG_END_HEADERS != 0 {
                        block.started = None;
                        let fragment = std::mem::take(&mut block.fragment);
                        lists.push(decoder.decode(&fragment).expect("decodable block"));
                    }
                }
                0x0 => data.push(payload.to_vec()),
                _ => {}
            }
            at += FRAME_HEADER_LEN + len;
        }
        assert_eq!(at, bytes.len(), "no trailing partial frame");
        (lists, data)
    }

    #[tokio::test]
    async fn a_url_authority_becomes_host_and_port_on_every_request() {
        let requests = vec![request(b"http://127.0.0.1:2379"), request(b"http://127.0.0.1:2379")];
        for (padded, chunk) in [(false, 1), (true, 7), (false, 4096)] {
            let (out, rewriting) = through_adapter(client_bytes(&requests, padded), chunk).await;
            assert!(rewriting);
            let (lists, data) = decode_frames(&out);
            assert_eq!(lists.len(), 2);
            for list in &lists {
                let authority: Vec<_> = list.iter().filter(|(n, _)| n == b":authority").collect();
                assert_eq!(authority, vec![&(b":authority".to_vec(), b"127.0.0.1:2379".to_vec())]);
                let path = list.iter().find(|(n, _)| n == b":path").map(|(_, v)| v.clone());
                assert_eq!(path, Some(b"/etcdserverpb.Maintenance/Status".to_vec()));
                assert_eq!(list.len(), 6);
            }
            assert_eq!(data, vec![b"ok".to_vec(), b"ok".to_vec()]);
        }
    }

    #[tokio::test]
    async fn a_valid_authority_passes_byte_for_byte() {
        let input = client_bytes(&[request(b"127.0.0.1:2379"), request(b"localhost:2379")], false);
        let (out, rewriting) = through_adapter(input.clone(), 3).await;
        assert!(!rewriting);
        assert_eq!(out, input);
    }

    #[tokio::test]
    async fn an_authority_with_nothing_valid_is_dropped() {
        let (out, rewriting) = through_adapter(client_bytes(&[request(b"unix:///tmp/etcd.sock")], false), 5).await;
        assert!(rewriting);
        let (lists, _) = decode_frames(&out);
        assert!(lists[0].iter().all(|(n, _)| n != b":authority"));
        assert_eq!(lists[0].len(), 5);
    }

    #[tokio::test]
    async fn http1_and_truncated_connections_pass_unchanged() {
        for input in [b"GET /health HTTP/1.1\r\n\r\n".to_vec(), PREFACE[..10].to_vec(), {
            let mut partial = client_bytes(&[request(b"http://x:1")], false);
            partial.truncate(partial.len() - 20);
            partial
        }] {
            let (out, _) = through_adapter(input.clone(), 2).await;
            assert_eq!(out, input);
        }
    }

    /// What the adapter hands on before the connection ends, and how it ends. The client's
    /// writes stop mattering once the adapter has given up on the connection.
    async fn until_closed(input: Vec<u8>) -> (Vec<u8>, io::Result<()>, bool) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = client.write_all(&input).await;
        });
        let mut adapter = AuthorityFix::new(server);
        let mut out = Vec::new();
        let result = adapter.read_to_end(&mut out).await.map(drop);
        let rewriting = adapter.is_rewriting();
        drop(adapter);
        writer.await.expect("writer task");
        (out, result, rewriting)
    }

    /// A connection already rewriting (its first request names a URL), then `rest`.
    fn rewriting_connection_then(rest: &[u8]) -> Vec<u8> {
        let mut input = client_bytes(&[request(b"http://127.0.0.1:2379")], false);
        input.extend_from_slice(rest);
        input
    }

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_frame_header(&mut out, payload.len(), kind, flags, stream_id);
        out.put_slice(payload);
        out.to_vec()
    }

    /// A client connected before its first call (a keep-alive PING while idle, grpc-go's
    /// `PermitWithoutStream`, tonic's `keep_alive_while_idle`): its SETTINGS and PINGs reach h2
    /// at once, which must answer them, though no header block has come to decide on; then its
    /// first request is still looked at and rewritten.
    #[tokio::test]
    async fn frames_before_the_first_request_go_on_at_once() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let settings = frame(0x4, 0, 0, &[]);
        let ping = frame(0x6, 0, 0, b"12345678");
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut adapter = AuthorityFix::new(server);
        let mut sent = PREFACE.to_vec();
        sent.extend_from_slice(&settings);
        sent.extend_from_slice(&ping);
        client.write_all(&sent).await.expect("write");
        let mut got = vec![0; sent.len()];
        let read = tokio::time::timeout(std::time::Duration::from_secs(20), adapter.read_exact(&mut got)).await;
        assert!(read.is_ok(), "the preface, SETTINGS and PING were held back waiting for a request");
        assert_eq!(got, sent);
        // The first request, naming a URL, is still rewritten.
        let request = client_bytes(&[request(b"http://127.0.0.1:2379")], false);
        client.write_all(&request[PREFACE.len()..]).await.expect("write");
        drop(client);
        let mut rest = Vec::new();
        adapter.read_to_end(&mut rest).await.expect("read");
        assert!(adapter.is_rewriting());
        let mut whole = got.clone();
        whole.extend_from_slice(&rest);
        let (lists, _) = decode_frames(&whole);
        let authority = lists[0].iter().find(|(n, _)| n == b":authority").map(|(_, v)| v.clone());
        assert_eq!(authority.as_deref(), Some(&b"127.0.0.1:2379"[..]));
    }

    #[tokio::test]
    async fn a_flood_of_continuation_frames_ends_the_connection() {
        let mut rest = frame(FRAME_HEADERS, 0, 3, &[0x82]);
        for _ in 0..64 {
            rest.extend(frame(FRAME_CONTINUATION, 0, 3, &[0x82; MAX_FRAME_PAYLOAD]));
        }
        let (out, result, _) = until_closed(rewriting_connection_then(&rest)).await;
        let error = result.expect_err("the connection ends");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        // Only the first request came through: the flood was never handed on.
        assert_eq!(decode_frames(&out).0.len(), 1);
    }

    #[tokio::test]
    async fn a_flood_of_empty_continuation_frames_ends_the_connection() {
        let mut rest = frame(FRAME_HEADERS, 0, 3, &[0x82]);
        for _ in 0..10_000 {
            rest.extend(frame(FRAME_CONTINUATION, 0, 3, &[]));
        }
        let (out, result, _) = until_closed(rewriting_connection_then(&rest)).await;
        assert_eq!(result.expect_err("the connection ends").kind(), io::ErrorKind::InvalidData);
        assert_eq!(decode_frames(&out).0.len(), 1);
    }

    #[tokio::test]
    async fn hpack_references_that_expand_past_the_limit_end_the_connection() {
        // One 4000-byte value added to the client's dynamic table (a literal with incremental
        // indexing, new name), then referenced (index 62) `references` times: 20 are 22 bytes
        // on the wire that decode to 80 KB.
        let block_with = |references: usize| {
            let mut block = vec![0x40];
            encode_string(&mut block, b"x-big");
            encode_string(&mut block, &[b'a'; 4000]);
            block.extend(std::iter::repeat_n(0x80 | 62, references));
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &block)
        };
        let (out, result, _) = until_closed(rewriting_connection_then(&block_with(20))).await;
        assert_eq!(result.expect_err("the connection ends").kind(), io::ErrorKind::InvalidData);
        assert_eq!(decode_frames(&out).0.len(), 1);

        // Within the limit the same block is re-encoded in full.
        let (out, result, rewriting) = until_closed(rewriting_connection_then(&block_with(3))).await;
        result.expect("the connection ends cleanly");
        assert!(rewriting);
        let (lists, _) = decode_frames(&out);
        assert_eq!(lists[1].len(), 4);
        assert!(lists[1].iter().all(|(n, v)| n == b"x-big" && v.len() == 4000));
    }

    #[tokio::test]
    async fn a_table_larger_than_h2_allows_or_an_oversized_frame_goes_to_h2_unchanged() {
        // A dynamic-table size update to 1 MB: h2 refuses it (COMPRESSION_ERROR) itself.
        let mut block = Vec::new();
        let _ = loona_hpack::encoder::encode_integer_into(1 << 20, 5, 0x20, &mut block);
        block.push(0x82);
        let resize = frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &block);
        // A DATA frame longer than h2's SETTINGS_MAX_FRAME_SIZE: h2 refuses it
        // (FRAME_SIZE_ERROR), and the adapter does not wait to buffer it.
        let mut oversized = BytesMut::new();
        put_frame_header(&mut oversized, MAX_FRAME_PAYLOAD + 1, 0x0, 0, 3);
        oversized.put_slice(&[0u8; 100]);
        for rest in [resize, oversized.to_vec()] {
            let (out, result, rewriting) = until_closed(rewriting_connection_then(&rest)).await;
            result.expect("the bytes are handed on");
            assert!(!rewriting, "the adapter steps aside");
            assert!(out.ends_with(&rest));
        }
    }

    #[test]
    fn repairs_take_host_and_port() {
        assert_eq!(repaired_authority(b"http://127.0.0.1:2379"), Some(&b"127.0.0.1:2379"[..]));
        assert_eq!(repaired_authority(b"https://etcd.example:2379/x"), Some(&b"etcd.example:2379"[..]));
        assert_eq!(repaired_authority(b"http://[::1]:2379"), Some(&b"[::1]:2379"[..]));
        assert_eq!(repaired_authority(b"unix:///tmp/sock"), None);
        assert!(valid_authority(b"127.0.0.1:2379"));
        assert!(!valid_authority(b"http://127.0.0.1:2379"));
    }
}

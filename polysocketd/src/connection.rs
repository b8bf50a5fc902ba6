//! The upstream WebSocket connection as a socket's owner reads and writes
//! it: awc's RFC 6455 codec over the connection awc opened, as
//! actix-codec's `Framed` does, but holding no buffer while the socket is
//! idle. `Framed` reserves an 8 KiB read buffer before every read attempt,
//! so a socket waiting for its upstream always holds one, and keeps its
//! 8 KiB write buffer after the first write: 16 KiB of every idle socket,
//! most of a bridged socket's memory. Here each read goes into the stack
//! first and only what arrived is kept, and each buffer is given back as
//! soon as it is empty.

use actix_codec::{AsyncRead, AsyncWrite, Decoder, Encoder, ReadBuf};
use actix_http::ws::{Codec, Frame, Message, ProtocolError};
use bytes::{Buf, BytesMut};
use futures_util::{Sink, Stream};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// The most one read takes in, into the stack: the buffer that keeps it is
/// only as large as what arrived.
const READ_CHUNK: usize = 8192;
/// Encoded frames waiting to be written beyond this are flushed before more are taken.
const WRITE_HIGH_WATER: usize = 8192;

pub struct WebSocketConnection<T> {
    io: T,
    codec: Codec,
    read_buf: BytesMut,
    write_buf: BytesMut,
    eof: bool,
}

impl<T> WebSocketConnection<T> {
    /// Continues from a handshake: `read_buf` holds what the upstream sent
    /// right after its 101 answer, if anything.
    pub fn new(io: T, codec: Codec, read_buf: BytesMut) -> Self {
        // The handshake's buffer has room for 8 KiB: a socket whose upstream
        // has sent nothing yet must not hold it.
        let read_buf = if read_buf.is_empty() { BytesMut::new() } else { read_buf };
        WebSocketConnection { io, codec, read_buf, write_buf: BytesMut::new(), eof: false }
    }
}

impl<T: AsyncRead + Unpin> WebSocketConnection<T> {
    /// Reads more of the connection into `read_buf`; `false` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        // Uninitialized: zeroing 8 KiB before every read would cost more
        // than the rest of a round trip.
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        self.read_buf.extend_from_slice(buf.filled());
        Poll::Ready(Ok(!buf.filled().is_empty()))
    }
}

impl<T: AsyncRead + Unpin> Stream for WebSocketConnection<T> {
    type Item = Result<Frame, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if !this.read_buf.is_empty() {
                match this.codec.decode(&mut this.read_buf) {
                    Ok(Some(frame)) => {
                        if this.read_buf.is_empty() {
                            this.read_buf = BytesMut::new();
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            }
            if this.eof {
                return Poll::Ready(if this.read_buf.is_empty() {
                    None
                } else {
                    Some(Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()))
                });
            }
            match ready!(this.poll_fill(cx)) {
                Ok(more) => this.eof = !more,
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> Sink<Message> for WebSocketConnection<T> {
    type Error = ProtocolError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ProtocolError>> {
        if self.write_buf.len() >= WRITE_HIGH_WATER { self.poll_flush(cx) } else { Poll::Ready(Ok(())) }
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), ProtocolError> {
        let this = self.get_mut();
        this.codec.encode(message, &mut this.write_buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ProtocolError>> {
        let this = self.get_mut();
        while !this.write_buf.is_empty() {
            let written = ready!(Pin::new(&mut this.io).poll_write(cx, &this.write_buf))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()));
            }
            this.write_buf.advance(written);
        }
        this.write_buf = BytesMut::new();
        Pin::new(&mut this.io).poll_flush(cx).map_err(Into::into)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ProtocolError>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_handshake_buffer_is_kept_only_while_it_holds_frames() {
        let (ours, _upstream) = tokio::io::duplex(64 << 10);
        let quiet = WebSocketConnection::new(ours, Codec::new().client_mode(), BytesMut::with_capacity(8 << 10));
        assert_eq!(quiet.read_buf.capacity(), 0, "an upstream that sent nothing yet costs no buffer");
        // A frame that came with the handshake's answer is not lost.
        let (ours, _upstream) = tokio::io::duplex(64 << 10);
        let early = BytesMut::from(&b"\x81\x02hi"[..]);
        let mut connection = WebSocketConnection::new(ours, Codec::new().client_mode(), early);
        assert_eq!(connection.next().await.unwrap().unwrap(), Frame::Text(Bytes::from_static(b"hi")));
    }

    #[tokio::test]
    async fn frames_pass_whole_split_or_together_and_an_idle_connection_holds_no_buffer() {
        let (ours, mut upstream) = tokio::io::duplex(64 << 10);
        let mut connection = WebSocketConnection::new(ours, Codec::new().client_mode(), BytesMut::new());
        // A server's text frame (unmasked), whole.
        upstream.write_all(b"\x81\x05hello").await.unwrap();
        assert_eq!(connection.next().await.unwrap().unwrap(), Frame::Text(Bytes::from_static(b"hello")));
        assert_eq!((connection.read_buf.capacity(), connection.write_buf.capacity()), (0, 0), "idle: no buffer");
        // Split across reads, then two frames in one read.
        upstream.write_all(b"\x82\x03ab").await.unwrap();
        let next = tokio::spawn(async move {
            let first = connection.next().await.unwrap().unwrap();
            let second = connection.next().await.unwrap().unwrap();
            let third = connection.next().await.unwrap().unwrap();
            (connection, [first, second, third])
        });
        tokio::task::yield_now().await;
        upstream.write_all(b"c\x81\x01x\x89\x00").await.unwrap();
        let (mut connection, frames) = next.await.unwrap();
        assert_eq!(
            frames,
            [
                Frame::Binary(Bytes::from_static(b"abc")),
                Frame::Text(Bytes::from_static(b"x")),
                Frame::Ping(Bytes::new())
            ]
        );
        assert_eq!(connection.read_buf.capacity(), 0);
        // A message out: masked, as a client's must be; nothing kept after.
        connection.send(Message::Text("hi".into())).await.unwrap();
        assert_eq!(connection.write_buf.capacity(), 0);
        let mut sent = [0u8; 8];
        upstream.read_exact(&mut sent).await.unwrap();
        assert_eq!(&sent[..2], b"\x81\x82", "FIN text, masked, 2 bytes");
        let mask = &sent[2..6];
        assert_eq!([sent[6] ^ mask[0], sent[7] ^ mask[1]], *b"hi");
        // The upstream goes away in the middle of a frame.
        upstream.write_all(b"\x81\x05hel").await.unwrap();
        drop(upstream);
        assert!(matches!(connection.next().await, Some(Err(ProtocolError::Io(_)))));
    }
}

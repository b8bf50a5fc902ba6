//! Reassembling a message that arrives in pieces: continuation frames from an
//! upstream, `more=1` requests from a client. The total is bounded, and text
//! is checked as UTF-8 piece by piece, so invalid text fails at the piece
//! that carries it rather than at the end.

use bytes::{Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    #[error("message too big")]
    TooBig,
    #[error("invalid UTF-8 in text message")]
    NotUtf8,
}

/// A message being put together.
#[derive(Debug)]
pub struct Assembly {
    text: bool,
    data: BytesMut,
    max_bytes: usize,
    /// How much of a text message's `data` is known to be valid UTF-8.
    checked: usize,
}

impl Assembly {
    pub fn new(text: bool, max_bytes: usize) -> Self {
        Assembly { text, data: BytesMut::new(), max_bytes, checked: 0 }
    }

    pub fn is_text(&self) -> bool {
        self.text
    }

    /// Appends a piece; `last` says it ends the message. After an error the
    /// assembly is useless: the message is failed or dropped.
    pub fn push(&mut self, piece: &[u8], last: bool) -> Result<(), AssemblyError> {
        if self.data.len() + piece.len() > self.max_bytes {
            return Err(AssemblyError::TooBig);
        }
        self.data.extend_from_slice(piece);
        if self.text && !self.utf8_so_far(last) {
            return Err(AssemblyError::NotUtf8);
        }
        Ok(())
    }

    /// The whole message; text has been checked to be UTF-8 by `push`.
    pub fn finish(self) -> Bytes {
        self.data.freeze()
    }

    /// Whether the text so far is UTF-8, allowing a character cut in two at
    /// the end unless the message ends here.
    fn utf8_so_far(&mut self, last: bool) -> bool {
        match std::str::from_utf8(&self.data[self.checked..]) {
            Ok(_) => {
                self.checked = self.data.len();
                true
            }
            Err(e) => {
                self.checked += e.valid_up_to();
                e.error_len().is_none() && !last
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(pieces: &[&[u8]]) -> Vec<Result<(), AssemblyError>> {
        let mut assembly = Assembly::new(true, 1024);
        pieces.iter().enumerate().map(|(i, piece)| assembly.push(piece, i + 1 == pieces.len())).collect()
    }

    #[test]
    fn utf8_is_checked_across_piece_boundaries() {
        let euro = "€".as_bytes();
        assert_eq!(feed(&[b"ab", &euro[..1], &euro[1..]]), [Ok(()), Ok(()), Ok(())]);
        // A character cut at the very end of the message is invalid.
        assert_eq!(feed(&[b"ab", &euro[..2]]), [Ok(()), Err(AssemblyError::NotUtf8)]);
        // Invalid bytes fail at the piece that carries them.
        assert_eq!(feed(&[b"ok", b"\xff", b"more"])[..2], [Ok(()), Err(AssemblyError::NotUtf8)]);
    }

    #[test]
    fn size_is_bounded() {
        let mut assembly = Assembly::new(false, 4);
        assert_eq!(assembly.push(b"abc", false), Ok(()));
        assert_eq!(assembly.push(b"de", true), Err(AssemblyError::TooBig));
        let mut exact = Assembly::new(false, 4);
        assert_eq!(exact.push(b"abcd", true), Ok(()));
        assert_eq!(exact.finish(), Bytes::from_static(b"abcd"));
    }
}

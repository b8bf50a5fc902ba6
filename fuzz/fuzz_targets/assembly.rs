//! Messages arriving in pieces (continuation frames, `more=1` requests).
#![no_main]

use libfuzzer_sys::fuzz_target;
use polysocketd::socket::fragments::Assembly;

fuzz_target!(|input: (bool, u16, Vec<Vec<u8>>)| {
    let (text, max, pieces) = input;
    let max = usize::from(max);
    let mut assembly = Assembly::new(text, max);
    let mut expected = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if assembly.push(piece, i + 1 == pieces.len()).is_err() {
            return;
        }
        expected.extend_from_slice(piece);
    }
    let whole = assembly.finish();
    // What was accepted is exactly the pieces, within the bound, and text
    // that got through is UTF-8.
    assert_eq!(&whole[..], &expected[..]);
    assert!(whole.len() <= max);
    if text && !pieces.is_empty() {
        assert!(std::str::from_utf8(&whole).is_ok());
    }
});

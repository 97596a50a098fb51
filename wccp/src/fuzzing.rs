//! Entry points for the cargo-fuzz targets in `fuzz/` (one per message type plus the
//! decode → encode → decode oracle); `tests/fuzz_corpus.rs` replays the corpus through them.
//! Built only for tests and with the `fuzzing` feature.
//!
//! Each function panics only when an invariant breaks (a decoder panic, a lossy round trip,
//! or a view that does not survive rebuilding); malformed input is simply rejected.

use crate::security::{Password, Security};
use crate::wire::{HereIAm, ISeeYou, Message, MessageType, RedirectAssign, RemovalQuery};
use crate::Error;

/// HERE_I_AM decoder: forces type 10 into the header, then checks every invariant.
pub fn fuzz_here_i_am(data: &[u8]) {
    typed(data, MessageType::HereIAm, |m| {
        HereIAm::try_from(m).map(HereIAm::into_message)
    });
}

/// I_SEE_YOU decoder: forces type 11 into the header, then checks every invariant.
pub fn fuzz_i_see_you(data: &[u8]) {
    typed(data, MessageType::ISeeYou, |m| {
        ISeeYou::try_from(m).map(ISeeYou::into_message)
    });
}

/// REDIRECT_ASSIGN decoder: forces type 12 into the header, then checks every invariant.
pub fn fuzz_redirect_assign(data: &[u8]) {
    typed(data, MessageType::RedirectAssign, |m| {
        RedirectAssign::try_from(m).map(RedirectAssign::into_message)
    });
}

/// REMOVAL_QUERY decoder: forces type 13 into the header, then checks every invariant.
pub fn fuzz_removal_query(data: &[u8]) {
    typed(data, MessageType::RemovalQuery, |m| {
        RemovalQuery::try_from(m).map(RemovalQuery::into_message)
    });
}

/// The oracle: a strictly decoded message re-encodes to the same octets and decodes again to
/// the same value.
pub fn fuzz_roundtrip(data: &[u8]) {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    let encoded = match message.encode() {
        Ok(e) => e,
        Err(e) => panic!("a decoded message failed to encode: {e}"),
    };
    assert_eq!(encoded, data, "decode → encode is not lossless");
    assert_eq!(
        Message::decode(&encoded).as_ref(),
        Ok(&message),
        "decode → encode → decode differs"
    );
}

/// Shared body of the per-type targets.
fn typed(data: &[u8], kind: MessageType, rebuild: impl Fn(&Message) -> Result<Message, Error>) {
    let mut buf = data.to_vec();
    if let Some(t) = buf.get_mut(..4) {
        t.copy_from_slice(&u32::from(kind).to_be_bytes());
    }
    // Security checks run on raw bytes before decoding; they must not panic either.
    let _ = Security::None.verify(&buf);
    let _ = Security::Md5(Password::new(b"secret")).verify(&buf);

    let Ok(datagram) = Message::decode_datagram(&buf) else {
        return;
    };
    let message = datagram.message;
    assert_eq!(message.kind, kind);
    let wire_len = buf.len() - datagram.trailing;
    fuzz_roundtrip(buf.get(..wire_len).unwrap_or(&buf));

    // The typed view, rebuilt into a message, must survive an encode/decode cycle.
    let Ok(rebuilt) = rebuild(&message) else {
        return;
    };
    let bytes = match rebuilt.encode() {
        Ok(b) => b,
        Err(e) => panic!("a rebuilt {kind} failed to encode: {e}"),
    };
    match Message::decode(&bytes) {
        Ok(again) => assert_eq!(again, rebuilt, "rebuilt {kind} does not round-trip"),
        Err(e) => panic!("a rebuilt {kind} failed to decode: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_does_not_panic() {
        for data in [
            &[][..],
            &[0; 3],
            &[0xff; 64],
            &[0, 0, 0, 10, 2, 0, 0, 4, 0, 0, 0, 0],
        ] {
            fuzz_here_i_am(data);
            fuzz_i_see_you(data);
            fuzz_redirect_assign(data);
            fuzz_removal_query(data);
            fuzz_roundtrip(data);
        }
    }
}

//! Fuzz entry points (the `fuzzing` feature; the cargo-fuzz workspace in `../fuzz` calls them).

use crate::igmp::IgmpRepr;

/// Target `netwire_igmp`: any bytes through the IGMP decoder, never a panic; what decodes
/// encodes to a message that verifies and decodes to the same thing.
pub fn fuzz_igmp(data: &[u8]) {
    let Ok(first) = IgmpRepr::parse(data) else {
        return;
    };
    let bytes = first.to_bytes();
    assert!(crate::igmp::verify_checksum(&bytes), "emitted checksum");
    let again = IgmpRepr::parse(&bytes).expect("an emitted message decodes");
    assert_eq!(again, first, "decode → encode → decode");
}

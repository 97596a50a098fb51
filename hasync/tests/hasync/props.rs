//! Property tests: sealed messages parse back to what was sealed; no input panics the endpoint.

use std::time::Instant;

use hasync::wire::{encode_body, parse_body, parse_frame, Auth, Body, Header, Kind, FLAG_ACK};
use hasync::{Config, Endpoint, Op, Record, TableId};
use proptest::prelude::*;

fn record() -> impl Strategy<Value = Record> {
    (
        any::<u8>(),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(t, del, key, value)| {
            if del {
                Record::delete(TableId(t), key)
            } else {
                Record::upsert(TableId(t), key, value)
            }
        })
}

fn kind() -> impl Strategy<Value = Kind> {
    (1u8..=9).prop_map(|k| Kind::from_wire(k).unwrap())
}

proptest! {
    #[test]
    fn framing_round_trip(
        kind in kind(),
        sender in any::<u32>(),
        nums in any::<[u64; 6]>(),
        ack in any::<bool>(),
        records in proptest::collection::vec(record(), 0..8),
        ranges in proptest::collection::vec((0u64..1000, 1u64..100), 1..5),
        tag_len in 16usize..=32,
    ) {
        // Build a payload of the kind from the record list (encoded through the public types).
        let mut rec_bytes = Vec::new();
        rec_bytes.extend_from_slice(&(records.len() as u16).to_be_bytes());
        for r in &records {
            rec_bytes.push(r.table.0);
            rec_bytes.push(if r.op == Op::Upsert { 1 } else { 2 });
            rec_bytes.extend_from_slice(&(r.key.len() as u16).to_be_bytes());
            rec_bytes.extend_from_slice(&(r.value.len() as u16).to_be_bytes());
            rec_bytes.extend_from_slice(&r.key);
            rec_bytes.extend_from_slice(&r.value);
        }
        let mut payload = Vec::new();
        match kind {
            Kind::Hello | Kind::Heartbeat | Kind::Ack => {}
            Kind::Nack => for (f, l) in &ranges {
                payload.extend_from_slice(&f.to_be_bytes());
                payload.extend_from_slice(&(f + l).to_be_bytes());
            },
            Kind::Data => { payload.extend_from_slice(&nums[0].to_be_bytes()); payload.extend_from_slice(&rec_bytes); }
            Kind::ResyncRequest => payload.extend_from_slice(&nums[1].to_be_bytes()),
            Kind::ResyncBegin | Kind::ResyncEnd => {
                payload.extend_from_slice(&nums[0].to_be_bytes());
                payload.extend_from_slice(&(nums[2] as u32).to_be_bytes());
                payload.extend_from_slice(&nums[3].to_be_bytes());
            }
            Kind::ResyncChunk => {
                payload.extend_from_slice(&nums[0].to_be_bytes());
                payload.extend_from_slice(&(nums[2] as u32).to_be_bytes());
                payload.extend_from_slice(&nums[3].to_be_bytes());
                payload.extend_from_slice(&rec_bytes);
            }
        }
        let body = parse_body(kind, &payload).unwrap();
        if let Body::Data { records: rs, .. } | Body::ResyncChunk { records: rs, .. } = body {
            let got: Vec<Record> = rs.iter().map(|r| r.to_owned()).collect();
            prop_assert_eq!(&got, &records);
        }
        let mut again = Vec::new();
        encode_body(&body, &mut again);
        prop_assert_eq!(&again, &payload);

        let header = Header {
            kind, flags: if ack { FLAG_ACK } else { 0 }, tag_len: tag_len as u8, sender,
            epoch: nums[0], packet: nums[1], floor: nums[2], next_seq: nums[3],
            peer_epoch: nums[4], ack: nums[5],
        };
        let auth = Auth::new(b"proptest-key-0123456789", tag_len);
        let mut msg = Vec::new();
        auth.seal(&header, &payload, &mut msg);
        let f = parse_frame(&msg).unwrap();
        prop_assert_eq!(f.header, header);
        prop_assert_eq!(f.payload, &payload[..]);
        prop_assert!(auth.verify(&f));
        prop_assert_eq!(parse_body(kind, f.payload).unwrap(), body);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let now = Instant::now();
        let mut ep = Endpoint::new(Config::new(2, 1, 7, *b"0123456789abcdef"), now).unwrap();
        prop_assert!(ep.handle(&data, now).is_err());
        prop_assert_eq!(ep.status().rejects.total(), 1);
        let _ = parse_frame(&data);
        for k in 1..=9 {
            let _ = parse_body(Kind::from_wire(k).unwrap(), &data);
        }
        hasync::fuzzing::fuzz_handle(&data);
    }
}

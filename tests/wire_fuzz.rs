//! Property-based fuzzing of the wire layer: frame splitting, signature
//! checking, replay refusal and message decoding.
//!
//! Bounded for `./kernel test` (2,000 cases per property unless
//! `PROPTEST_CASES` says otherwise); a long run is
//! `PROPTEST_CASES=1000000 cargo test --release --test wire_fuzz`.
//! Properties: decoding arbitrary frames never panics; a validly signed
//! message decodes to what was sent; any change to a signed frame, any
//! truncation, a wrong key or a second delivery is refused.

use bytes::Bytes;
use ferrolab::protocol::{Codec, DecodeError, Message};
use proptest::prelude::*;
use serde_json::json;

const KEY: &str = "fuzz-key-0123456789";

fn message(code: &str, count: u64) -> Message {
    let mut message = Message::new(
        "execute_request",
        "fuzz-session",
        json!({"code": code, "silent": false, "count": count}),
        json!({}),
    );
    message.identities = vec![Bytes::from_static(b"client-identity")];
    message
}

fn frames_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let frame = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        Just(b"<IDS|MSG>".to_vec()),
        Just(b"{}".to_vec()),
        Just(br#"{"msg_id":"x","msg_type":"execute_request"}"#.to_vec()),
        "[0-9a-f]{64}".prop_map(|s| s.into_bytes()),
    ];
    prop::collection::vec(frame, 0..10)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000)
    ))]

    #[test]
    fn arbitrary_frames_never_panic_and_never_decode_without_the_key(frames in frames_strategy()) {
        let codec = Codec::new(KEY);
        let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
        // Random bytes cannot carry a valid HMAC of the other frames.
        prop_assert!(codec.decode(frames).is_err());
    }

    #[test]
    fn signed_messages_round_trip_and_are_accepted_once(code in ".{0,200}", count in any::<u64>()) {
        let sender = Codec::new(KEY);
        let receiver = Codec::new(KEY);
        let sent = message(&code, count);
        let frames = sender.encode(&sent);
        let got = receiver.decode(frames.clone()).expect("a valid message decodes");
        prop_assert_eq!(&got.content, &sent.content);
        prop_assert_eq!(&got.header.msg_id, &sent.header.msg_id);
        prop_assert_eq!(&got.identities, &sent.identities);
        let replayed = receiver.decode(frames);
        prop_assert!(matches!(replayed, Err(DecodeError::Signature(_))), "a replay was accepted");
    }

    #[test]
    fn any_change_to_a_signed_frame_is_refused(
        code in ".{0,100}",
        frame_choice in 0usize..5,
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let frames = Codec::new(KEY).encode(&message(&code, 1));
        // Frames after the identity and the delimiter: signature, header,
        // parent_header, metadata, content.
        let target = 2 + frame_choice;
        let mut changed: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
        if changed[target].is_empty() {
            changed[target].push(flip);
        } else {
            let at = position.index(changed[target].len());
            changed[target][at] ^= flip;
        }
        let decoded = Codec::new(KEY).decode(changed.into_iter().map(Bytes::from).collect());
        prop_assert!(decoded.is_err(), "a tampered frame {} was accepted", target);
    }

    #[test]
    fn truncated_or_wrongly_keyed_messages_are_refused(code in ".{0,100}", keep in 0usize..7, other_key in "[a-z]{1,20}") {
        let frames = Codec::new(KEY).encode(&message(&code, 2));
        let truncated: Vec<Bytes> = frames.iter().take(keep).cloned().collect();
        prop_assert!(Codec::new(KEY).decode(truncated).is_err());
        prop_assume!(other_key != KEY);
        prop_assert!(Codec::new(&other_key).decode(frames).is_err());
    }
}

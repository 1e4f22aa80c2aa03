//! The multipart wire format and the codec that signs and verifies it.
//!
//! ```text
//! [identities…] <IDS|MSG> signature header parent_header metadata content [buffers…]
//! ```
//! Decoding checks the signature over the four raw JSON frames before parsing any
//! of them, then records it in the replay guard; a message that fails either check
//! is refused without being interpreted. A signed message whose header parses
//! but whose other JSON frames do not (invalid, or nested deeper than the
//! parser allows) is returned marked [`Message::malformed`], so the kernel can
//! answer it with an error instead of leaving the client waiting.

use crate::protocol::message::{Header, Message};
use crate::protocol::signer::{ReplayGuard, SignatureError, Signer};
use bytes::Bytes;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// The frame separating routing identities from the message.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// Why incoming frames could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("no <IDS|MSG> delimiter frame")]
    NoDelimiter,
    #[error("only {0} frames after the delimiter; a message needs signature plus four JSON frames")]
    TooFewFrames(usize),
    #[error("refused: {0}")]
    Signature(#[from] SignatureError),
    #[error("{part} frame is not valid JSON: {reason}")]
    BadJson { part: &'static str, reason: String },
    #[error("header lacks msg_id or msg_type: {0}")]
    BadHeader(String),
}

/// The frames of one message, split but not interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub identities: Vec<Bytes>,
    pub signature: Bytes,
    pub header: Bytes,
    pub parent_header: Bytes,
    pub metadata: Bytes,
    pub content: Bytes,
    pub buffers: Vec<Bytes>,
}

impl RawMessage {
    /// Splits received frames at the delimiter.
    pub fn parse(frames: Vec<Bytes>) -> Result<Self, DecodeError> {
        let position = frames
            .iter()
            .position(|frame| frame.as_ref() == DELIMITER)
            .ok_or(DecodeError::NoDelimiter)?;
        let mut frames = frames.into_iter();
        let identities: Vec<Bytes> = frames.by_ref().take(position).collect();
        frames.next(); // the delimiter
        let rest: Vec<Bytes> = frames.collect();
        if rest.len() < 5 {
            return Err(DecodeError::TooFewFrames(rest.len()));
        }
        let mut rest = rest.into_iter();
        let mut next = || rest.next().unwrap_or_default();
        let signature = next();
        let header = next();
        let parent_header = next();
        let metadata = next();
        let content = next();
        let buffers = rest.collect();
        Ok(RawMessage {
            identities,
            signature,
            header,
            parent_header,
            metadata,
            content,
            buffers,
        })
    }

    /// Joins the frames for sending.
    pub fn into_frames(self) -> Vec<Bytes> {
        let mut frames = self.identities;
        frames.push(Bytes::from_static(DELIMITER));
        frames.push(self.signature);
        frames.push(self.header);
        frames.push(self.parent_header);
        frames.push(self.metadata);
        frames.push(self.content);
        frames.extend(self.buffers);
        frames
    }

    fn signed_parts(&self) -> [&[u8]; 4] {
        [
            &self.header,
            &self.parent_header,
            &self.metadata,
            &self.content,
        ]
    }
}

/// Signs outgoing and verifies incoming messages. Cheap to clone; clones share
/// one replay guard so a signature replayed on another channel is caught too.
#[derive(Debug, Clone)]
pub struct Codec {
    signer: Signer,
    replay: Arc<Mutex<ReplayGuard>>,
}

impl Codec {
    pub fn new(key: &str) -> Self {
        Codec {
            signer: Signer::new(key),
            replay: Arc::new(Mutex::new(ReplayGuard::default())),
        }
    }

    /// Verifies and parses received frames.
    pub fn decode(&self, frames: Vec<Bytes>) -> Result<Message, DecodeError> {
        let raw = RawMessage::parse(frames)?;
        self.signer.verify(&raw.signature, &raw.signed_parts())?;
        self.replay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check_and_record(&raw.signature)?;
        let raw_header = parse_json("header", &raw.header)?;
        let header: Header = Header::deserialize_lenient(&raw_header)?;
        let mut malformed = None;
        let mut body = |part: &'static str, bytes: &[u8]| {
            parse_json(part, bytes).unwrap_or_else(|error| {
                malformed.get_or_insert(error.to_string());
                Value::Object(Default::default())
            })
        };
        let parent_header = body("parent_header", &raw.parent_header);
        let metadata = body("metadata", &raw.metadata);
        let content = body("content", &raw.content);
        Ok(Message {
            identities: raw.identities,
            header,
            raw_header,
            parent_header,
            metadata,
            content,
            buffers: raw.buffers,
            malformed,
        })
    }

    /// Serialises and signs a message.
    pub fn encode(&self, message: &Message) -> Vec<Bytes> {
        let header = to_bytes(&serde_json::to_value(&message.header).unwrap_or(Value::Null));
        let parent_header = to_bytes(&message.parent_header);
        let metadata = to_bytes(&message.metadata);
        let content = to_bytes(&message.content);
        let signature = self
            .signer
            .sign(&[&header, &parent_header, &metadata, &content]);
        RawMessage {
            identities: message.identities.clone(),
            signature: Bytes::from(signature),
            header,
            parent_header,
            metadata,
            content,
            buffers: message.buffers.clone(),
        }
        .into_frames()
    }
}

impl Header {
    fn deserialize_lenient(value: &Value) -> Result<Header, DecodeError> {
        serde_json::from_value(value.clone())
            .map_err(|error| DecodeError::BadHeader(error.to_string()))
    }
}

fn parse_json(part: &'static str, bytes: &[u8]) -> Result<Value, DecodeError> {
    if bytes.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(bytes).map_err(|error| DecodeError::BadJson {
        part,
        reason: error.to_string(),
    })
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(codec: &Codec, code: &str) -> Vec<Bytes> {
        let mut message = Message::new(
            "execute_request",
            "client-session",
            json!({"code": code}),
            json!({}),
        );
        message.identities = vec![Bytes::from_static(b"peer-a"), Bytes::from_static(b"peer-b")];
        codec.encode(&message)
    }

    #[test]
    fn frames_round_trip_with_identities_and_buffers() {
        let codec = Codec::new("k");
        let mut message = Message::new("comm_msg", "s", json!({"data": {}}), json!({}));
        message.identities = vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")];
        message.buffers = vec![Bytes::from_static(b"\x00\x01binary")];
        let decoded = codec.decode(codec.encode(&message)).unwrap();
        assert_eq!(decoded.identities, message.identities);
        assert_eq!(decoded.buffers, message.buffers);
        assert_eq!(decoded.header, message.header);
        assert_eq!(decoded.content, message.content);
    }

    #[test]
    fn identities_are_everything_before_the_delimiter() {
        let frames = vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            Bytes::from_static(DELIMITER),
            Bytes::from_static(b""),
            Bytes::from_static(b"{}"),
            Bytes::from_static(b"{}"),
            Bytes::from_static(b"{}"),
            Bytes::from_static(b"{}"),
        ];
        let raw = RawMessage::parse(frames.clone()).unwrap();
        assert_eq!(raw.identities.len(), 2);
        assert!(raw.buffers.is_empty());
        assert_eq!(raw.into_frames(), frames);
    }

    #[test]
    fn missing_delimiter_and_short_messages_are_refused() {
        let codec = Codec::new("");
        assert!(matches!(
            codec.decode(vec![Bytes::from_static(b"x")]),
            Err(DecodeError::NoDelimiter)
        ));
        assert!(matches!(
            codec.decode(vec![
                Bytes::from_static(DELIMITER),
                Bytes::new(),
                Bytes::new()
            ]),
            Err(DecodeError::TooFewFrames(2))
        ));
    }

    #[test]
    fn wrong_key_is_refused_before_parsing() {
        let frames = request(&Codec::new("client-key"), "1");
        let error = Codec::new("kernel-key").decode(frames).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::Signature(SignatureError::Mismatch)
        ));
        assert!(!error.to_string().contains("kernel-key"));
    }

    #[test]
    fn tampered_content_is_refused() {
        let codec = Codec::new("k");
        let mut frames = request(&codec, "1");
        let content_index = frames.len() - 1;
        frames[content_index] = Bytes::from_static(br#"{"code":"2"}"#);
        assert!(matches!(
            codec.decode(frames),
            Err(DecodeError::Signature(SignatureError::Mismatch))
        ));
    }

    #[test]
    fn unsigned_message_to_signed_kernel_is_refused() {
        let frames = request(&Codec::new(""), "1");
        assert!(matches!(
            Codec::new("k").decode(frames),
            Err(DecodeError::Signature(SignatureError::Missing))
        ));
    }

    #[test]
    fn empty_key_accepts_unsigned_messages() {
        let codec = Codec::new("");
        let decoded = codec.decode(request(&codec, "1")).unwrap();
        assert_eq!(decoded.content["code"], "1");
        // Unsigned sessions cannot detect replays: the same frames decode again.
        codec.decode(request(&codec, "1")).unwrap();
    }

    #[test]
    fn replayed_message_is_refused() {
        let codec = Codec::new("k");
        let frames = request(&codec, "1");
        codec.decode(frames.clone()).unwrap();
        assert!(matches!(
            codec.clone().decode(frames),
            Err(DecodeError::Signature(SignatureError::Duplicate))
        ));
    }

    #[test]
    fn buffers_are_not_signed() {
        let codec = Codec::new("k");
        let mut frames = request(&codec, "1");
        frames.push(Bytes::from_static(b"extra buffer"));
        let decoded = codec.decode(frames).unwrap();
        assert_eq!(decoded.buffers.len(), 1);
    }

    #[test]
    fn invalid_json_with_valid_signature_is_reported() {
        let signer = Signer::new("k");
        let parts: [&[u8]; 4] = [b"{not json", b"{}", b"{}", b"{}"];
        let signature = signer.sign(&parts);
        let frames = vec![
            Bytes::from_static(DELIMITER),
            Bytes::from(signature),
            Bytes::from_static(b"{not json"),
            Bytes::from_static(b"{}"),
            Bytes::from_static(b"{}"),
            Bytes::from_static(b"{}"),
        ];
        assert!(matches!(
            Codec::new("k").decode(frames),
            Err(DecodeError::BadJson { part: "header", .. })
        ));
    }

    fn signed(parts: [&[u8]; 4]) -> Vec<Bytes> {
        let signature = Signer::new("k").sign(&parts);
        let mut frames = vec![Bytes::from_static(DELIMITER), Bytes::from(signature)];
        frames.extend(parts.iter().map(|part| Bytes::copy_from_slice(part)));
        frames
    }

    #[test]
    fn content_nested_deeper_than_the_parser_allows_is_marked_not_dropped() {
        let header = br#"{"msg_id": "m", "msg_type": "execute_request"}"#;
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let message = Codec::new("k")
            .decode(signed([header, b"{}", b"{}", deep.as_bytes()]))
            .unwrap();
        assert_eq!(message.msg_type(), "execute_request");
        let reason = message.malformed.unwrap();
        assert!(
            reason.contains("content") && reason.contains("recursion limit"),
            "{reason}"
        );
        assert_eq!(message.content, json!({}));
    }

    #[test]
    fn invalid_metadata_is_marked_and_valid_messages_are_not() {
        let header = br#"{"msg_id": "m", "msg_type": "kernel_info_request"}"#;
        let codec = Codec::new("k");
        let bad = codec
            .decode(signed([header, b"{}", b"{oops", b"{}"]))
            .unwrap();
        assert!(bad.malformed.unwrap().starts_with("metadata"));
        let good = codec.decode(signed([header, b"{}", b"{}", b"{}"])).unwrap();
        assert_eq!(good.malformed, None);
    }

    #[test]
    fn header_without_msg_type_is_refused() {
        let signer = Signer::new("");
        let header: &[u8] = br#"{"msg_id": "x"}"#;
        let frames = vec![
            Bytes::from_static(DELIMITER),
            Bytes::from(signer.sign(&[])),
            Bytes::copy_from_slice(header),
            Bytes::from_static(b"{}"),
            Bytes::from_static(b"{}"),
            Bytes::from_static(b"{}"),
        ];
        assert!(matches!(
            Codec::new("").decode(frames),
            Err(DecodeError::BadHeader(_))
        ));
    }
}

//! The typed envelope of a Jupyter message: header, parent, metadata, content.
//!
//! Contents stay `serde_json::Value` here; `content.rs` has the typed structs and
//! callers convert with [`Message::content_as`]. The parent header of a reply is
//! the request's header exactly as it arrived (`raw_header`), so fields this
//! kernel does not know (such as `subshell_id`) are echoed back untouched.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The messaging protocol version this kernel speaks and stamps on headers:
/// 5.5, for the XPUB IOPub welcome (JEP 65) and kernel subshells (JEP 91).
pub const PROTOCOL_VERSION: &str = "5.5";

/// A message header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub msg_id: String,
    #[serde(default)]
    pub session: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub date: String,
    pub msg_type: String,
    #[serde(default)]
    pub version: String,
    /// The subshell a shell or stdin message belongs to (protocol 5.5);
    /// absent or null for the main shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subshell_id: Option<String>,
}

impl Header {
    /// A fresh header for a message this kernel sends.
    pub fn new(msg_type: &str, session: &str) -> Self {
        Header {
            msg_id: uuid::Uuid::new_v4().to_string(),
            session: session.to_owned(),
            username: "kernel".to_owned(),
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            msg_type: msg_type.to_owned(),
            version: PROTOCOL_VERSION.to_owned(),
            subshell_id: None,
        }
    }
}

/// A decoded message (incoming or outgoing).
#[derive(Debug, Clone)]
pub struct Message {
    /// ZeroMQ routing identities (ROUTER sockets) or the topic (IOPub).
    pub identities: Vec<Bytes>,
    pub header: Header,
    /// The header as JSON, exactly as received (for incoming messages).
    pub raw_header: Value,
    /// The parent's header, or `{}`.
    pub parent_header: Value,
    pub metadata: Value,
    pub content: Value,
    pub buffers: Vec<Bytes>,
    /// Set on an incoming message whose signature and header are valid but
    /// whose parent header, metadata or content could not be parsed (they are
    /// then `{}`): why. The session answers such a request with an error reply.
    pub malformed: Option<String>,
}

impl Message {
    /// A new outgoing message with a fresh header.
    pub fn new(msg_type: &str, session: &str, content: Value, parent_header: Value) -> Self {
        let header = Header::new(msg_type, session);
        let raw_header = serde_json::to_value(&header).unwrap_or(Value::Null);
        Message {
            identities: Vec::new(),
            header,
            raw_header,
            parent_header,
            metadata: Value::Object(Map::new()),
            content,
            buffers: Vec::new(),
            malformed: None,
        }
    }

    /// A reply to `self`: `<kind>_request` becomes `<kind>_reply`, routed back
    /// through the same identities, with `self`'s header as parent.
    pub fn reply(&self, session: &str, content: Value) -> Message {
        let msg_type = match self.header.msg_type.strip_suffix("_request") {
            Some(kind) => format!("{kind}_reply"),
            None => format!("{}_reply", self.header.msg_type),
        };
        self.child(&msg_type, session, content)
    }

    /// A message of another type with `self` as parent and the same identities.
    pub fn child(&self, msg_type: &str, session: &str, content: Value) -> Message {
        let mut message = Message::new(msg_type, session, content, self.raw_header.clone());
        message.identities = self.identities.clone();
        message
    }

    pub fn msg_type(&self) -> &str {
        &self.header.msg_type
    }

    /// The content as a typed request struct.
    pub fn content_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.content)
    }

    /// The subshell this request is for (`None`: the main shell).
    pub fn subshell_id(&self) -> Option<&str> {
        self.header.subshell_id.as_deref()
    }

    /// The `msg_id` of the parent, if any.
    pub fn parent_msg_id(&self) -> Option<&str> {
        self.parent_header.get("msg_id").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reply_renames_type_and_keeps_identities_and_raw_parent() {
        let raw = json!({"msg_id": "m1", "session": "s", "username": "u", "date": "d",
                         "msg_type": "kernel_info_request", "version": "5.4", "subshell_id": null});
        let request = Message {
            identities: vec![Bytes::from_static(b"id1")],
            header: serde_json::from_value(raw.clone()).unwrap(),
            raw_header: raw.clone(),
            parent_header: json!({}),
            metadata: json!({}),
            content: json!({}),
            buffers: vec![],
            malformed: None,
        };
        let reply = request.reply("kernel-session", json!({"status": "ok"}));
        assert_eq!(reply.msg_type(), "kernel_info_reply");
        assert_eq!(reply.identities, request.identities);
        assert_eq!(reply.parent_header, raw);
        assert_eq!(reply.header.session, "kernel-session");
        assert_eq!(reply.header.version, PROTOCOL_VERSION);
        assert_ne!(reply.header.msg_id, "m1");
    }

    #[test]
    fn subshell_id_is_read_from_headers_and_left_out_of_ours() {
        let child: Header = serde_json::from_value(serde_json::json!({
            "msg_id": "m", "msg_type": "execute_request", "subshell_id": "abc"}))
        .unwrap();
        assert_eq!(child.subshell_id.as_deref(), Some("abc"));
        let main: Header = serde_json::from_value(serde_json::json!({
            "msg_id": "m", "msg_type": "execute_request", "subshell_id": null}))
        .unwrap();
        assert_eq!(main.subshell_id, None);
        let ours = serde_json::to_value(Header::new("status", "s")).unwrap();
        assert!(ours.get("subshell_id").is_none(), "{ours}");
    }

    #[test]
    fn header_date_is_iso8601_utc() {
        let header = Header::new("status", "s");
        assert!(header.date.ends_with('Z'), "{}", header.date);
        assert!(chrono::DateTime::parse_from_rfc3339(&header.date).is_ok());
    }
}

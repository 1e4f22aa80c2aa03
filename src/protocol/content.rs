//! Typed contents of the messages this kernel reads and sends.
//!
//! Requests use serde defaults that match what ipykernel assumes when a field is
//! missing. Replies serialise to exactly the shapes jupyter_kernel_test's schemas
//! require (every listed field present, no `aborted` inside error replies).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A MIME bundle: `{"text/plain": "...", "text/html": "..."}`.
pub type MimeBundle = Map<String, Value>;

fn yes() -> bool {
    true
}

// ---------------------------------------------------------------- requests

#[derive(Debug, Clone, Deserialize)]
pub struct ExecuteRequest {
    pub code: String,
    #[serde(default)]
    pub silent: bool,
    #[serde(default)]
    pub store_history: Option<bool>,
    #[serde(default)]
    pub user_expressions: Map<String, Value>,
    #[serde(default)]
    pub allow_stdin: bool,
    #[serde(default = "yes")]
    pub stop_on_error: bool,
}

impl ExecuteRequest {
    /// `store_history` defaults to `!silent` and is always off when silent.
    pub fn stores_history(&self) -> bool {
        !self.silent && self.store_history.unwrap_or(true)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompleteRequest {
    pub code: String,
    pub cursor_pos: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InspectRequest {
    pub code: String,
    pub cursor_pos: Option<usize>,
    #[serde(default)]
    pub detail_level: u8,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IsCompleteRequest {
    pub code: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryAccess {
    Tail,
    Range,
    Search,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HistoryRequest {
    #[serde(default)]
    pub output: bool,
    #[serde(default)]
    pub raw: bool,
    pub hist_access_type: HistoryAccess,
    #[serde(default)]
    pub session: i64,
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub stop: Option<i64>,
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub unique: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CommInfoRequest {
    #[serde(default)]
    pub target_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CommOpen {
    pub comm_id: String,
    #[serde(default)]
    pub target_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShutdownRequest {
    #[serde(default)]
    pub restart: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InputReply {
    #[serde(default)]
    pub value: String,
}

// ---------------------------------------------------------------- replies

#[derive(Debug, Clone, Serialize)]
pub struct LanguageInfo {
    pub name: String,
    pub version: String,
    pub mimetype: String,
    pub file_extension: String,
    pub pygments_lexer: String,
    pub codemirror_mode: String,
    pub nbconvert_exporter: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HelpLink {
    pub text: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelInfoReply {
    pub status: &'static str,
    pub protocol_version: String,
    pub implementation: String,
    pub implementation_version: String,
    pub language_info: LanguageInfo,
    pub banner: String,
    pub debugger: bool,
    pub help_links: Vec<HelpLink>,
    /// Optional protocol features (JEP 92), e.g. "kernel subshells".
    pub supported_features: Vec<&'static str>,
}

/// `create_subshell_reply`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateSubshellReply {
    pub status: &'static str,
    pub subshell_id: String,
}

/// `delete_subshell_request`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeleteSubshellRequest {
    pub subshell_id: String,
}

/// `list_subshell_reply`: the child subshells (the main shell is not listed).
#[derive(Debug, Clone, Serialize)]
pub struct ListSubshellReply {
    pub status: &'static str,
    pub subshell_id: Vec<String>,
}

/// The error triple shared by `error` outputs and error replies: also what a
/// failed magic, hook or cell segment returns, so no layer converts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

impl ErrorInfo {
    /// An error whose traceback is one line: the name in bold red, then the message.
    pub fn new(ename: &str, message: impl Into<String>) -> Self {
        let evalue = message.into();
        ErrorInfo {
            ename: ename.to_owned(),
            traceback: vec![format!("\x1b[1;31m{ename}\x1b[0m: {evalue}")],
            evalue,
        }
    }

    /// Bad arguments or a request that cannot be met (IPython's UsageError).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new("UsageError", message)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecuteReplyOk {
    pub status: &'static str,
    pub execution_count: u64,
    pub payload: Vec<Value>,
    pub user_expressions: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecuteReplyError {
    pub status: &'static str,
    pub execution_count: u64,
    #[serde(flatten)]
    pub error: ErrorInfo,
    pub payload: Vec<Value>,
    pub user_expressions: Map<String, Value>,
}

/// What ipykernel sends for an execute request skipped after an earlier error.
#[derive(Debug, Clone, Serialize)]
pub struct ExecuteReplyAborted {
    pub status: &'static str,
    pub execution_count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub execution_state: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecuteInput {
    pub code: String,
    pub execution_count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stream {
    pub name: &'static str,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecuteResult {
    pub execution_count: u64,
    pub data: MimeBundle,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DisplayData {
    pub data: MimeBundle,
    pub metadata: Map<String, Value>,
    pub transient: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClearOutput {
    pub wait: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompleteReply {
    pub status: &'static str,
    pub matches: Vec<String>,
    pub cursor_start: usize,
    pub cursor_end: usize,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectReply {
    pub status: &'static str,
    pub found: bool,
    pub data: MimeBundle,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IsCompleteReply {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indent: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryReply {
    pub status: &'static str,
    pub history: Vec<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommInfoReply {
    pub status: &'static str,
    pub comms: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommClose {
    pub comm_id: String,
    pub data: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReply {
    pub status: &'static str,
    pub restart: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct InterruptReply {
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputRequest {
    pub prompt: String,
    pub password: bool,
}

/// Serialises a reply struct; these structs cannot fail to serialise.
pub fn to_value<T: Serialize>(content: &T) -> Value {
    serde_json::to_value(content).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn execute_request_defaults_match_ipykernel() {
        let request: ExecuteRequest = serde_json::from_value(json!({"code": "1"})).unwrap();
        assert!(!request.silent);
        assert!(request.stores_history());
        assert!(!request.allow_stdin);
        assert!(request.stop_on_error);
        let silent: ExecuteRequest =
            serde_json::from_value(json!({"code": "1", "silent": true, "store_history": true}))
                .unwrap();
        assert!(!silent.stores_history());
    }

    #[test]
    fn error_reply_flattens_the_error_fields() {
        let reply = to_value(&ExecuteReplyError {
            status: "error",
            execution_count: 3,
            error: ErrorInfo {
                ename: "E".into(),
                evalue: "v".into(),
                traceback: vec!["t".into()],
            },
            payload: vec![],
            user_expressions: Map::new(),
        });
        assert_eq!(reply["ename"], "E");
        assert_eq!(reply["execution_count"], 3);
    }

    #[test]
    fn is_complete_indent_only_when_present() {
        let complete = to_value(&IsCompleteReply {
            status: "complete",
            indent: None,
        });
        assert!(complete.get("indent").is_none());
    }
}

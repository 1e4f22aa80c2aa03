//! The `kernel_info_reply` content, answered the same on shell and control and
//! without waiting for the interpreter to be ready.

use crate::kernel::interpreter::Interpreter;
use crate::protocol::PROTOCOL_VERSION;
use crate::protocol::content::{self, HelpLink, KernelInfoReply, LanguageInfo};
use serde_json::Value;

/// The optional feature name of JEP 91.
pub const SUBSHELLS_FEATURE: &str = "kernel subshells";

pub fn kernel_info(interpreter: &dyn Interpreter) -> Value {
    let identity = interpreter.identity();
    content::to_value(&KernelInfoReply {
        status: "ok",
        protocol_version: PROTOCOL_VERSION.to_owned(),
        implementation: "ferrolab".to_owned(),
        implementation_version: env!("CARGO_PKG_VERSION").to_owned(),
        language_info: LanguageInfo {
            name: "rust".to_owned(),
            version: identity.language_version,
            mimetype: "text/rust".to_owned(),
            file_extension: ".rs".to_owned(),
            pygments_lexer: "rust".to_owned(),
            codemirror_mode: "rust".to_owned(),
            nbconvert_exporter: "script".to_owned(),
        },
        banner: identity.banner,
        debugger: false,
        help_links: identity
            .help_links
            .into_iter()
            .map(|(text, url)| HelpLink { text, url })
            .collect(),
        supported_features: vec![SUBSHELLS_FEATURE],
    })
}

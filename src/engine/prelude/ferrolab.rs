//! The `ferrolab` module that every session defines before its first cell:
//! rich output (`ferrolab::display(..)`), input (`ferrolab::input(..)`),
//! in-cell checkpoints (`ferrolab::checkpoint!`) and the per-process setup
//! (panic hook, stdout flusher).
//!
//! This file is sent to evcxr as the body of `mod ferrolab { .. }` (see
//! `super::ITEMS`) and is also compiled into ferrolab's own tests, so the
//! compiler and clippy check it like any other source. It may use only `std`:
//! a session has no other crate until the user adds one with `:dep` (the
//! `checkpoint!` macros name `ferrolab_checkpoint`, which the kernel adds
//! before a cell that uses them; macros are checked where they are used).
//! It talks to the relay through envelopes (see `relay::parser`).

use std::io::Write;

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn envelope(kind: &str, payload: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "\x1b_ferrolab;{};{}\x1b\\", kind, payload.len());
    let _ = out.write_all(payload);
    let _ = out.flush();
}

fn send_display(kind: &str, mime: &str, data: &str, id: Option<&str>) {
    let placeholder = format!("<{mime} output>");
    let mut parts = vec![(mime, data)];
    if mime != "text/plain" {
        parts.push(("text/plain", placeholder.as_str()));
    }
    send_bundle(kind, &parts, id);
}

fn send_bundle(kind: &str, parts: &[(&str, &str)], id: Option<&str>) {
    let bundle: Vec<String> = parts
        .iter()
        .map(|(mime, data)| format!("{}: {}", json_string(mime), json_string(data)))
        .collect();
    let bundle = bundle.join(", ");
    let id = id.map_or("null".to_string(), json_string);
    let payload = format!("{{\"data\": {{{bundle}}}, \"metadata\": {{}}, \"display_id\": {id}}}");
    envelope(kind, payload.as_bytes());
}

/// Shows `data` of the given MIME type below the cell, while it runs.
/// Binary types (image/png, image/jpeg) take base64 text.
pub fn display(mime: &str, data: &str) {
    send_display("display", mime, data, None);
}

/// Like `display`, with an id that `update_display` can replace later.
pub fn display_with_id(id: &str, mime: &str, data: &str) {
    send_display("display", mime, data, Some(id));
}

/// Replaces the output shown earlier with `display_with_id(id, ..)`.
pub fn update_display(id: &str, mime: &str, data: &str) {
    send_display("update_display", mime, data, Some(id));
}

/// Shows `data` the first time this cell calls it with `id`, and replaces
/// that output in place on every later call: the one line a loop needs for a
/// plot or a status it redraws (`ferrolab::live("loss", "image/svg+xml", &svg)`
/// once per epoch). Another cell using the same `id` gets an output of its own.
pub fn live(id: &str, mime: &str, data: &str) {
    let (first, unique) = live_id(id);
    if first {
        display_with_id(&unique, mime, data);
    } else {
        update_display(&unique, mime, data);
    }
}

/// A progress bar redrawn in place (HTML, with a text bar for consoles):
/// `ferrolab::progress("epochs", epoch, 15)` after each epoch.
pub fn progress(label: &str, done: u64, total: u64) {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (fraction * 30.0).round() as usize;
    let percent = (fraction * 100.0).round();
    let text = format!(
        "{label} [{}{}] {done}/{total} ({percent}%)",
        "#".repeat(filled),
        "-".repeat(30 - filled)
    );
    let safe: String = label
        .chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect();
    let html = format!(
        "<div><progress value=\"{done}\" max=\"{total}\" style=\"width: 40ch\"></progress> \
         {safe} {done}/{total} ({percent}%)</div>"
    );
    let (first, unique) = live_id(&format!("progress:{label}"));
    let kind = if first { "display" } else { "update_display" };
    send_bundle(
        kind,
        &[("text/html", &html), ("text/plain", &text)],
        Some(&unique),
    );
}

/// Whether this cell shows `id` for the first time, and the display id it
/// uses: `id` made unique to this cell (each cell's code is its own library,
/// with its own copy of these statics), so a frontend's update of one cell's
/// output never touches another's.
fn live_id(id: &str) -> (bool, String) {
    use std::sync::{Mutex, OnceLock};
    static CELL: OnceLock<String> = OnceLock::new();
    static SHOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let cell = CELL.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        format!("{nanos:x}")
    });
    let unique = format!("{id}-{cell}");
    let mut shown = SHOWN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let first = !shown.contains(&unique);
    if first {
        shown.push(unique.clone());
    }
    (first, unique)
}

pub fn display_html(html: &str) {
    display("text/html", html);
}

pub fn display_markdown(markdown: &str) {
    display("text/markdown", markdown);
}

pub fn display_svg(svg: &str) {
    display("image/svg+xml", svg);
}

fn ask(marker: &str, prompt: &str) -> String {
    // evcxr's input protocol: the prompt ends at the first ':'.
    let prompt = prompt.trim_end().trim_end_matches(':').replace(':', " ");
    println!("{marker}:{prompt}");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    line.trim_end_matches(['\r', '\n']).to_string()
}

/// Asks the notebook for a line of text (an input box under the cell).
pub fn input(prompt: &str) -> String {
    ask("EVCXR_INPUT_REQUEST", prompt)
}

/// Like `input`, but the frontend hides what is typed (for keys and tokens).
pub fn password(prompt: &str) -> String {
    ask("EVCXR_INPUT_REQUEST_PASSWORD", prompt)
}

/// Clears the cell's output (with `wait`, when the next output arrives).
pub fn clear_output(wait: bool) {
    envelope("clear", if wait { b"wait" } else { b"now" });
}

/// Shows a cell's final value with one compile (see `engine::one_compile`).
///
/// The engine rewrites a cell's final expression `EXPR` into
/// `{ use crate::ferrolab::__ShowValue as _; match &(EXPR) { v => {
/// crate::ferrolab::__value_follows(); v.evcxr_display(); } } };`
/// (with `#[allow(unused_imports)]` on the `use`).
/// Method lookup prefers a type's own (inherent) `evcxr_display` over this
/// trait's, so such a type shows as it does under evcxr; every other `Debug`
/// value goes out here exactly as evcxr's own fallback sends it (`{:?}` as
/// `text/plain`). A value that is neither fails to compile, and the engine then
/// runs the cell unchanged, through evcxr's own path.
#[doc(hidden)]
pub trait __ShowValue {
    fn evcxr_display(&self);
}

impl<T: std::fmt::Debug + ?Sized> __ShowValue for T {
    fn evcxr_display(&self) {
        // evcxr 0.22's `evcxr_send_text_plain`, byte for byte.
        let text = format!("{self:?}");
        let sent = (|| -> std::io::Result<()> {
            let mut output = std::io::stdout().lock();
            output.write_all(b"EVCXR_BEGIN_CONTENT text/plain\n")?;
            output.write_all(text.as_bytes())?;
            output.write_all(b"\nEVCXR_END_CONTENT\n")?;
            Ok(())
        })();
        if let Err(error) = sent {
            eprintln!("Failed to send content to parent: {error:?}");
            std::process::exit(1);
        }
    }
}

/// Hex-encodes strings, comma-separated (how `!cmd {expr}` gets values back).
#[doc(hidden)]
pub fn __hex(parts: &[String]) -> String {
    let hex: Vec<String> = parts
        .iter()
        .map(|part| part.bytes().map(|byte| format!("{byte:02x}")).collect())
        .collect();
    hex.join(",")
}

#[doc(hidden)]
macro_rules! __checkpoint {
    (@save $force:expr; $($var:ident),+ ; $($metric:ident = $value:expr),* ; $($file:expr),*) => {{
        #[allow(unused_imports)]
        use ferrolab_checkpoint::{ViaNothing as _, ViaSerde as _};
        // Typed here: rust-analyzer, which gives evcxr the type of a `let`
        // bound to this, is not given the runtime crate.
        let __ferrolab_saved: bool = match ferrolab_checkpoint::in_cell::begin($force) {
            Some(mut __save) => {
                $(
                    let __ty = __save.type_of(stringify!($var), std::any::type_name_of_val(&$var));
                    (&&ferrolab_checkpoint::Probe(&$var)).ferrolab_save(__save.writer(), stringify!($var), &__ty);
                )+
                $( __save.metric(stringify!($metric), ($value) as f64); )*
                $( __save.file($file); )*
                __save.finish()
            }
            None => false,
        };
        __ferrolab_saved
    }};
    ($force:expr; $($var:ident),+ ; files = [$($file:expr),* $(,)?] $(,)?) => {{
        crate::ferrolab::__checkpoint!(@save $force; $($var),+ ; ; $($file),*)
    }};
    ($force:expr; $($var:ident),+ ; $($metric:ident = $value:expr),+ ; files = [$($file:expr),* $(,)?] $(,)?) => {{
        crate::ferrolab::__checkpoint!(@save $force; $($var),+ ; $($metric = $value),+ ; $($file),*)
    }};
    ($force:expr; $($var:ident),+ $(; $($metric:ident = $value:expr),+)? $(,)?) => {{
        crate::ferrolab::__checkpoint!(@save $force; $($var),+ ; $($($metric = $value),+)? ; )
    }};
}
pub(crate) use __checkpoint;

/// `ferrolab::checkpoint!(epoch, model; loss = val_loss)` saves the named
/// values from inside a running cell, at most once per
/// `%checkpoint auto --every` (default 10 minutes); true when it saved.
/// `; files = ["model.safetensors"]` at the end includes files (weights).
macro_rules! checkpoint {
    ($($tokens:tt)+) => { crate::ferrolab::__checkpoint!(false; $($tokens)+) };
}
pub(crate) use checkpoint;

/// Like `checkpoint!`, without the rate limit.
macro_rules! checkpoint_now {
    ($($tokens:tt)+) => { crate::ferrolab::__checkpoint!(true; $($tokens)+) };
}
pub(crate) use checkpoint_now;

/// ferrolab puts a call to this before the first statement of every cell:
/// if an interrupt claimed the cell's gate file first, the cell unwinds
/// here, before any statement of the user's ran (evcxr keeps every earlier
/// variable, as after a caught panic); otherwise the file marks the start.
#[doc(hidden)]
pub fn __gate(gate: &str) {
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(gate);
    let interrupted = matches!(&opened, Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists)
        && std::fs::read(gate).is_ok_and(|mark| mark == b"interrupted");
    if interrupted {
        std::panic::resume_unwind(Box::new("ferrolab: interrupted before the cell started"));
    }
}

/// ferrolab puts a call to this at the start of a cell whose value, if it
/// has one, is shown after `__value_follows`: the content blocks the cell
/// prints (`EVCXR_BEGIN_CONTENT` ... `EVCXR_END_CONTENT`, as plotters' and
/// evcxr_image's `evcxr_display` print them) are then shown as they come.
#[doc(hidden)]
pub fn __live_displays() {
    envelope("live", b"");
}

/// Marks that what the cell prints next is its value (see `__ShowValue`).
#[doc(hidden)]
pub fn __value_follows() {
    envelope("value", b"");
}

#[doc(hidden)]
pub fn __setup() {
    let main_thread = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        let message = if let Some(text) = info.payload().downcast_ref::<&str>() {
            text.to_string()
        } else if let Some(text) = info.payload().downcast_ref::<String>() {
            text.clone()
        } else {
            "Box<dyn Any>".to_string()
        };
        let current = std::thread::current();
        let thread = if current.id() == main_thread {
            "main".to_string()
        } else {
            current.name().unwrap_or("<unnamed>").to_string()
        };
        let payload = format!("{thread}\n{message}");
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\x1b_ferrolab;panic;{}\x1b\\", payload.len());
        let _ = err.write_all(payload.as_bytes());
    }));
    let Ok(fds) = std::env::var("FERROLAB_FLUSH_FDS") else {
        return;
    };
    // SAFETY: the runtime reads no environment; runs before user threads exist.
    unsafe { std::env::remove_var("FERROLAB_FLUSH_FDS") };
    let Some((requests, acks)) = fds.split_once(',') else {
        return;
    };
    let (Ok(requests), Ok(acks)) = (requests.parse::<i32>(), acks.parse::<i32>()) else {
        return;
    };
    use std::os::fd::FromRawFd;
    // SAFETY: the relay created these descriptors for this thread alone.
    let mut requests = unsafe { std::fs::File::from_raw_fd(requests) };
    let mut acks = unsafe { std::fs::File::from_raw_fd(acks) };
    let _ = std::thread::Builder::new()
        .name("ferrolab-flush".into())
        .spawn(move || {
            use std::io::Read;
            let _ = acks.write_all(b"h");
            let mut byte = [0u8; 1];
            while let Ok(1) = requests.read(&mut byte) {
                let _ = std::io::stdout().flush();
                let _ = acks.write_all(&byte);
            }
        });
}

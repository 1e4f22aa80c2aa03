//! Frames on the private socket between the kernel and its evcxr child.
//!
//! `[tag: u8][length: u32 little endian][payload]`. Output bytes travel raw
//! (tags 1 and 2) so progress output needs no encoding; everything else is a
//! JSON [`Notice`] (child → kernel) or [`Order`] (kernel → child). Both ends
//! are this same binary, so the format is private and versionless.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

const TAG_STDOUT: u8 = 1;
const TAG_STDERR: u8 = 2;
const TAG_JSON: u8 = 3;
/// Frames larger than this are refused (a corrupt length must not allocate GBs).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// What the child reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notice {
    Hello {
        pid: u32,
    },
    /// The runtime was told to load and run a cell's code.
    RunStarted,
    /// The cell's code returned; all its output was sent before this notice.
    /// Wall and CPU (user, system) time of the run, in nanoseconds.
    RunFinished {
        #[serde(default)]
        wall_ns: u64,
        #[serde(default)]
        user_ns: u64,
        #[serde(default)]
        system_ns: u64,
    },
    Pong {
        seq: u64,
    },
    /// A `display_data` (or `update_display_data` when `update`) from user code.
    Display {
        data: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        metadata: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        display_id: Option<String>,
        #[serde(default)]
        update: bool,
    },
    ClearOutput {
        wait: bool,
    },
    Panic {
        thread: String,
        message: String,
    },
    /// A `?` in the cell's code returned an error (printed on stderr).
    UserError,
    OrderDone {
        id: u64,
        error: Option<String>,
    },
}

/// What the kernel asks of the child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Order {
    /// Answer with `Pong` after everything already read from the program's output.
    Ping {
        seq: u64,
    },
    Chdir {
        id: u64,
        path: String,
    },
    SetEnv {
        id: u64,
        key: String,
        value: Option<String>,
    },
}

/// One decoded frame from the child.
#[derive(Debug, Clone, PartialEq)]
pub enum FromChild {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Notice(Notice),
}

pub fn write_output(writer: &mut impl Write, stderr: bool, bytes: &[u8]) -> io::Result<()> {
    write_frame(writer, if stderr { TAG_STDERR } else { TAG_STDOUT }, bytes)
}

pub fn write_json<T: Serialize>(writer: &mut impl Write, value: &T) -> io::Result<()> {
    let payload = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_frame(writer, TAG_JSON, &payload)
}

fn write_frame(writer: &mut impl Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    for chunk in payload.chunks(MAX_FRAME) {
        let mut frame = Vec::with_capacity(5 + chunk.len());
        frame.push(tag);
        frame.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        frame.extend_from_slice(chunk);
        writer.write_all(&frame)?;
    }
    writer.flush()
}

fn read_frame(reader: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match reader.read_exact(&mut head) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if length > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "link frame too large",
        ));
    }
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// Reads one frame sent by the child; `None` at end of stream.
pub fn read_from_child(reader: &mut impl Read) -> io::Result<Option<FromChild>> {
    let Some((tag, payload)) = read_frame(reader)? else {
        return Ok(None);
    };
    Ok(Some(match tag {
        TAG_STDOUT => FromChild::Stdout(payload),
        TAG_STDERR => FromChild::Stderr(payload),
        TAG_JSON => FromChild::Notice(
            serde_json::from_slice(&payload)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
        ),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown link frame tag {other}"),
            ));
        }
    }))
}

/// Reads one order sent by the kernel; `None` at end of stream.
pub fn read_order(reader: &mut impl Read) -> io::Result<Option<Order>> {
    let Some((tag, payload)) = read_frame(reader)? else {
        return Ok(None);
    };
    if tag != TAG_JSON {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "orders are JSON frames",
        ));
    }
    serde_json::from_slice(&payload)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buffer = Vec::new();
        write_output(&mut buffer, false, b"partial line\r").unwrap();
        write_output(&mut buffer, true, b"err\n").unwrap();
        write_json(&mut buffer, &Notice::Pong { seq: 7 }).unwrap();
        let mut reader = buffer.as_slice();
        assert_eq!(
            read_from_child(&mut reader).unwrap(),
            Some(FromChild::Stdout(b"partial line\r".to_vec()))
        );
        assert_eq!(
            read_from_child(&mut reader).unwrap(),
            Some(FromChild::Stderr(b"err\n".to_vec()))
        );
        assert_eq!(
            read_from_child(&mut reader).unwrap(),
            Some(FromChild::Notice(Notice::Pong { seq: 7 }))
        );
        assert_eq!(read_from_child(&mut reader).unwrap(), None);
    }

    #[test]
    fn orders_round_trip() {
        let mut buffer = Vec::new();
        let order = Order::Chdir {
            id: 1,
            path: "/tmp/data dir".into(),
        };
        write_json(&mut buffer, &order).unwrap();
        assert_eq!(read_order(&mut buffer.as_slice()).unwrap(), Some(order));
    }

    #[test]
    fn oversized_and_unknown_frames_are_errors() {
        let mut huge = vec![TAG_STDOUT];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_from_child(&mut huge.as_slice()).is_err());
        let unknown = [9u8, 0, 0, 0, 0];
        assert!(read_from_child(&mut unknown.as_slice()).is_err());
    }

    #[test]
    fn truncated_frame_is_an_error_not_a_hang() {
        let truncated = [TAG_STDOUT, 10, 0, 0, 0, b'a'];
        assert!(read_from_child(&mut truncated.as_slice()).is_err());
    }
}

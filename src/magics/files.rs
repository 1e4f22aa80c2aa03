//! `%%writefile [-a] PATH`: writes the cell body to a file.

use super::args::{expand_path, parse};
use super::{Call, ErrorInfo, Kind, Magic, MagicResult};
use crate::kernel::StreamName;
use std::io::Write;

pub fn magics() -> Vec<Magic> {
    vec![Magic {
        name: "writefile",
        kind: Kind::Cell,
        summary: "write the cell body to a file",
        help: "%%writefile [-a] PATH\n\nWrites the rest of the cell to PATH (relative to the current\ndirectory; ~ and $VAR expand). Prints `Writing`, `Overwriting` or, with\n-a / --append, `Appending to`.\n\nExample:\n    %%writefile config.toml\n    epochs = 10\n    lr = 3e-4",
        run: writefile,
    }]
}

#[derive(clap::Parser, Debug)]
#[command(disable_help_flag = true)]
struct WritefileArgs {
    /// Append instead of overwriting.
    #[arg(short = 'a', long = "append")]
    append: bool,
    path: String,
}

fn writefile(call: &mut Call) -> MagicResult {
    let args: WritefileArgs = parse("writefile", call.args)?;
    let path = expand_path(&args.path)?;
    let existed = std::path::Path::new(&path).exists();
    let verb = match (args.append, existed) {
        (true, _) => "Appending to",
        (false, true) => "Overwriting",
        (false, false) => "Writing",
    };
    let mut body = call.body.to_owned();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let result = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(args.append)
        .truncate(!args.append)
        .open(&path)
        .and_then(|mut file| {
            file.write_all(body.as_bytes())?;
            file.sync_all()
        });
    result.map_err(|error| {
        ErrorInfo::new(
            "OSError",
            format!("%%writefile: cannot write {path}: {error}"),
        )
    })?;
    call.cell
        .stream(StreamName::Stdout, &format!("{verb} {path}\n"));
    Ok(None)
}

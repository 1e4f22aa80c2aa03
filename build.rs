//! Records the rustc version ferrolab was built with (shown until the kernel
//! has asked the toolchain on PATH for its own).

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=FERROLAB_BUILD_RUSTC={version}");
    println!("cargo:rerun-if-changed=build.rs");
}

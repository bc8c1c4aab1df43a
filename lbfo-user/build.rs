//! Finds the XDP object built by `cargo xtask build-ebpf` so `lbfo` can embed it.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LBFO_EBPF_OBJECT");
    let object = match std::env::var_os("LBFO_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("../target/ebpf/bpfel-unknown-none/release/lbfo"),
    };
    if !object.exists() {
        panic!(
            "the XDP object {} does not exist: run `cargo xtask build-ebpf` first",
            object.display()
        );
    }
    let object = object.canonicalize().expect("object path resolves");
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rustc-env=LBFO_EBPF_OBJECT={}", object.display());
}

//! `cargo xtask build-ebpf`: the XDP object, with everything it needs.
//!
//! The eBPF crate needs a pinned nightly with `rust-src` and a `bpf-linker`
//! linked against that nightly's own libLLVM. Both are installed here on
//! first use (into rustup and the project-local `.tools/`), so a fresh
//! machine needs nothing by hand; later runs only check a stamp and let
//! cargo's incremental build do the rest.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{root, run};

/// Must match lbfo-ebpf/rust-toolchain.toml.
pub const NIGHTLY: &str = "nightly-2026-10-01";
/// Must match rust-toolchain.toml.
pub const STABLE: &str = "1.98.0";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where the built object lands; lbfo-user's build script reads it from here.
pub fn object_path() -> PathBuf {
    root().join("target/ebpf/bpfel-unknown-none/release/lbfo")
}

pub fn build() -> Result<()> {
    ensure_toolchain(STABLE, &[])?;
    ensure_toolchain(NIGHTLY, &["rust-src"])?;
    let linker = ensure_bpf_linker()?;

    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{NIGHTLY}"))
        .args(["build", "--release", "--quiet"])
        .current_dir(root().join("lbfo-ebpf"))
        .env("CARGO_TARGET_DIR", root().join("target/ebpf"))
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker)
        .env(
            "PATH",
            prepend_path(linker.parent().expect("linker has a dir")),
        );
    // Whatever toolchain runs xtask must not leak into the nightly build.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    run(&mut cmd).context("building the eBPF object")?;
    println!("eBPF object: {}", object_path().display());
    Ok(())
}

fn prepend_path(dir: &Path) -> String {
    let old = std::env::var("PATH").unwrap_or_default();
    format!("{}:{old}", dir.display())
}

fn rustup_output(args: &[&str]) -> Result<String> {
    let out = Command::new("rustup")
        .args(args)
        .output()
        .context("rustup is needed to install the pinned toolchains")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ensure_toolchain(name: &str, components: &[&str]) -> Result<()> {
    let installed = rustup_output(&["toolchain", "list"])?;
    if !installed.lines().any(|l| l.starts_with(name)) {
        eprintln!("installing Rust toolchain {name}");
        let mut cmd = Command::new("rustup");
        cmd.args(["toolchain", "install", name, "--profile", "minimal"]);
        for c in components {
            cmd.args(["--component", c]);
        }
        return run(&mut cmd);
    }
    let have = rustup_output(&["component", "list", "--installed", "--toolchain", name])?;
    for c in components {
        if !have.lines().any(|l| l.starts_with(c)) {
            eprintln!("adding component {c} to {name}");
            run(Command::new("rustup").args(["component", "add", c, "--toolchain", name]))?;
        }
    }
    Ok(())
}

/// The LLVM major version the pinned nightly was built with.
fn nightly_llvm_major() -> Result<String> {
    let out = Command::new("rustc")
        .arg(format!("+{NIGHTLY}"))
        .arg("-vV")
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .context("running rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc -vV printed no LLVM version")?;
    Ok(version.split('.').next().unwrap_or(version).to_string())
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .arg(format!("+{NIGHTLY}"))
        .args(["--print", "sysroot"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .context("running rustc --print sysroot")?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Builds bpf-linker into `.tools/` against the nightly's libLLVM, once.
fn ensure_bpf_linker() -> Result<PathBuf> {
    let tools = root().join(".tools");
    let linker = tools.join("bin/bpf-linker");
    let llvm_major = nightly_llvm_major()?;
    let stamp_path = tools.join("bpf-linker.stamp");
    let stamp = format!("bpf-linker {BPF_LINKER_VERSION} llvm-{llvm_major} {NIGHTLY}\n");
    if linker.exists() && fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
        return Ok(linker);
    }

    eprintln!(
        "building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm_major} (about a minute)"
    );
    let sysroot_lib = nightly_sysroot()?.join("lib");
    let prefix = tools.join("llvm");
    let prefix_lib = prefix.join("lib");
    if prefix.exists() {
        fs::remove_dir_all(&prefix)?;
    }
    fs::create_dir_all(&prefix_lib)?;
    let mut versioned = None;
    for entry in fs::read_dir(&sysroot_lib)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM") {
            symlink(entry.path(), prefix_lib.join(&name))?;
            if name.contains(".so") {
                versioned = Some(entry.path());
            }
        }
    }
    let Some(versioned) = versioned else {
        bail!("{NIGHTLY} ships no libLLVM in {}", sysroot_lib.display());
    };
    symlink(&versioned, prefix_lib.join("libLLVM.so"))?;

    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{STABLE}"))
        .args(["install", "bpf-linker", "--locked", "--force"])
        .args(["--version", &format!("={BPF_LINKER_VERSION}")])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .arg("--root")
        .arg(&tools)
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO");
    run(&mut cmd).context("building bpf-linker")?;
    fs::write(&stamp_path, stamp)?;
    Ok(linker)
}

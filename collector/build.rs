//! Builds the preload shim (`shim/`, a cdylib) in release mode with a nested cargo and embeds the
//! resulting `.so` in this crate (`shim_bytes()`), so the `allocscope` binary is self-sufficient.
//!
//! The nested build uses its own target directory under OUT_DIR (no lock shared with the outer build)
//! and a clean environment: the outer build's target dir, flags and wrappers (clippy, coverage) are
//! not for the shim. `ALLOCSCOPE_SHIM_SO=/path/to/lib.so` skips the nested build and embeds that file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let shim_dir = manifest_dir.join("shim");
    let traces_dir = manifest_dir.join("../traces");
    for p in [
        shim_dir.join("src"),
        shim_dir.join("Cargo.toml"),
        shim_dir.join("build.rs"),
        traces_dir.join("src"),
        traces_dir.join("Cargo.toml"),
        manifest_dir.join("protocol/src"),
        manifest_dir.join("protocol/Cargo.toml"),
        manifest_dir.join("clock/src"),
        manifest_dir.join("clock/Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=ALLOCSCOPE_SHIM_SO");

    let so = match std::env::var_os("ALLOCSCOPE_SHIM_SO") {
        Some(p) => PathBuf::from(p),
        None => build_shim(&shim_dir, &out_dir),
    };
    let embedded = out_dir.join("liballocscope_shim.so");
    std::fs::copy(&so, &embedded).unwrap_or_else(|e| panic!("cannot copy {}: {e}", so.display()));
    println!(
        "cargo:rustc-env=ALLOCSCOPE_EMBEDDED_SHIM={}",
        embedded.display()
    );
}

fn build_shim(shim_dir: &Path, out_dir: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out_dir.join("shim-target");
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(shim_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--config", "profile.release.debug=0"])
        .args(["--config", "profile.release.strip=true"]);
    // The outer build's settings are not for the shim.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let drop = matches!(
            k.as_str(),
            "CARGO_TARGET_DIR"
                | "CARGO_BUILD_TARGET_DIR"
                | "CARGO_BUILD_TARGET"
                | "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "CARGO_ENCODED_RUSTFLAGS"
                | "CARGO_ENCODED_RUSTDOCFLAGS"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "CARGO_BUILD_RUSTFLAGS"
                | "CARGO_PRIMARY_PACKAGE"
                | "TARGET"
                | "HOST"
                | "PROFILE"
                | "OPT_LEVEL"
                | "DEBUG"
                | "OUT_DIR"
                | "NUM_JOBS"
        ) || k.starts_with("CARGO_PROFILE_")
            || k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_LLVM_COV")
            || k.starts_with("CARGO_CRATE_");
        if drop {
            cmd.env_remove(&k);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the preload shim: {e}"));
    assert!(
        status.success(),
        "building the preload shim (collector/shim) failed; see the output above"
    );
    target_dir.join("release").join("liballocscope_shim.so")
}

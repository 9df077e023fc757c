//! Builds the connector component for `wasm32-wasip2` and embeds it in the harness.
//!
//! The component is the root package of this workspace. It is built in release mode into its
//! own target directory, `component/` inside the outer build's (`$CARGO_TARGET_DIR`, else the
//! workspace's `target/`): a nested cargo on the outer target directory itself would wait
//! forever for the outer build's lock. The wasm target is installed with rustup when it is
//! missing, so a fresh machine needs no manual step.
//!
//! `OPENAI_CONNECTOR_PREBUILT_COMPONENT=/path/to.wasm` skips the nested build and embeds that
//! file instead (for packagers who build the component separately).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host-harness lives inside the workspace");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let embedded = out_dir.join("openai_connector.wasm");

    println!("cargo:rerun-if-env-changed=OPENAI_CONNECTOR_PREBUILT_COMPONENT");
    if let Some(prebuilt) = env::var_os("OPENAI_CONNECTOR_PREBUILT_COMPONENT") {
        println!("cargo:rerun-if-changed={}", Path::new(&prebuilt).display());
        std::fs::copy(&prebuilt, &embedded).expect("copy the prebuilt component");
        return;
    }
    for watched in ["src", "wit", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    ensure_wasm_target();

    // A relative CARGO_TARGET_DIR is taken from the workspace root, where cargo is run. A build
    // script sees the variable (it inherits cargo's environment) but not `--target-dir` or
    // `build.target-dir`: such builds keep the nested one in the workspace's `target/`.
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
        .join("component");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--lib",
            "-p",
            "openai-connector",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy's, for instance) are for the host crates,
    // not for the guest.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        build.env_remove(var);
    }
    let status = build.status().expect("run cargo to build the component");
    assert!(
        status.success(),
        "building the component for {TARGET} failed"
    );

    let built = target_dir
        .join(TARGET)
        .join("release")
        .join("openai_connector.wasm");
    std::fs::copy(&built, &embedded)
        .unwrap_or_else(|e| panic!("copy {} to OUT_DIR: {e}", built.display()));
}

/// Installs the `wasm32-wasip2` standard library with rustup when the toolchain lacks it.
fn ensure_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.as_deref().is_some_and(Path::exists) {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .expect("run rustup to install the wasm target");
    assert!(status.success(), "`rustup target add {TARGET}` failed");
}

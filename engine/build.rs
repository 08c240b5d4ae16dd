//! Records what abomonation checkpoints depend on (see `AbiLayout` in `src/checkpoint.rs`): the
//! compiler, the target, and an id of this build. The id changes whenever this script reruns,
//! which cargo does whenever the engine's sources change.

use std::hash::{Hash, Hasher};

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown rustc".into());
    let target = std::env::var("TARGET").unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for key in ["PROFILE", "OPT_LEVEL", "DEBUG", "CARGO_PKG_VERSION", "CARGO_CFG_TARGET_FEATURE"] {
        std::env::var(key).unwrap_or_default().hash(&mut hasher);
    }
    version.hash(&mut hasher);
    target.hash(&mut hasher);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    now.hash(&mut hasher);
    println!("cargo:rustc-env=KAPPA_RUSTC_VERSION={version}");
    println!("cargo:rustc-env=KAPPA_TARGET={target}");
    println!("cargo:rustc-env=KAPPA_BUILD_ID={:016x}", hasher.finish());
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=build.rs");
}

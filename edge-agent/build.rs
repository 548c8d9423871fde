//! Records when the agent was built: the TLS verifier treats a system clock earlier than this
//! as wrong (a Raspberry Pi without a clock battery boots in 1970). Honours SOURCE_DATE_EPOCH
//! for reproducible builds.
fn main() {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=AGOG_BUILD_EPOCH={secs}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
}

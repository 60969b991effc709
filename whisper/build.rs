//! Tells the crate whether it is compiled with optimisations, so a benchmark can say when its
//! numbers come from an unoptimised build (there, Whisper runs several times slower).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(optimised_build)");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("OPT_LEVEL").is_ok_and(|level| level != "0") {
        println!("cargo::rustc-cfg=optimised_build");
    }
}

//! Link the guests as static, non-PIE ELF images at 1 MiB with the shared
//! linker script (which also emits the PVH note's program header).

fn main() {
    let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let script = dir.join("../rt/link.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    for arg in [
        "-nostartfiles",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
        "-Wl,-z,max-page-size=4096",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
}

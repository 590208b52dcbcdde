//! Links the `fleetcore` binary as a position-dependent executable on Linux/glibc.
//!
//! As a position-independent executable (rustc's default) the binary carries hundreds of
//! thousands of relative relocations (about 830,000 in a debug build, 285,000 in release) that
//! the dynamic loader applies at every start, copying on write every page of pointers they
//! touch: in the debug build about 8 ms of CPU and 2,300 page faults before `main`, which short
//! commands such as `fleetcore sql` pay each time (issue #16, BENCHMARKS.md; packing the
//! relocations as DT_RELR saved about 1 ms of it). Linked at a fixed address it has none; the
//! price is that the executable itself is not placed at a random address (its libraries, heap
//! and stacks still are): see `docs/decisions/0009-fleetcore-binary-position-dependent.md`.
//! `FLEETCORE_PIE=1` at build time links a PIE again, with packed relocations.

fn main() {
    println!("cargo:rerun-if-env-changed=FLEETCORE_PIE");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if !linux_gnu {
        return;
    }
    if std::env::var_os("FLEETCORE_PIE").is_some_and(|v| v == "1") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    } else {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}

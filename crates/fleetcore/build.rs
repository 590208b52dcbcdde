//! Links the `fleetcore` binary as a position-dependent executable on Linux/glibc when built
//! with `FLEETCORE_NO_PIE=1`.
//!
//! As a position-independent executable (rustc's default) the binary carries hundreds of
//! thousands of relative relocations (about 830,000 in a debug build, 285,000 in release) that
//! the dynamic loader applies at every start, copying on write every page of pointers they
//! touch: in release about 4 ms of CPU and 1,150 page faults before `main`, which short
//! commands such as `fleetcore sql` pay each time (issue #16, BENCHMARKS.md). Linked at a fixed
//! address it has none; the price is that the executable itself is not placed at a random
//! address (its libraries, heap and stacks still are), so the default stays a PIE: see
//! `docs/decisions/0009-fleetcore-binary-position-dependent.md`.

fn main() {
    println!("cargo:rerun-if-env-changed=FLEETCORE_NO_PIE");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu && std::env::var_os("FLEETCORE_NO_PIE").is_some_and(|v| v == "1") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}

//! The reference stack (examples/reference-stack), built into the binary so `fleetcore demo`
//! works from any folder.

/// (relative path, contents) of every file of the stack.
pub const FILES: &[(&str, &[u8])] = &[
    (
        "main.tf",
        include_bytes!("../../../../examples/reference-stack/main.tf"),
    ),
    (
        "variables.tf",
        include_bytes!("../../../../examples/reference-stack/variables.tf"),
    ),
    (
        "outputs.tf",
        include_bytes!("../../../../examples/reference-stack/outputs.tf"),
    ),
    (
        "functions/processor.zip",
        include_bytes!("../../../../examples/reference-stack/functions/processor.zip"),
    ),
];

//! Shadow update fuzz target: the input is a sequence of update payloads from devices.
//!
//! Each input is split at `\n` into payloads, parsed as update requests and applied in turn to
//! one document with small limits. Beyond "no panic", it checks the document contract: an
//! accepted update adds exactly 1 to the version and leaves a state within the size limit,
//! with metadata covering exactly the state's keys and a delta made only of desired keys; a
//! refused one changes nothing the service keeps (it works on a copy, as the service does).

#![no_main]

use fleetcore_shadow::document::{Limits, Object, ShadowDocument};
use fleetcore_shadow::request::parse_update;
use libfuzzer_sys::fuzz_target;

fn same_keys(state: &Object, metadata: &Object) -> bool {
    state.len() == metadata.len() && state.keys().all(|k| metadata.contains_key(k))
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_state_bytes: 512,
        max_depth: 4,
    };
    let mut document = ShadowDocument::default();
    for (i, payload) in data.split(|b| *b == b'\n').enumerate() {
        let Ok(request) = parse_update(payload, &limits) else {
            continue;
        };
        let mut working = document.clone();
        match working.apply(&request, i as u64, &limits) {
            Ok(_) => {
                assert_eq!(working.version, document.version + 1);
                assert!(working.state_size() <= limits.max_state_bytes);
                assert!(same_keys(&working.desired.state, &working.desired.metadata));
                assert!(same_keys(
                    &working.reported.state,
                    &working.reported.metadata
                ));
                let delta = working.delta();
                assert!(delta.keys().all(|k| working.desired.state.contains_key(k)));
                document = working;
            }
            Err(e) => assert_eq!(e.code(), 413),
        }
    }
});

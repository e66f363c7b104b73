//! End-to-end tests of the contract runtime: the real contracts and test
//! guests, compiled from source by `build.rs`, run in the real
//! `wallance-runtime`. The tests are in `tests/e2e/`; this library holds the
//! paths of the built `.wasm` files.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Every built contract, for tests that go over all of them.
pub const ALL: &[&str] = &[
    ESPRESSO,
    RADIO_RENTAL,
    COMPUTE_RENTAL,
    HOSTILE,
    ECHO_V1,
    ECHO_V2,
    BAD_INFO,
    INFO_LOOP,
    SQUATTER,
    FLOATS,
    CONTRACT_TEMPLATE,
];

//! Runtime tests: real compiled contracts in the real runtime (no network;
//! the end-to-end tests with node processes are in `host/node/tests/`).
//! One test binary (modules below) so wasmtime is linked once.

mod files;
mod hostile;
mod memory;
mod reload;
mod services;
mod support;

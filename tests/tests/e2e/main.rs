//! End-to-end tests: real compiled contracts in the real runtime.
//! One test binary (modules below) so wasmtime is linked once.

mod files;
mod hostile;
mod reload;
mod services;
mod support;

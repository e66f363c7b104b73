//! Log set-up for `wallance node`.

/// Logs to stderr, filtered by `RUST_LOG` (default: info, rustdds warn).
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rustdds=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

//! Prometheus metrics (filled in by the operator's-interface work).

pub async fn render() -> &'static str {
    ""
}

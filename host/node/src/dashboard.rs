//! The dashboard page (filled in by the operator's-interface work).

use axum::response::Html;

pub async fn page() -> Html<&'static str> {
    Html("<!doctype html><title>Wallance</title><p>See <a href=\"/api/view\">/api/view</a>.</p>")
}

//! The dashboard the node serves at `/`: one HTML page, a stylesheet and a
//! script, embedded in the binary (no build step, no CDN: gateways often
//! have no internet). The page follows `/api/events` and buys through
//! `/api/buy`; everything it shows is in the JSON API too.

use axum::http::header;
use axum::response::{Html, IntoResponse};

const PAGE: &str = include_str!("../../assets/dashboard.html");
const STYLE: &str = include_str!("../../assets/dashboard.css");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}

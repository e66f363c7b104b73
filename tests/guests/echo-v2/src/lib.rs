const VERSION: &str = "2";
const PRICE: u64 = 2;
include!("../../echo.rs");

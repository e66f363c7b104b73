const VERSION: &str = "1";
const PRICE: u64 = 1;
include!("../../echo.rs");

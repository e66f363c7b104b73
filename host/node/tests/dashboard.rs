//! The dashboard in headless Chromium (driven over WebDriver by plain HTTP
//! to chromedriver) against four real nodes in a private network namespace:
//! the wallet table fills, a purchase from the form commits and the balance
//! changes on screen, contracts dropped into the folder appear (loaded, or
//! rejected with the reason). Screenshots land in `target/artifacts/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use common::{Net, Options, STEP, wallet};
use serde_json::{Value, json};
use wallance_dds::netns::{Loopback, test_inside};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const DRIVER_PORT: u16 = 9515;

fn require_browser() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} (Debian package {package}) is missing: the dashboard test needs a headless \
             browser. Install it with `apt-get install -y chromium chromium-driver` (as root)"
        );
    }
}

/// A chromedriver process and one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={DRIVER_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start chromedriver")?;
        let base = format!("http://127.0.0.1:{DRIVER_PORT}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        let started = Instant::now();
        while agent.get(format!("{base}/status")).call().is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                bail!("chromedriver did not answer on {base}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::Builder::new().prefix("wallance-chromium-").tempdir()?;
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
        }}});
        let v = browser.call("POST", "/session", Some(caps))?;
        browser.session = v["sessionId"].as_str().context("no session id")?.to_string();
        Ok(browser)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut resp = match method {
            "GET" => self.agent.get(&url).call()?,
            "DELETE" => self.agent.delete(&url).call()?,
            _ => self.agent.post(&url).send_json(body.unwrap_or(json!({})))?,
        };
        let status = resp.status();
        let v: Value = resp.body_mut().read_json()?;
        if !status.is_success() {
            bail!("WebDriver {method} {path}: {status}: {}", v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }

    fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", "/url", Some(json!({ "url": url }))).map(|_| ())
    }

    fn js(&self, script: &str) -> anyhow::Result<Value> {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })))
    }

    fn element(&self, css: &str) -> anyhow::Result<String> {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("no element {css}"))
    }

    fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.element(css)?;
        self.call("POST", &format!("/element/{id}/clear"), None)?;
        self.call("POST", &format!("/element/{id}/value"), Some(json!({ "text": text })))?;
        Ok(())
    }

    fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.element(css)?;
        self.call("POST", &format!("/element/{id}/click"), None).map(|_| ())
    }

    /// Polls a script until it returns something truthy; returns that.
    fn wait_js(&self, what: &str, script: &str) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let v = self.js(script)?;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return Ok(v);
            }
            if started.elapsed() > STEP {
                bail!("timed out waiting for {what} on the dashboard");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the whole page (beyond the window) through the DevTools protocol.
    fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let v = self.call(
            "POST",
            "/goog/cdp/execute",
            Some(json!({ "cmd": "Page.captureScreenshot",
                         "params": { "format": "png", "captureBeyondViewport": true } })),
        );
        let data = match v {
            Ok(v) => v["data"].as_str().context("no screenshot data")?.to_string(),
            // Plain WebDriver: the window only.
            Err(_) => self
                .call("GET", "/screenshot", None)?
                .as_str()
                .context("no screenshot")?
                .to_string(),
        };
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::create_dir_all(path.parent().context("a folder")?)?;
        std::fs::write(path, png)?;
        println!("screenshot: {}", path.display());
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn artifacts() -> PathBuf {
    common::target_dir().join("artifacts")
}

/// The text of node-2's balance cell, or "" while it is not there.
const BALANCE_JS: &str = "const c = document.querySelector('#wallets tr[data-member=\"node-2\"] td.balance'); return c ? c.textContent : '';";

#[test]
fn dashboard_shows_wallets_buys_from_the_form_and_lists_dropped_contracts() {
    require_browser();
    if !test_inside(
        "dashboard_shows_wallets_buys_from_the_form_and_lists_dropped_contracts",
        Loopback::Multicast,
    ) {
        return;
    }
    let net = Net::start(4, Options::default()).expect("network up");
    let buyer = &net.nodes[1];
    let price = net.espresso_price().expect("espresso listed");
    let browser = Browser::start(1280, 1400).expect("headless chromium");
    browser.goto(&format!("{}/", buyer.api)).unwrap();

    // The wallet table fills from the live view.
    browser
        .wait_js(
            "four wallets",
            "return document.querySelectorAll('#wallets tbody tr[data-member]').length === 4",
        )
        .unwrap();
    browser
        .wait_js(
            "the live badge",
            "return document.querySelector('#conn').textContent === 'live'",
        )
        .unwrap();
    browser
        .wait_js(
            "the espresso in the form",
            "return [...document.querySelectorAll('#service option')].some(o => o.value.endsWith(':espresso'))",
        )
        .unwrap();

    // Buy from the form once node-2 can pay; its balance changes on screen.
    net.wait_spendable(1, "node-2", 2 * price).expect("node-2 earns");
    let before_version = wallet(&buyer.api, "node-2").unwrap()["version"].as_u64().unwrap();
    let before = browser.js(BALANCE_JS).unwrap();
    browser.type_into("#token", buyer.token.as_deref().unwrap()).unwrap();
    browser.type_into("#params", "size=ristretto").unwrap();
    browser.click("#buy").unwrap();
    let result = browser
        .wait_js(
            "the purchase's outcome",
            "const r = document.querySelector('#buy-result'); \
             return ['done', 'refused', 'error'].includes(r.dataset.status) ? r.dataset.status + ': ' + r.textContent : ''",
        )
        .unwrap();
    let result = result.as_str().unwrap().to_string();
    assert!(result.starts_with("done: ") && result.contains("ristretto"), "{result}");
    let after = browser
        .wait_js(
            "node-2's balance to change",
            &format!("const b = (() => {{ {BALANCE_JS} }})(); return b !== {before} ? b : ''"),
        )
        .unwrap();
    println!("node-2 balance on screen: {before} -> {after}; form: {result}");
    assert_eq!(
        wallet(&buyer.api, "node-2").unwrap()["version"].as_u64().unwrap(),
        before_version + 1,
        "one click, one purchase"
    );
    assert_eq!(
        browser.js("return localStorage.getItem('wallance-token')").unwrap(),
        buyer.token.as_deref().unwrap(),
        "the token is kept in localStorage"
    );
    browser
        .wait_js(
            "the latency chart",
            "return document.querySelectorAll('#latency-chart svg circle').length >= 1",
        )
        .unwrap();

    // Contracts dropped into node-2's folder: one loads, one is rejected with why.
    std::fs::copy(
        common::guest_wasm("radio_rental"),
        // Named after its service: a file serves only the name it carries.
        buyer.dir.join("contracts/radio-rental.wasm"),
    )
    .unwrap();
    std::fs::write(buyer.dir.join("contracts/broken.wasm"), b"not a wasm module").unwrap();
    browser
        .wait_js(
            "radio-rental.wasm loaded",
            "return !!document.querySelector('#contracts tr[data-file=\"radio-rental.wasm\"][data-status=\"loaded\"]')",
        )
        .unwrap();
    let why = browser
        .wait_js(
            "broken.wasm rejected with a reason",
            "const r = document.querySelector('#contracts tr[data-file=\"broken.wasm\"][data-status=\"rejected\"] .error-text'); \
             return r ? r.textContent : ''",
        )
        .unwrap();
    println!("broken.wasm rejected: {why}");
    // Let a few more readings and the new service arrive before the picture.
    std::thread::sleep(Duration::from_secs(1));
    browser.screenshot(&artifacts().join("dashboard.png")).unwrap();
    let errors = browser.js("return window.__errors || []").unwrap();
    assert_eq!(errors, json!([]));
    drop(browser);

    // The same page on a phone-sized screen: nothing wider than the window.
    let phone = Browser::start(390, 844).expect("headless chromium");
    phone.goto(&format!("{}/", buyer.api)).unwrap();
    phone
        .wait_js(
            "four wallets on the phone",
            "return document.querySelectorAll('#wallets tbody tr[data-member]').length === 4",
        )
        .unwrap();
    let overflow = phone
        .js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        .unwrap();
    assert_eq!(overflow, 0, "the page scrolls sideways on a phone");
    phone.screenshot(&artifacts().join("dashboard-phone.png")).unwrap();
}

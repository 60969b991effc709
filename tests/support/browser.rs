//! Headless Chromium driven through chromedriver (Debian's `chromium` and `chromium-driver`,
//! which `.ci/run` installs), for the tests of the pages voxline serves.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::ClientBuilder;
use serde_json::json;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A browser session; chromedriver is stopped and the profile removed when it is dropped.
pub struct Browser {
    pub client: fantoccini::Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// Starts chromedriver and a headless Chromium with a window of `width`×`height` (what a
/// screenshot shows); `None` (after saying so, or failing in CI) when either is not installed.
pub async fn start(width: u32, height: u32) -> Option<Browser> {
    for program in [CHROMEDRIVER, CHROMIUM] {
        if !std::path::Path::new(program).exists() {
            super::service_missing(
                program,
                &"not installed (apt-get install chromium chromium-driver)",
            );
            return None;
        }
    }
    let port = super::free_port();
    let driver = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let status = format!("http://127.0.0.1:{port}/status");
    let http = reqwest::Client::new();
    super::eventually("chromedriver answers", Duration::from_secs(30), || {
        let (http, status) = (http.clone(), status.clone());
        async move { http.get(status).send().await.is_ok() }
    })
    .await;
    let profile = tempfile::tempdir().expect("a browser profile dir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     // A microphone that plays a tone, allowed without asking.
                     "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                     format!("--window-size={width},{height}"),
                     format!("--user-data-dir={}", profile.path().display())]
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    Some(Browser {
        client,
        _driver: driver,
        _profile: profile,
    })
}

/// The element `css` once it is on the page, or why it did not appear within `limit`.
pub async fn appears(
    browser: &fantoccini::Client,
    css: &str,
    limit: Duration,
) -> Result<fantoccini::elements::Element, fantoccini::error::CmdError> {
    browser
        .wait()
        .at_most(limit)
        .for_element(fantoccini::Locator::Css(css))
        .await
}

/// Where the pages' screenshots go: `VOXLINE_SCREENSHOT_DIR`, or a folder in the temp dir.
pub fn screenshot_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("VOXLINE_SCREENSHOT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("voxline-screenshots"));
    std::fs::create_dir_all(&dir).expect("the screenshot dir");
    dir
}

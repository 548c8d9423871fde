//! A real browser for the dashboard tests: Debian's headless Chromium driven through its
//! chromedriver (WebDriver, plain HTTP on loopback), both from `scripts/setup-web.sh`.
//! Screenshots go to `target/test-artifacts/<test>/` (or `$AGOG_ARTIFACTS_DIR/<test>/`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use fantoccini::{Client, ClientBuilder, Locator};

use crate::{cluster, wait_until};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and a headless Chromium session; both end when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
    artifacts: PathBuf,
}

impl Browser {
    /// Start chromedriver and a 1280x900 headless Chromium. `test` names the artifact folder.
    pub async fn start(test: &str) -> anyhow::Result<Browser> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            anyhow::ensure!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: run scripts/setup.sh (it installs chromium and chromium-driver)"
            );
        }
        let port = cluster::free_port()?;
        use std::os::unix::process::CommandExt;
        // Its own process group: Chromium's processes are killed with it, by its id.
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start chromedriver")?;
        let profile = cluster::scratch_dir("chromium-profile")?;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client =
            wait_until(
                "chromedriver starts a session",
                Duration::from_secs(60),
                || {
                    let caps = caps.clone();
                    let url = url.clone();
                    async move {
                        Ok(ClientBuilder::new(
                            hyper_util::client::legacy::connect::HttpConnector::new(),
                        )
                        .capabilities(caps)
                        .connect(&url)
                        .await
                        .ok())
                    }
                },
            )
            .await?;
        let artifacts = std::env::var_os("AGOG_ARTIFACTS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
            })
            .join(test);
        std::fs::create_dir_all(&artifacts)?;
        Ok(Browser {
            client,
            driver,
            profile,
            artifacts,
        })
    }

    /// Type into the dashboard's sign-in form and send it, as a person would (keyboard, then
    /// the button).
    pub async fn sign_in(&self, name: &str, password: &str) -> anyhow::Result<()> {
        self.fill("name", name).await?;
        self.fill("password", password).await?;
        self.client
            .find(Locator::Css("form[action='/login'] button"))
            .await?
            .click()
            .await?;
        Ok(())
    }

    /// Type `text` into the field with id `id` (after clearing it).
    pub async fn fill(&self, id: &str, text: &str) -> anyhow::Result<()> {
        let e = self.client.find(Locator::Id(id)).await?;
        e.clear().await?;
        e.send_keys(text).await?;
        Ok(())
    }

    /// Save a PNG of the window as `<artifacts>/<name>.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// The visible text of the first element matching `css` (None when there is none).
    pub async fn text(&self, css: &str) -> anyhow::Result<Option<String>> {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => Ok(Some(e.text().await?)),
            Err(e) if e.is_no_such_element() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Wait until the page shows `css` with text containing every one of `want`; returns the
    /// text. The page is not reloaded: what changes, changes by the page's own refresh.
    pub async fn wait_text(
        &self,
        css: &str,
        want: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let last = std::cell::RefCell::new(None::<String>);
        let r = wait_until(&format!("{css} showing {want:?}"), timeout, || async {
            let t = self.text(css).await?;
            *last.borrow_mut() = t.clone();
            Ok(t.filter(|t| want.iter().all(|w| t.contains(w))))
        })
        .await;
        r.map_err(|e| e.context(format!("last text of {css}: {:?}", last.borrow())))
    }

    /// Wait until nothing matches `css`.
    pub async fn wait_gone(&self, css: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_until(&format!("{css} gone"), timeout, || async {
            Ok(self.text(css).await?.is_none().then_some(()))
        })
        .await
    }
}

impl Browser {
    /// End the session (Chromium quits), then chromedriver.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client.clone().close().await?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: signalling the process group of the chromedriver we started.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

//! A real Prometheus server in a lab namespace, with its own config and
//! data directory in the lab's temp folder, asked through its HTTP API.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};

use crate::lab::{Host, Lab, netns_exec, run, wait_for};

/// Where Prometheus listens, inside its namespace.
const LISTEN: &str = "127.0.0.1:9090";

pub struct Prometheus {
    ns: String,
    pub log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus in `host`'s namespace, scraping `targets` every
    /// second, and waits until its API answers.
    pub fn start(lab: &mut Lab, host: &Host, targets: &[SocketAddr]) -> Result<Prometheus> {
        let dir = lab.file("prometheus");
        std::fs::create_dir_all(dir.join("data"))?;
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: lbfo\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )?;
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log)?;
        lab.spawn(
            netns_exec(&host.ns, "prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={LISTEN}"))
                .stdout(out.try_clone()?)
                .stderr(out),
        )?;
        let prometheus = Prometheus {
            ns: host.ns.clone(),
            log,
        };
        wait_for(Duration::from_secs(20), "Prometheus to answer", || {
            Ok(prometheus.get("/-/ready").is_ok())
        })
        .with_context(|| prometheus.log_text())?;
        Ok(prometheus)
    }

    fn get(&self, path: &str) -> Result<String> {
        let out = run(netns_exec(&self.ns, "curl")
            .args(["-sf", "--max-time", "2"])
            .arg(format!("http://{LISTEN}{path}")))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An instant query: each result's labels and value.
    pub fn query(&self, promql: &str) -> Result<Vec<(serde_json::Value, f64)>> {
        let out = run(netns_exec(&self.ns, "curl")
            .args(["-sf", "--max-time", "2", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("http://{LISTEN}/api/v1/query")))?;
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "Prometheus answered {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        if answer["status"] != "success" {
            bail!("query {promql:?} failed: {answer}");
        }
        answer["data"]["result"]
            .as_array()
            .context("a vector result")?
            .iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .context("a sample value")?
                    .parse::<f64>()?;
                Ok((r["metric"].clone(), value))
            })
            .collect()
    }

    /// The value of the series of `promql` whose `instance` is `instance`.
    pub fn value(&self, promql: &str, instance: &str) -> Result<Option<f64>> {
        Ok(self
            .query(promql)?
            .into_iter()
            .find(|(labels, _)| labels["instance"] == instance)
            .map(|(_, v)| v))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

//! The webhook sender: `reqwest` (the copy the S3 client builds), with short timeouts and no
//! redirects (a redirect could lead outside the hosts `callback_allow` lists).

use std::time::Duration;

use async_trait::async_trait;
use spool_ports::WebhookSender;

/// POSTs webhooks over HTTP(S).
pub struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    /// A sender that gives a receiver 5 s to accept the connection and 10 s to answer.
    pub fn new() -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { client })
    }
}

#[async_trait]
impl WebhookSender for HttpSender {
    async fn post(
        &self,
        url: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let mut request = self.client.post(url).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(answer) if answer.status().is_success() => Ok(()),
            Ok(answer) => Err(format!("the receiver answered {}", answer.status())),
            Err(e) => Err(format!("no answer from the receiver: {e}")),
        }
    }
}

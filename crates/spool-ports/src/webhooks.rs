//! The webhook port: POSTing a signed status to a client's URL.

use async_trait::async_trait;

/// Sends webhook requests. Implementations time out on their own (seconds, not minutes): a
/// receiver that hangs must not hold deliveries up.
#[async_trait]
pub trait WebhookSender: Send + Sync {
    /// POSTs `body` (JSON) to `url` with `headers`; `Ok` on a 2xx answer, else what happened
    /// (the status code, or why no answer came), for the delivery record.
    async fn post(
        &self,
        url: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<(), String>;
}

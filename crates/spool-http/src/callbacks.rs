//! Delivering completion webhooks: the final status, as the status call shows it, POSTed to
//! the URL the client gave, signed with HMAC-SHA256 (`Spool-Signature: t=<unix seconds>,
//! v1=<hex of HMAC-SHA256(callback_secret, "<t>.<body>")>`). Runs in every process; the core's
//! claims make each attempt once.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use spool_core::Spool;
use spool_domain::Principal;
use spool_ports::WebhookSender;
use tracing::{info, warn};

use crate::routes::Shape;

/// Attempts claimed at a time.
const BATCH: usize = 16;
/// The longest sleep between two looks (deliveries are also woken by every query's end).
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut padded = [0u8; BLOCK];
    if key.len() > BLOCK {
        padded[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        padded[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(padded.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(padded.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The `Spool-Signature` header of `body` sent at `unix_seconds`.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mut message = format!("{unix_seconds}.").into_bytes();
    message.extend_from_slice(body);
    let mac = hmac_sha256(secret.as_bytes(), &message);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_seconds},v1={hex}")
}

/// Makes one claimed attempt and records how it went.
async fn attempt_once(
    spool: &Spool,
    reader: &Principal,
    sender: &dyn WebhookSender,
    secret: &str,
    attempt: &spool_core::ClaimedCallback,
) {
    let id = attempt.job.id;
    let body = match spool.status(reader, id).await {
        Ok(status) => serde_json::json!({
            "code": "000",
            "data": Shape::V2.status_of(&status),
            "msg": "",
        })
        .to_string()
        .into_bytes(),
        Err(e) => {
            warn!(query_id = %id, error = %e, "reading the status for a webhook failed");
            return;
        }
    };
    let now = chrono::Utc::now().timestamp();
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("spool-signature".to_owned(), signature(secret, now, &body)),
        ("spool-query-id".to_owned(), id.to_string()),
        ("spool-attempt".to_owned(), attempt.attempt.to_string()),
    ];
    let outcome = sender.post(&attempt.url, headers, body).await;
    match &outcome {
        Ok(()) => info!(query_id = %id, attempt = attempt.attempt, "webhook delivered"),
        Err(e) => {
            warn!(query_id = %id, attempt = attempt.attempt, error = %e, "webhook not delivered; it will be retried");
        }
    }
    if let Err(e) = spool.record_callback(attempt, outcome).await {
        warn!(query_id = %id, error = %e, "recording a webhook attempt failed");
    }
}

/// Delivers due webhooks until the process ends.
pub async fn deliver(spool: Spool, sender: Arc<dyn WebhookSender>, secret: String) {
    let wakeup = spool.callbacks_wakeup();
    let reader = Principal::admin("spool-webhooks");
    loop {
        let claimed = match spool.claim_callbacks(BATCH).await {
            Ok(claimed) => claimed,
            Err(e) => {
                warn!(error = %e, "looking for due webhooks failed; retrying");
                Vec::new()
            }
        };
        // The batch's attempts at once: a receiver that takes its 10 s holds up no other.
        let sends = claimed
            .iter()
            .map(|attempt| attempt_once(&spool, &reader, sender.as_ref(), &secret, attempt));
        futures::future::join_all(sends).await;
        if claimed.len() == BATCH {
            continue;
        }
        let until_next = match spool.next_callback_at().await {
            Ok(Some(at)) => {
                let now = chrono::Utc::now().timestamp_millis();
                Duration::from_millis(u64::try_from(at.as_millis() - now).unwrap_or(0))
            }
            _ => LOOK_EVERY,
        };
        tokio::select! {
            () = wakeup.notified() => {}
            () = tokio::time::sleep(until_next.min(LOOK_EVERY)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(mac[..4], [0x60, 0xe4, 0x31, 0x59]);
    }

    #[test]
    fn the_signature_names_its_time() {
        assert!(signature("s", 1_700_000_000, b"{}").starts_with("t=1700000000,v1="));
    }
}

//! A fan-out of [`JobEvent`]s to every subscriber in this process, for job store adapters.

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use crate::JobEvent;

/// Events a store has published but a slow subscriber has not read yet, at most; past it the
/// subscriber skips ahead (events are hints, see [`crate::JobStore::events`]).
const BACKLOG: usize = 1024;

/// Hands each published event to every current subscriber.
#[derive(Debug, Clone)]
pub struct EventHub {
    sender: broadcast::Sender<JobEvent>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    /// A hub with no subscribers.
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
        }
    }

    /// Hands `event` to every subscriber; a hub without subscribers drops it.
    pub fn publish(&self, event: JobEvent) {
        let _ = self.sender.send(event);
    }

    /// Returns the events published from now on; ends when the hub is dropped.
    pub fn subscribe(&self) -> BoxStream<'static, JobEvent> {
        futures::stream::unfold(self.sender.subscribe(), |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(event) => return Some((event, receiver)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_sees_what_was_published_after_it_subscribed() {
        let hub = EventHub::new();
        hub.publish(JobEvent::Queued);
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        hub.publish(JobEvent::Queued);
        assert_eq!(a.next().await, Some(JobEvent::Queued));
        assert_eq!(b.next().await, Some(JobEvent::Queued));
        drop(hub);
        assert_eq!(a.next().await, None);
    }
}

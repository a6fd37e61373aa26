//! A credential's mailbox: a bounded queue of messages for its flight task.
//!
//! Not a tokio `mpsc` channel: each of those allocates a block of 32 message slots
//! (and its semaphore and wakers) up front, about 1.7 KB, which at 20,000 credentials
//! is 30 MB of mailboxes that are nearly always empty. This one costs a few dozen
//! bytes until a message arrives.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use super::flight::Msg;

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// `capacity` messages are waiting already.
    Full,
    /// The flight task has ended (the server is shutting down, or the app was removed).
    Closed,
}

pub struct Mailbox {
    queue: Mutex<VecDeque<Msg>>,
    /// Wakes the task; a wake-up sent while it is not waiting is kept for its next
    /// wait (Notify's permit), so none is lost between its check and its wait.
    arrived: Notify,
    capacity: usize,
    /// Set once the task has taken the receiving end: there is one task per mailbox.
    taken: AtomicBool,
    closed: AtomicBool,
}

impl Mailbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
            capacity,
            taken: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues `msg` unless the mailbox is full or closed.
    ///
    /// # Errors
    /// See [`SendError`].
    pub fn try_send(&self, msg: Msg) -> Result<(), SendError> {
        {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock, so that no message is queued after `close`
            // drained the queue.
            if self.closed.load(Ordering::SeqCst) {
                return Err(SendError::Closed);
            }
            if queue.len() >= self.capacity {
                return Err(SendError::Full);
            }
            queue.push_back(msg);
        }
        self.arrived.notify_one();
        Ok(())
    }

    /// Makes the caller the mailbox's one reader; false if there is one already.
    pub fn take(&self) -> bool {
        !self.taken.swap(true, Ordering::SeqCst)
    }

    /// The next message, waiting for one. For the reader only.
    pub async fn recv(&self) -> Msg {
        loop {
            if let Some(msg) = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return msg;
            }
            self.arrived.notified().await;
        }
    }

    /// Refuses every later message, and hands back those still queued (their senders
    /// learn the task ended when the replies they wait for are dropped).
    pub fn close(&self) -> Vec<Msg> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::SeqCst);
        queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Msg {
        Msg::Stored(None)
    }

    #[tokio::test]
    async fn messages_come_in_order_up_to_the_capacity_and_none_after_close() {
        let mailbox = Mailbox::new(2);
        assert!(mailbox.take());
        assert!(!mailbox.take(), "one reader");
        mailbox.try_send(stored()).unwrap();
        mailbox.try_send(stored()).unwrap();
        assert_eq!(mailbox.try_send(stored()), Err(SendError::Full));
        assert!(matches!(mailbox.recv().await, Msg::Stored(None)));
        mailbox.try_send(stored()).unwrap();
        assert_eq!(mailbox.close().len(), 2);
        assert_eq!(mailbox.try_send(stored()), Err(SendError::Closed));
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken_by_a_send() {
        let mailbox = std::sync::Arc::new(Mailbox::new(4));
        let reader = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move { mailbox.recv().await })
        };
        tokio::task::yield_now().await;
        mailbox.try_send(stored()).unwrap();
        assert!(matches!(reader.await.unwrap(), Msg::Stored(None)));
    }
}

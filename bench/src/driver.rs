//! What every driver offers the runner: create what a workload needs, then producers and
//! consumers that are real clients of their system. Futures are boxed so drivers can be chosen
//! at run time.

use std::sync::Arc;

use futures_util::future::BoxFuture;

/// A driver call's future.
pub type BoxFut<'a, T> = BoxFuture<'a, anyhow::Result<T>>;

/// Called by a consumer with each message's payload once it has it (for queues, after the
/// message was acknowledged). Returns nothing: the runner counts and checks.
pub type Deliver = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// How a subscription reads (from the workload's pattern).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Every subscription sees every message; consumers of one subscription share it.
    Stream,
    /// Competing consumers with an acknowledgement per message and this prefetch.
    Queue { prefetch: u16 },
    /// Requests answered by servers (rpc workloads).
    Rpc,
}

/// One system reached through one client library.
pub trait Driver: Send + Sync {
    /// The driver's name: kafka, amqp, http, nats.
    fn name(&self) -> &'static str;
    /// The durability this driver asked for, printed beside every figure.
    fn durability(&self) -> String;
    /// Creates `topic` with `partitions` and, for each subscription, whatever it reads from.
    fn prepare<'a>(
        &'a self,
        topic: &'a str,
        partitions: u32,
        subscriptions: &'a [String],
        reading: Reading,
    ) -> BoxFut<'a, ()>;
    /// A producer writing to `topic`.
    fn producer<'a>(&'a self, topic: &'a str) -> BoxFut<'a, Box<dyn Producer>>;
    /// A consumer of `subscription` on `topic`, handing every message to `deliver`.
    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        subscription: &'a str,
        reading: Reading,
        deliver: Deliver,
    ) -> BoxFut<'a, Box<dyn Consumer>>;
    /// Deletes what `prepare` created.
    fn cleanup<'a>(&'a self, topic: &'a str, subscriptions: &'a [String]) -> BoxFut<'a, ()>;
    /// A client sending requests on `topic` and awaiting replies (rpc workloads).
    fn rpc_client<'a>(&'a self, _topic: &'a str) -> BoxFut<'a, Box<dyn RpcClient>> {
        let name = self.name();
        Box::pin(async move { anyhow::bail!("the {name} driver has no request/reply") })
    }
    /// A server answering requests on `topic` with their own payload (rpc workloads);
    /// `deliver` sees each request.
    fn rpc_server<'a>(
        &'a self,
        _topic: &'a str,
        _deliver: Deliver,
    ) -> BoxFut<'a, Box<dyn Consumer>> {
        let name = self.name();
        Box::pin(async move { anyhow::bail!("the {name} driver has no request/reply") })
    }
}

/// Sends messages to one topic.
pub trait Producer: Send + Sync {
    /// Sends one message; the future completes when the system confirmed it with the
    /// driver's durability.
    fn send(&self, key: Option<Vec<u8>>, payload: Vec<u8>) -> BoxFut<'static, ()>;
}

/// A running consumer; it stops and lets go of its connection when closed.
pub trait Consumer: Send {
    fn close(self: Box<Self>) -> BoxFut<'static, ()>;
}

/// Sends requests and awaits their replies.
pub trait RpcClient: Send + Sync {
    /// Sends `payload` as a request; completes with the reply's payload.
    fn call(&self, payload: Vec<u8>) -> BoxFut<'static, Vec<u8>>;
}

/// A consumer that is a spawned task, stopped through a channel.
pub struct TaskConsumer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TaskConsumer {
    /// Spawns `body`, which must return soon after its receiver reads `true`.
    pub fn spawn<F, Fut>(body: F) -> TaskConsumer
    where
        F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        TaskConsumer {
            stop,
            task: tokio::spawn(body(stopped)),
        }
    }
}

impl Consumer for TaskConsumer {
    fn close(self: Box<Self>) -> BoxFut<'static, ()> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            self.task.await??;
            Ok(())
        })
    }
}

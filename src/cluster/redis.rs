//! The Redis engine: not built yet (config validation refuses `cluster.engine = "redis"`).

use bytes::Bytes;

use super::{Broker, Ctx, Fetched, InboundTx, envelope};
use crate::mesh::Published;

pub(crate) struct Redis;

impl Broker for Redis {
    const SERIAL_PER_TOPIC: bool = false;
    async fn connect(_: &Ctx, _: InboundTx) -> Redis {
        Redis
    }
    async fn publish(&self, _: envelope::Envelope, _: Option<&str>) -> Result<Published, String> {
        Err("the redis engine is not built yet".into())
    }
    async fn fetch(&self, _: &str, _: usize) -> Result<Fetched, String> {
        Err("the redis engine is not built yet".into())
    }
    async fn live_subscribe(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn live_unsubscribe(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn raw_subscribe(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn raw_unsubscribe(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn raw_publish(&self, _: &str, _: Bytes) -> Result<(), String> {
        Ok(())
    }
    async fn flush(&self) -> Result<(), String> {
        Ok(())
    }
}

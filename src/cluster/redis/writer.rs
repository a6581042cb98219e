//! The publishing side: one script does idem check, `HINCRBY`, epoch, patch, `XADD` and
//! `PUBLISH` atomically; a single writer task sends the calls in batches of up to `BATCH_MAX`
//! in `MULTI`/`EXEC`, in order, and reloads the script (resending in order) after a restart.

use redis::{ErrorKind, RedisResult, ServerErrorKind, aio::ConnectionManager};
use tokio::sync::mpsc;

use super::*;

/// KEYS[1] meta hash, KEYS[2] history stream, KEYS[3] idempotency key (optional).
/// ARGV[1] envelope wire form (seq, epoch 0), ARGV[2] a new epoch (used if the topic has none),
/// ARGV[3] / ARGV[4] offsets of seq / epoch from the end of ARGV[1], ARGV[5] history MAXLEN,
/// ARGV[6] live channel, ARGV[7] idempotency window (s).
/// Returns {seq, epoch, duplicate (0/1)}. Numbers are Lua doubles: seq and epoch stay below
/// 2^53 (epochs are drawn below 2^52), so they are exact.
pub(crate) const PUBLISH_LUA: &str = r#"
if KEYS[3] then
  local d = redis.call('GET', KEYS[3])
  if d then
    local s, e = string.match(d, '^(%d+):(%d+)$')
    if s then return {tonumber(s), tonumber(e), 1} end
  end
end
local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('DEL', KEYS[2])
end
epoch = tonumber(epoch)
local env = ARGV[1]
local n = #env
local function patch(s, off, v)
  local at = n - off
  return string.sub(s, 1, at) .. struct.pack('<I8', v) .. string.sub(s, at + 9)
end
env = patch(env, tonumber(ARGV[3]), seq)
env = patch(env, tonumber(ARGV[4]), epoch)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], string.format('%d-1', seq), 'm', env)
redis.call('PUBLISH', ARGV[6], env)
if KEYS[3] then
  redis.call('SET', KEYS[3], string.format('%d:%d', seq, epoch), 'NX', 'EX', ARGV[7])
end
return {seq, epoch, 0}
"#;

/// Script calls per `MULTI`/`EXEC` batch (Redis runs a batch without interleaving others).
const BATCH_MAX: usize = 256;

/// A publish waiting for the writer task.
pub(super) struct Job {
    pub(super) topic: String,
    pub(super) wire: Vec<u8>,
    pub(super) idem: Option<String>,
    /// The node's candidate epoch, in case the topic has none.
    pub(super) epoch: u64,
    pub(super) reply: Reply,
}

/// The writer: batches of script calls, one `MULTI`/`EXEC` at a time, in the order given.
pub(super) async fn writer_task(
    mut conn: ConnectionManager,
    script: redis::Script,
    keys: (String, usize, usize, usize, u64),
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    let (prefix, seq_off, epoch_off, maxlen, idem_s) = keys;
    let mut batch: Vec<Job> = Vec::new();
    while rx.recv_many(&mut batch, BATCH_MAX).await > 0 {
        // A caller that gave up (timeout) was told the publish failed: do not send it.
        batch.retain(|j| !j.reply.is_closed());
        let mut load_tried = false;
        while !batch.is_empty() {
            let mut pipe = redis::pipe();
            pipe.atomic().ignore_errors();
            for j in &batch {
                let meta = format!("{prefix}:m:{{{}}}", j.topic);
                let hist = format!("{prefix}:h:{{{}}}", j.topic);
                let cmd = pipe.cmd("EVALSHA").arg(script.get_hash());
                match &j.idem {
                    Some(k) => {
                        let idem = format!("{prefix}:i:{{{}}}:{k}", j.topic);
                        cmd.arg(3).arg(meta).arg(hist).arg(idem);
                    }
                    None => {
                        cmd.arg(2).arg(meta).arg(hist);
                    }
                }
                cmd.arg(&j.wire[..])
                    .arg(j.epoch)
                    .arg(seq_off)
                    .arg(epoch_off)
                    .arg(maxlen)
                    .arg(format!("{prefix}.live.{}", j.topic))
                    .arg(idem_s);
            }
            let res: RedisResult<Vec<RedisResult<(u64, u64, u64)>>> =
                pipe.query_async(&mut conn).await;
            let results = match res {
                Ok(r) if r.len() == batch.len() => r,
                Ok(r) => {
                    let e = BrokerError::invalid(format!(
                        "{} replies to {} publishes",
                        r.len(),
                        batch.len()
                    ));
                    for j in batch.drain(..) {
                        let _ = j.reply.send(Err(e.clone()));
                    }
                    break;
                }
                Err(e) => {
                    let e = err("redis publish", e);
                    for j in batch.drain(..) {
                        let _ = j.reply.send(Err(e.clone()));
                    }
                    break;
                }
            };
            // Answer every call but those the server lacked the script for; those (all of
            // the batch, under MULTI) are sent again once the script is loaded.
            let mut retry = Vec::new();
            for (j, r) in batch.drain(..).zip(results) {
                match r {
                    Ok((seq, epoch, dup)) => {
                        let _ = j.reply.send(Ok(Published {
                            seq,
                            epoch,
                            duplicate: dup != 0,
                        }));
                    }
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        retry.push(j);
                    }
                    Err(e) => {
                        let _ = j.reply.send(Err(err("redis publish script", e)));
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            if load_tried {
                for j in retry {
                    let _ = j.reply.send(Err(BrokerError::failed(
                        "redis: script missing after SCRIPT LOAD",
                    )));
                }
                break;
            }
            load_tried = true;
            if let Err(e) = script.load_async(&mut conn).await {
                let e = err("redis SCRIPT LOAD", e);
                for j in retry {
                    let _ = j.reply.send(Err(e.clone()));
                }
                break;
            }
            batch = retry;
        }
    }
}

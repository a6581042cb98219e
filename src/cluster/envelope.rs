//! The envelope a message travels in between nodes, through the broker.
//!
//! Wire form: one tag byte ([`TAG`], never the first byte of JSON text) followed by an rkyv
//! archive of [`Envelope`]. rkyv is built with `unaligned`, so a receiving node validates the
//! archive in place (bytecheck: the broker is a network peer too) and reads the topic and the
//! payload straight out of the broker's buffer: the payload is neither copied nor parsed until
//! the topic's owner shard encodes the frame once.
//!
//! `seq` and `epoch` are plain little-endian `u64`s at fixed offsets from the end of the
//! archive (rkyv writes the root object last): the Redis engine's script fills them in after
//! it assigns the sequence number, atomically with the append to history and the publish
//! ([`seq_epoch_offsets`]).

use bytes::Bytes;

/// First byte of every tickcast envelope (a JSON text never starts with it).
pub const TAG: u8 = 0xC1;

/// `flags`: a user message (`POST /v1/send`): delivered to the user's connections too.
pub const FLAG_TO_USER: u32 = 1;

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Envelope {
    /// The topic's sequence number: the same on every node.
    pub seq: u64,
    /// The topic's epoch: the same on every node; a new one when the broker lost the topic.
    pub epoch: u64,
    /// Microseconds since the Unix epoch on the node that published it.
    pub ts_us: u64,
    pub flags: u32,
    /// The node the message entered on.
    pub origin: String,
    pub topic: String,
    /// One JSON value, verbatim (as validated by the node it entered on).
    pub data: Vec<u8>,
}

/// An envelope read out of a broker buffer: the payload is a slice of that buffer.
#[derive(Debug, Clone)]
pub struct Received {
    pub seq: u64,
    pub epoch: u64,
    pub ts_us: u64,
    pub flags: u32,
    pub topic: Box<str>,
    pub data: Bytes,
}

impl Envelope {
    /// The wire form: [`TAG`] then the archive.
    pub fn encode(&self) -> Vec<u8> {
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("serializing plain owned data into a Vec cannot fail");
        let mut out = Vec::with_capacity(1 + archive.len());
        out.push(TAG);
        out.extend_from_slice(&archive);
        out
    }
}

/// Why bytes from the broker are not a tickcast envelope (hostile or corrupt input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    /// The first byte is not [`TAG`].
    Tag(u8),
    /// The archive does not validate.
    Archive(String),
    /// The topic inside is not a valid topic.
    Topic(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty message"),
            DecodeError::Tag(tag) => write!(f, "not a tickcast envelope (first byte {tag:#04x})"),
            DecodeError::Archive(e) => write!(f, "invalid envelope: {e}"),
            DecodeError::Topic(t) => write!(f, "invalid topic {t:?} in envelope"),
        }
    }
}

impl From<DecodeError> for super::BrokerError {
    fn from(e: DecodeError) -> Self {
        super::BrokerError::invalid(e.to_string())
    }
}

/// Validates and reads `buf` (the wire form). Errors name what is wrong; nothing panics on
/// hostile input.
pub fn decode(buf: &Bytes) -> Result<Received, DecodeError> {
    let Some((&tag, body)) = buf.split_first() else {
        return Err(DecodeError::Empty);
    };
    if tag != TAG {
        return Err(DecodeError::Tag(tag));
    }
    let env = rkyv::access::<ArchivedEnvelope, rkyv::rancor::Error>(body)
        .map_err(|e| DecodeError::Archive(e.to_string()))?;
    let topic = env.topic.as_str();
    if crate::pubsub::topic::validate_topic(topic).is_err() {
        return Err(DecodeError::Topic(topic.into()));
    }
    let data = env.data.as_slice();
    Ok(Received {
        seq: env.seq.to_native(),
        epoch: env.epoch.to_native(),
        ts_us: env.ts_us.to_native(),
        flags: env.flags.to_native(),
        topic: topic.into(),
        // A sub-slice of `buf`: no copy.
        data: buf.slice_ref(data),
    })
}

/// Byte offsets of `seq` and `epoch` counted back from the end of the wire form. Found by
/// encoding sentinels rather than assumed from rkyv's layout, and checked by a test.
pub fn seq_epoch_offsets() -> (usize, usize) {
    const SEQ: u64 = 0x5e9_5e9_5e9_5e9_5e9;
    const EPOCH: u64 = 0xe90_c4e9_0c4e_90c4;
    let probe = Envelope {
        seq: SEQ,
        epoch: EPOCH,
        ts_us: 0,
        flags: 0,
        origin: String::new(),
        topic: "t".into(),
        data: b"0".to_vec(),
    }
    .encode();
    let find = |v: u64| {
        let pat = v.to_le_bytes();
        let at = probe
            .windows(8)
            .rposition(|w| w == pat)
            .expect("the sentinel is in the archive");
        probe.len() - at
    };
    (find(SEQ), find(EPOCH))
}

/// Epochs are drawn below 2^52 so that Redis' Lua (whose numbers are doubles) holds them
/// exactly. Never 0: 0 means "no epoch yet".
pub fn new_epoch() -> u64 {
    fastrand::u64(1..(1u64 << 52))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            seq: 7,
            epoch: 0xabc,
            ts_us: 1_795_300_000_000_000,
            flags: FLAG_TO_USER,
            origin: "n-1".into(),
            topic: "trades.BTCUSDT".into(),
            data: br#"{"p":"1.5"}"#.to_vec(),
        }
    }

    #[test]
    fn round_trip_reads_the_payload_in_place() {
        let wire = Bytes::from(sample().encode());
        let got = decode(&wire).unwrap();
        assert_eq!((got.seq, got.epoch, got.flags), (7, 0xabc, FLAG_TO_USER));
        assert_eq!(&*got.topic, "trades.BTCUSDT");
        assert_eq!(&got.data[..], br#"{"p":"1.5"}"#);
        // The payload points into the wire buffer.
        let range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        assert!(range.contains(&(got.data.as_ptr() as usize)));
    }

    #[test]
    fn seq_and_epoch_can_be_patched_at_their_offsets() {
        let (seq_off, epoch_off) = seq_epoch_offsets();
        for data in [&b"1"[..], &[b'7'; 1000][..]] {
            let mut env = sample();
            env.data = data.to_vec();
            let mut wire = env.encode();
            let n = wire.len();
            wire[n - seq_off..n - seq_off + 8].copy_from_slice(&99u64.to_le_bytes());
            wire[n - epoch_off..n - epoch_off + 8].copy_from_slice(&5u64.to_le_bytes());
            let got = decode(&Bytes::from(wire)).unwrap();
            assert_eq!((got.seq, got.epoch), (99, 5));
            assert_eq!(&got.data[..], data);
        }
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        assert!(decode(&Bytes::new()).is_err());
        assert!(decode(&Bytes::from_static(b"{\"x\":1}")).is_err());
        let wire = sample().encode();
        for cut in 0..wire.len() {
            let _ = decode(&Bytes::copy_from_slice(&wire[..cut]));
        }
        let mut bad = sample();
        bad.topic = "no spaces allowed".into();
        assert!(decode(&Bytes::from(bad.encode())).is_err());
        // Flipped bytes: an error or some valid envelope, never a panic.
        for i in 1..wire.len() {
            let mut w = wire.clone();
            w[i] ^= 0xff;
            let _ = decode(&Bytes::from(w));
        }
    }
}

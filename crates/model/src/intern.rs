//! Shared texts for decoded records. Every record of a batch names the same sensor, and a
//! batch holds one asset's records, so decoding keeps the last text of each kind per thread
//! and hands out that one allocation again while the text repeats: one allocation per batch
//! instead of one per record, and consumers that compare ids by address find them equal.

use serde::de::{self, Visitor};
use serde::Deserializer;
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

thread_local! {
    static SENSOR: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
    static ASSET: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

fn shared(
    cache: &'static std::thread::LocalKey<RefCell<Option<Arc<str>>>>,
    text: &str,
) -> Arc<str> {
    cache.with(|c| {
        let mut c = c.borrow_mut();
        match c.as_ref() {
            Some(last) if **last == *text => Arc::clone(last),
            _ => {
                let new: Arc<str> = Arc::from(text);
                *c = Some(Arc::clone(&new));
                new
            }
        }
    })
}

/// A sensor id from its UTF-8 bytes, shared with the previous one decoded on this thread
/// when equal (what the serde path does, for hand-written decoders of the same records);
/// `None` if the bytes are not UTF-8. Bytes equal to the previous id are not validated again.
pub fn sensor_id_utf8(bytes: &[u8]) -> Option<Arc<str>> {
    shared_utf8(&SENSOR, bytes)
}

/// An asset id from its UTF-8 bytes, as [`sensor_id_utf8`].
pub fn asset_id_utf8(bytes: &[u8]) -> Option<Arc<str>> {
    shared_utf8(&ASSET, bytes)
}

fn shared_utf8(
    cache: &'static std::thread::LocalKey<RefCell<Option<Arc<str>>>>,
    bytes: &[u8],
) -> Option<Arc<str>> {
    cache.with(|c| {
        let mut c = c.borrow_mut();
        match c.as_ref() {
            Some(last) if last.as_bytes() == bytes => Some(Arc::clone(last)),
            _ => {
                let new: Arc<str> = Arc::from(std::str::from_utf8(bytes).ok()?);
                *c = Some(Arc::clone(&new));
                Some(new)
            }
        }
    })
}

/// Reads a text without allocating one of its own (when the format can lend it).
struct Text(&'static std::thread::LocalKey<RefCell<Option<Arc<str>>>>);

impl Visitor<'_> for Text {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Arc<str>, E> {
        Ok(shared(self.0, v))
    }
}

/// A sensor id, shared with the previous record's when equal.
pub(crate) fn sensor<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    d.deserialize_str(Text(&SENSOR))
}

/// An asset id, shared with the previous record's when equal.
pub(crate) fn asset<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    d.deserialize_str(Text(&ASSET))
}

#[cfg(test)]
mod tests {
    use crate::{AssetId, AssetMatch, Side};

    #[test]
    fn equal_texts_decode_to_one_allocation_and_others_to_their_own() {
        let m = |id: &str| AssetMatch {
            id: AssetId(id.into()),
            side: Side::Resp,
        };
        let json = serde_json::to_string(&[m("grid"), m("grid"), m("water")]).unwrap();
        let back: Vec<AssetMatch> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [m("grid"), m("grid"), m("water")]);
        assert!(std::sync::Arc::ptr_eq(&back[0].id.0, &back[1].id.0));
        assert!(!std::sync::Arc::ptr_eq(&back[1].id.0, &back[2].id.0));
        // Escaped text (not borrowable from the input) decodes the same.
        let back: AssetId = serde_json::from_str(r#""gr\u0069d""#).unwrap();
        assert_eq!(back.as_str(), "grid");
    }
}

//! Hits the router passes on without decoding them.
//!
//! A search answer is mostly hits: ids, titles, urls and snippets that the
//! router only moves from a shard's answer into the caller's. Decoding them
//! into `Hit` structs (a `String` per field, UTF-8 checks) and encoding them
//! again was the largest single item in the router's instruction profile
//! (callgrind, router benchmark). Here a hit stays the bytes the index-node
//! sent; only what merging needs is read out of them: score, shard and id
//! (as a slice of the same buffer, no copy). A boosted hit is re-encoded
//! with its new score; every other hit goes out byte for byte.
//!
//! Both `ShardSearchResponse` and `SearchResponse` carry `repeated Hit hits
//! = 1`, so one wrapper, [`WithRawHits`], reads and writes either: field 1
//! as raw hits, every other field through the generated message.
//!
//! A lone shard's answer needs none of that: with nothing to merge and no
//! boosts, the node's order is the answer's (`ShardSearchResponse` promises
//! the router's tie-break), so [`Relayed`] hits are kept as bytes, unread.
//!
//! What the router no longer checks: that a hit's strings are valid UTF-8,
//! and for relayed hits anything inside a hit but its length. A hit the
//! router reads and cannot parse fails that attempt (another replica is
//! asked); a broken relayed hit reaches the caller, whose decoder refuses
//! it. Index-nodes are tandem's own processes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{
    bytes as bytes_field, decode_key, float, skip_field, uint32, DecodeContext, WireType,
};
use prost::{DecodeError, Message};

/// `Hit.id`, `Hit.score`, `Hit.shard` (see `search.proto`).
const ID: u32 = 1;
const SCORE: u32 = 2;
const SHARD: u32 = 6;
/// `hits` in `ShardSearchResponse` and `SearchResponse`.
const HITS: u32 = 1;

/// One encoded `Hit` and the fields merging reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawHit {
    encoded: Bytes,
    id: Bytes,
    score: f32,
    shard: u32,
}

impl RawHit {
    /// A hit passed on unread (see [`Relayed`]): its merge fields are not
    /// known, so it may only be written out, never merged or re-scored.
    fn relayed(encoded: Bytes) -> Self {
        RawHit {
            encoded,
            ..RawHit::default()
        }
    }

    /// Reads the merge fields of one encoded `Hit`.
    pub fn parse(encoded: Bytes) -> Result<Self, DecodeError> {
        let mut hit = RawHit {
            encoded: encoded.clone(),
            ..RawHit::default()
        };
        let mut buf = encoded;
        let ctx = DecodeContext::default();
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            match tag {
                ID => bytes_field::merge(wire_type, &mut hit.id, &mut buf, ctx.clone())?,
                SCORE => float::merge(wire_type, &mut hit.score, &mut buf, ctx.clone())?,
                SHARD => uint32::merge(wire_type, &mut hit.shard, &mut buf, ctx.clone())?,
                _ => skip_field(wire_type, tag, &mut buf, ctx.clone())?,
            }
        }
        Ok(hit)
    }

    /// The document id (UTF-8 as the index-node sent it).
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// The relevance score.
    pub fn score(&self) -> f32 {
        self.score
    }

    /// The shard the hit came from.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Sets a new score: the hit is re-encoded without its old score field
    /// and with the new one at the end.
    pub fn rescore(&mut self, score: f32) {
        let mut out = BytesMut::with_capacity(self.encoded.len() + 5);
        let mut buf = self.encoded.clone();
        while buf.has_remaining() {
            let start = self.encoded.len() - buf.remaining();
            // The bytes were parsed once already; they cannot fail now.
            let Ok((tag, wire_type)) = decode_key(&mut buf) else {
                break;
            };
            if skip_field(wire_type, tag, &mut buf, DecodeContext::default()).is_err() {
                break;
            }
            if tag != SCORE {
                let end = self.encoded.len() - buf.remaining();
                out.put_slice(&self.encoded[start..end]);
            }
        }
        float::encode(SCORE, &score, &mut out);
        self.encoded = out.freeze();
        self.score = score;
    }
}

/// A [`WithRawHits`] whose hits stay unread bytes: only for an answer
/// passed on as it came (one shard, no boosts).
pub type Relayed<M> = WithRawHits<M, false>;

/// A message `M` whose field 1 is `repeated Hit hits`, with those hits kept
/// encoded in `hits` (and `head.hits` left empty). With `READ` their merge
/// fields are read when decoding; without, they are [`Relayed`] unread.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WithRawHits<M, const READ: bool = true> {
    /// Every field but the hits.
    pub head: M,
    /// The hits, in the order they were read or are to be written.
    pub hits: Vec<RawHit>,
}

impl<M: Message + Default, const READ: bool> Message for WithRawHits<M, READ> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for hit in &self.hits {
            bytes_field::encode(HITS, &hit.encoded, buf);
        }
        self.head.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != HITS {
            return self.head.merge_field(tag, wire_type, buf, ctx);
        }
        let mut encoded = Bytes::new();
        bytes_field::merge(wire_type, &mut encoded, buf, ctx)?;
        self.hits.push(if READ {
            RawHit::parse(encoded)?
        } else {
            RawHit::relayed(encoded)
        });
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.head.encoded_len()
            + self
                .hits
                .iter()
                .map(|hit| bytes_field::encoded_len(HITS, &hit.encoded))
                .sum::<usize>()
    }

    fn clear(&mut self) {
        self.head.clear();
        self.hits.clear();
    }
}

#[cfg(test)]
mod tests {
    use tandem_proto::v1::{Hit, Route, SearchResponse, ShardSearchResponse};

    use super::*;

    fn hit(id: &str, score: f32, shard: u32) -> Hit {
        Hit {
            id: id.into(),
            score,
            title: format!("title of {id}"),
            url: format!("https://example.com/{id}"),
            snippet: "a snippet with <b>marks</b> and ünïcödé".into(),
            shard,
        }
    }

    #[test]
    fn raw_hits_read_what_the_generated_code_writes_and_back() {
        let typed = ShardSearchResponse {
            hits: vec![hit("a", 2.5, 0), hit("b", 1.0, 3), Hit::default()],
            total_hits: 42,
            applied_seq: 7,
            node: "idx-1".into(),
        };
        let raw = WithRawHits::<ShardSearchResponse>::decode(typed.encode_to_vec().as_slice())
            .expect("decodes");
        assert!(raw.head.hits.is_empty());
        assert_eq!(raw.head.total_hits, 42);
        assert_eq!(raw.head.node, "idx-1");
        let read: Vec<(&[u8], f32, u32)> = raw
            .hits
            .iter()
            .map(|h| (h.id(), h.score(), h.shard()))
            .collect();
        assert_eq!(
            read,
            vec![(&b"a"[..], 2.5, 0), (&b"b"[..], 1.0, 3), (&b""[..], 0.0, 0)]
        );

        let again = raw.encode_to_vec();
        assert_eq!(again.len(), raw.encoded_len());
        assert_eq!(
            ShardSearchResponse::decode(again.as_slice()).expect("decodes"),
            typed
        );
    }

    #[test]
    fn an_answer_built_from_raw_hits_decodes_as_the_public_message() {
        let shard = ShardSearchResponse {
            hits: vec![hit("x", 3.0, 1), hit("y", 0.5, 1)],
            ..Default::default()
        };
        let mut raw = WithRawHits::<ShardSearchResponse>::decode(shard.encode_to_vec().as_slice())
            .expect("decodes")
            .hits;
        raw[1].rescore(4.0);
        let answer: WithRawHits<SearchResponse> = WithRawHits {
            head: SearchResponse {
                total_hits: 2,
                route: Some(Route {
                    served_region: "r1".into(),
                    ..Default::default()
                }),
                degraded: vec!["model".into()],
                took_micros: 9,
                ..Default::default()
            },
            hits: raw,
        };
        let bytes = answer.encode_to_vec();
        assert_eq!(bytes.len(), answer.encoded_len());
        let public = SearchResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(public.hits, vec![hit("x", 3.0, 1), hit("y", 4.0, 1)]);
        assert_eq!(public.total_hits, 2);
        assert_eq!(public.degraded, vec!["model".to_string()]);
        assert_eq!(public.took_micros, 9);
        assert_eq!(public.route.expect("route").served_region, "r1");
    }

    #[test]
    fn relayed_hits_are_not_read_and_go_out_byte_for_byte() {
        let shard = ShardSearchResponse {
            hits: vec![hit("x", 3.0, 1), hit("y", 0.5, 1)],
            total_hits: 7,
            applied_seq: 3,
            node: "idx-1".into(),
        };
        let relayed = Relayed::<ShardSearchResponse>::decode(shard.encode_to_vec().as_slice())
            .expect("decodes");
        assert_eq!(relayed.head.total_hits, 7);
        assert!(
            relayed
                .hits
                .iter()
                .all(|h| h.id().is_empty() && h.score() == 0.0),
            "merge fields are not read"
        );
        let answer: WithRawHits<SearchResponse> = WithRawHits {
            head: SearchResponse {
                total_hits: 7,
                ..Default::default()
            },
            hits: relayed.hits,
        };
        let public = SearchResponse::decode(answer.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(public.hits, shard.hits);
        // A hit's length prefix is still checked.
        assert!(Relayed::<SearchResponse>::decode(&[0x0a, 10, 1, 2][..]).is_err());
    }

    #[test]
    fn broken_hits_are_decode_errors_not_panics() {
        // Field 1 (hits) claiming 10 bytes where 2 follow; field 1 as a
        // varint; a hit whose id is a varint; a hit with a truncated score.
        for bytes in [
            &[0x0a, 10, 1, 2][..],
            &[0x08, 1],
            &[0x0a, 2, 0x08, 1],
            &[0x0a, 3, 0x15, 0, 0],
        ] {
            assert!(
                WithRawHits::<SearchResponse>::decode(bytes).is_err(),
                "{bytes:?}"
            );
        }
    }
}

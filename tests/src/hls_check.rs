//! An RFC 8216 conformance check of our own for media playlists: what one
//! playlist must satisfy, and what must hold between successive fetches of
//! the same playlist (a live playlist's life).

/// One media playlist as the check reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// `EXT-X-TARGETDURATION`.
    pub target: u64,
    /// `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` (0 when absent).
    pub discontinuity_sequence: u64,
    /// The segments in order.
    pub segments: Vec<Segment>,
}

/// One listed segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Its media sequence number.
    pub number: u64,
    /// Its discontinuity sequence number.
    pub disc: u64,
    /// `EXTINF` duration, seconds.
    pub duration: f64,
    /// `EXT-X-PROGRAM-DATE-TIME`, µs since the epoch, if given.
    pub pdt_micros: Option<i64>,
    /// Its URI, without query.
    pub uri: String,
}

/// Parses and checks one media playlist: the tags a live playlist needs,
/// every `EXTINF` (rounded) at most the target duration (§4.3.3.1), PDT
/// continuous within a discontinuity (each segment's date is the previous
/// one's plus its duration, within 5 ms: PDT is printed to the millisecond).
pub fn check_media(text: &str) -> Result<MediaPlaylist, String> {
    let p = parse_media(text)?;
    for w in p.segments.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.disc == b.disc {
            if let (Some(pa), Some(pb)) = (a.pdt_micros, b.pdt_micros) {
                let expected = pa + (a.duration * 1e6).round() as i64;
                if (pb - expected).abs() > 5_000 {
                    return Err(format!(
                        "PDT jumps by {} ms between segments {} and {} (no discontinuity)",
                        (pb - expected) / 1000,
                        a.number,
                        b.number
                    ));
                }
            }
        }
    }
    Ok(p)
}

/// [`check_media`] without the PDT continuity: for audio a source sent
/// faster than real time, whose dates are compressed to its arrival by
/// design (`buffer/rewind.rs`).
pub fn parse_media(text: &str) -> Result<MediaPlaylist, String> {
    let mut lines = text.lines();
    if lines.next() != Some("#EXTM3U") {
        return Err("does not start with #EXTM3U".into());
    }
    let (mut target, mut media_sequence, mut disc_sequence) = (None, 0u64, 0u64);
    let mut segments = Vec::new();
    let (mut duration, mut pdt, mut disc_pending) = (None, None, false);
    for line in text.lines().skip(1) {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = Some(
                v.parse::<u64>()
                    .map_err(|e| format!("TARGETDURATION {v}: {e}"))?,
            );
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            media_sequence = v.parse().map_err(|e| format!("MEDIA-SEQUENCE {v}: {e}"))?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            disc_sequence = v
                .parse()
                .map_err(|e| format!("DISCONTINUITY-SEQUENCE {v}: {e}"))?;
        } else if line == "#EXT-X-DISCONTINUITY" {
            disc_pending = true;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.split(',').next().unwrap_or("");
            duration = Some(d.parse::<f64>().map_err(|e| format!("EXTINF {d}: {e}"))?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt =
                Some(streamer::output::start::parse_time(v).map_err(|e| format!("PDT {v}: {e}"))?);
        } else if !line.starts_with('#') && !line.is_empty() {
            let d = duration
                .take()
                .ok_or_else(|| format!("{line}: no EXTINF"))?;
            let prev_disc = segments.last().map_or(disc_sequence, |s: &Segment| s.disc);
            let disc = if disc_pending {
                prev_disc + 1
            } else {
                prev_disc
            };
            disc_pending = false;
            segments.push(Segment {
                number: media_sequence + segments.len() as u64,
                disc,
                duration: d,
                pdt_micros: pdt.take(),
                uri: line.split('?').next().unwrap_or(line).to_string(),
            });
        }
    }
    let target = target.ok_or("no EXT-X-TARGETDURATION")?;
    for s in &segments {
        if s.duration.round() as u64 > target {
            return Err(format!(
                "segment {} lasts {} s, above the target duration {target}",
                s.number, s.duration
            ));
        }
    }
    Ok(MediaPlaylist {
        target,
        media_sequence,
        discontinuity_sequence: disc_sequence,
        segments,
    })
}

/// Checks what must hold between an earlier and a later fetch of one live
/// playlist: the target duration never changes; media and discontinuity
/// sequence numbers never go back; a segment listed in both has the same
/// URI, duration, discontinuity number and date.
pub fn check_successive(before: &MediaPlaylist, after: &MediaPlaylist) -> Result<(), String> {
    if before.target != after.target {
        return Err(format!(
            "EXT-X-TARGETDURATION changed from {} to {}",
            before.target, after.target
        ));
    }
    if after.media_sequence < before.media_sequence {
        return Err(format!(
            "MEDIA-SEQUENCE went back from {} to {}",
            before.media_sequence, after.media_sequence
        ));
    }
    if after.discontinuity_sequence < before.discontinuity_sequence {
        return Err("DISCONTINUITY-SEQUENCE went back".into());
    }
    for a in &after.segments {
        if let Some(b) = before.segments.iter().find(|b| b.number == a.number) {
            if b.uri != a.uri
                || (b.duration - a.duration).abs() > 0.0005
                || b.disc != a.disc
                || b.pdt_micros != a.pdt_micros
            {
                return Err(format!("segment {} changed: {b:?} then {a:?}", a.number));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:11\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n#EXT-X-PROGRAM-DATE-TIME:2026-12-05T10:00:00.000Z\n#EXTINF:10.000,A\ns/seg/7.mp3?session=x\n#EXT-X-PROGRAM-DATE-TIME:2026-12-05T10:00:10.000Z\n#EXTINF:10.449,B\ns/seg/8.mp3?session=x\n#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-12-05T11:00:00.000Z\n#EXTINF:4.000,C\ns/seg/9.mp3?session=x\n";

    #[test]
    fn a_good_playlist_passes_and_each_rule_can_fail() {
        let p = check_media(GOOD).unwrap();
        assert_eq!((p.target, p.media_sequence, p.segments.len()), (11, 7, 3));
        assert_eq!(p.segments[2].disc, 3);
        assert!(
            check_media(&GOOD.replace("10.449", "11.6")).is_err(),
            "too long"
        );
        assert!(
            check_media(&GOOD.replace("10:00:10.000", "10:00:12.000")).is_err(),
            "PDT jump"
        );
        assert!(check_media(&GOOD.replace("#EXT-X-TARGETDURATION:11\n", "")).is_err());
        let later = check_media(&GOOD.replace("TARGETDURATION:11", "TARGETDURATION:12")).unwrap();
        assert!(check_successive(&p, &later).is_err(), "target changed");
        let back = check_media(&GOOD.replace("SEQUENCE:7", "SEQUENCE:6")).unwrap();
        assert!(check_successive(&p, &back).is_err(), "sequence back");
        assert!(check_successive(&p, &p).is_ok());
    }
}

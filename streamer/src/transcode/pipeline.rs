//! One stream's transcode, synchronously: source chunks in, output chunks out.
//!
//! Each source gets its own decoder → resampler → encoder run; when the source
//! ends (or another takes over) the run is flushed, so its last second reaches
//! listeners. Output chunks carry the time their audio had at the source
//! (shifted back by the codec delays), so a transcoded stream lines up with
//! the source's other streams and its HLS segments hold the same audio; and
//! the title that was current for that audio.

use std::collections::VecDeque;
use std::sync::Arc;

use streammachine_config::{AacProfile, AudioFormat, TranscodeConfig};

use super::decode::{frame_header, Decoder};
use super::encode::{Encoder, EncoderSpec};
use super::resample::Resampler;
use super::TranscodeError;
use crate::buffer::{ChunkDraft, Chunker, Title};
use crate::format::{Codec, Framer};

/// A chunk of transcoded audio, ready for the stream.
#[derive(Debug)]
pub struct Output {
    /// The source it came from (a new one starts a new timeline piece).
    pub source_id: u64,
    /// The audio.
    pub draft: ChunkDraft,
    /// The title current when the source sent this audio.
    pub title: Option<Arc<Title>>,
    /// When the source's copy of this audio had fully arrived (µs since the
    /// epoch): the stream stamps the chunk as if it arrived then.
    pub now_micros: i64,
    /// The output's format key (e.g. `aac-44100-2-2`).
    pub format_key: String,
}

/// A source chunk, as the transcoder remembers it to place output audio.
#[derive(Debug)]
struct Span {
    end: f64,
    arrival: i64,
    title: Option<Arc<Title>>,
}

struct Run {
    source_id: u64,
    decoder: Decoder,
    resampler: Resampler,
    encoder: Encoder,
    framer: Framer,
    chunker: Chunker,
    /// Output µs by which the output trails the input.
    delay_micros: f64,
    spans: VecDeque<Span>,
    in_micros: f64,
    out_micros: f64,
    format_key: Option<String>,
    pcm: Vec<f32>,
    resampled: Vec<f32>,
    bytes: Vec<u8>,
}

/// A stream's transcode: keeps the output format fixed across sources.
pub struct Pipeline {
    config: TranscodeConfig,
    out_rate: Option<u32>,
    out_channels: Option<u8>,
    run: Option<Run>,
    decode_errors: u64,
    delay_micros: f64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("config", &self.config)
            .field("out_rate", &self.out_rate)
            .field("out_channels", &self.out_channels)
            .finish()
    }
}

impl Pipeline {
    /// A transcode to `config`; nothing runs until the first chunk.
    pub fn new(config: TranscodeConfig) -> Pipeline {
        Pipeline {
            out_rate: config.sample_rate,
            out_channels: config.channels,
            config,
            run: None,
            decode_errors: 0,
            delay_micros: 0.0,
        }
    }

    /// Frames that failed to decode and were replaced by silence, so far.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// How far (µs) the output of the latest source trails its input: the
    /// resampler's and the encoder's delay.
    pub fn delay_micros(&self) -> f64 {
        self.delay_micros
    }

    /// Drops the current run without flushing (after a failure).
    pub fn reset(&mut self) {
        self.run = None;
    }

    /// Transcodes a chunk from source `source_id`, which arrived at `arrival`
    /// (µs since the epoch) with `title`.
    pub fn feed(
        &mut self,
        source_id: u64,
        draft: &ChunkDraft,
        title: Option<Arc<Title>>,
        arrival: i64,
    ) -> Result<Vec<Output>, TranscodeError> {
        let mut outputs = Vec::new();
        if self.run.as_ref().is_some_and(|r| r.source_id != source_id) {
            let old = self.run.as_ref().map_or(0, |r| r.source_id);
            outputs = self.end(old)?;
        }
        let first = draft
            .frames
            .first()
            .and_then(|&at| draft.data.get(usize::try_from(at).unwrap_or(usize::MAX)..))
            .and_then(frame_header);
        let Some(first) = first else {
            return Ok(outputs);
        };
        if let Some(run) = self.run.as_ref().filter(|r| {
            r.decoder.sample_rate() != first.sample_rate || r.decoder.channels() != first.channels
        }) {
            // The source changed its sample rate or channels mid-stream: a
            // decoder for the new format; the output stays as it was.
            let id = run.source_id;
            outputs.extend(self.end(id)?);
        }
        if self.run.is_none() {
            self.run = Some(self.start(source_id, &first)?);
        }
        let Some(run) = self.run.as_mut() else {
            return Ok(outputs);
        };
        run.pcm.clear();
        let mut failed = 0;
        for (i, &at) in draft.frames.iter().enumerate() {
            let end = draft
                .frames
                .get(i + 1)
                .map_or(draft.data.len(), |&e| usize::try_from(e).unwrap_or(0));
            let Some(frame) = draft.data.get(usize::try_from(at).unwrap_or(0)..end) else {
                continue;
            };
            if let Err(e) = run.decoder.decode(frame, &mut run.pcm) {
                // Silence in its place keeps the output as long as the input
                // (e.g. a first frame whose bit reservoir came before it).
                failed += 1;
                self.decode_errors += 1;
                tracing::debug!(error = %e, "transcode: frame replaced by silence");
                let samples = frame_header(frame).map_or(first.samples, |h| h.samples);
                let n = usize::try_from(samples).unwrap_or(0) * usize::from(run.decoder.channels());
                run.pcm.resize(run.pcm.len() + n, 0.0);
            }
        }
        if failed == draft.frames.len() && failed > 0 {
            return Err(TranscodeError::Decode(format!(
                "none of the {failed} frames of a chunk decoded"
            )));
        }
        run.in_micros += draft.duration_micros() as f64;
        run.spans.push_back(Span {
            end: run.in_micros,
            arrival,
            title,
        });
        run.resampled.clear();
        run.resampler.process(&run.pcm, &mut run.resampled)?;
        run.bytes.clear();
        run.encoder.encode(&run.resampled, &mut run.bytes)?;
        run.framer.push(&run.bytes);
        run.collect(&mut outputs, false)?;
        Ok(outputs)
    }

    /// Source `source_id` left: flushes its run so its last audio comes out.
    pub fn end(&mut self, source_id: u64) -> Result<Vec<Output>, TranscodeError> {
        let mut outputs = Vec::new();
        if self.run.as_ref().is_none_or(|r| r.source_id != source_id) {
            return Ok(outputs);
        }
        let Some(mut run) = self.run.take() else {
            return Ok(outputs);
        };
        run.resampled.clear();
        run.resampler.flush(&mut run.resampled)?;
        run.bytes.clear();
        run.encoder.encode(&run.resampled, &mut run.bytes)?;
        run.encoder.flush(&mut run.bytes)?;
        run.framer.push(&run.bytes);
        run.collect(&mut outputs, true)?;
        Ok(outputs)
    }

    fn start(
        &mut self,
        source_id: u64,
        first: &crate::format::FrameHeader,
    ) -> Result<Run, TranscodeError> {
        let decoder = Decoder::new(first)?;
        let format = self.config.format;
        let rate = *self.out_rate.get_or_insert(match format {
            // MP3 stops at 48 kHz: 88.2/96 kHz sources are halved.
            AudioFormat::Mp3 if first.sample_rate > 48_000 => first.sample_rate / 2,
            _ => first.sample_rate,
        });
        let profile = self.config.profile.unwrap_or_default();
        let channels = *self
            .out_channels
            .get_or_insert(if profile == AacProfile::HeV2 {
                2
            } else {
                decoder.channels().clamp(1, 2)
            });
        let resampler = Resampler::new(decoder.sample_rate(), decoder.channels(), rate, channels)?;
        let encoder = Encoder::new(EncoderSpec {
            format,
            bitrate: self.config.bitrate,
            profile,
            sample_rate: rate,
            channels,
        })?;
        let delay = f64::from(resampler.delay() + encoder.delay()) * 1e6 / f64::from(rate);
        self.delay_micros = delay;
        tracing::info!(
            source = source_id,
            input = %first.format_key(),
            output = %format!("{format} {} kbit/s {rate} Hz {channels} ch", self.config.bitrate),
            "transcoder started"
        );
        Ok(Run {
            source_id,
            decoder,
            resampler,
            encoder,
            framer: Framer::new(match format {
                AudioFormat::Mp3 => Codec::Mp3,
                AudioFormat::Aac => Codec::Aac,
            }),
            chunker: Chunker::new(),
            delay_micros: delay,
            spans: VecDeque::new(),
            in_micros: 0.0,
            out_micros: 0.0,
            format_key: None,
            pcm: Vec::new(),
            resampled: Vec::new(),
            bytes: Vec::new(),
        })
    }
}

impl Run {
    /// Moves the encoder's frames into chunks, and finished chunks to `outputs`.
    fn collect(&mut self, outputs: &mut Vec<Output>, last: bool) -> Result<(), TranscodeError> {
        loop {
            let frame = if last {
                self.framer.finish()
            } else {
                self.framer.next_frame()
            }
            .map_err(|e| TranscodeError::Encoder(format!("encoder output: {e}")))?;
            let Some(frame) = frame else { break };
            if self.format_key.is_none() {
                self.format_key = Some(frame.header.format_key());
            }
            if let Some(draft) = self.chunker.push(&frame) {
                self.emit(draft, outputs);
            }
        }
        if last {
            if let Some(draft) = self.chunker.flush() {
                self.emit(draft, outputs);
            }
        }
        Ok(())
    }

    fn emit(&mut self, draft: ChunkDraft, outputs: &mut Vec<Output>) {
        let start = self.out_micros - self.delay_micros;
        self.out_micros += draft.duration_micros() as f64;
        let end = self.out_micros - self.delay_micros;
        // The source chunk holding this audio's end (or the nearest one).
        let at_end = self
            .spans
            .iter()
            .find(|s| end < s.end)
            .or(self.spans.back());
        let now_micros = at_end.map_or_else(crate::stream::now_micros, |s| {
            s.arrival - (s.end - end).round() as i64
        });
        let title = self
            .spans
            .iter()
            .find(|s| start.max(0.0) < s.end)
            .or(self.spans.back())
            .and_then(|s| s.title.clone());
        while self.spans.len() > 1 && self.spans.front().is_some_and(|s| s.end <= start) {
            self.spans.pop_front();
        }
        outputs.push(Output {
            source_id: self.source_id,
            draft,
            title,
            now_micros,
            format_key: self.format_key.clone().unwrap_or_default(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::FrameHeader;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The chunks a source sending `bytes` becomes.
    fn drafts(bytes: &[u8], codec: Codec) -> Vec<ChunkDraft> {
        let mut framer = Framer::new(codec);
        let mut chunker = Chunker::new();
        let mut out = Vec::new();
        framer.push(bytes);
        loop {
            let Some(frame) = framer.finish().unwrap() else {
                break;
            };
            out.extend(chunker.push(&frame));
        }
        out.extend(chunker.flush());
        out
    }

    fn micros(ds: &[ChunkDraft]) -> u64 {
        ds.iter().map(ChunkDraft::duration_micros).sum()
    }

    /// Feeds every chunk (arriving in real time from `t0`), then ends the source.
    fn transcode(input: &[ChunkDraft], config: TranscodeConfig) -> Vec<Output> {
        transcode_with_delay(input, config).0
    }

    fn transcode_with_delay(input: &[ChunkDraft], config: TranscodeConfig) -> (Vec<Output>, f64) {
        let mut p = Pipeline::new(config);
        let t0 = 1_700_000_000_000_000_i64;
        let mut at = t0;
        let mut out = Vec::new();
        for d in input {
            at += d.duration_micros() as i64;
            out.extend(p.feed(7, d, Some(Title::new("Song")), at).unwrap());
        }
        out.extend(p.end(7).unwrap());
        (out, p.delay_micros())
    }

    /// Decodes output chunks with the same decoder the transcoder uses.
    fn decode(out: &[Output]) -> (Vec<f32>, FrameHeader) {
        let first = out[0].draft.data.clone();
        let header = frame_header(&first).unwrap();
        let mut dec = Decoder::new(&header).unwrap();
        let mut pcm = Vec::new();
        for o in out {
            let d = &o.draft;
            for (i, &at) in d.frames.iter().enumerate() {
                let end = d.frames.get(i + 1).map_or(d.data.len(), |&e| e as usize);
                dec.decode(&d.data[at as usize..end], &mut pcm).unwrap();
            }
        }
        (pcm, header)
    }

    /// Frequency of channel 0 over the middle of `pcm`, from rising zero crossings.
    fn pitch(pcm: &[f32], channels: usize, rate: u32) -> f64 {
        let mono: Vec<f32> = pcm.chunks_exact(channels).map(|f| f[0]).collect();
        let mid = &mono[mono.len() / 4..mono.len() * 3 / 4];
        let rising = mid.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        rising as f64 * f64::from(rate) / mid.len() as f64
    }

    fn check_tone(config: TranscodeConfig, want_key: &str) {
        let input = drafts(&fixture("mp3/tone1kHz-44100-128-m.mp3"), Codec::Mp3);
        let (out, delay) = transcode_with_delay(&input, config);
        assert!(!out.is_empty());
        assert!(
            out.iter().all(|o| o.format_key == want_key),
            "{}",
            out[0].format_key
        );
        let (pcm, h) = decode(&out);
        let hz = pitch(&pcm, usize::from(h.channels), h.sample_rate);
        assert!(
            (hz - 1000.0).abs() < 5.0,
            "{want_key}: the tone came out at {hz:.1} Hz"
        );
        // Length: the input's, plus the codec delay, within two frames (the
        // last one padded, the encoder's own rounding).
        let i = micros(&input) as f64;
        let o = out.iter().map(|o| o.draft.duration_micros()).sum::<u64>() as f64;
        let frame = h.duration_micros();
        let extra = o - i - delay;
        assert!(
            (-frame..=2.0 * frame).contains(&extra),
            "{want_key}: output {o} µs, input {i} µs, delay {delay} µs, frame {frame} µs"
        );
        assert!(out
            .iter()
            .all(|o| o.title.as_ref().unwrap().text() == "Song"));
    }

    #[test]
    fn a_1khz_tone_stays_a_1khz_tone() {
        check_tone(TranscodeConfig::new(AudioFormat::Aac, 64), "aac-44100-2-1");
        check_tone(TranscodeConfig::new(AudioFormat::Mp3, 64), "mp3-44100-64-m");
    }

    #[test]
    fn he_aac_resampling_and_channels() {
        let mut he = TranscodeConfig::new(AudioFormat::Aac, 48);
        he.profile = Some(AacProfile::He);
        he.channels = Some(2);
        // HE-AAC signals its SBR implicitly: ADTS shows the AAC-LC core at half rate.
        check_tone(he, "aac-22050-2-2");
        let mut resampled = TranscodeConfig::new(AudioFormat::Aac, 96);
        resampled.sample_rate = Some(48_000);
        check_tone(resampled, "aac-48000-2-1");
        let mut mp3 = TranscodeConfig::new(AudioFormat::Mp3, 32);
        mp3.sample_rate = Some(22_050);
        check_tone(mp3, "mp3-22050-32-m");
    }

    #[test]
    fn output_time_follows_the_source() {
        let input = drafts(&fixture("mp3/mp3-44100-128-s.mp3"), Codec::Mp3);
        let out = transcode(&input, TranscodeConfig::new(AudioFormat::Aac, 64));
        let t0 = 1_700_000_000_000_000_i64;
        let mut end = 0_i64;
        for o in &out {
            end += o.draft.duration_micros() as i64;
            // The source's copy of this audio arrived when its input position
            // (output position less the codec delay) had arrived.
            let expected = t0 + end - 2048 * 1_000_000 / 44_100;
            assert!(
                (o.now_micros - expected).abs() < 30_000,
                "chunk ending at {end} µs stamped {} µs off",
                o.now_micros - expected
            );
        }
    }

    #[test]
    fn a_new_source_flushes_the_old_one_and_keeps_the_format() {
        let stereo = drafts(&fixture("mp3/mp3-44100-128-s.mp3"), Codec::Mp3);
        let low = drafts(&fixture("mp3/mp3-22050-64-s.mp3"), Codec::Mp3);
        let mut p = Pipeline::new(TranscodeConfig::new(AudioFormat::Aac, 64));
        let mut out = Vec::new();
        for d in &stereo {
            out.extend(p.feed(1, d, None, 0).unwrap());
        }
        let from_first = out.len();
        for d in &low {
            out.extend(p.feed(2, d, None, 0).unwrap());
        }
        out.extend(p.end(2).unwrap());
        let first: u64 = out
            .iter()
            .filter(|o| o.source_id == 1)
            .map(|o| o.draft.duration_micros())
            .sum();
        assert!(
            first >= micros(&stereo),
            "the first source's audio was all flushed out"
        );
        assert!(out.len() > from_first);
        assert!(
            out.iter().all(|o| o.format_key == "aac-44100-2-2"),
            "the 22.05 kHz source is resampled to the stream's 44.1 kHz"
        );
    }

    /// Issue 10: a source that changed its sample rate and channels
    /// mid-stream made every later frame a decode error (silence).
    #[test]
    fn a_source_that_changes_its_format_mid_stream_gets_a_new_decoder() {
        let first = drafts(&fixture("mp3/mp3-44100-128-s.mp3"), Codec::Mp3);
        let then = drafts(&fixture("mp3/mp3-22050-64-s.mp3"), Codec::Mp3);
        let mono = drafts(&fixture("mp3/mp3-44100-64-m.mp3"), Codec::Mp3);
        let mut p = Pipeline::new(TranscodeConfig::new(AudioFormat::Aac, 64));
        let mut out = Vec::new();
        for d in first.iter().chain(&then).chain(&mono) {
            out.extend(p.feed(1, d, None, 0).unwrap());
        }
        out.extend(p.end(1).unwrap());
        assert!(
            p.decode_errors < 3,
            "{} frames not decoded",
            p.decode_errors
        );
        let o: u64 = out.iter().map(|o| o.draft.duration_micros()).sum();
        let i = micros(&first) + micros(&then) + micros(&mono);
        assert!(o >= i, "all the audio came out: {o} of {i} µs");
        assert!(
            out.iter().all(|o| o.format_key == "aac-44100-2-2"),
            "the output keeps its format"
        );
    }

    #[test]
    fn unsupported_input_is_a_clear_error() {
        let mut h = frame_header(&drafts(&fixture("aac-256.aac"), Codec::Aac)[0].data).unwrap();
        h.channels = 6;
        let err = Decoder::new(&h).unwrap_err();
        assert_eq!(err, TranscodeError::Unsupported("6 input channels".into()));
        let bad = TranscodeConfig::new(AudioFormat::Mp3, 65);
        let input = drafts(&fixture("mp3/mp3-44100-64-m.mp3"), Codec::Mp3);
        let err = Pipeline::new(bad).feed(1, &input[0], None, 0).unwrap_err();
        assert!(err.to_string().contains("not an MP3 bitrate"), "{err}");
    }
}

//! Decoding source frames to PCM with Symphonia (MPEG audio Layers I–III, and
//! AAC-LC from ADTS frames).

use symphonia_core::audio::{Channels, Position};
use symphonia_core::codecs::audio::well_known::{
    CODEC_ID_AAC, CODEC_ID_MP1, CODEC_ID_MP2, CODEC_ID_MP3,
};
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration, Timestamp};

use super::TranscodeError;
use crate::format::{aac, mp3, FrameHeader, HeaderDetail, Layer, Probe};

/// A decoder for one source's frames; output is interleaved `f32` PCM.
pub struct Decoder {
    inner: Box<dyn AudioDecoder>,
    sample_rate: u32,
    channels: u8,
    scratch: Vec<f32>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("sample_rate", &self.sample_rate)
            .field("channels", &self.channels)
            .finish()
    }
}

/// Parses the header at the start of a whole frame.
pub fn frame_header(frame: &[u8]) -> Option<FrameHeader> {
    for probe in [mp3::parse_header(frame), aac::parse_header(frame)] {
        if let Probe::Valid(h) = probe {
            return Some(h);
        }
    }
    None
}

impl Decoder {
    /// A decoder for the stream `first` (the header of its first frame) starts.
    pub fn new(first: &FrameHeader) -> Result<Decoder, TranscodeError> {
        let opts = AudioDecoderOptions::default().gapless(false);
        let channels = match first.channels {
            1 => Channels::Positioned(Position::FRONT_CENTER),
            2 => Channels::Positioned(Position::FRONT_LEFT | Position::FRONT_RIGHT),
            n => return Err(TranscodeError::Unsupported(format!("{n} input channels"))),
        };
        let mut params = AudioCodecParameters::new();
        params
            .with_sample_rate(first.sample_rate)
            .with_channels(channels);
        let inner: Box<dyn AudioDecoder> = match first.detail {
            HeaderDetail::Mpeg(m) => {
                params.codec = match m.layer {
                    Layer::I => CODEC_ID_MP1,
                    Layer::II => CODEC_ID_MP2,
                    Layer::III => CODEC_ID_MP3,
                };
                Box::new(
                    symphonia_bundle_mp3::MpaDecoder::try_new(&params, &opts)
                        .map_err(|e| TranscodeError::Decoder(e.to_string()))?,
                )
            }
            HeaderDetail::Adts(a) => {
                if a.object_type() != 2 {
                    return Err(TranscodeError::Unsupported(format!(
                        "AAC object type {} (the decoder takes AAC-LC)",
                        a.object_type()
                    )));
                }
                params.codec = CODEC_ID_AAC;
                Box::new(
                    symphonia_codec_aac::AacDecoder::try_new(&params, &opts)
                        .map_err(|e| TranscodeError::Decoder(e.to_string()))?,
                )
            }
        };
        Ok(Decoder {
            inner,
            sample_rate: first.sample_rate,
            channels: first.channels,
            scratch: Vec::new(),
        })
    }

    /// Sample rate of the decoded audio.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Channels of the decoded audio.
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// Decodes one whole frame (header included) and appends its samples to
    /// `out`, interleaved. A frame that does not decode is an error the caller
    /// may skip; the decoder stays usable.
    pub fn decode(&mut self, frame: &[u8], out: &mut Vec<f32>) -> Result<(), TranscodeError> {
        let payload = match aac::parse_header(frame) {
            Probe::Valid(FrameHeader {
                detail: HeaderDetail::Adts(a),
                ..
            }) => {
                if a.raw_blocks > 0 {
                    return Err(TranscodeError::Unsupported(
                        "ADTS frames with several raw data blocks".into(),
                    ));
                }
                frame.get(a.header_len()..).unwrap_or_default()
            }
            _ => frame,
        };
        let packet = PacketRef::new(0, Timestamp::ZERO, Duration::ZERO, payload);
        let decoded = self
            .inner
            .decode_ref(&packet)
            .map_err(|e| TranscodeError::Decode(e.to_string()))?;
        let spec = decoded.spec();
        if spec.rate() != self.sample_rate || spec.channels().count() != usize::from(self.channels)
        {
            return Err(TranscodeError::Decode(format!(
                "frame is {} Hz, {} channels; the stream started at {} Hz, {} channels",
                spec.rate(),
                spec.channels().count(),
                self.sample_rate,
                self.channels
            )));
        }
        decoded.copy_to_vec_interleaved(&mut self.scratch);
        out.extend_from_slice(&self.scratch);
        Ok(())
    }
}

//! Encoding PCM to MP3 (LAME) or AAC in ADTS (Fraunhofer FDK AAC).

use std::num::NonZeroU32;

use fdk_aac::enc as fdk;
use mp3lame_encoder as lame;
use streammachine_config::{AacProfile, AudioFormat};

use super::TranscodeError;

/// What to encode: the resolved output of a transcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSpec {
    /// Codec.
    pub format: AudioFormat,
    /// Constant bitrate in kbit/s.
    pub bitrate: u32,
    /// AAC profile (ignored for MP3).
    pub profile: AacProfile,
    /// Sample rate in Hz, input and output.
    pub sample_rate: u32,
    /// Channels, 1 or 2, input and output.
    pub channels: u8,
}

/// An MP3 decoder plays 529 samples of its own delay before the encoder's
/// 576 priming samples end (LAME's documented figures): what a listener
/// hears is this late.
const LAME_DELAY: u32 = 576 + 529;

/// A running encoder.
pub enum Encoder {
    /// LAME.
    Mp3(Box<lame::Encoder>),
    /// FDK AAC, fed whole frames of `frame_len` samples per channel.
    Aac {
        /// The encoder.
        enc: fdk::Encoder,
        /// Input samples per channel per frame.
        frame_len: usize,
        /// Priming samples per channel.
        delay: u32,
        /// Interleaved input not yet a whole frame.
        pending: Vec<i16>,
        /// Channels.
        channels: usize,
        /// Output scratch, one frame.
        scratch: Vec<u8>,
    },
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Mp3(_) => "Encoder::Mp3",
            Encoder::Aac { .. } => "Encoder::Aac",
        })
    }
}

fn lame_bitrate(kbps: u32) -> Option<lame::Bitrate> {
    use lame::Bitrate::*;
    Some(match kbps {
        8 => Kbps8,
        16 => Kbps16,
        24 => Kbps24,
        32 => Kbps32,
        40 => Kbps40,
        48 => Kbps48,
        64 => Kbps64,
        80 => Kbps80,
        96 => Kbps96,
        112 => Kbps112,
        128 => Kbps128,
        160 => Kbps160,
        192 => Kbps192,
        224 => Kbps224,
        256 => Kbps256,
        320 => Kbps320,
        _ => return None,
    })
}

impl Encoder {
    /// An encoder for `spec`; settings the encoder refuses are an error.
    pub fn new(spec: EncoderSpec) -> Result<Encoder, TranscodeError> {
        let refused = |e: &dyn std::fmt::Display| {
            TranscodeError::Encoder(format!(
                "{} {} kbit/s, {} Hz, {} channel(s): {e}",
                spec.format, spec.bitrate, spec.sample_rate, spec.channels
            ))
        };
        match spec.format {
            AudioFormat::Mp3 => {
                let bitrate =
                    lame_bitrate(spec.bitrate).ok_or_else(|| refused(&"not an MP3 bitrate"))?;
                let mut b = lame::Builder::new().ok_or_else(|| refused(&"LAME init failed"))?;
                b.set_sample_rate(spec.sample_rate)
                    .map_err(|e| refused(&e))?;
                b.set_output_sample_rate(NonZeroU32::new(spec.sample_rate))
                    .map_err(|e| refused(&e))?;
                b.set_num_channels(spec.channels).map_err(|e| refused(&e))?;
                b.set_brate(bitrate).map_err(|e| refused(&e))?;
                b.set_mode(if spec.channels == 1 {
                    lame::Mode::Mono
                } else {
                    lame::Mode::JointStereo
                })
                .map_err(|e| refused(&e))?;
                b.set_quality(lame::Quality::Good)
                    .map_err(|e| refused(&e))?;
                b.set_vbr_mode(lame::VbrMode::Off)
                    .map_err(|e| refused(&e))?;
                // No Xing/Info frame: a live stream has no first frame to patch.
                b.set_to_write_vbr_tag(false).map_err(|e| refused(&e))?;
                Ok(Encoder::Mp3(Box::new(b.build().map_err(|e| refused(&e))?)))
            }
            AudioFormat::Aac => {
                let enc = fdk::Encoder::new(fdk::EncoderParams {
                    bit_rate: fdk::BitRate::Cbr(spec.bitrate * 1000),
                    sample_rate: spec.sample_rate,
                    transport: fdk::Transport::Adts,
                    channels: if spec.channels == 1 {
                        fdk::ChannelMode::Mono
                    } else {
                        fdk::ChannelMode::Stereo
                    },
                    audio_object_type: match spec.profile {
                        AacProfile::Lc => fdk::AudioObjectType::Mpeg4LowComplexity,
                        AacProfile::He => fdk::AudioObjectType::Mpeg4HeAac,
                        AacProfile::HeV2 => fdk::AudioObjectType::Mpeg4HeAacV2,
                    },
                })
                .map_err(|e| refused(&e))?;
                let info = enc.info().map_err(|e| refused(&e))?;
                let frame_len = usize::try_from(info.frameLength).unwrap_or(1024).max(1);
                Ok(Encoder::Aac {
                    enc,
                    frame_len,
                    delay: info.nDelay,
                    pending: Vec::new(),
                    channels: usize::from(spec.channels),
                    scratch: vec![0; usize::try_from(info.maxOutBufBytes).unwrap_or(0).max(8192)],
                })
            }
        }
    }

    /// Samples per channel by which the decoded output trails the input.
    pub fn delay(&self) -> u32 {
        match self {
            Encoder::Mp3(_) => LAME_DELAY,
            Encoder::Aac { delay, .. } => *delay,
        }
    }

    /// Encodes interleaved samples (±1.0), appending whatever encoded bytes
    /// are ready to `out`.
    pub fn encode(&mut self, pcm: &[f32], out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        match self {
            Encoder::Mp3(enc) => {
                out.reserve(pcm.len() * 5 / 4 + 7200);
                let r = if enc.num_channels() == 1 {
                    enc.encode_to_vec(lame::MonoPcm(pcm), out)
                } else {
                    enc.encode_to_vec(lame::InterleavedPcm(pcm), out)
                };
                r.map(drop)
                    .map_err(|e| TranscodeError::Encoder(format!("LAME: {e}")))
            }
            Encoder::Aac { pending, .. } => {
                pending.extend(pcm.iter().map(|s| to_i16(*s)));
                self.drain_aac(out)
            }
        }
    }

    /// Encodes what is held, padding the last frame with silence, and ends the
    /// encoder (a new source gets a new one).
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        match self {
            Encoder::Mp3(enc) => {
                out.reserve(7200);
                enc.flush_to_vec::<lame::FlushGap>(out)
                    .map(drop)
                    .map_err(|e| TranscodeError::Encoder(format!("LAME flush: {e}")))
            }
            Encoder::Aac {
                pending,
                frame_len,
                delay,
                channels,
                ..
            } => {
                // Silence through the encoder's delay pushes the real tail out.
                let whole = *frame_len * *channels;
                let tail = pending.len() + usize::try_from(*delay).unwrap_or(0) * *channels;
                pending.resize(tail.div_ceil(whole) * whole, 0);
                self.drain_aac(out)
            }
        }
    }

    fn drain_aac(&mut self, out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        let Encoder::Aac {
            enc,
            frame_len,
            pending,
            channels,
            scratch,
            ..
        } = self
        else {
            return Ok(());
        };
        let whole = *frame_len * *channels;
        let mut at = 0;
        while pending.len() - at >= whole {
            let info = enc
                .encode(&pending[at..at + whole], scratch)
                .map_err(|e| TranscodeError::Encoder(format!("FDK AAC: {e}")))?;
            if info.input_consumed == 0 && info.output_size == 0 {
                return Err(TranscodeError::Encoder(
                    "FDK AAC took no input and gave no output".into(),
                ));
            }
            at += info.input_consumed;
            out.extend_from_slice(&scratch[..info.output_size.min(scratch.len())]);
        }
        pending.drain(..at);
        Ok(())
    }
}

fn to_i16(s: f32) -> i16 {
    (s * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16
}

//! Channel mapping and sample-rate conversion (rubato's FFT resampler, which
//! is exact for the fixed ratios between standard rates).

use rubato::{FftFixedInOut, Resampler as _};

use super::TranscodeError;

/// Converts interleaved PCM from one rate and channel count to another.
pub struct Resampler {
    in_channels: usize,
    out_channels: usize,
    in_rate: u32,
    out_rate: u32,
    fft: Option<FftFixedInOut<f32>>,
    /// Channel-mapped input not yet resampled, one vector per output channel.
    pending: Vec<Vec<f32>>,
    out: Vec<Vec<f32>>,
    frames_in: u64,
    frames_out: u64,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("in", &(self.in_rate, self.in_channels))
            .field("out", &(self.out_rate, self.out_channels))
            .finish()
    }
}

impl Resampler {
    /// From `in_rate`/`in_channels` to `out_rate`/`out_channels` (1 or 2).
    pub fn new(
        in_rate: u32,
        in_channels: u8,
        out_rate: u32,
        out_channels: u8,
    ) -> Result<Resampler, TranscodeError> {
        let out_channels = usize::from(out_channels);
        let fft = if in_rate == out_rate {
            None
        } else {
            // ~20 ms blocks: small enough to keep latency low, large enough to be cheap.
            let block = usize::try_from(in_rate / 50).unwrap_or(1024).max(64);
            Some(
                FftFixedInOut::new(
                    usize::try_from(in_rate).unwrap_or(0),
                    usize::try_from(out_rate).unwrap_or(0),
                    block,
                    out_channels,
                )
                .map_err(|e| TranscodeError::Resampler(e.to_string()))?,
            )
        };
        Ok(Resampler {
            in_channels: usize::from(in_channels).max(1),
            out_channels,
            in_rate,
            out_rate,
            out: fft
                .as_ref()
                .map(|f| f.output_buffer_allocate(true))
                .unwrap_or_default(),
            fft,
            pending: vec![Vec::new(); out_channels],
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// Output frames by which the output trails the input.
    pub fn delay(&self) -> u32 {
        self.fft
            .as_ref()
            .map_or(0, |f| u32::try_from(f.output_delay()).unwrap_or(0))
    }

    /// Converts `input` (interleaved), appending interleaved output to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), TranscodeError> {
        let frames = input.len() / self.in_channels;
        self.frames_in += frames as u64;
        let (inc, outc) = (self.in_channels, self.out_channels);
        let map = |frame: &[f32], ch: usize| -> f32 {
            match (inc, outc) {
                (2, 1) => (frame[0] + frame[1]) * 0.5,
                (1, _) => frame[0],
                _ => frame[ch.min(inc - 1)],
            }
        };
        if self.fft.is_none() {
            out.reserve(frames * outc);
            for frame in input.chunks_exact(inc) {
                for ch in 0..outc {
                    out.push(map(frame, ch));
                }
            }
            self.frames_out += frames as u64;
            return Ok(());
        }
        for frame in input.chunks_exact(inc) {
            for (ch, p) in self.pending.iter_mut().enumerate() {
                p.push(map(frame, ch));
            }
        }
        self.run(out)
    }

    /// Pushes the held input through (padded with silence), appending exactly
    /// the output that corresponds to the input given so far.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<(), TranscodeError> {
        let Some(fft) = &self.fft else {
            return Ok(());
        };
        let want = self.frames_in * u64::from(self.out_rate) / u64::from(self.in_rate.max(1))
            + u64::from(self.delay());
        let pad = fft.input_frames_next() + fft.output_delay() * 2;
        for p in &mut self.pending {
            p.resize(p.len() + pad, 0.0);
        }
        let start = out.len();
        let before = self.frames_out;
        self.run(out)?;
        let keep = want.saturating_sub(before).min(self.frames_out - before);
        out.truncate(start + usize::try_from(keep).unwrap_or(0) * self.out_channels);
        Ok(())
    }

    fn run(&mut self, out: &mut Vec<f32>) -> Result<(), TranscodeError> {
        let Some(fft) = &mut self.fft else {
            return Ok(());
        };
        loop {
            let need = fft.input_frames_next();
            if self.pending[0].len() < need {
                return Ok(());
            }
            let (used, made) = fft
                .process_into_buffer(&self.pending, &mut self.out, None)
                .map_err(|e| TranscodeError::Resampler(e.to_string()))?;
            for p in &mut self.pending {
                p.drain(..used);
            }
            out.reserve(made * self.out_channels);
            for i in 0..made {
                for ch in &self.out {
                    out.push(ch[i]);
                }
            }
            self.frames_out += made as u64;
        }
    }
}

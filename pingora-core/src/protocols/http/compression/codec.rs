//! The codecs: one streaming coder per algorithm, compressing or
//! decompressing.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_error::{ErrorType, OrErr, Result};

/// A content coding this module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Anything else (`deflate`, `compress`, unknown ones).
    Any,
    /// `gzip`.
    Gzip,
    /// `br` (brotli).
    Brotli,
    /// `zstd`.
    Zstd,
}

/// The algorithms in order of preference when a client accepts several
/// equally: zstd (the cheapest per byte saved), brotli, gzip.
pub(super) const PREFERENCE: [Algorithm; 3] = [Algorithm::Zstd, Algorithm::Brotli, Algorithm::Gzip];

impl Algorithm {
    /// The coding's name in `Content-Encoding`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Gzip => "gzip",
            Algorithm::Brotli => "br",
            Algorithm::Zstd => "zstd",
            Algorithm::Any => "*",
        }
    }

    /// The algorithm's place in per-algorithm settings.
    pub fn index(&self) -> usize {
        match self {
            Algorithm::Any => 0,
            Algorithm::Gzip => 1,
            Algorithm::Brotli => 2,
            Algorithm::Zstd => 3,
        }
    }

    /// A compressor at `level` (clamped to the codec's range; 0: none).
    pub fn compressor(&self, level: u32) -> Option<Box<dyn Encode + Send + Sync>> {
        if level == 0 {
            return None;
        }
        let coder = match self {
            Algorithm::Gzip => Coder::GzipEnc(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.min(9)),
            )),
            // A 4 MiB window at most (lgwin 22): the memory bound per
            // response.
            Algorithm::Brotli => Coder::BrEnc(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                level.min(11),
                22,
            ))),
            Algorithm::Zstd => Coder::ZstdEnc(
                zstd::stream::write::Encoder::new(Vec::new(), level.min(19) as i32).ok()?,
            ),
            Algorithm::Any => return None,
        };
        Some(Box::new(Stream::new(*self, true, coder)))
    }

    /// A decompressor, if `enabled`.
    pub fn decompressor(&self, enabled: bool) -> Option<Box<dyn Encode + Send + Sync>> {
        if !enabled {
            return None;
        }
        let coder = match self {
            Algorithm::Gzip => Coder::GzipDec(flate2::write::GzDecoder::new(Vec::new())),
            Algorithm::Brotli => Coder::BrDec(Box::new(brotli::DecompressorWriter::new(
                Vec::new(),
                16 * 1024,
            ))),
            Algorithm::Zstd => Coder::ZstdDec(zstd::stream::write::Decoder::new(Vec::new()).ok()?),
            Algorithm::Any => return None,
        };
        Some(Box::new(Stream::new(*self, false, coder)))
    }
}

impl From<&str> for Algorithm {
    fn from(s: &str) -> Self {
        if s.eq_ignore_ascii_case("gzip") || s.eq_ignore_ascii_case("x-gzip") {
            Algorithm::Gzip
        } else if s.eq_ignore_ascii_case("br") {
            Algorithm::Brotli
        } else if s.eq_ignore_ascii_case("zstd") {
            Algorithm::Zstd
        } else {
            Algorithm::Any
        }
    }
}

/// A streaming coder: each call takes the next input and returns the
/// output it made so far (the rest at `end`).
pub trait Encode {
    /// Code `input`; with `end`, finish the stream.
    ///
    /// # Errors
    ///
    /// The crate's coders: `InternalError` if a decompressor is given input
    /// that is not its coding, or cut short at `end`, or if input comes after
    /// the stream ended.
    fn encode(&mut self, input: &[u8], end: bool) -> Result<Bytes>;

    /// The coding's name, bytes in, bytes out and time spent.
    fn stat(&self) -> (&'static str, usize, usize, Duration);
}

/// The codecs, each writing into a `Vec` the output is taken from.
enum Coder {
    GzipEnc(flate2::write::GzEncoder<Vec<u8>>),
    GzipDec(flate2::write::GzDecoder<Vec<u8>>),
    BrEnc(Box<brotli::CompressorWriter<Vec<u8>>>),
    BrDec(Box<brotli::DecompressorWriter<Vec<u8>>>),
    ZstdEnc(zstd::stream::write::Encoder<'static, Vec<u8>>),
    ZstdDec(zstd::stream::write::Decoder<'static, Vec<u8>>),
    /// Finished.
    Done,
}

impl Coder {
    fn write_all(&mut self, input: &[u8]) -> std::io::Result<()> {
        match self {
            Coder::GzipEnc(c) => c.write_all(input),
            Coder::GzipDec(c) => c.write_all(input),
            Coder::BrEnc(c) => c.write_all(input),
            Coder::BrDec(c) => c.write_all(input),
            Coder::ZstdEnc(c) => c.write_all(input),
            Coder::ZstdDec(c) => c.write_all(input),
            Coder::Done => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// The output made so far.
    fn output(&mut self) -> Vec<u8> {
        let out = match self {
            Coder::GzipEnc(c) => c.get_mut(),
            Coder::GzipDec(c) => c.get_mut(),
            Coder::BrEnc(c) => c.get_mut(),
            Coder::BrDec(c) => c.get_mut(),
            Coder::ZstdEnc(c) => c.get_mut(),
            Coder::ZstdDec(c) => c.get_mut(),
            Coder::Done => return Vec::new(),
        };
        std::mem::take(out)
    }

    /// End the stream; the last of the output.
    fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        match std::mem::replace(self, Coder::Done) {
            Coder::GzipEnc(c) => c.finish(),
            Coder::GzipDec(c) => c.finish(),
            Coder::BrEnc(c) => Ok(c.into_inner()),
            Coder::BrDec(c) => c
                .into_inner()
                .map_err(|_| std::io::Error::other("brotli stream cut short")),
            Coder::ZstdEnc(c) => c.finish(),
            Coder::ZstdDec(c) => c.finish(),
            Coder::Done => Ok(Vec::new()),
        }
    }
}

/// A coder with its counts.
struct Stream {
    algorithm: Algorithm,
    compress: bool,
    coder: Coder,
    bytes_in: usize,
    bytes_out: usize,
    spent: Duration,
}

impl Stream {
    fn new(algorithm: Algorithm, compress: bool, coder: Coder) -> Self {
        Stream {
            algorithm,
            compress,
            coder,
            bytes_in: 0,
            bytes_out: 0,
            spent: Duration::ZERO,
        }
    }
}

/// Input is fed to a decompressor in pieces this big, so that one piece
/// of a hostile stream (deflate expands up to ~1000×) makes at most a few
/// MiB of output at a time.
const DECODE_STEP: usize = 4096;

impl Encode for Stream {
    fn encode(&mut self, input: &[u8], end: bool) -> Result<Bytes> {
        let start = Instant::now();
        let what = if self.compress {
            "compressing the response"
        } else {
            "decompressing the response"
        };
        let step = if self.compress {
            input.len().max(1)
        } else {
            DECODE_STEP
        };
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            self.coder
                .write_all(piece)
                .or_err(ErrorType::InternalError, what)?;
            let made = self.coder.output();
            if out.is_empty() {
                out = made;
            } else {
                out.extend_from_slice(&made);
            }
        }
        if end {
            let last = self.coder.finish().or_err(ErrorType::InternalError, what)?;
            out.extend_from_slice(&last);
        }
        self.bytes_in += input.len();
        self.bytes_out += out.len();
        self.spent += start.elapsed();
        Ok(Bytes::from(out))
    }

    fn stat(&self) -> (&'static str, usize, usize, Duration) {
        (
            self.algorithm.as_str(),
            self.bytes_in,
            self.bytes_out,
            self.spent,
        )
    }
}

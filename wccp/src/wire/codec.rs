//! Decoding plumbing (nom parsers with typed, located errors) and the encoding `Writer`.
//!
//! Every parser is a nom function over `&[u8]` whose error, [`Fail`], remembers the sub-slice
//! where it happened. All sub-slices point into the caller's buffer, so [`finish`] turns that
//! slice into an absolute offset once, at the top (the nom `Offset` idea, with checked
//! arithmetic so that no input can make it panic). Counts are checked against the remaining
//! octets before anything is allocated, and every structure must consume its sub-slice exactly.

use core::net::Ipv4Addr;

use nom::IResult;

use crate::error::Error;

/// A decode failure, located by the input slice where it happened.
#[derive(Debug)]
pub(crate) struct Fail<'a> {
    /// The input at the point of failure (a sub-slice of the buffer being decoded).
    pub(crate) at: &'a [u8],
    /// The error, with its `at` field still unset (filled in by [`finish`]).
    pub(crate) error: Error,
}

impl<'a> nom::error::ParseError<&'a [u8]> for Fail<'a> {
    // Only reached if a nom combinator fails on its own; our primitives never let that happen,
    // but stay precise anyway: a nom-level failure means "not enough input here".
    fn from_error_kind(input: &'a [u8], _kind: nom::error::ErrorKind) -> Self {
        Fail {
            at: input,
            error: Error::Truncated {
                need: 1,
                have: input.len(),
                at: 0,
            },
        }
    }

    fn append(_input: &'a [u8], _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

/// The result type of every parser in `wire`.
pub(crate) type PResult<'a, O> = IResult<&'a [u8], O, Fail<'a>>;

/// Fails at `at` with `error` (a `Failure`, so no combinator backtracks over it).
pub(crate) fn fail<'a, O>(at: &'a [u8], error: Error) -> PResult<'a, O> {
    Err(nom::Err::Failure(Fail { at, error }))
}

/// The error for "`need` octets wanted at `at`".
pub(crate) fn truncated<'a, O>(at: &'a [u8], need: usize) -> PResult<'a, O> {
    fail(
        at,
        Error::Truncated {
            need,
            have: at.len(),
            at: 0,
        },
    )
}

/// Offset of `part` inside `base`, clamped to `base.len()` if `part` is not a sub-slice.
pub(crate) fn offset(base: &[u8], part: &[u8]) -> usize {
    // Address arithmetic only (no dereference); `checked_sub` keeps foreign slices harmless.
    (part.as_ptr() as usize)
        .checked_sub(base.as_ptr() as usize)
        .map_or(base.len(), |o| o.min(base.len()))
}

/// Runs a parser to completion over `base` and converts a failure into a located [`Error`].
pub(crate) fn finish<'a, O>(
    base: &'a [u8],
    result: PResult<'a, O>,
) -> Result<(&'a [u8], O), Error> {
    result.map_err(|e| error_at(base, e))
}

/// A parser failure inside `base` as a located [`Error`].
pub(crate) fn error_at<'a>(base: &'a [u8], e: nom::Err<Fail<'a>>) -> Error {
    match e {
        nom::Err::Error(f) | nom::Err::Failure(f) => f.error.located(offset(base, f.at)),
        // Complete parsers never ask for more; map it to a truncation at the end just in case.
        nom::Err::Incomplete(_) => Error::Truncated {
            need: 1,
            have: 0,
            at: base.len(),
        },
    }
}

/// Big-endian u8.
pub(crate) fn u8(i: &[u8]) -> PResult<'_, u8> {
    match nom::number::complete::be_u8::<_, ()>(i) {
        Ok(v) => Ok(v),
        Err(_) => truncated(i, 1),
    }
}

/// Big-endian u16.
pub(crate) fn u16(i: &[u8]) -> PResult<'_, u16> {
    match nom::number::complete::be_u16::<_, ()>(i) {
        Ok(v) => Ok(v),
        Err(_) => truncated(i, 2),
    }
}

/// Big-endian u32.
pub(crate) fn u32(i: &[u8]) -> PResult<'_, u32> {
    match nom::number::complete::be_u32::<_, ()>(i) {
        Ok(v) => Ok(v),
        Err(_) => truncated(i, 4),
    }
}

/// An IPv4 address: 4 raw octets (reference conventions).
pub(crate) fn ipv4(i: &[u8]) -> PResult<'_, Ipv4Addr> {
    let (rest, v) = u32(i)?;
    Ok((rest, Ipv4Addr::from(v)))
}

/// Exactly `n` octets.
pub(crate) fn take(n: usize) -> impl Fn(&[u8]) -> PResult<'_, &[u8]> {
    move |i| match nom::bytes::complete::take::<_, _, ()>(n)(i) {
        Ok(v) => Ok(v),
        Err(_) => truncated(i, n),
    }
}

/// A fixed-size array.
pub(crate) fn array<const N: usize>(i: &[u8]) -> PResult<'_, [u8; N]> {
    let (rest, bytes) = take(N)(i)?;
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    Ok((rest, out))
}

/// A u32 count followed by that many elements; the count is bounded by the remaining octets
/// (`min_size` = smallest encoding of one element) before anything is allocated.
pub(crate) fn counted<'a, O, F>(
    what: &'static str,
    min_size: usize,
    mut element: F,
) -> impl FnMut(&'a [u8]) -> PResult<'a, Vec<O>>
where
    F: FnMut(&'a [u8]) -> PResult<'a, O>,
{
    move |i| {
        let (rest, n) = u32(i)?;
        let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
        let fits = n_usize
            .checked_mul(min_size.max(1))
            .is_some_and(|need| need <= rest.len());
        if !fits {
            return fail(
                i,
                Error::CountTooLarge {
                    what,
                    count: n,
                    at: 0,
                },
            );
        }
        nom::multi::count(&mut element, n_usize)(rest)
    }
}

/// Applies `parser` to all of `input` and rejects leftovers with `TrailingBytes`.
pub(crate) fn exact<'a, O, F>(input: &'a [u8], mut parser: F) -> Result<O, nom::Err<Fail<'a>>>
where
    F: FnMut(&'a [u8]) -> PResult<'a, O>,
{
    let (rest, out) = parser(input)?;
    if rest.is_empty() {
        Ok(out)
    } else {
        Err(nom::Err::Failure(Fail {
            at: rest,
            error: Error::TrailingBytes {
                at: 0,
                len: rest.len(),
            },
        }))
    }
}

/// Appends big-endian fields to a buffer and back-patches u16 length fields (rustls style).
pub(crate) struct Writer<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> Writer<'b> {
    /// Writes at the end of `out`.
    pub(crate) fn new(out: &'b mut Vec<u8>) -> Self {
        Self { out }
    }

    /// Octets written to the underlying buffer so far (including what was there before).
    pub(crate) fn position(&self) -> usize {
        self.out.len()
    }

    /// Appends a u8.
    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    /// Appends a big-endian u16.
    pub(crate) fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a big-endian u32.
    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends an IPv4 address.
    pub(crate) fn ipv4(&mut self, v: Ipv4Addr) {
        self.out.extend_from_slice(&v.octets());
    }

    /// Appends raw octets.
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.out.extend_from_slice(v);
    }

    /// Appends a u32 element count, refusing counts that do not fit.
    pub(crate) fn count(&mut self, what: &'static str, n: usize) -> Result<(), Error> {
        let v = u32::try_from(n).map_err(|_| Error::TooLong { what, len: n })?;
        self.u32(v);
        Ok(())
    }

    /// Writes a u16 length placeholder, runs `body`, then patches in the body's length.
    pub(crate) fn u16_length<F>(&mut self, what: &'static str, body: F) -> Result<usize, Error>
    where
        F: FnOnce(&mut Writer<'_>) -> Result<(), Error>,
    {
        let at = self.out.len();
        self.u16(0);
        body(self)?;
        let len = self.out.len() - at - 2;
        let v = u16::try_from(len).map_err(|_| Error::TooLong { what, len })?;
        if let Some(slot) = self.out.get_mut(at..at + 2) {
            slot.copy_from_slice(&v.to_be_bytes());
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_are_big_endian_and_located() {
        let buf = [0x0a, 0x63, 0x00, 0x02, 0x12];
        let (rest, a) = finish(&buf, ipv4(&buf)).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 99, 0, 2));
        let err = finish(&buf, u32(rest)).unwrap_err();
        assert_eq!(
            err,
            Error::Truncated {
                need: 4,
                have: 1,
                at: 4
            }
        );
    }

    #[test]
    fn counts_are_bounded_by_the_remaining_octets() {
        // count 0xffffffff with 4 octets left: rejected before any allocation.
        let buf = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        let err = finish(&buf, counted("test", 4, u32)(&buf)).unwrap_err();
        assert_eq!(
            err,
            Error::CountTooLarge {
                what: "test",
                count: u32::MAX,
                at: 0
            }
        );
        let buf = [0, 0, 0, 1, 0, 0, 0, 7];
        let (_, v) = finish(&buf, counted("test", 4, u32)(&buf)).unwrap();
        assert_eq!(v, vec![7]);
    }

    #[test]
    fn exact_rejects_leftovers() {
        let buf = [0, 0, 0, 1, 0xaa];
        let err = exact(&buf, u32).map_err(|e| finish::<()>(&buf, Err(e)).unwrap_err());
        assert_eq!(err.unwrap_err(), Error::TrailingBytes { at: 4, len: 1 });
    }

    #[test]
    fn writer_backpatches_lengths() {
        let mut out = vec![0xa5];
        let mut w = Writer::new(&mut out);
        let n = w
            .u16_length("test", |w| {
                w.u32(0x0102_0304);
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 4);
        assert_eq!(out, [0xa5, 0x00, 0x04, 0x01, 0x02, 0x03, 0x04]);
    }

    #[test]
    fn offset_of_a_foreign_slice_is_clamped() {
        let a = [0u8; 4];
        let b = [0u8; 4];
        assert!(offset(&a, &b) <= a.len());
    }
}

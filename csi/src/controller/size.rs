//! A volume's size from CreateVolume's and ControllerExpandVolume's `capacity_range`.

use crate::proto::CapacityRange;

/// The size of a volume whose request names none (neither required nor limit bytes): 1 GiB.
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// A capacity range the driver cannot satisfy (OUT_OF_RANGE).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("capacity_range: required_bytes and limit_bytes must not be negative")]
    Negative,
    #[error(
        "capacity_range: limit_bytes {limit} is less than required_bytes {required} (rounded up to the block size {block}: {rounded})"
    )]
    LimitBelowRequired {
        required: u64,
        limit: u64,
        block: u32,
        rounded: u64,
    },
    #[error("capacity_range: limit_bytes {limit} is less than one block ({block} bytes)")]
    LimitBelowBlock { limit: u64, block: u32 },
    #[error(
        "capacity_range: required_bytes {0} is too large (rounded up to the block size it exceeds 2^63-1)"
    )]
    TooLarge(u64),
}

/// The size to give a new volume: required bytes rounded up to the block size; with no required
/// bytes, [`DEFAULT_SIZE`] (or the limit rounded down to the block size, if smaller).
pub fn volume_size(range: Option<&CapacityRange>, block: u32) -> Result<u64, SizeError> {
    let (required, limit) = bounds(range)?;
    let b = u64::from(block);
    match required {
        Some(r) => {
            let rounded = r
                .div_ceil(b)
                .checked_mul(b)
                .filter(|s| i64::try_from(*s).is_ok())
                .ok_or(SizeError::TooLarge(r))?;
            match limit {
                Some(l) if l < rounded => Err(SizeError::LimitBelowRequired {
                    required: r,
                    limit: l,
                    block,
                    rounded,
                }),
                _ => Ok(rounded),
            }
        }
        None => match limit {
            Some(l) if l < b => Err(SizeError::LimitBelowBlock { limit: l, block }),
            Some(l) => Ok(DEFAULT_SIZE.min(l / b * b)),
            None => Ok(DEFAULT_SIZE),
        },
    }
}

/// True if an existing volume of `size` bytes satisfies `range` (CreateVolume idempotency).
pub fn satisfies(size: u64, range: Option<&CapacityRange>) -> bool {
    match bounds(range) {
        Ok((required, limit)) => {
            required.is_none_or(|r| size >= r) && limit.is_none_or(|l| size <= l)
        }
        Err(_) => false,
    }
}

/// Required and limit bytes, each None when 0 (unset).
fn bounds(range: Option<&CapacityRange>) -> Result<(Option<u64>, Option<u64>), SizeError> {
    let Some(r) = range else {
        return Ok((None, None));
    };
    let nonzero = |v: i64| -> Result<Option<u64>, SizeError> {
        u64::try_from(v)
            .map(|v| (v > 0).then_some(v))
            .map_err(|_| SizeError::Negative)
    };
    Ok((nonzero(r.required_bytes)?, nonzero(r.limit_bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required: i64, limit: i64) -> Option<CapacityRange> {
        Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        })
    }

    #[test]
    fn required_is_rounded_up_to_the_block() {
        assert_eq!(volume_size(range(1, 0).as_ref(), 512), Ok(512));
        assert_eq!(volume_size(range(4096, 0).as_ref(), 4096), Ok(4096));
        assert_eq!(volume_size(range(4097, 0).as_ref(), 4096), Ok(8192));
        assert_eq!(volume_size(range(1000, 1024).as_ref(), 512), Ok(1024));
    }

    #[test]
    fn no_size_means_the_default_within_the_limit() {
        assert_eq!(volume_size(None, 512), Ok(DEFAULT_SIZE));
        assert_eq!(volume_size(range(0, 0).as_ref(), 512), Ok(DEFAULT_SIZE));
        assert_eq!(volume_size(range(0, 1 << 20).as_ref(), 4096), Ok(1 << 20));
        assert_eq!(volume_size(range(0, 5000).as_ref(), 4096), Ok(4096));
        assert!(matches!(
            volume_size(range(0, 100).as_ref(), 512),
            Err(SizeError::LimitBelowBlock { .. })
        ));
    }

    #[test]
    fn limit_below_required_is_refused() {
        let e = volume_size(range(2048, 1024).as_ref(), 512).unwrap_err();
        assert!(matches!(e, SizeError::LimitBelowRequired { .. }), "{e}");
        // Rounding up may cross the limit.
        assert!(volume_size(range(1000, 1000).as_ref(), 512).is_err());
        assert_eq!(
            volume_size(range(-1, 0).as_ref(), 512),
            Err(SizeError::Negative)
        );
        assert!(matches!(
            volume_size(range(i64::MAX, 0).as_ref(), 4096),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn existing_sizes_against_a_range() {
        assert!(satisfies(1 << 30, None));
        assert!(satisfies(1 << 30, range(1 << 30, 0).as_ref()));
        assert!(!satisfies(1 << 30, range((1 << 30) + 1, 0).as_ref()));
        assert!(!satisfies(1 << 30, range(0, 1 << 20).as_ref()));
        assert!(!satisfies(1 << 30, range(-5, 0).as_ref()));
    }
}

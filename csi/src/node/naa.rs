//! NAA identifiers: the name the volume context carries (`spindle.dev/naa`, 32 hex digits) and
//! the one a SCSI disk reports (sysfs `device/wwid` as `naa.<hex>`, or the designators of its
//! VPD page 0x83 in `device/vpd_pg83`). The node compares them before it touches a disk.

use std::fmt;

use thiserror::Error;

/// A logical unit's NAA designator (8 or 16 bytes), compared byte for byte.
#[derive(Clone, PartialEq, Eq)]
pub struct Naa(Vec<u8>);

/// Why a text is not an NAA.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{text:?} is not an NAA identifier ({why})")]
pub struct NaaError {
    text: String,
    why: &'static str,
}

impl Naa {
    /// The volume context's form: 16 or 32 hex digits (an optional `naa.` or `0x` prefix is
    /// accepted), case-insensitive.
    pub fn parse(text: &str) -> Result<Naa, NaaError> {
        let t = text.trim();
        let hex = t
            .strip_prefix("naa.")
            .or_else(|| t.strip_prefix("0x"))
            .unwrap_or(t);
        let bad = |why| NaaError {
            text: text.to_string(),
            why,
        };
        if hex.len() != 16 && hex.len() != 32 {
            return Err(bad("16 or 32 hex digits expected"));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad("not hexadecimal"))?;
        Ok(Naa(bytes))
    }

    /// The NAA in a sysfs `wwid` (`naa.6001405…`); None for other designator kinds
    /// (`t10.…`, `eui.…`).
    pub fn from_wwid(wwid: &str) -> Option<Naa> {
        let w = wwid.trim();
        w.starts_with("naa.").then(|| Naa::parse(w).ok()).flatten()
    }

    /// The logical unit's NAA designator in a VPD page 0x83 (`vpd_pg83`, binary): the first
    /// designator of type NAA (3) associated with the logical unit (0). Malformed pages give
    /// None.
    pub fn from_vpd83(page: &[u8]) -> Option<Naa> {
        if page.len() < 4 || page[1] != 0x83 {
            return None;
        }
        let len = u16::from_be_bytes([page[2], page[3]]) as usize;
        let body = page.get(4..4 + len).unwrap_or(&page[4..]);
        let mut at = 0;
        while at + 4 <= body.len() {
            let kind = body[at + 1] & 0x0f;
            let association = (body[at + 1] >> 4) & 0x03;
            let dlen = body[at + 3] as usize;
            let designator = body.get(at + 4..at + 4 + dlen)?;
            if kind == 3 && association == 0 && (dlen == 8 || dlen == 16) {
                return Some(Naa(designator.to_vec()));
            }
            at += 4 + dlen;
        }
        None
    }
}

impl fmt::Display for Naa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Naa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "naa.{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "6001405aabbccdd0011223344556677f";

    /// A VPD 0x83 page as Linux exports it: a T10 vendor designator, an NAA designator
    /// associated with the target port (not the LU), then the LU's NAA.
    fn page(lu_naa: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, 0x01, 0x00, 0x08];
        body.extend_from_slice(b"SPINDLE ");
        body.extend_from_slice(&[0x01, 0x13, 0x00, 0x08]);
        body.extend_from_slice(&[0x50, 1, 2, 3, 4, 5, 6, 7]);
        body.extend_from_slice(&[0x01, 0x03, 0x00, lu_naa.len() as u8]);
        body.extend_from_slice(lu_naa);
        let mut p = vec![0x00, 0x83];
        p.extend_from_slice(&(body.len() as u16).to_be_bytes());
        p.extend(body);
        p
    }

    #[test]
    fn the_context_form_and_the_wwid_form_compare_equal() {
        let ctx = Naa::parse(HEX).unwrap();
        assert_eq!(Naa::parse(&HEX.to_uppercase()).unwrap(), ctx);
        assert_eq!(Naa::from_wwid(&format!("naa.{HEX}\n")), Some(ctx.clone()));
        assert_eq!(ctx.to_string(), HEX);
        let other = Naa::parse("6001405aabbccdd0011223344556670f").unwrap();
        assert_ne!(Naa::from_wwid(&format!("naa.{HEX}")), Some(other));
        assert_eq!(Naa::from_wwid("t10.SPINDLE lun0"), None);
        assert_eq!(Naa::from_wwid("eui.0011223344556677"), None);
    }

    #[test]
    fn the_lu_designator_of_vpd_page_83() {
        let ctx = Naa::parse(HEX).unwrap();
        let bytes: Vec<u8> = ctx.0.clone();
        assert_eq!(Naa::from_vpd83(&page(&bytes)), Some(ctx));
        let eight = [0x50, 0, 0, 0, 0, 0, 0, 9];
        assert_eq!(
            Naa::from_vpd83(&page(&eight)),
            Some(Naa::parse("5000000000000009").unwrap())
        );
        // Truncated, wrong page, no LU designator.
        let p = page(&bytes);
        assert_eq!(Naa::from_vpd83(&p[..p.len() - 3]), None);
        assert_eq!(Naa::from_vpd83(&[0, 0x80, 0, 0]), None);
        assert_eq!(Naa::from_vpd83(&p[..28]), None);
        assert_eq!(Naa::from_vpd83(&[]), None);
    }

    #[test]
    fn refuses_what_is_not_an_naa() {
        for bad in [
            "",
            "xyz",
            &HEX[..31],
            &format!("{HEX}00"),
            "zz01405aabbccdd0011223344556677f",
        ] {
            assert!(Naa::parse(bad).is_err(), "{bad}");
        }
    }
}

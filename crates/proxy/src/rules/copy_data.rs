//! Masking the rows of `COPY … TO STDOUT`: one CopyData message is one row
//! (PostgreSQL sends each row, and the binary header and trailer, in a
//! message of its own).
//!
//! - text: tab-separated fields with backslash escapes, `\N` for NULL; a
//!   masked field is unescaped, masked and escaped again;
//! - CSV: comma-separated, `"`-quoted when needed, an unquoted empty field is
//!   NULL; the header line (HEADER) is left alone;
//! - binary: the signature header and the `-1` trailer are left alone; in a
//!   tuple a masked field becomes NULL (COPY carries no type, so a masked
//!   text could not be told to be a valid value of the column's type).

use understudy_rules::{CopyFormat, MaskMethod};

/// The row `data` with the fields `masks` names masked, and how many
/// values were masked; `None` when the row is not in the expected format
/// (the caller then relays it as is only if nothing is masked).
pub fn mask(
    format: CopyFormat,
    masks: &[Option<MaskMethod>],
    data: &[u8],
) -> Option<(Vec<u8>, u64)> {
    match format {
        CopyFormat::Text => Some(text_row(masks, data)),
        CopyFormat::Csv { .. } => Some(csv_row(masks, data)),
        CopyFormat::Binary => binary_row(masks, data),
    }
}

fn text_row(masks: &[Option<MaskMethod>], data: &[u8]) -> (Vec<u8>, u64) {
    let (line, newline) = match data.strip_suffix(b"\n") {
        Some(line) => (line, true),
        None => (data, false),
    };
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut masked = 0;
    for (i, field) in line.split(|&b| b == b'\t').enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match masks.get(i).copied().flatten() {
            Some(method) if field != b"\\N" => {
                masked += 1;
                escape_text(&method.apply(&unescape_text(field)), &mut out);
            }
            _ => out.extend_from_slice(field),
        }
    }
    if newline {
        out.push(b'\n');
    }
    (out, masked)
}

fn unescape_text(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 1 < field.len() {
            let c = field[i + 1];
            i += 2;
            match c {
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'v' => out.push(11),
                b'0'..=b'7' => {
                    let mut value = u32::from(c - b'0');
                    let mut digits = 1;
                    while digits < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                        value = value * 8 + u32::from(field[i] - b'0');
                        i += 1;
                        digits += 1;
                    }
                    out.push((value & 0xff) as u8);
                }
                b'x' => {
                    let mut value = 0u32;
                    let mut digits = 0;
                    while digits < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                        value = value * 16 + char::from(field[i]).to_digit(16).unwrap_or(0);
                        i += 1;
                        digits += 1;
                    }
                    if digits == 0 {
                        out.push(b'x');
                    } else {
                        out.push(value as u8);
                    }
                }
                other => out.push(other),
            }
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

fn escape_text(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// The fields of a CSV line: `(value, quoted)`.
fn csv_fields(line: &[u8]) -> Vec<(Vec<u8>, bool)> {
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut value = Vec::new();
        let mut quoted = false;
        if line.get(i) == Some(&b'"') {
            quoted = true;
            i += 1;
            while i < line.len() {
                if line[i] == b'"' {
                    if line.get(i + 1) == Some(&b'"') {
                        value.push(b'"');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                value.push(line[i]);
                i += 1;
            }
        }
        while i < line.len() && line[i] != b',' {
            value.push(line[i]);
            i += 1;
        }
        fields.push((value, quoted));
        if i >= line.len() {
            return fields;
        }
        i += 1;
    }
}

fn csv_row(masks: &[Option<MaskMethod>], data: &[u8]) -> (Vec<u8>, u64) {
    let (line, newline) = match data.strip_suffix(b"\n") {
        Some(line) => (line, true),
        None => (data, false),
    };
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut masked = 0;
    for (i, (value, quoted)) in csv_fields(line).into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let is_null = value.is_empty() && !quoted;
        let value = match masks.get(i).copied().flatten() {
            Some(method) if !is_null => {
                masked += 1;
                method.apply(&value)
            }
            _ => value,
        };
        let needs_quotes = quoted
            || value
                .iter()
                .any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
        if needs_quotes {
            out.push(b'"');
            for &b in &value {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(&value);
        }
    }
    if newline {
        out.push(b'\n');
    }
    (out, masked)
}

/// The binary COPY signature.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

fn binary_row(masks: &[Option<MaskMethod>], data: &[u8]) -> Option<(Vec<u8>, u64)> {
    let mut rest = data;
    let mut out = Vec::with_capacity(data.len());
    if rest.starts_with(SIGNATURE) {
        // Signature, flags, header extension; a tuple may follow.
        let ext = rest.get(SIGNATURE.len() + 4..SIGNATURE.len() + 8)?;
        let ext = usize::try_from(u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]])).ok()?;
        let header = SIGNATURE.len() + 8 + ext;
        out.extend_from_slice(rest.get(..header)?);
        rest = &rest[header..];
    }
    let mut masked = 0;
    while rest.len() >= 2 {
        let count = i16::from_be_bytes([rest[0], rest[1]]);
        out.extend_from_slice(&rest[..2]);
        rest = &rest[2..];
        if count < 0 {
            out.extend_from_slice(rest);
            return Some((out, masked));
        }
        for i in 0..usize::try_from(count).ok()? {
            let len = rest.get(..4)?;
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            rest = &rest[4..];
            let value_len = usize::try_from(len.max(0)).ok()?;
            let value = rest.get(..value_len)?;
            rest = &rest[value_len..];
            if len >= 0 && masks.get(i).copied().flatten().is_some() {
                masked += 1;
                out.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(value);
            }
        }
    }
    out.extend_from_slice(rest);
    Some((out, masked))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP4: Option<MaskMethod> = Some(MaskMethod::KeepLast(4));

    #[test]
    fn text_rows_are_masked_field_by_field() {
        let (row, n) = text_row(&[None, KEEP4, KEEP4], b"1\t4111111111111111\t\\N\n");
        assert_eq!(row, b"1\t************1111\t\\N\n");
        assert_eq!(n, 1);
        // Escapes are undone before masking and redone after.
        let (row, _) = text_row(&[KEEP4], b"ab\\\\cd\\tx\n");
        assert_eq!(row, b"***cd\\tx\n");
    }

    #[test]
    fn csv_rows_keep_quoting_and_nulls() {
        let (row, n) = csv_row(&[None, KEEP4, KEEP4], b"1,\"41,11111111111111\",\n");
        assert_eq!(row, b"1,\"*************1111\",\n");
        assert_eq!(n, 1);
    }

    #[test]
    fn binary_tuples_get_null_for_masked_fields() {
        let mut data = Vec::new();
        data.extend_from_slice(&2i16.to_be_bytes());
        data.extend_from_slice(&4i32.to_be_bytes());
        data.extend_from_slice(&7i32.to_be_bytes());
        data.extend_from_slice(&3i32.to_be_bytes());
        data.extend_from_slice(b"abc");
        let (row, n) = binary_row(&[None, KEEP4], &data).unwrap();
        assert_eq!(n, 1);
        assert_eq!(&row[..10], &data[..10]);
        assert_eq!(&row[10..], &(-1i32).to_be_bytes());
        let trailer = (-1i16).to_be_bytes();
        assert_eq!(binary_row(&[KEEP4], &trailer).unwrap().0, trailer);
    }
}

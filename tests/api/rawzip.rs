//! A raw zip builder for hostile archives: any name, mode, method, declared sizes and CRC.

#![allow(dead_code)]

#[derive(Clone)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    /// 0 stored, 8 deflate (data is then compressed here).
    pub method: u16,
    pub unix_mode: u32,
    pub declared_uncompressed: Option<u64>,
    pub crc_override: Option<u32>,
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            data: data.to_vec(),
            method: 8,
            unix_mode: 0o100_644,
            declared_uncompressed: None,
            crc_override: None,
        }
    }
}

pub fn raw_zip(entries: &[RawEntry]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let payload = if e.method == 8 {
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&e.data).unwrap();
            enc.finish().unwrap()
        } else {
            e.data.clone()
        };
        let crc = e.crc_override.unwrap_or_else(|| crc32fast::hash(&e.data));
        let usize = e.declared_uncompressed.unwrap_or(e.data.len() as u64);
        let zip64 = usize >= 0xFFFF_FFFF;
        let offset = out.len() as u32;
        let mut lh = Vec::new();
        lh.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        lh.extend_from_slice(&20u16.to_le_bytes());
        lh.extend_from_slice(&0u16.to_le_bytes());
        lh.extend_from_slice(&e.method.to_le_bytes());
        lh.extend_from_slice(&[0, 0, 0x21, 0]);
        lh.extend_from_slice(&crc.to_le_bytes());
        lh.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        lh.extend_from_slice(&(if zip64 { u32::MAX } else { usize as u32 }).to_le_bytes());
        lh.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        lh.extend_from_slice(&0u16.to_le_bytes());
        lh.extend_from_slice(&e.name);
        out.extend_from_slice(&lh);
        out.extend_from_slice(&payload);

        let mut extra = Vec::new();
        if zip64 {
            extra.extend_from_slice(&1u16.to_le_bytes());
            extra.extend_from_slice(&8u16.to_le_bytes());
            extra.extend_from_slice(&usize.to_le_bytes());
        }
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&((3u16 << 8) | 45).to_le_bytes());
        central.extend_from_slice(&(if zip64 { 45u16 } else { 20 }).to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&e.method.to_le_bytes());
        central.extend_from_slice(&[0, 0, 0x21, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        central.extend_from_slice(&(if zip64 { u32::MAX } else { usize as u32 }).to_le_bytes());
        central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&(e.unix_mode << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&e.name);
        central.extend_from_slice(&extra);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

//! Zip format constants (APPNOTE.TXT 6.3.10) used by the writer and the reader.

pub const LOCAL_HEADER_SIG: u32 = 0x0403_4b50;
pub const DATA_DESCRIPTOR_SIG: u32 = 0x0807_4b50;
pub const CENTRAL_HEADER_SIG: u32 = 0x0201_4b50;
pub const EOCD_SIG: u32 = 0x0605_4b50;
pub const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
pub const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;

pub const ZIP64_EXTRA_ID: u16 = 0x0001;
pub const EXTENDED_TIMESTAMP_ID: u16 = 0x5455;
/// The gateway's own extra field, in the central directory only, so that a later create
/// can tell that a file is unchanged and take its entry as it is
/// ([`crate::archive::reuse`]): five 8-byte little-endian values, the modification time
/// and the change time in nanoseconds, the device, the inode, and the file system's time
/// when the create that read the file began reading ([`crate::archive::reuse`] says why).
/// Archives of earlier versions hold the modification time alone
/// ([`GATEWAY_EXTRA_V1_BODY`]); their entries are restored with it but never reused. Other
/// readers skip extra fields they do not know (APPNOTE 4.6).
pub const GATEWAY_EXTRA_ID: u16 = 0x4247;
/// Its length, the header's 4 bytes included.
pub const GATEWAY_EXTRA_LEN: usize = 44;
/// The body length of the first version (the modification time only).
pub const GATEWAY_EXTRA_V1_BODY: usize = 8;
/// The extra field of every local header the gateway writes (the extended timestamp).
pub const LOCAL_EXTRA_LEN: u64 = 9;

pub const METHOD_STORED: u16 = 0;
pub const METHOD_DEFLATE: u16 = 8;

/// General purpose flag bit 3: sizes and CRC follow the data in a data descriptor.
pub const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;
/// General purpose flag bit 11: the name is UTF-8.
pub const FLAG_UTF8: u16 = 1 << 11;
/// General purpose flag bit 0: encrypted (refused by the reader).
pub const FLAG_ENCRYPTED: u16 = 1;

pub const U16_MAX: u64 = 0xFFFF;
pub const U32_MAX: u64 = 0xFFFF_FFFF;

pub const LOCAL_HEADER_LEN: u64 = 30;
pub const CENTRAL_HEADER_LEN: usize = 46;
pub const EOCD_LEN: usize = 22;
pub const ZIP64_EOCD_LEN: usize = 56;
pub const ZIP64_LOCATOR_LEN: usize = 20;

/// "Version made by": Unix (3), spec 4.5 (Zip64).
pub const VERSION_MADE_BY: u16 = (3 << 8) | 45;
pub const VERSION_NEEDED_DEFAULT: u16 = 20;
pub const VERSION_NEEDED_ZIP64: u16 = 45;

pub const S_IFMT: u32 = 0o170_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFLNK: u32 = 0o120_000;
/// MS-DOS directory attribute.
pub const DOS_DIR: u32 = 0x10;

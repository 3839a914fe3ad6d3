//! Backup keys: every key is checked here, once, where it enters the gateway, before it
//! reaches a store.
//!
//! - Names given to create follow PocketBase's rule `^[a-z0-9_-]+\.zip$`, 1-150 characters.
//! - Uploaded files keep their file name without any path (PocketBase does the same).
//! - Any key used in a URL must be a plain file name: no `/` or `\`, no control characters,
//!   no Unicode format characters (general category Cf: bidirectional overrides and
//!   isolates, zero-width spaces and joiners, which make a planted key look like another in
//!   a list or a dialog), not hidden (`.x`, which also rules out `.` and `..`), at most 255
//!   bytes. PocketBase escapes such names instead, or keeps them; the gateway refuses them.

use crate::error::FieldError;

/// PocketBase's maximum length of a backup name given to create.
pub const MAX_CREATE_NAME: usize = 150;
/// Maximum length in bytes of any key (a common filesystem and S3-friendly limit).
pub const MAX_KEY_BYTES: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("empty key")]
    Empty,
    #[error("key too long")]
    TooLong,
    #[error("key contains a path separator, a control or a format character")]
    BadCharacter,
    #[error("hidden or relative key")]
    Hidden,
}

/// Checks that `key` is a safe, plain file name.
///
/// # Errors
/// A [`KeyError`] saying why not.
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong);
    }
    if key
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control() || is_format_char(c))
    {
        return Err(KeyError::BadCharacter);
    }
    if key.starts_with('.') {
        return Err(KeyError::Hidden);
    }
    Ok(())
}

/// Unicode's general category Cf (format characters, Unicode 16): invisible, and some
/// (U+202A-U+202E, U+2066-U+2069) reorder the text around them.
pub fn is_format_char(c: char) -> bool {
    const CF: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
    ];
    let c = c as u32;
    CF.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// A key that passed [`check_key`]: a safe, plain file name. Only [`BackupKey::parse`]
/// makes one, so whatever holds a `BackupKey` need not check it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupKey(String);

impl BackupKey {
    /// # Errors
    /// A [`KeyError`] saying why `key` is not a safe, plain file name.
    pub fn parse(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        check_key(&key)?;
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for BackupKey {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// PocketBase's validation of a name given to `POST /api/backups` (the empty name is handled
/// by the caller: it means "make one up").
///
/// # Errors
/// The field error PocketBase sends: length first, then format.
pub fn check_create_name(name: &str) -> Result<(), FieldError> {
    let len = name.chars().count();
    if !(1..=MAX_CREATE_NAME).contains(&len) {
        return Err(FieldError::new(
            "validation_length_out_of_range",
            "The length must be between 1 and 150.",
        )
        .with_params(serde_json::json!({"max": 150, "min": 1})));
    }
    let Some(stem) = name.strip_suffix(".zip") else {
        return Err(match_invalid());
    };
    if stem.is_empty()
        || !stem
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(match_invalid());
    }
    Ok(())
}

fn match_invalid() -> FieldError {
    FieldError::new("validation_match_invalid", "Must be in a valid format.")
}

/// The key of an uploaded file: its name without any directory part (`/` or `\`).
pub fn upload_key(file_name: &str) -> &str {
    file_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(file_name)
        .trim()
}

/// The name PocketBase gives a backup created without one:
/// `pb_backup_<app name in snake case, at most 50 bytes>_YYYYMMDDhhmmss.zip`.
pub fn default_name(app_name: &str, now: time::OffsetDateTime) -> String {
    let mut app = snakecase(app_name);
    app.truncate(50);
    format!(
        "pb_backup_{app}_{}.zip",
        crate::util::time_fmt::compact(now)
    )
}

/// The name of a scheduled backup: `@auto_` + [`default_name`], PocketBase's
/// `@auto_pb_backup_<app>_YYYYMMDDhhmmss.zip`.
pub fn scheduled_name(app_name: &str, at: time::OffsetDateTime) -> String {
    format!("@auto_{}", default_name(app_name, at))
}

/// PocketBase's `inflector.Snakecase`: words split at anything but ASCII letters and
/// digits, an `_` before an upper-case letter that follows a lower-case one, lower case.
pub fn snakecase(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for word in s
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push('_');
        }
        let mut prev_upper = true;
        for (i, c) in word.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 && !prev_upper {
                out.push('_');
            }
            prev_upper = c.is_ascii_uppercase();
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The name PocketBase gives an uploaded file before it checks it (`tools/filesystem`'s
/// `normalizeName`), which its mime-type error quotes: the snake-cased stem (a random part
/// added when it is under 3 bytes, cut at 100), `_`, 10 random characters, and the cleaned
/// extension (double extensions kept; for none, `.txt` when `head` looks like text, as its
/// content sniffing finds).
pub fn pocketbase_upload_name(original: &str, head: &[u8]) -> String {
    let mut name = original;
    if name.len() > 300 {
        let mut cut = name.len() - 300;
        while !name.is_char_boundary(cut) {
            cut += 1;
        }
        name = &name[cut..];
    }
    let ext = double_extension(name);
    let cleaned: String = ext
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_.*-+=#".contains(*c))
        .collect();
    let mut clean_ext = format!(".{}", cleaned.trim_matches('.'));
    if clean_ext == "." {
        let texty = !head.is_empty() && std::str::from_utf8(head).is_ok() && !head.contains(&0);
        clean_ext = if texty { ".txt".into() } else { String::new() };
    }
    if clean_ext.len() > 20 {
        clean_ext = format!(".{}", clean_ext[clean_ext.len() - 20..].trim_matches('.'));
    }
    let stem = name.strip_suffix(ext).unwrap_or(name).trim_matches('.');
    let mut clean = snakecase(stem);
    if clean.len() < 3 {
        clean.push_str(&crate::util::fsutil::random_lower(10));
    } else {
        clean.truncate(100);
    }
    format!(
        "{clean}_{}{clean_ext}",
        crate::util::fsutil::random_lower(10)
    )
}

/// The extension with its leading dot, two of them when there are (`.tar.gz`).
fn double_extension(name: &str) -> &str {
    let Some(primary) = name.rfind('.') else {
        return "";
    };
    match name[..primary].rfind('.') {
        Some(secondary) => &name[secondary..],
        None => &name[primary..],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `name` with its random parts (runs of 10 `[a-z0-9]`) replaced by `#`.
    fn shape(name: &str, random_runs: usize) -> String {
        let mut out = name.to_string();
        for _ in 0..random_runs {
            let i = out.rfind('_').map_or(0, |u| u + 1);
            let start = if out[i..].len() >= 10 { i } else { 0 };
            out.replace_range(start..start + 10, "#");
        }
        out
    }

    // The expected names were seen in PocketBase 0.40.6's error messages for the same files.
    #[test]
    fn upload_names_are_normalized_like_pocketbase() {
        let n = |s: &str| pocketbase_upload_name(s, b"hello");
        assert_eq!(shape(&n("notzip.zip"), 1), "notzip_#.zip");
        assert_eq!(shape(&n("My File (1).zip"), 1), "my_file_1_#.zip");
        assert_eq!(shape(&n("CamelCaseDB.zip"), 1), "camel_case_db_#.zip");
        assert_eq!(shape(&n("a.b.c.zip"), 1), "a_b_#.c.zip");
        assert_eq!(shape(&n("noext"), 1), "noext_#.txt");
        assert!(n("ab.zip").len() == "ab".len() + 10 + 1 + 10 + ".zip".len());
        assert!(n("x.tar.gz").starts_with('x') && n("x.tar.gz").ends_with(".tar.gz"));
        assert!(n("ÄÖ.zip").len() == 10 + 1 + 10 + ".zip".len());
        assert_eq!(snakecase("Acme"), "acme");
        assert_eq!(snakecase("My TestDB app"), "my_test_db_app");
    }

    #[test]
    fn create_names_follow_pocketbase() {
        assert!(check_create_name("a.zip").is_ok());
        assert!(check_create_name("my_backup-2.zip").is_ok());
        for bad in [
            "A.zip",
            "a.ZIP",
            ".zip",
            "a",
            "a b.zip",
            "../a.zip",
            "a/b.zip",
            "é.zip",
            "a.zip.zip ",
        ] {
            assert_eq!(
                check_create_name(bad).unwrap_err().code,
                "validation_match_invalid",
                "{bad}"
            );
        }
        let long = format!("{}.zip", "a".repeat(147));
        assert_eq!(
            check_create_name(&long).unwrap_err().code,
            "validation_length_out_of_range"
        );
        assert!(check_create_name(&format!("{}.zip", "a".repeat(146))).is_ok());
    }

    #[test]
    fn keys_must_be_plain_file_names() {
        assert!(check_key("pb_backup_1.zip").is_ok());
        // Bidirectional overrides and isolates, zero-width characters, the BOM.
        for c in [
            '\u{202E}',
            '\u{2066}',
            '\u{200B}',
            '\u{200D}',
            '\u{FEFF}',
            '\u{E0041}',
        ] {
            assert_eq!(
                check_key(&format!("a{c}b.zip")),
                Err(KeyError::BadCharacter),
                "{c:?}"
            );
        }
        // Other non-ASCII letters stay allowed.
        assert!(check_key("sauvegarde-été.zip").is_ok());
        assert!(check_key("My File (1).zip").is_ok());
        assert!(check_key("résumé.zip").is_ok());
        assert_eq!(check_key(""), Err(KeyError::Empty));
        assert_eq!(check_key(".."), Err(KeyError::Hidden));
        assert_eq!(check_key(".hidden.zip"), Err(KeyError::Hidden));
        assert_eq!(check_key("../x.zip"), Err(KeyError::BadCharacter));
        assert_eq!(check_key("a/../x.zip"), Err(KeyError::BadCharacter));
        assert_eq!(check_key("a\\x.zip"), Err(KeyError::BadCharacter));
        assert_eq!(check_key("a\nb.zip"), Err(KeyError::BadCharacter));
        assert_eq!(check_key(&"a".repeat(256)), Err(KeyError::TooLong));
    }

    #[test]
    fn upload_keys_drop_any_path() {
        assert_eq!(upload_key("../../x/c.zip"), "c.zip");
        assert_eq!(upload_key("C:\\Users\\me\\c.zip"), "c.zip");
        assert_eq!(upload_key("c.zip"), "c.zip");
        assert_eq!(upload_key("dir/"), "");
    }

    #[test]
    fn default_names_are_pocketbase_style() {
        let t = time::macros::datetime!(2024-01-02 03:04:05 UTC);
        assert_eq!(default_name("Acme", t), "pb_backup_acme_20240102030405.zip");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// PocketBase's rule, stated independently: `^[a-z0-9_-]+\.zip$`, 1-150 characters.
        fn pocketbase_accepts(name: &str) -> bool {
            let n = name.chars().count();
            (1..=150).contains(&n)
                && name.strip_suffix(".zip").is_some_and(|stem| {
                    !stem.is_empty()
                        && stem.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                        })
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn create_names_are_accepted_exactly_as_pocketbase_accepts_them(
                name in prop_oneof![
                    "[a-z0-9_-]{0,160}\\.zip",
                    "[a-zA-Z0-9_.\\-/\\\\ ]{0,20}(\\.zip)?",
                    any::<String>(),
                ]
            ) {
                let got = check_create_name(&name);
                prop_assert_eq!(got.is_ok(), pocketbase_accepts(&name), "{:?}", name);
                if let Err(e) = got {
                    prop_assert!(
                        e.code == "validation_length_out_of_range" || e.code == "validation_match_invalid"
                    );
                }
            }

            #[test]
            fn an_accepted_key_is_one_plain_file_name(key in any::<String>()) {
                if check_key(&key).is_ok() {
                    let path = std::path::Path::new(&key);
                    prop_assert_eq!(path.components().count(), 1);
                    prop_assert!(matches!(
                        path.components().next(),
                        Some(std::path::Component::Normal(_))
                    ));
                    prop_assert!(!key.starts_with('.') && key.len() <= MAX_KEY_BYTES);
                    prop_assert!(!key.chars().any(char::is_control));
                }
            }

            #[test]
            fn an_upload_key_never_keeps_a_directory(name in any::<String>()) {
                let key = upload_key(&name);
                prop_assert!(!key.contains('/') && !key.contains('\\'));
                // The last part of the name, trimmed.
                prop_assert!(name.contains(key));
                prop_assert_eq!(key, key.trim());
            }
        }
    }
}

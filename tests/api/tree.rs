//! Snapshots of a directory tree (paths, kinds, modes, contents) and of zip archives, to
//! compare what went in with what came out.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
}

/// Every path under `root` (relative, `/`-separated) except the excluded top-level names.
pub fn snapshot(root: &Path, exclude: &[&str]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, exclude, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, exclude: &[&str], out: &mut BTreeMap<String, Node>) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if exclude.contains(&rel.as_str()) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            out.insert(rel, Node::Dir { mode });
            walk(root, &path, exclude, out);
        } else {
            out.insert(
                rel,
                Node::File {
                    mode,
                    data: std::fs::read(&path).unwrap(),
                },
            );
        }
    }
}

/// Reads a zip with async_zip's central-directory reader (an independent implementation):
/// entry name -> (is dir, unix mode, contents). (0.0.19 deprecates this reader for a `read1`
/// module it does not ship yet.)
#[allow(deprecated)]
pub async fn read_zip(bytes: &[u8]) -> BTreeMap<String, (bool, Option<u16>, Vec<u8>)> {
    use async_zip::base::read::seek::ZipFileReader;
    let mut reader = ZipFileReader::new(futures::io::Cursor::new(bytes.to_vec()))
        .await
        .expect("valid zip");
    let mut out = BTreeMap::new();
    let n = reader.file().entries().len();
    for i in 0..n {
        let entry = reader.file().entries()[i].clone();
        let name = entry.filename().as_str().unwrap().to_string();
        let is_dir = entry.dir().unwrap();
        let mode = entry.unix_permissions();
        let mut data = Vec::new();
        if !is_dir {
            let mut r = reader.reader_with_entry(i).await.unwrap();
            r.read_to_end_checked(&mut data).await.unwrap();
        }
        out.insert(name.trim_end_matches('/').to_string(), (is_dir, mode, data));
    }
    out
}

/// Compares a directory snapshot with the entries of a zip.
pub fn assert_zip_matches_tree(
    zip: &BTreeMap<String, (bool, Option<u16>, Vec<u8>)>,
    tree: &BTreeMap<String, Node>,
) {
    assert_eq!(
        zip.keys().collect::<Vec<_>>(),
        tree.keys().collect::<Vec<_>>(),
        "entry names"
    );
    for (name, node) in tree {
        let (is_dir, mode, data) = &zip[name];
        match node {
            Node::Dir { mode: m } => {
                assert!(is_dir, "{name} is a dir");
                assert_eq!(mode.map(|x| u32::from(x) & 0o7777), Some(*m), "{name} mode");
            }
            Node::File { mode: m, data: d } => {
                assert!(!is_dir, "{name} is a file");
                assert_eq!(mode.map(|x| u32::from(x) & 0o7777), Some(*m), "{name} mode");
                assert!(data == d, "{name} contents differ");
            }
        }
    }
}

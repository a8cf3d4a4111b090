//! `References`: the files a package carries, with their declared sizes.

use crate::error::Result;
use crate::model::{Extensions, FileReference};
use crate::units::parse_size;
use crate::xml::XmlElement;

use super::attrs::{attr, extra_attrs, required_attr};
use super::reader::{Cx, kind};

impl Cx {
    pub(super) fn references(&mut self, el: &XmlElement) -> Result<Vec<FileReference>> {
        let mut files = Vec::new();
        let mut ignored = Extensions::default();
        for child in el.elements() {
            if kind(child) != Some("File") {
                self.unknown(child, "References", &mut ignored)?;
                continue;
            }
            let id = required_attr(child, "id", "References/File")?.to_owned();
            let ctx = format!("File {id}");
            let href = required_attr(child, "href", &ctx)?.to_owned();
            let size = attr(child, "size")
                .map(|v| parse_size(&format!("{ctx} ovf:size"), v))
                .transpose()?;
            let chunk_size = attr(child, "chunkSize")
                .map(|v| parse_size(&format!("{ctx} ovf:chunkSize"), v))
                .transpose()?;
            files.push(FileReference {
                id,
                href,
                size,
                compression: attr(child, "compression").map(str::to_owned),
                chunk_size,
                extra_attrs: extra_attrs(
                    child,
                    &["id", "href", "size", "compression", "chunkSize"],
                ),
            });
        }
        if !ignored.elements.is_empty() {
            self.warn("unknown elements in References are dropped".into());
        }
        Ok(files)
    }
}

//! Image-classification Parquet files in the Hugging Face Hub's layout (cargo feature
//! `parquet`): per row an encoded image (a struct whose `bytes` field is PNG/JPEG) and an integer
//! label. The `hub` feature downloads such files; this module reads and writes them.
//!
//! forja decodes rows itself rather than through candle-datasets' loaders, which panic on an
//! undecodable image and cannot read a local file: here a bad row is an error naming the file
//! and the row.

use std::fs::File;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::parser::parse_message_type;

use crate::{DataError, ImageSet, Result};

fn bad(path: &Path, msg: String) -> DataError {
    DataError::BadFile {
        path: path.to_path_buf(),
        msg,
    }
}

/// Reads a Hub image-classification Parquet file: per row, the first struct field with a
/// `bytes` member is decoded as the image (to `shape`, grey or RGB) and the first integer
/// field is the label.
pub fn read_parquet(path: &Path, shape: [usize; 3], classes: usize) -> Result<ImageSet> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| bad(path, format!("not a Parquet file: {e}")))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| bad(path, e.to_string()))?;
    let [c, h, w] = shape;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (index, row) in rows.enumerate() {
        let row = row.map_err(|e| bad(path, format!("row {index}: {e}")))?;
        let (mut image, mut label) = (None, None);
        for (_, field) in row.get_column_iter() {
            match field {
                Field::Group(group) if image.is_none() => {
                    image = group.get_column_iter().find_map(|(name, f)| match f {
                        Field::Bytes(b) if name == "bytes" => Some(b.data().to_vec()),
                        _ => None,
                    })
                }
                Field::Long(v) if label.is_none() => label = Some(*v),
                Field::Int(v) if label.is_none() => label = Some(i64::from(*v)),
                _ => {}
            }
        }
        let (Some(bytes), Some(label)) = (image, label) else {
            return Err(bad(
                path,
                format!("row {index}: expected an image struct with `bytes` and an integer label"),
            ));
        };
        if !(0..classes as i64).contains(&label) {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label: label.clamp(0, u32::MAX as i64) as u32,
                classes,
            });
        }
        let img = image::load_from_memory(&bytes)
            .map_err(|e| bad(path, format!("row {index}: cannot decode image: {e}")))?;
        if (img.height() as usize, img.width() as usize) != (h, w) {
            return Err(bad(
                path,
                format!(
                    "row {index}: image is {}x{}, expected {h}x{w}",
                    img.height(),
                    img.width()
                ),
            ));
        }
        pixels.extend(crate::folder::channel_first(&img, c));
        labels.push(label as u32);
    }
    ImageSet::new(pixels, labels, shape, classes)
}

/// Writes `set` as a Parquet file in the Hub's layout (`image: {bytes: PNG}`, `label: int64`),
/// atomically: to share a dataset, or to test [`read_parquet`] without a network.
pub fn write_parquet(path: &Path, set: &ImageSet) -> Result<()> {
    let [c, h, w] = set.shape();
    let mut pngs = Vec::with_capacity(set.labels().len());
    for i in 0..set.labels().len() {
        let raw = set.image_bytes(i);
        let img = if c == 1 {
            image::DynamicImage::ImageLuma8(
                image::GrayImage::from_raw(w as u32, h as u32, raw.to_vec())
                    .ok_or_else(|| DataError::Invalid("image buffer too small".into()))?,
            )
        } else {
            let hwc = (0..h * w).flat_map(|p| (0..3).map(move |k| raw[k * h * w + p]));
            image::DynamicImage::ImageRgb8(
                image::RgbImage::from_raw(w as u32, h as u32, hwc.collect())
                    .ok_or_else(|| DataError::Invalid("image buffer too small".into()))?,
            )
        };
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| DataError::Invalid(format!("cannot encode image {i}: {e}")))?;
        pngs.push(ByteArray::from(png));
    }
    let labels: Vec<i64> = set.labels().iter().map(|&l| i64::from(l)).collect();
    let schema = parse_message_type(
        "message hub { REQUIRED GROUP image { REQUIRED BYTE_ARRAY bytes; } REQUIRED INT64 label; }",
    )
    .map_err(|e| DataError::Invalid(e.to_string()))?;
    let mut bytes = Vec::new();
    let write = || -> parquet::errors::Result<()> {
        let mut writer =
            SerializedFileWriter::new(&mut bytes, Arc::new(schema), Default::default())?;
        let mut group = writer.next_row_group()?;
        if let Some(mut col) = group.next_column()? {
            col.typed::<ByteArrayType>()
                .write_batch(&pngs, None, None)?;
            col.close()?;
        }
        if let Some(mut col) = group.next_column()? {
            col.typed::<Int64Type>().write_batch(&labels, None, None)?;
            col.close()?;
        }
        group.close()?;
        writer.close()?;
        Ok(())
    };
    write().map_err(|e| bad(path, format!("cannot write Parquet: {e}")))?;
    crate::fs::write_atomic(path, &bytes).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

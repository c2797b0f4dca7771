//! Images from a directory tree: one sub-folder per class for classification, and image + mask
//! pairs for segmentation. PNG and JPEG are read (through the `image` crate).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::{need_dir, DatasetEntry, Source, Split};
use crate::{DataError, Dataset, ImageSet, Result, Sample};

/// File extensions read as images.
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// How images are brought to one shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FolderOptions {
    /// Resize every image to `(height, width)`; without it all images must share the first one's size.
    pub size: Option<(usize, usize)>,
    /// 1 (grey) or 3 (RGB); without it, grey if the first image is grey, else RGB.
    pub channels: Option<usize>,
}

/// A classification set read from `root/<class>/<image>`, classes in sorted folder-name order.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub images: ImageSet,
    pub class_names: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The entries of `dir` passing `keep`, sorted by name.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if keep(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The pixels of `img` as `[channels, height, width]` bytes: grey for 1 channel, else RGB
/// planes (the `image` crate stores pixels interleaved).
pub(crate) fn channel_first(img: &image::DynamicImage, channels: usize) -> Vec<u8> {
    if channels == 1 {
        return img.to_luma8().into_raw();
    }
    let rgb = img.to_rgb8().into_raw();
    (0..3)
        .flat_map(|c| rgb.iter().skip(c).step_by(3).copied())
        .collect()
}

/// Decodes images one by one into a common shape.
struct Decoder {
    options: FolderOptions,
    /// Shape fixed by the options or the first image, with that image's path.
    shape: Option<([usize; 3], PathBuf)>,
}

impl Decoder {
    fn new(options: FolderOptions) -> Result<Self> {
        if matches!(options.channels, Some(c) if c != 1 && c != 3) {
            return Err(DataError::Invalid(format!(
                "image folders are read with 1 or 3 channels, not {:?}",
                options.channels
            )));
        }
        Ok(Self {
            options,
            shape: None,
        })
    }

    /// The image at `path` as `[C, H, W]` bytes.
    fn decode(&mut self, path: &Path) -> Result<(Vec<u8>, [usize; 3])> {
        let img = image::open(path).map_err(|e| DataError::BadFile {
            path: path.to_path_buf(),
            msg: format!("cannot decode image: {e}"),
        })?;
        let img = match self.options.size {
            Some((h, w)) => img.resize_exact(w as u32, h as u32, image::imageops::Triangle),
            None => img,
        };
        let channels = self.options.channels.unwrap_or(match &self.shape {
            Some((s, _)) => s[0],
            None if img.color().has_color() => 3,
            None => 1,
        });
        let (w, h) = (img.width() as usize, img.height() as usize);
        let shape = [channels, h, w];
        match &self.shape {
            Some((expected, first)) if *expected != shape => {
                return Err(DataError::BadFile {
                    path: path.to_path_buf(),
                    msg: format!(
                        "image is {h}x{w}, but {} is {}x{}; give a size to resize all images",
                        first.display(),
                        expected[1],
                        expected[2]
                    ),
                })
            }
            Some(_) => {}
            None => self.shape = Some((shape, path.to_path_buf())),
        }
        Ok((channel_first(&img, channels), shape))
    }
}

impl ImageFolder {
    /// Reads every PNG/JPEG in the class sub-folders of `root`.
    pub fn read(root: &Path, options: FolderOptions) -> Result<Self> {
        let class_dirs = sorted_entries(root, Path::is_dir)?;
        if class_dirs.is_empty() {
            return Err(DataError::BadFile {
                path: root.to_path_buf(),
                msg: "expected one sub-folder per class, found none".into(),
            });
        }
        let mut decoder = Decoder::new(options)?;
        let (mut pixels, mut labels, mut shape) = (Vec::new(), Vec::new(), [0; 3]);
        let mut class_names = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            class_names.push(dir.file_name().unwrap_or_default().to_string_lossy().into());
            for file in sorted_entries(dir, is_image)? {
                let (bytes, s) = decoder.decode(&file)?;
                pixels.extend(bytes);
                labels.push(label as u32);
                shape = s;
            }
        }
        if labels.is_empty() {
            return Err(DataError::BadFile {
                path: root.to_path_buf(),
                msg: format!("no images ({}) in its class folders", EXTENSIONS.join(", ")),
            });
        }
        let images = ImageSet::new(pixels, labels, shape, class_names.len())?;
        Ok(Self {
            images,
            class_names,
        })
    }
}

/// Images with per-pixel class masks, read from two folders where each image has a mask file of
/// the same stem (any of the image extensions); mask pixel values are class ids.
#[derive(Debug, Clone)]
pub struct SegmentationSet {
    images: Vec<u8>,
    masks: Vec<u8>,
    shape: [usize; 3],
    len: usize,
    classes: usize,
}

impl SegmentationSet {
    pub fn read(images_dir: &Path, masks_dir: &Path, options: FolderOptions) -> Result<Self> {
        let mut decoder = Decoder::new(options)?;
        let mut mask_decoder = Decoder::new(FolderOptions {
            channels: Some(1),
            ..options
        })?;
        let (mut images, mut masks, mut shape, mut len) = (Vec::new(), Vec::new(), [0; 3], 0);
        for file in sorted_entries(images_dir, is_image)? {
            let stem = file.file_stem().unwrap_or_default().to_string_lossy();
            let mask_path = EXTENSIONS
                .iter()
                .map(|e| masks_dir.join(format!("{stem}.{e}")))
                .find(|p| p.is_file())
                .ok_or_else(|| DataError::BadFile {
                    path: file.clone(),
                    msg: format!("no mask {stem}.png/.jpg/.jpeg in {}", masks_dir.display()),
                })?;
            let (img, s) = decoder.decode(&file)?;
            // Resizing a mask would blend class ids: masks must already have the image's size.
            let (mask, ms) = mask_decoder.decode(&mask_path)?;
            if options.size.is_none() && ms[1..] != s[1..] {
                return Err(DataError::BadFile {
                    path: mask_path,
                    msg: format!("mask is {}x{}, its image {}x{}", ms[1], ms[2], s[1], s[2]),
                });
            }
            images.extend(img);
            masks.extend(mask);
            shape = s;
            len += 1;
        }
        if len == 0 {
            return Err(DataError::BadFile {
                path: images_dir.to_path_buf(),
                msg: format!("no images ({})", EXTENSIONS.join(", ")),
            });
        }
        let classes = masks.iter().copied().max().unwrap_or(0) as usize + 1;
        Ok(Self {
            images,
            masks,
            shape,
            len,
            classes,
        })
    }
}

impl Dataset for SegmentationSet {
    fn len(&self) -> usize {
        self.len
    }

    fn item_shape(&self) -> Vec<usize> {
        self.shape.to_vec()
    }

    fn target_shape(&self) -> Vec<usize> {
        vec![1, self.shape[1], self.shape[2]]
    }

    /// One more than the largest mask value seen.
    fn num_classes(&self) -> Option<usize> {
        Some(self.classes)
    }

    fn get(&self, index: usize) -> Result<Sample> {
        crate::check_index(index, self.len)?;
        let (n, m) = (
            self.shape.iter().product::<usize>(),
            self.shape[1] * self.shape[2],
        );
        Ok(Sample {
            input: self.images[index * n..(index + 1) * n]
                .iter()
                .map(|&p| p as f32 / 255.0)
                .collect(),
            target: self.masks[index * m..(index + 1) * m]
                .iter()
                .map(|&c| c as u32)
                .collect(),
        })
    }
}

inventory::submit! {
    DatasetEntry {
        name: "image-folder",
        summary: "your images: DIR/train/<class>/*.png|jpg and DIR/test/<class>/*.png|jpg",
        shape: &[],
        classes: None,
        source: Source::Files {
            found: |dir| dir.join("train").is_dir() && dir.join("test").is_dir(),
            hint: "Pass --data-dir DIR with DIR/train/<class>/ and DIR/test/<class>/ folders of images.",
        },
        open: |split, dir| {
            let sub = match split {
                Split::Train => "train",
                Split::Test => "test",
            };
            let folder = ImageFolder::read(&need_dir(dir)?.join(sub), FolderOptions::default())?;
            Ok(Arc::new(folder.images))
        },
    }
}
